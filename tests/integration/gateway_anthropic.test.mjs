// Gateway: everything Anthropic. The Anthropic front door (/v1/messages) over an Anthropic upstream
// (passthrough), the mock model and an OpenAI upstream (translation); the OpenAI front door over an Anthropic
// upstream (translation the other way); errors, truncated streams and client disconnects. Upstreams are the fakes
// in tests/fakes (real wire formats); what agentd sent upstream is asserted as well as what the client received.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS, countWords } from '../fakes/fake.mjs';

let d, anth, oa, gem;

const PRICE = { input: 1.0, output: 2.0, cached_input: 0.5, cache_write: 4.0 }; // USD per million tokens

before(async () => {
  anth = await startFake({ provider: 'anthropic', chunks: 4 });
  oa = await startFake({ provider: 'openai', chunks: 4 });
  gem = await startFake({ provider: 'gemini', models: ['gemini-2.5-flash'] });
  d = await startAgentd({
    env: { FAKE_ANTHROPIC_KEY: FAKE_KEYS.anthropic, FAKE_OPENAI_KEY: FAKE_KEYS.openai, FAKE_GEMINI_KEY: FAKE_KEYS.gemini, WRONG_ANTHROPIC_KEY: 'sk-ant-wrong' },
    config: `
server:
  workers: 2
gateway:
  default_max_tokens: 333
models:
  - name: claude-test
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${anth.url}
    api_key_env: FAKE_ANTHROPIC_KEY
    retries: { max_attempts: 1 }   # these tests see the upstream's own errors (retries: resilience*.test.mjs)
  - name: claude-newapi
    provider: anthropic
    model: claude-sonnet-4-5
    base_url: ${anth.url}
    api_key_env: FAKE_ANTHROPIC_KEY
    api_version: "2026-10-21"
  - name: claude-badkey
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${anth.url}
    api_key_env: WRONG_ANTHROPIC_KEY
  - name: claude-failover
    deployments:
      - provider: anthropic
        model: claude-haiku-4-5
        base_url: ${anth.url}
        api_key_env: FAKE_ANTHROPIC_KEY
        weight: 1000000
      - provider: anthropic
        model: claude-3-5-haiku
        base_url: ${anth.url}
        api_key_env: FAKE_ANTHROPIC_KEY
        weight: 0
  - name: gpt-test
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: gem-test
    provider: gemini
    model: gemini-2.5-flash
    base_url: ${gem.url}
    api_key_env: FAKE_GEMINI_KEY
prices:
  claude-haiku-4-5: {input: ${PRICE.input}, output: ${PRICE.output}, cached_input: ${PRICE.cached_input}, cache_write: ${PRICE.cache_write}}
`,
  });
});

after(async () => {
  const r = await d.stop();
  await Promise.all([anth.close(), oa.close(), gem.close()]);
  assert.equal(r.code, 0, d.rawStderr.slice(-4000));
});

// ---- helpers ----

const ANTH_HEADERS = { 'content-type': 'application/json', 'x-api-key': 'client-key-not-for-upstream', 'anthropic-version': '2023-06-01' };
const messages = (body, headers = {}) => d.fetch('/v1/messages', { method: 'POST', headers: { ...ANTH_HEADERS, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
const chat = (body) => d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const inTok = (...texts) => Math.max(1, Math.ceil(texts.reduce((n, t) => n + t.length, 0) / 4));

function sseEvents(text) {
  return text.split('\n\n').filter((b) => b.trim()).map((b) => {
    const ev = {};
    for (const line of b.split('\n')) {
      const i = line.indexOf(':');
      const k = line.slice(0, i), v = line.slice(i + 1).replace(/^ /, '');
      ev[k] = ev[k] !== undefined ? ev[k] + '\n' + v : v;
    }
    return ev;
  });
}
const anthEvents = (text) => sseEvents(text).map((e) => ({ event: e.event, data: JSON.parse(e.data) }));
const llmLine = (res) => d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));

// Rebuilds a message from Anthropic stream events the way the SDK does, checking the event grammar on the way.
function assemble(evs) {
  assert.equal(evs[0].event, 'message_start');
  assert.equal(evs.at(-1).event, 'message_stop');
  const msg = structuredClone(evs[0].data.message);
  let open = -1;
  const json = {};
  for (const { event, data } of evs.slice(1, -1)) {
    assert.equal(event, data.type, 'event name matches data.type');
    if (event === 'content_block_start') {
      assert.equal(open, -1, 'a block starts only after the previous one stopped');
      assert.equal(data.index, msg.content.length, 'blocks are numbered in order');
      open = data.index;
      msg.content.push(structuredClone(data.content_block));
      json[open] = '';
    } else if (event === 'content_block_delta') {
      assert.equal(data.index, open);
      if (data.delta.type === 'text_delta') msg.content[open].text += data.delta.text;
      else json[open] += data.delta.partial_json;
    } else if (event === 'content_block_stop') {
      assert.equal(data.index, open);
      if (msg.content[open].type === 'tool_use' && json[open]) msg.content[open].input = JSON.parse(json[open]);
      open = -1;
    } else if (event === 'message_delta') {
      assert.equal(open, -1);
      Object.assign(msg, data.delta);
      Object.assign(msg.usage, data.usage);
    } else if (event !== 'ping') {
      assert.fail(`unexpected event ${event}`);
    }
  }
  return msg;
}

const WEATHER = { name: 'get_weather', description: 'Weather for a city', input_schema: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city'] } };
const ARGS = { city: 'Paris', days: 3, opts: { units: 'metric' } };
const CALL_TEXT = `please CALL get_weather ${JSON.stringify(ARGS)} now`;

// ---- Anthropic client -> Anthropic upstream (passthrough) ----

test('passthrough: the body goes up byte for byte with the model spliced, the message comes back as is', async () => {
  anth.reset();
  anth.script([{ cachedTokens: 4, cacheWriteTokens: 2 }]);
  const prompt = 'hello brave new world, this is a longer prompt';
  // Odd spacing and key order prove the bytes are not re-serialised.
  const raw = `{ "max_tokens" : 50,\n "model":"claude-test", "system": "You are terse.", "messages":[{"role":"user","content":"${prompt}"}], "metadata": {"user_id": "u-1"} }`;
  const res = await messages(raw, { 'anthropic-beta': 'prompt-caching-2024-07-31' });
  assert.equal(res.status, 200);
  const j = await res.json();
  assert.match(j.id, /^msg_01/);
  assert.equal(j.model, 'claude-haiku-4-5', 'the upstream message is relayed as received');
  assert.deepEqual(j.content, [{ type: 'text', text: `echo: ${prompt}` }]);
  const total = inTok('You are terse.', prompt);
  assert.equal(j.usage.input_tokens, total - 6);
  assert.equal(j.usage.cache_read_input_tokens, 4);
  assert.equal(j.usage.cache_creation_input_tokens, 2);
  assert.equal(j.usage.service_tier, 'standard', 'fields agentd does not know are relayed too');

  assert.equal(anth.requests.length, 1);
  const up = anth.requests[0];
  assert.equal(up.path, '/v1/messages');
  assert.equal(up.body, raw.replace('"claude-test"', '"claude-haiku-4-5"'));
  assert.equal(up.headers['x-api-key'], FAKE_KEYS.anthropic, 'the deployment key, never the client key');
  assert.equal(up.headers.authorization, undefined);
  assert.equal(up.headers['anthropic-version'], '2023-06-01', 'gateway.anthropic_version by default');
  assert.equal(up.headers['anthropic-beta'], 'prompt-caching-2024-07-31', 'the client betas go with its body');

  // usage and cost: input counts cache reads and writes; each part at its price
  assert.equal(res.headers.get('x-agentd-deployment'), 'anthropic:claude-haiku-4-5');
  assert.equal(Number(res.headers.get('x-agentd-input-tokens')), total);
  const out = countWords(`echo: ${prompt}`);
  assert.equal(Number(res.headers.get('x-agentd-output-tokens')), out);
  const cost = ((total - 6) * PRICE.input + 4 * PRICE.cached_input + 2 * PRICE.cache_write + out * PRICE.output) / 1e6;
  assert.equal(res.headers.get('x-agentd-cost-usd'), cost.toFixed(8));
  const line = await llmLine(res);
  assert.equal(line.front, 'anthropic');
  assert.equal(line.input_tokens, total);
  assert.equal(line.cached_tokens, 4);
});

test('passthrough: the deployment api_version is what goes upstream', async () => {
  anth.reset();
  const res = await messages({ model: 'claude-newapi', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] }, { 'anthropic-version': '2023-01-01' });
  assert.equal(res.status, 200);
  assert.equal(anth.requests[0].headers['anthropic-version'], '2026-10-21');
  assert.equal(anth.requests[0].json.model, 'claude-sonnet-4-5');
});

test('passthrough stream: every event relayed as it came (pings too), usage read on the way', async () => {
  anth.reset();
  anth.script([{ cachedTokens: 3 }]);
  const prompt = 'stream me a reply please, friend';
  const res = await messages({ model: 'claude-test', max_tokens: 50, stream: true, messages: [{ role: 'user', content: prompt }] });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const evs = anthEvents(await res.text());
  assert.deepEqual(evs.map((e) => e.event), ['message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_delta',
    'content_block_delta', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
  const msg = assemble(evs);
  assert.equal(msg.model, 'claude-haiku-4-5');
  assert.equal(msg.content[0].text, `echo: ${prompt}`);
  assert.equal(msg.stop_reason, 'end_turn');
  assert.equal(anth.requests[0].json.stream, true);
  const line = await llmLine(res);
  assert.equal(line.input_tokens, inTok(prompt), 'message_start input_tokens + cache reads');
  assert.equal(line.cached_tokens, 3);
  assert.equal(line.output_tokens, countWords(`echo: ${prompt}`), 'message_delta output_tokens');
  assert.equal(line.usage_reported, true);
});

test('passthrough: tool use round trip', async () => {
  anth.reset();
  let res = await messages({ model: 'claude-test', max_tokens: 100, tools: [WEATHER], messages: [{ role: 'user', content: CALL_TEXT }] });
  const j = await res.json();
  assert.equal(j.stop_reason, 'tool_use');
  assert.equal(j.content[0].type, 'tool_use');
  assert.deepEqual(j.content[0].input, ARGS);
  res = await messages({
    model: 'claude-test', max_tokens: 100, tools: [WEATHER],
    messages: [{ role: 'user', content: CALL_TEXT }, { role: 'assistant', content: j.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: j.content[0].id, content: '21C and sunny' }] }],
  });
  assert.equal((await res.json()).content[0].text, 'echo: tool result: 21C and sunny');
});

// ---- OpenAI client -> Anthropic upstream (translation) ----

test('openai client -> anthropic: request rebuilt as a Messages request, answer as a chat.completion', async () => {
  anth.reset();
  const res = await chat({ model: 'claude-test', user: 'u-9', temperature: 1.7, messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'hello there' }] });
  assert.equal(res.status, 200);
  const j = await res.json();
  assert.equal(j.object, 'chat.completion');
  assert.match(j.id, /^chatcmpl-/);
  assert.equal(j.model, 'claude-test');
  assert.equal(j.choices[0].message.content, 'echo: hello there');
  assert.equal(j.choices[0].finish_reason, 'stop');
  assert.equal(j.usage.prompt_tokens, inTok('You are terse.', 'hello there'));
  assert.equal(j.usage.completion_tokens, 3);
  const up = anth.requests[0];
  assert.equal(up.headers['x-api-key'], FAKE_KEYS.anthropic);
  assert.equal(up.headers['anthropic-version'], '2023-06-01');
  assert.deepEqual(up.json, {
    model: 'claude-haiku-4-5', max_tokens: 333, system: 'You are terse.',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hello there' }] }],
    temperature: 1, metadata: { user_id: 'u-9' },
  });
});

test('openai client -> anthropic: max tokens, stop sequences and their finish reasons', async () => {
  anth.reset();
  let j = await (await chat({ model: 'claude-test', max_completion_tokens: 2, messages: [{ role: 'user', content: 'one two three' }] })).json();
  assert.equal(j.choices[0].message.content, 'echo: one');
  assert.equal(j.choices[0].finish_reason, 'length');
  assert.equal(anth.requests[0].json.max_tokens, 2);
  j = await (await chat({ model: 'claude-test', stop: 'three', messages: [{ role: 'user', content: 'one two three four' }] })).json();
  assert.equal(j.choices[0].message.content, 'echo: one two ');
  assert.equal(j.choices[0].finish_reason, 'stop');
  assert.deepEqual(anth.requests[1].json.stop_sequences, ['three']);
});

test('openai client -> anthropic stream: deltas, finish, usage chunk, [DONE]', async () => {
  anth.reset();
  anth.script([{ cachedTokens: 2 }]);
  const res = await chat({ model: 'claude-test', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'stream this text please' }] });
  assert.equal(res.status, 200);
  const evs = sseEvents(await res.text());
  assert.equal(evs.at(-1).data, '[DONE]');
  const chunks = evs.slice(0, -1).map((e) => JSON.parse(e.data));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content || '').join(''), 'echo: stream this text please');
  assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
  const usage = chunks.at(-1).usage;
  assert.equal(usage.prompt_tokens, inTok('stream this text please'));
  assert.equal(usage.prompt_tokens_details.cached_tokens, 2);
  assert.equal(usage.completion_tokens, 5);
  assert.equal(anth.requests[0].json.stream, true);
});

test('openai client -> anthropic: tool calls (plain and streamed) and the tool-result turn', async () => {
  anth.reset();
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: WEATHER.input_schema } }];
  let j = await (await chat({ model: 'claude-test', tools, tool_choice: 'required', parallel_tool_calls: false, messages: [{ role: 'user', content: CALL_TEXT }] })).json();
  assert.equal(j.choices[0].finish_reason, 'tool_calls');
  assert.equal(j.choices[0].message.content, null);
  const call = j.choices[0].message.tool_calls[0];
  assert.match(call.id, /^toolu_01/);
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), ARGS);
  assert.deepEqual(anth.requests[0].json.tools, [WEATHER]);
  assert.deepEqual(anth.requests[0].json.tool_choice, { type: 'any', disable_parallel_tool_use: true });

  // streamed: the calls are assembled from the deltas
  const res = await chat({ model: 'claude-test', stream: true, tools, messages: [{ role: 'user', content: `${CALL_TEXT} CALL get_weather {"city":"Rome"}` }] });
  const chunks = sseEvents(await res.text()).slice(0, -1).map((e) => JSON.parse(e.data));
  const calls = [];
  for (const c of chunks) for (const tc of c.choices[0]?.delta?.tool_calls || []) {
    if (tc.id) calls[tc.index] = { id: tc.id, name: tc.function.name, args: '' };
    if (tc.function?.arguments) calls[tc.index].args += tc.function.arguments;
  }
  assert.equal(calls.length, 2);
  assert.deepEqual(JSON.parse(calls[0].args), ARGS);
  assert.deepEqual(JSON.parse(calls[1].args), { city: 'Rome' });
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'tool_calls');

  // the answer turn: assistant tool_calls -> tool_use blocks; tool messages + the next user text -> one user turn
  anth.reset();
  j = await (await chat({
    model: 'claude-test', tools,
    messages: [{ role: 'user', content: CALL_TEXT },
      { role: 'assistant', content: null, tool_calls: [{ id: call.id, type: 'function', function: { name: 'get_weather', arguments: call.function.arguments } }] },
      { role: 'tool', tool_call_id: call.id, content: '21C' }],
  })).json();
  assert.equal(j.choices[0].message.content, 'echo: tool result: 21C');
  const sent = anth.requests[0].json.messages;
  assert.deepEqual(sent[1], { role: 'assistant', content: [{ type: 'tool_use', id: call.id, name: 'get_weather', input: ARGS }] });
  assert.deepEqual(sent[2], { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: '21C' }] });
});

test('openai client -> anthropic: response_format json_schema is emulated with a forced tool', async () => {
  anth.reset();
  const schema = { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] };
  const j = await (await chat({ model: 'claude-test', response_format: { type: 'json_schema', json_schema: { name: 'answer', schema } }, messages: [{ role: 'user', content: 'CALL answer {"x":42}' }] })).json();
  assert.equal(j.choices[0].message.content, '{"x":42}');
  assert.equal(j.choices[0].finish_reason, 'stop');
  assert.equal(j.choices[0].message.tool_calls, undefined);
  const up = anth.requests[0].json;
  assert.equal(up.tools[0].name, 'answer');
  assert.deepEqual(up.tools[0].input_schema, schema);
  assert.deepEqual(up.tool_choice, { type: 'tool', name: 'answer' });
});

// ---- Anthropic client -> other models (translation the other way) ----

test('anthropic client -> mock: message, stream, tools', async () => {
  let res = await messages({ model: 'mock', max_tokens: 100, system: 'sys', messages: [{ role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }] });
  assert.equal(res.status, 200);
  let j = await res.json();
  assert.deepEqual(j.content, [{ type: 'text', text: 'echo: look [image]' }]);
  assert.match(j.id, /^msg_/);
  assert.equal(j.type, 'message');
  assert.equal(j.model, 'mock');
  assert.equal(j.stop_reason, 'end_turn');
  assert.equal(j.stop_sequence, null);
  assert.deepEqual(Object.keys(j.usage).sort(), ['cache_creation_input_tokens', 'cache_read_input_tokens', 'input_tokens', 'output_tokens']);
  assert.equal(j.usage.output_tokens, 3);

  res = await messages({ model: 'mock', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'a b c' }] });
  const msg = assemble(anthEvents(await res.text()));
  assert.equal(msg.content[0].text, 'echo: a b c');
  assert.equal(msg.usage.output_tokens, 4);

  res = await messages({ model: 'mock', max_tokens: 100, stream: true, tools: [WEATHER], messages: [{ role: 'user', content: `${CALL_TEXT} CALL get_weather {"city":"Rome"}` }] });
  const m2 = assemble(anthEvents(await res.text()));
  assert.equal(m2.stop_reason, 'tool_use');
  assert.deepEqual(m2.content.map((b) => b.type), ['tool_use', 'tool_use']);
  assert.deepEqual(m2.content[0].input, ARGS);
  assert.deepEqual(m2.content[1].input, { city: 'Rome' });

  res = await messages({ model: 'mock', max_tokens: 2, messages: [{ role: 'user', content: 'one two three' }] });
  j = await res.json();
  assert.equal(j.stop_reason, 'max_tokens');
});

test('anthropic client -> openai upstream: the canonical request goes up, the answer comes back as a message', async () => {
  oa.reset();
  oa.script([{ cachedTokens: 3 }]);
  const res = await messages({
    model: 'gpt-test', max_tokens: 64, system: [{ type: 'text', text: 'Be brief.' }], stop_sequences: ['ZZZ'], top_k: 5, temperature: 0.5,
    metadata: { user_id: 'user-42' }, tools: [WEATHER], tool_choice: { type: 'auto' },
    messages: [{ role: 'user', content: 'what is the weather like' }],
  });
  assert.equal(res.status, 200);
  const j = await res.json();
  assert.equal(j.model, 'gpt-test');
  assert.deepEqual(j.content, [{ type: 'text', text: 'echo: what is the weather like' }]);
  assert.equal(j.stop_reason, 'end_turn');
  const prompt = inTok('Be brief.', 'what is the weather like');
  assert.deepEqual(j.usage, { input_tokens: prompt - 3, cache_creation_input_tokens: 0, cache_read_input_tokens: 3, output_tokens: 6 });
  const up = oa.requests[0];
  assert.equal(up.headers.authorization, `Bearer ${FAKE_KEYS.openai}`);
  assert.deepEqual(up.json, {
    model: 'gpt-4o-mini',
    messages: [{ role: 'system', content: [{ type: 'text', text: 'Be brief.' }] }, { role: 'user', content: 'what is the weather like' }],
    tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: WEATHER.input_schema } }],
    tool_choice: 'auto', max_tokens: 64, stop: ['ZZZ'], temperature: 0.5, user: 'user-42',
  });
});

test('anthropic client -> openai upstream stream: text and tool calls as Anthropic events', async () => {
  oa.reset();
  let res = await messages({ model: 'gpt-test', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'tell me more' }] });
  let msg = assemble(anthEvents(await res.text()));
  assert.equal(msg.content[0].text, 'echo: tell me more');
  assert.equal(msg.stop_reason, 'end_turn');
  assert.equal(msg.usage.input_tokens, inTok('tell me more'), 'usage arrives after the finish upstream; held for message_delta');
  assert.equal(msg.usage.output_tokens, 4);
  assert.equal(oa.requests[0].json.stream, true);
  assert.deepEqual(oa.requests[0].json.stream_options, { include_usage: true });

  res = await messages({ model: 'gpt-test', max_tokens: 64, stream: true, tools: [WEATHER], messages: [{ role: 'user', content: CALL_TEXT }] });
  msg = assemble(anthEvents(await res.text()));
  assert.equal(msg.stop_reason, 'tool_use');
  assert.equal(msg.content.length, 1);
  assert.match(msg.content[0].id, /^call_/);
  assert.deepEqual(msg.content[0].input, ARGS);

  // and the tool-result turn: tool_use -> tool_calls, tool_result -> a tool message
  oa.reset();
  res = await messages({
    model: 'gpt-test', max_tokens: 64, tools: [WEATHER],
    messages: [{ role: 'user', content: CALL_TEXT }, { role: 'assistant', content: [{ type: 'tool_use', id: 'call_x', name: 'get_weather', input: ARGS }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_x', content: [{ type: 'text', text: 'rainy' }] }] }],
  });
  assert.equal((await res.json()).content[0].text, 'echo: tool result: rainy');
  const sent = oa.requests[0].json.messages;
  assert.deepEqual(sent[1], { role: 'assistant', content: null, tool_calls: [{ id: 'call_x', type: 'function', function: { name: 'get_weather', arguments: JSON.stringify(ARGS) } }] });
  assert.deepEqual(sent[2], { role: 'tool', tool_call_id: 'call_x', content: [{ type: 'text', text: 'rainy' }] });
});

// ---- errors ----

test('invalid requests are refused in Anthropic form before any upstream call', async () => {
  anth.reset();
  const cases = [
    [{ max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }, /model: Field required/],
    [{ model: 'claude-test', messages: [{ role: 'user', content: 'x' }] }, /max_tokens: Field required/],
    [{ model: 'claude-test', max_tokens: 0, messages: [{ role: 'user', content: 'x' }] }, /max_tokens/],
    [{ model: 'claude-test', max_tokens: 5, messages: [] }, /at least one message/],
    [{ model: 'claude-test', max_tokens: 5, messages: [{ role: 'user', content: 'x' }, { role: 'system', content: 7 }] }, /messages\.1\.content/],
    [{ model: 'claude-test', max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'video' }] }] }, /messages\.0\.content\.0/],
    [{ model: 'claude-test', max_tokens: 5, tools: [{ name: 'f' }], messages: [{ role: 'user', content: 'x' }] }, /input_schema/],
    [{ model: 'claude-test', max_tokens: 5, tool_choice: { type: 'sometimes' }, messages: [{ role: 'user', content: 'x' }] }, /tool_choice/],
    [{ model: 'claude-test', max_tokens: 5, temperature: 2, messages: [{ role: 'user', content: 'x' }] }, /temperature/],
  ];
  for (const [body, re] of cases) {
    const res = await messages(body);
    assert.equal(res.status, 400, JSON.stringify(body));
    const j = await res.json();
    assert.equal(j.type, 'error');
    assert.equal(j.error.type, 'invalid_request_error');
    assert.match(j.error.message, re);
    assert.equal(j.request_id, res.headers.get('x-request-id'));
  }
  const bad = await messages('{"model": "claude-test", "max_tokens": 5, "messages": [');
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.type, 'invalid_request_error');
  // duplicate keys: agentd would route by the first, Anthropic run the last
  const dup = await messages('{"model":"claude-test","max_tokens":5,"messages":[{"role":"user","content":"x"}],"model":"claude-opus-4-1"}');
  assert.equal(dup.status, 400);
  assert.match((await dup.json()).error.message, /model: the request body names this field more than once/);
  const unknown = await messages({ model: 'no-such-model', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json()).error.type, 'not_found_error');
  // Bearer auth and any anthropic-version are accepted (auth is checked elsewhere)
  const bearer = await d.fetch('/v1/messages', { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer whatever', 'anthropic-version': '2026-10-21' }, body: JSON.stringify({ model: 'mock', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }) });
  assert.equal(bearer.status, 200);
  assert.equal(anth.received(), 0, 'nothing reached the upstream');
});

test('upstream 429 keeps its retry-after, in each client format', async () => {
  anth.reset();
  anth.script([{ status: 429, retryAfter: 7 }, { status: 429, retryAfter: 7 }]);
  let res = await messages({ model: 'claude-test', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '7');
  let j = await res.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'rate_limit_error');
  assert.match(j.error.message, /rate limit/);
  res = await chat({ model: 'claude-test', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '7');
  j = await res.json();
  assert.equal(j.error.type, 'rate_limit_error');
  assert.equal(anth.received(), 2);
});

test('upstream 529 overloaded: 529 for Anthropic clients, 503 for OpenAI clients; another deployment is tried', async () => {
  anth.reset();
  anth.script([{ status: 529 }, { status: 529 }]);
  let res = await messages({ model: 'claude-test', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 529);
  assert.equal((await res.json()).error.type, 'overloaded_error');
  res = await chat({ model: 'claude-test', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 503);
  assert.match((await res.json()).error.message, /Overloaded/);

  anth.reset();
  anth.script([{ status: 529 }]);
  res = await messages({ model: 'claude-failover', max_tokens: 5, messages: [{ role: 'user', content: 'x y' }] });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-agentd-attempts'), '2');
  assert.equal(res.headers.get('x-agentd-deployment'), 'anthropic:claude-3-5-haiku');
  assert.deepEqual(anth.requests.map((r) => r.json.model), ['claude-haiku-4-5', 'claude-3-5-haiku']);
});

test('upstream 401 (the deployment key is wrong) is agentd\'s failure (502); an upstream 400 is relayed', async () => {
  anth.reset();
  let res = await messages({ model: 'claude-badkey', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502, 'a 401 would tell the client its own key is wrong');
  let j = await res.json();
  assert.equal(j.error.type, 'api_error');
  assert.match(j.error.message, /upstream authentication failed at deployment anthropic:/);
  assert.equal(anth.requests[0].headers['x-api-key'], 'sk-ant-wrong');
  res = await chat({ model: 'claude-badkey', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);
  j = await res.json();
  assert.equal(j.error.type, 'server_error');
  assert.equal(j.error.code, 'upstream_authentication_failed');
  // a field agentd lets through but the upstream refuses (unknown parameter): Anthropic's 400 comes back
  res = await messages({ model: 'claude-test', max_tokens: 5, not_a_param: 1, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 400);
  j = await res.json();
  assert.equal(j.error.type, 'invalid_request_error');
  assert.match(j.error.message, /not_a_param/);
});

test('a stream cut by the upstream ends with an error event after what was relayed', async () => {
  anth.reset();
  anth.script([{ truncate: true, chunks: 6 }, { truncate: 'reset', chunks: 6 }]);
  let res = await messages({ model: 'claude-test', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'one two three four five six seven' }] });
  let evs = anthEvents(await res.text());
  assert.equal(evs[0].event, 'message_start');
  assert.ok(evs.some((e) => e.event === 'content_block_delta'));
  assert.ok(!evs.some((e) => e.event === 'message_stop'));
  assert.equal(evs.at(-1).event, 'error');
  assert.equal(evs.at(-1).data.type, 'error');
  assert.equal(evs.at(-1).data.error.type, 'api_error');
  assert.match(evs.at(-1).data.error.message, /ended the stream before its final event/);
  const line = await llmLine(res);
  assert.equal(line.incomplete, true);

  // translation: the OpenAI client gets its error data event and [DONE]
  res = await chat({ model: 'claude-test', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven' }] });
  const oevs = sseEvents(await res.text());
  assert.equal(oevs.at(-1).data, '[DONE]');
  assert.ok(JSON.parse(oevs.at(-2).data).error);
});

test('an error event mid-stream is relayed in Anthropic form', async () => {
  anth.reset();
  anth.script([{ midStreamError: true, chunks: 6 }]);
  const res = await messages({ model: 'claude-test', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'one two three four five six seven' }] });
  const evs = anthEvents(await res.text());
  assert.equal(evs.at(-1).event, 'error');
  assert.equal(evs.at(-1).data.error.type, 'overloaded_error');
  assert.equal(evs.filter((e) => e.event === 'error').length, 1);
});

test('client disconnect mid-stream cancels the upstream transfer', async () => {
  anth.reset();
  anth.script([{ chunks: 40, chunkIntervalMs: 50 }]);
  // Resolves when the fake's response to agentd closes; writableFinished tells whether it ran to its end.
  const upstreamClosed = new Promise((resolve) => {
    anth.server.once('request', (req, res) => res.on('close', () => resolve(res.writableFinished)));
  });
  const body = JSON.stringify({ model: 'claude-test', max_tokens: 500, stream: true, messages: [{ role: 'user', content: 'w '.repeat(60) }] });
  const r = await d.raw(`POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    { until: (s) => s.includes('content_block_delta') });
  assert.match(r.data, /event: message_start/);
  // The raw socket is gone now; agentd must drop its upstream transfer well before the 2 s the stream would take.
  let timer;
  const finished = await Promise.race([upstreamClosed, new Promise((_, rej) => { timer = setTimeout(() => rej(new Error('upstream still open 1.5 s after the client left')), 1500); })]);
  clearTimeout(timer);
  assert.equal(finished, false, 'the upstream response was cut, not completed');
  const line = await d.waitLog((l) => l.msg === 'llm' && l.model === 'claude-test' && l.status === 499);
  assert.equal(line.front, 'anthropic');
});

// ---- today's client shapes (issue 16 item 5) ----

// Every field the Messages API accepts today, in one request.
const TODAY = {
  max_tokens: 64,
  thinking: { type: 'enabled', budget_tokens: 2048 },
  context_management: { edits: [{ type: 'clear_tool_uses_20250919' }] },
  output_config: { effort: 'medium' },
  service_tier: 'auto',
  metadata: { user_id: 'u-9' },
  a_field_from_next_year: { x: 1 },
  system: [{ type: 'text', text: 'You are terse.', cache_control: { type: 'ephemeral' } }],
  messages: [
    { role: 'user', content: [{ type: 'text', text: 'first question', cache_control: { type: 'ephemeral', ttl: '1h' } }] },
    { role: 'assistant', content: [{ type: 'thinking', thinking: 'hmm', signature: 'c2ln' }, { type: 'redacted_thinking', data: 'b3BhcXVl' }, { type: 'text', text: 'first answer' }] },
    { role: 'system', content: 'From now on answer in French.' },
    { role: 'user', content: 'second question' },
  ],
};
const TODAY_DROPPED = 'a_field_from_next_year,cache_control,context_management,messages.content.redacted_thinking,messages.content.thinking,output_config.effort,service_tier,thinking';

test('today\'s shapes, passthrough: every field reaches Anthropic byte for byte, betas and ?beta=true included', async () => {
  anth.reset();
  // (no unknown field here: Anthropic itself refuses those, and the fake does as Anthropic does)
  const { a_field_from_next_year: _, ...known } = TODAY;
  const raw = JSON.stringify({ model: 'claude-test', ...known });
  for (const stream of [false, true]) {
    anth.reset();
    const body = stream ? raw.replace('{"model"', '{"stream":true,"model"') : raw;
    const res = await d.fetch('/v1/messages?beta=true', { method: 'POST', headers: { ...ANTH_HEADERS, 'anthropic-beta': 'context-management-2025-06-27,interleaved-thinking-2025-05-14' }, body });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(res.headers.get('x-agentd-dropped-fields'), null, 'nothing is dropped on pass-through');
    await res.text();
    const up = anth.requests[0];
    assert.equal(up.body, body.replace('"claude-test"', '"claude-haiku-4-5"'), 'kept byte for byte: nothing stripped or invented');
    assert.equal(up.headers['anthropic-beta'], 'context-management-2025-06-27,interleaved-thinking-2025-05-14');
  }
});

test('today\'s shapes, translated to OpenAI: system messages keep their place, the rest is listed as dropped', async () => {
  for (const stream of [false, true]) {
    oa.reset();
    const res = await messages({ model: 'gpt-test', stream, ...TODAY });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(res.headers.get('x-agentd-dropped-fields'), TODAY_DROPPED);
    const text = await res.text();
    const up = oa.requests[0].json;
    assert.deepEqual(up.messages.map((m) => m.role), ['system', 'user', 'assistant', 'system', 'user']);
    assert.equal(up.messages[3].content, 'From now on answer in French.');
    assert.equal(up.messages[2].content, 'first answer', 'thinking blocks are not sent to another provider');
    assert.equal(up.user, 'u-9');
    for (const k of ['thinking', 'context_management', 'output_config', 'service_tier', 'a_field_from_next_year', 'reasoning_effort'])
      assert.equal(up[k], undefined, k);
    assert.ok(!JSON.stringify(up).includes('cache_control'));
    if (stream) {
      const evs = anthEvents(text);
      assert.equal(assemble(evs).content[0].text, 'echo: second question');
    } else {
      assert.equal(JSON.parse(text).content[0].text, 'echo: second question');
    }
  }
});

test('today\'s shapes, translated to Gemini: mid-conversation system text joins systemInstruction', async () => {
  gem.reset();
  const res = await messages({ model: 'gem-test', ...TODAY });
  assert.equal(res.status, 200, await res.clone().text());
  assert.equal(res.headers.get('x-agentd-dropped-fields'), TODAY_DROPPED.replace(',output_config', ',metadata,output_config'), 'Gemini has no end-user id');
  const up = gem.requests[0].json;
  assert.deepEqual(up.systemInstruction.parts.map((p) => p.text), ['You are terse.', 'From now on answer in French.']);
  assert.deepEqual(up.contents.map((c) => c.role), ['user', 'model', 'user']);
});

const SCHEMA = { type: 'object', properties: { city: { type: 'string' }, temp: { type: 'number' } }, required: ['city', 'temp'], additionalProperties: false };

test('output_config.format (structured output) becomes response_format / responseSchema on translated routes', async () => {
  oa.reset();
  let res = await messages({ model: 'gpt-test', max_tokens: 50, output_config: { format: { type: 'json_schema', schema: SCHEMA } }, messages: [{ role: 'user', content: 'weather?' }] });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-agentd-dropped-fields'), null);
  assert.deepEqual(oa.requests[0].json.response_format, { type: 'json_schema', json_schema: { name: 'response', schema: SCHEMA } });
  gem.reset();
  res = await messages({ model: 'gem-test', max_tokens: 50, output_config: { format: { type: 'json_schema', schema: SCHEMA } }, messages: [{ role: 'user', content: 'weather?' }] });
  assert.equal(res.status, 200);
  const gc = gem.requests[0].json.generationConfig;
  assert.equal(gc.responseMimeType, 'application/json');
  assert.deepEqual(Object.keys(gc.responseSchema.properties), ['city', 'temp']);
});

test('message_start reports the input tokens: the mock\'s count, an estimate for translated upstreams', async () => {
  let res = await messages({ model: 'mock', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'count these words please' }] });
  let evs = anthEvents(await res.text());
  const start = evs[0].data.message.usage.input_tokens;
  assert.equal(start, inTok('count these words please'));
  assert.equal(evs.find((e) => e.event === 'message_delta').data.usage.input_tokens, start);
  const body = JSON.stringify({ model: 'gpt-test', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'count these words please' }] });
  res = await messages(body);
  evs = anthEvents(await res.text());
  assert.equal(evs[0].data.message.usage.input_tokens, Math.ceil(body.length / 4), 'estimate: request bytes / 4');
});

test('a message thread on a translated deployment is held by agentd; an unknown one is thread_not_found', async () => {
  // (anthropic_threads.test.mjs covers the held conversation; here: the door's answers)
  oa.reset();
  const created = await messages({ model: 'gpt-test', max_tokens: 20, thread: { type: 'create' }, messages: [{ role: 'user', content: 'hi' }] }, { 'anthropic-beta': 'message-threads-2026-08-12' });
  assert.equal(created.status, 200);
  assert.equal(oa.requests[0].json.thread, undefined, 'the thread field is agentd\'s, not the translated upstream\'s');
  oa.reset();
  const lost = await messages({ model: 'gpt-test', max_tokens: 20, thread: { type: 'continue', previous_message_id: 'msg_01abc' }, messages: [{ role: 'user', content: 'hi' }] }, { 'anthropic-beta': 'message-threads-2026-08-12' });
  assert.equal(lost.status, 404);
  const j = await lost.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'not_found_error');
  assert.equal(j.error.details.error_code, 'thread_not_found');
  assert.equal(oa.requests.length, 0, 'refused before any upstream call');
  anth.reset();
  const res = await messages({ model: 'claude-test', max_tokens: 20, thread: { type: 'create' }, messages: [{ role: 'user', content: 'hi' }] }, { 'anthropic-beta': 'message-threads-2026-08-12' });
  assert.equal(res.status, 200, 'Anthropic holds its own threads');
  assert.deepEqual(anth.requests[0].json.thread, { type: 'create' });
  assert.equal(anth.requests[0].headers['anthropic-beta'], 'message-threads-2026-08-12');
});

test('server tools on a translated route: dropped and listed, a 400 only when tool_choice forces one', async () => {
  oa.reset();
  const tools = [WEATHER, { type: 'web_search_20250305', name: 'web_search', max_uses: 3 }];
  let res = await messages({ model: 'gpt-test', max_tokens: 20, tools, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-agentd-dropped-fields'), 'tools.web_search_20250305');
  assert.deepEqual(oa.requests[0].json.tools.map((t) => t.function.name), ['get_weather']);
  res = await messages({ model: 'gpt-test', max_tokens: 20, tools, tool_choice: { type: 'tool', name: 'web_search' }, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /web_search_20250305/);
});

test('openai client -> anthropic: today\'s chat fields accepted, mapped or listed; audio output is a clear 400', async () => {
  for (const stream of [false, true]) {
    anth.reset();
    const res = await chat({
      model: 'claude-test', stream, max_completion_tokens: 40, reasoning_effort: 'low', store: false, metadata: { k: 'v' },
      prediction: { type: 'content', content: 'x' }, parallel_tool_calls: true, modalities: ['text'], a_new_field: 1,
      messages: [{ role: 'developer', content: 'Be terse.' }, { role: 'user', content: 'hi there' }],
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(res.headers.get('x-agentd-dropped-fields'), 'a_new_field,metadata,modalities,prediction,reasoning_effort,store');
    await res.text();
    const up = anth.requests[0].json;
    assert.equal(up.max_tokens, 40, 'max_completion_tokens is max_tokens');
    assert.equal(up.system, 'Be terse.', 'developer is system');
  }
  anth.reset();
  for (const extra of [{ modalities: ['text', 'audio'] }, { audio: { voice: 'alloy', format: 'wav' } }]) {
    const res = await chat({ model: 'claude-test', ...extra, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(res.status, 400);
    const j = await res.json();
    assert.equal(j.error.type, 'invalid_request_error');
    assert.equal(j.error.param, Object.keys(extra)[0]);
    assert.match(j.error.message, /audio output is not supported/);
  }
  assert.equal(anth.requests.length, 0);
});

test('GET /v1/models/{id}: OpenAI shape, Anthropic shape with anthropic-version, 404 in the same shape', async () => {
  let res = await d.fetch('/v1/models/claude-test');
  assert.equal(res.status, 200);
  assert.deepEqual(Object.keys(await res.json()).sort(), ['created', 'id', 'object', 'owned_by']);
  res = await d.fetch('/models/gpt-test');
  assert.equal((await res.json()).owned_by, 'openai');
  res = await d.fetch('/v1/models/claude-test', { headers: { 'anthropic-version': '2023-06-01' } });
  assert.deepEqual(await res.json(), { type: 'model', id: 'claude-test', display_name: 'claude-test', created_at: '1970-01-01T00:00:00Z' });
  res = await d.fetch('/v1/models/no%2Fsuch');
  assert.equal(res.status, 404);
  let j = await res.json();
  assert.equal(j.error.code, 'model_not_found');
  assert.match(j.error.message, /`no\/such`/, 'the id is percent-decoded');
  res = await d.fetch('/v1/models/nope', { headers: { 'anthropic-version': '2023-06-01' } });
  assert.equal(res.status, 404);
  j = await res.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'not_found_error');
  res = await d.fetch('/v1/models/bad%zz');
  assert.equal(res.status, 404);
});
