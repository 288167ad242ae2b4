// Gateway: the Gemini provider (translation) against the fake Gemini API, through the official `openai` SDK,
// raw fetch and the `@anthropic-ai/sdk`. Each case asserts what agentd sent upstream (the fake's record) as well
// as what the client received. Content and usage follow tests/fakes/README.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS, embedding } from '../fakes/fake.mjs';

let d, g, client;
const PRICE = { input: 0.30, output: 2.50, cached: 0.075 }; // built-in gemini-2.5-flash price, USD per 1M tokens

before(async () => {
  g = await startFake({ provider: 'gemini', models: ['gemini-2.5-flash', 'gemini-2.5-pro', 'gemini-embedding-001'] });
  d = await startAgentd({
    env: { FAKE_GEMINI_KEY: FAKE_KEYS.gemini, WRONG_GEMINI_KEY: 'AIzaWrongKey' },
    config: `
gateway:
  first_byte_timeout: 2s
models:
  - name: gem
    provider: gemini
    model: gemini-2.5-flash
    base_url: ${g.url}
    api_key_env: FAKE_GEMINI_KEY
    retries: { max_attempts: 1 }   # these tests see the upstream's own errors (retries: resilience*.test.mjs)
  - name: gem-badkey
    provider: gemini
    model: gemini-2.5-flash
    base_url: ${g.url}
    api_key_env: WRONG_GEMINI_KEY
  - name: gem-missing
    provider: gemini
    model: gemini-0.1-nonexistent
    base_url: ${g.url}
    api_key_env: FAKE_GEMINI_KEY
  - name: gem-embed
    embeddings: true
    provider: gemini
    model: gemini-embedding-001
    base_url: ${g.url}
    api_key_env: FAKE_GEMINI_KEY
  - name: gem-failover
    deployments:
      - provider: gemini
        model: gemini-2.5-pro
        base_url: ${g.url}
        api_key_env: FAKE_GEMINI_KEY
        weight: 1000000
      - provider: gemini
        model: gemini-2.5-flash
        base_url: ${g.url}
        api_key_env: FAKE_GEMINI_KEY
        weight: 0
`,
  });
  client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client', maxRetries: 0 });
});

after(async () => {
  const r = await d.stop();
  await g.close();
  assert.equal(r.code, 0, `agentd exit ${JSON.stringify(r)}\n${d.rawStderr.slice(-4000)}`);
});

const post = (body, path = '/v1/chat/completions') =>
  d.fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

function sseData(text) {
  return text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
}

const tokens = (chars) => Math.max(1, Math.ceil(chars / 4));

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: {
      $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', additionalProperties: false,
      properties: { city: { type: 'string', format: 'uri-reference' }, unit: { type: ['string', 'null'], enum: ['c', 'f'] } },
      required: ['city'],
    },
  },
};

test('plain completion through the openai SDK: translated request, text, usage, cost headers', async () => {
  g.reset();
  const system = 'You are terse.';
  const user = 'hello brave new world';
  const { data: r, response } = await client.chat.completions.create({
    model: 'gem', max_tokens: 50, temperature: 0.3, top_p: 0.9, stop: ['zzz'], seed: 3,
    messages: [{ role: 'system', content: system }, { role: 'user', content: user }],
  }).withResponse();
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, 'gem');
  assert.equal(r.choices[0].message.content, `echo: ${user}`);
  assert.equal(r.choices[0].finish_reason, 'stop');
  const input = tokens(system.length + user.length);
  assert.equal(r.usage.prompt_tokens, input);
  assert.equal(r.usage.completion_tokens, 5);
  assert.equal(response.headers.get('x-agentd-deployment'), 'gemini:gemini-2.5-flash');
  assert.equal(response.headers.get('x-agentd-input-tokens'), String(input));
  assert.equal(response.headers.get('x-agentd-output-tokens'), '5');
  assert.ok(Math.abs(Number(response.headers.get('x-agentd-cost-usd')) - (input * PRICE.input + 5 * PRICE.output) / 1e6) < 1e-9);

  assert.equal(g.requests.length, 1);
  const sent = g.requests[0];
  assert.equal(sent.path, '/v1beta/models/gemini-2.5-flash:generateContent');
  assert.equal(sent.headers['x-goog-api-key'], FAKE_KEYS.gemini);
  assert.equal(sent.query.key, undefined, 'the key never travels in the URL');
  assert.deepEqual(sent.json, {
    contents: [{ role: 'user', parts: [{ text: user }] }],
    systemInstruction: { parts: [{ text: system }] },
    generationConfig: { maxOutputTokens: 50, temperature: 0.3, topP: 0.9, seed: 3, stopSequences: ['zzz'] },
  });
});

test('max tokens and stop sequences map to MAX_TOKENS/length and STOP/stop', async () => {
  g.reset();
  let r = await client.chat.completions.create({ model: 'gem', max_tokens: 2, messages: [{ role: 'user', content: 'one two three four' }] });
  assert.equal(r.choices[0].message.content, 'echo: one');
  assert.equal(r.choices[0].finish_reason, 'length');
  r = await client.chat.completions.create({ model: 'gem', stop: 'three', messages: [{ role: 'user', content: 'one two three four' }] });
  assert.equal(r.choices[0].message.content, 'echo: one two ');
  assert.equal(r.choices[0].finish_reason, 'stop');
});

test('streaming through the openai SDK: SSE upstream, deltas, include_usage', async () => {
  g.reset();
  const stream = await client.chat.completions.create({
    model: 'gem', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream me five words please' }],
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    const ch = c.choices[0];
    if (ch?.delta?.content) text += ch.delta.content;
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  assert.equal(text, 'echo: stream me five words please');
  assert.equal(finish, 'stop');
  assert.ok(chunks >= 4, `streamed in pieces (${chunks} chunks)`);
  assert.equal(usage.prompt_tokens, tokens('stream me five words please'.length));
  assert.equal(usage.completion_tokens, 6);
  const sent = g.requests[0];
  assert.equal(sent.path, '/v1beta/models/gemini-2.5-flash:streamGenerateContent');
  assert.equal(sent.query.alt, 'sse');
});

test('tools: declarations with the schema subset, function calls out, function responses (by name) back', async () => {
  g.reset();
  const messages = [{ role: 'user', content: 'CALL get_weather {"city":"Paris"} CALL get_weather {"city":"Rome","unit":"c"}' }];
  const r1 = await client.chat.completions.create({ model: 'gem', messages, tools: [WEATHER], tool_choice: 'auto' });
  const msg = r1.choices[0].message;
  assert.equal(r1.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.content, null);
  assert.equal(msg.tool_calls.length, 2);
  assert.deepEqual(msg.tool_calls.map((t) => [t.type, t.function.name, JSON.parse(t.function.arguments)]),
    [['function', 'get_weather', { city: 'Paris' }], ['function', 'get_weather', { city: 'Rome', unit: 'c' }]]);
  assert.ok(msg.tool_calls.every((t) => /^call_[0-9a-f]{24}$/.test(t.id)), JSON.stringify(msg.tool_calls));
  assert.notEqual(msg.tool_calls[0].id, msg.tool_calls[1].id);
  // output tokens: per call 1 + ceil(len(args)/4)
  assert.equal(r1.usage.completion_tokens, (1 + Math.ceil('{"city":"Paris"}'.length / 4)) + (1 + Math.ceil('{"city":"Rome","unit":"c"}'.length / 4)));
  let sent = g.requests[0].json;
  assert.deepEqual(sent.tools, [{
    functionDeclarations: [{
      name: 'get_weather', description: 'Weather for a city',
      parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', nullable: true, enum: ['c', 'f'] } }, required: ['city'] },
    }],
  }]);
  assert.deepEqual(sent.toolConfig, { functionCallingConfig: { mode: 'AUTO' } });

  // the results go back: Gemini needs the function names, found from the tool_call ids
  messages.push(msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: 'sunny' },
    { role: 'tool', tool_call_id: msg.tool_calls[1].id, content: 'rainy' });
  const r2 = await client.chat.completions.create({ model: 'gem', messages, tools: [WEATHER] });
  assert.equal(r2.choices[0].message.content, 'echo: tool result: sunny rainy');
  sent = g.requests[1].json;
  assert.deepEqual(sent.contents.slice(1), [
    { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { city: 'Paris' } } }, { functionCall: { name: 'get_weather', args: { city: 'Rome', unit: 'c' } } }] },
    { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { output: 'sunny' } } }, { functionResponse: { name: 'get_weather', response: { output: 'rainy' } } }] },
  ]);
});

test('tools, streamed: a whole function call arrives in one chunk', async () => {
  g.reset();
  const stream = await client.chat.completions.create({
    model: 'gem', stream: true, tools: [WEATHER], tool_choice: 'required',
    messages: [{ role: 'user', content: 'CALL get_weather {"city":"Oslo"}' }],
  });
  const calls = [];
  let finish = null;
  for await (const c of stream) {
    for (const tc of c.choices[0]?.delta?.tool_calls || []) {
      if (tc.id) calls[tc.index] = { id: tc.id, name: tc.function.name, args: '' };
      if (tc.function?.arguments) calls[tc.index].args += tc.function.arguments;
    }
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].args), { city: 'Oslo' });
  assert.deepEqual(g.requests[0].json.toolConfig, { functionCallingConfig: { mode: 'ANY' } });
});

test('a tool result whose id matches no earlier call is refused before any upstream call', async () => {
  g.reset();
  const res = await post({ model: 'gem', messages: [{ role: 'user', content: 'x' }, { role: 'tool', tool_call_id: 'call_unknown', content: 'r' }] });
  assert.equal(res.status, 400);
  const j = await res.json();
  assert.equal(j.error.type, 'invalid_request_error');
  assert.match(j.error.message, /does not match a tool call/);
  assert.equal(g.received(), 0);
});

test('images: data URLs go inline', async () => {
  g.reset();
  const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==';
  const r = await client.chat.completions.create({
    model: 'gem',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } }, { type: 'text', text: 'here' }] }],
  });
  assert.equal(r.choices[0].message.content, 'echo: look [image] here');
  assert.deepEqual(g.requests[0].json.contents[0].parts[1], { inlineData: { mimeType: 'image/png', data: png } });
});

test('usage: thoughts count as output and reasoning, cached content as cached input; cost uses both prices', async () => {
  g.reset();
  g.script([{ reasoningTokens: 7, cachedTokens: 2 }]);
  const { data: r, response } = await client.chat.completions.create({ model: 'gem', messages: [{ role: 'user', content: 'think about it' }] }).withResponse();
  const input = tokens('think about it'.length);
  assert.equal(r.usage.prompt_tokens, input);
  assert.equal(r.usage.completion_tokens, 4 + 7);
  assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 7);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 2);
  const cost = ((input - 2) * PRICE.input + 2 * PRICE.cached + 11 * PRICE.output) / 1e6;
  assert.ok(Math.abs(Number(response.headers.get('x-agentd-cost-usd')) - cost) < 1e-9, response.headers.get('x-agentd-cost-usd'));
  assert.equal(response.headers.get('x-agentd-output-tokens'), '11');
});

test('errors keep their meaning: status, type, retry hints', async () => {
  g.reset();
  g.script([{ status: 429, retryAfter: 3 }]);
  let res = await post({ model: 'gem', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '3');
  let j = await res.json();
  assert.equal(j.error.type, 'rate_limit_error');
  assert.equal(j.error.code, 'RESOURCE_EXHAUSTED');
  assert.match(j.error.message, /quota/);

  g.script([{ status: 503 }]);
  res = await post({ model: 'gem', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 503);
  assert.equal((await res.json()).error.code, 'UNAVAILABLE');

  g.script([{ status: 400, message: 'Request contains an invalid argument.' }]);
  res = await post({ model: 'gem', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 400);
  j = await res.json();
  assert.equal(j.error.type, 'invalid_request_error');
  assert.equal(j.error.message, 'Request contains an invalid argument.');

  g.script([{ status: 502 }]); // Google's HTML error page
  res = await post({ model: 'gem', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);

  g.script([{ malformed: true }]);
  res = await post({ model: 'gem', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);
  assert.match((await res.json()).error.message, /invalid JSON/);

  // Google answers a wrong key with 400 API_KEY_INVALID: agentd's key is wrong, so the client sees a 502
  res = await post({ model: 'gem-badkey', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);
  j = await res.json();
  assert.equal(j.error.type, 'server_error');
  assert.equal(j.error.code, 'upstream_authentication_failed');
  assert.match(j.error.message, /upstream authentication failed at deployment gemini:.*API key not valid/);

  res = await post({ model: 'gem-missing', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 404);
  assert.match((await res.json()).error.message, /gemini-0\.1-nonexistent is not found/);
});

test('the openai SDK surfaces a Gemini rate limit as RateLimitError', async () => {
  g.reset();
  g.script([{ status: 429, retryAfter: 1 }]);
  await assert.rejects(client.chat.completions.create({ model: 'gem', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429);
});

test('failover: RESOURCE_EXHAUSTED on the first deployment, the next one answers', async () => {
  g.reset();
  g.script([{ status: 429, retryAfter: 2 }]);
  const res = await post({ model: 'gem-failover', messages: [{ role: 'user', content: 'still here' }] });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-agentd-attempts'), '2');
  assert.equal(res.headers.get('x-agentd-deployment'), 'gemini:gemini-2.5-flash');
  assert.equal((await res.json()).choices[0].message.content, 'echo: still here');
  assert.deepEqual(g.requests.map((r) => r.path), ['/v1beta/models/gemini-2.5-pro:generateContent', '/v1beta/models/gemini-2.5-flash:generateContent']);
});

test('streams that break: cut short, reset, malformed chunk, mid-stream error', async () => {
  const body = { model: 'gem', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven eight' }] };
  for (const [behavior, pattern] of [
    [{ truncate: true, chunks: 6 }, /ended the stream before its final event/],
    [{ truncate: 'reset', chunks: 6 }, /upstream/],
    [{ malformed: true, chunks: 6 }, /malformed stream event/],
    [{ midStreamError: { code: 503, status: 'UNAVAILABLE', message: 'overloaded now' }, chunks: 6 }, /overloaded now/],
  ]) {
    g.reset();
    g.script([behavior]);
    const res = await post(body);
    assert.equal(res.status, 200);
    const data = sseData(await res.text());
    assert.equal(data.at(-1), '[DONE]');
    const last = JSON.parse(data.at(-2));
    assert.ok(last.error, `an error event ends the stream for ${JSON.stringify(behavior)}: ${data.at(-2)}`);
    assert.match(last.error.message, pattern);
    const text = data.slice(0, -2).map((x) => JSON.parse(x).choices?.[0]?.delta?.content || '').join('');
    assert.ok(text.startsWith('echo:'), 'what arrived before the break was relayed');
    const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
    assert.equal(line.incomplete, true);
  }
});

test('a stream without usage metadata still completes', async () => {
  g.reset();
  g.script([{ usage: false }]);
  const res = await post({ model: 'gem', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'no usage' }] });
  const data = sseData(await res.text());
  assert.equal(data.at(-1), '[DONE]');
  const chunks = data.slice(0, -1).map((x) => JSON.parse(x));
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content || '').join(''), 'echo: no usage');
  const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
  assert.equal(line.usage_reported, false);
  assert.equal(line.status, 200);
});

test('embeddings through the openai SDK (base64 by default): embedContent and batchEmbedContents', async () => {
  g.reset();
  let r = await client.embeddings.create({ model: 'gem-embed', input: 'hello embeddings', dimensions: 8 });
  assert.equal(r.object, 'list');
  assert.equal(r.data.length, 1);
  const want = embedding('hello embeddings', 8);
  assert.equal(r.data[0].embedding.length, 8);
  r.data[0].embedding.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-6, `dim ${i}: ${v} vs ${want[i]}`));
  assert.equal(g.requests[0].path, '/v1beta/models/gemini-embedding-001:embedContent');
  assert.deepEqual(g.requests[0].json, { content: { parts: [{ text: 'hello embeddings' }] }, outputDimensionality: 8 });
  assert.equal(r.usage.prompt_tokens, tokens('hello embeddings'.length));

  r = await client.embeddings.create({ model: 'gem-embed', input: ['a b', 'c d e'], encoding_format: 'float', dimensions: 4 });
  assert.deepEqual(r.data.map((e) => e.index), [0, 1]);
  r.data.forEach((e, k) => e.embedding.forEach((v, i) => assert.ok(Math.abs(v - embedding(['a b', 'c d e'][k], 4)[i]) < 1e-6)));
  assert.equal(g.requests[1].path, '/v1beta/models/gemini-embedding-001:batchEmbedContents');
  assert.equal(g.requests[1].json.requests.length, 2);
  assert.equal(g.requests[1].json.requests[0].model, 'models/gemini-embedding-001');

  const res = await post({ model: 'gem-embed', input: [[1, 2, 3]] }, '/v1/embeddings');
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /token-array/);
});

test('Anthropic clients reach Gemini through /v1/messages', async () => {
  g.reset();
  const anth = new Anthropic({ baseURL: d.url, apiKey: 'sk-client', maxRetries: 0 });
  const m = await anth.messages.create({ model: 'gem', max_tokens: 64, system: 'Be brief.', messages: [{ role: 'user', content: 'hello from anthropic' }] });
  assert.deepEqual(m.content, [{ type: 'text', text: 'echo: hello from anthropic' }]);
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.usage.input_tokens, tokens('Be brief.'.length + 'hello from anthropic'.length));
  assert.equal(m.usage.output_tokens, 4);
  assert.deepEqual(g.requests[0].json.systemInstruction, { parts: [{ text: 'Be brief.' }] });
  assert.equal(g.requests[0].json.generationConfig.maxOutputTokens, 64);

  // a tool round trip, streamed
  const tools = [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
  const stream = anth.messages.stream({ model: 'gem', max_tokens: 64, tools, messages: [{ role: 'user', content: 'CALL get_weather {"city":"Lima"}' }] });
  const final = await stream.finalMessage();
  assert.equal(final.stop_reason, 'tool_use');
  const use = final.content.find((b) => b.type === 'tool_use');
  assert.deepEqual(use.input, { city: 'Lima' });
  const m2 = await anth.messages.create({
    model: 'gem', max_tokens: 64, tools,
    messages: [{ role: 'user', content: 'CALL get_weather {"city":"Lima"}' }, { role: 'assistant', content: final.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'warm' }] }],
  });
  assert.deepEqual(m2.content, [{ type: 'text', text: 'echo: tool result: warm' }]);
  assert.deepEqual(g.requests.at(-1).json.contents.at(-1).parts, [{ functionResponse: { name: 'get_weather', response: { output: 'warm' } } }]);
});
