// Gateway: the Bedrock provider (Converse / ConverseStream, SigV4 signed by agentd) against the fake Bedrock
// runtime, which verifies every signature the way AWS does (double-encoded canonical URI, session token, region,
// payload hash). Through the official `openai` SDK, raw fetch and the `@anthropic-ai/sdk`; each case asserts what
// agentd sent upstream as well as what the client received. Content and usage follow tests/fakes/README.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS, verifySigV4 } from '../fakes/fake.mjs';

const SESSION = 'FwoGZXIvYXdzEXAMPLEsessionTOKEN';
const CLAUDE = 'anthropic.claude-3-5-haiku-20241022-v1:0';
const ARN = 'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0';
const PRICE = { input: 0.80, output: 4.00, cached: 0.08, write: 1.00 }; // built-in anthropic.claude-3-5-haiku

let d, b, other, client;

before(async () => {
  // the main fake requires the session token agentd is given; `other` knows a different secret for the same key id
  b = await startFake({ provider: 'bedrock', keys: { bedrock: { ...FAKE_KEYS.bedrock, sessionToken: SESSION } } });
  other = await startFake({ provider: 'bedrock', keys: { bedrock: { accessKeyId: FAKE_KEYS.bedrock.accessKeyId, secretAccessKey: 'a-different-secret' } } });
  d = await startAgentd({
    env: {
      AWS_ACCESS_KEY_ID: FAKE_KEYS.bedrock.accessKeyId,
      AWS_SECRET_ACCESS_KEY: FAKE_KEYS.bedrock.secretAccessKey,
      AWS_SESSION_TOKEN: SESSION,
    },
    config: `
gateway:
  first_byte_timeout: 2s
  breaker: { enabled: false }   # the error tests would open claude-br's breaker for the tests after them
models:
  - name: claude-br
    provider: bedrock
    model: ${CLAUDE}
    base_url: ${b.url}
    region: us-east-1
    retries: { max_attempts: 1 }   # these tests see the upstream's own errors (retries: resilience*.test.mjs)
  - name: nova-arn
    provider: bedrock
    model: "${ARN}"
    base_url: ${b.url}
    region: us-east-1
  - name: wrong-region
    provider: bedrock
    model: ${CLAUDE}
    base_url: ${b.url}
    region: eu-west-3
  - name: wrong-secret
    provider: bedrock
    model: ${CLAUDE}
    base_url: ${other.url}
    region: us-east-1
  - name: br-embed
    embeddings: true
    provider: bedrock
    model: amazon.titan-embed-text-v2:0
    base_url: ${b.url}
  - name: br-failover
    deployments:
      - provider: bedrock
        model: ${CLAUDE}
        base_url: ${b.url}
        region: us-east-1
        weight: 1000000
      - provider: bedrock
        model: amazon.nova-lite-v1:0
        base_url: ${b.url}
        region: us-east-1
        weight: 0
`,
  });
  client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client', maxRetries: 0 });
});

after(async () => {
  const r = await d.stop();
  await Promise.all([b.close(), other.close()]);
  assert.equal(r.code, 0, `agentd exit ${JSON.stringify(r)}\n${d.rawStderr.slice(-4000)}`);
});

const post = (body, path = '/v1/chat/completions') =>
  d.fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

function sseData(text) {
  return text.split('\n\n').filter((x) => x.startsWith('data: ')).map((x) => x.slice(6));
}

const tokens = (chars) => Math.max(1, Math.ceil(chars / 4));

const WEATHER = {
  type: 'function',
  function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false } },
};

test('plain completion: model id with ":" path-encoded, SigV4 with session token, translated request and usage', async () => {
  b.reset();
  const system = 'You are terse.';
  const user = 'hello brave new world';
  const { data: r, response } = await client.chat.completions.create({
    model: 'claude-br', max_tokens: 40, temperature: 0.5, top_p: 0.9, stop: ['zzz'],
    messages: [{ role: 'system', content: system }, { role: 'user', content: user }],
  }).withResponse();
  assert.equal(r.choices[0].message.content, `echo: ${user}`);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.model, 'claude-br');
  const input = tokens(system.length + user.length);
  assert.equal(r.usage.prompt_tokens, input);
  assert.equal(r.usage.completion_tokens, 5);
  assert.equal(response.headers.get('x-agentd-deployment'), `bedrock:${CLAUDE}`);
  assert.equal(response.headers.get('x-agentd-input-tokens'), String(input));
  assert.equal(response.headers.get('x-agentd-output-tokens'), '5');
  assert.ok(Math.abs(Number(response.headers.get('x-agentd-cost-usd')) - (input * PRICE.input + 5 * PRICE.output) / 1e6) < 1e-9);

  const sent = b.requests[0];
  assert.equal(sent.path, '/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse');
  assert.match(sent.headers.authorization, /^AWS4-HMAC-SHA256 Credential=AKIAFAKEEXAMPLE00000\/\d{8}\/us-east-1\/bedrock\/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature=[0-9a-f]{64}$/);
  assert.equal(sent.headers['x-amz-security-token'], SESSION);
  assert.match(sent.headers['x-amz-date'], /^\d{8}T\d{6}Z$/);
  // a second, independent check of the signature on the bytes the fake received
  const pairs = [];
  for (let i = 0; i < sent.rawHeaders.length; i += 2) pairs.push([sent.rawHeaders[i], sent.rawHeaders[i + 1]]);
  const v = verifySigV4({ method: 'POST', rawPath: sent.path, rawQuery: '', headerPairs: pairs, body: sent.rawBody, credentials: [{ ...FAKE_KEYS.bedrock, sessionToken: SESSION }], service: 'bedrock', region: 'us-east-1' });
  assert.equal(v.ok, true, JSON.stringify(v));
  assert.deepEqual(sent.json, {
    messages: [{ role: 'user', content: [{ text: user }] }],
    system: [{ text: system }],
    inferenceConfig: { maxTokens: 40, temperature: 0.5, topP: 0.9, stopSequences: ['zzz'] },
  });
  assert.ok(response.headers.get('x-request-id'));
});

test('inference-profile ARNs: ":" and "/" encoded in the path, the signature still verifies', async () => {
  b.reset();
  const r = await client.chat.completions.create({ model: 'nova-arn', messages: [{ role: 'user', content: 'arn please' }] });
  assert.equal(r.choices[0].message.content, 'echo: arn please');
  assert.equal(b.requests[0].path, '/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.amazon.nova-pro-v1%3A0/converse');
});

test('conversation shape: opening assistant turn gets a user turn before it, same-role turns merge', async () => {
  b.reset();
  const r = await client.chat.completions.create({
    model: 'claude-br',
    messages: [{ role: 'system', content: 'sys' }, { role: 'assistant', content: 'Hi! How can I help?' },
      { role: 'user', content: 'first' }, { role: 'user', content: 'second' }],
  });
  assert.equal(r.choices[0].message.content, 'echo: first second');
  assert.deepEqual(b.requests[0].json.messages, [
    { role: 'user', content: [{ text: '.' }] },
    { role: 'assistant', content: [{ text: 'Hi! How can I help?' }] },
    { role: 'user', content: [{ text: 'first' }, { text: 'second' }] },
  ]);
});

test('streaming: binary event stream decoded, deltas, include_usage', async () => {
  b.reset();
  const stream = await client.chat.completions.create({
    model: 'claude-br', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream me five words please' }],
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    if (c.choices[0]?.delta?.content) text += c.choices[0].delta.content;
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(text, 'echo: stream me five words please');
  assert.equal(finish, 'stop');
  assert.ok(chunks >= 4);
  assert.equal(usage.prompt_tokens, tokens('stream me five words please'.length));
  assert.equal(usage.completion_tokens, 6);
  assert.equal(b.requests[0].path, '/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream');
  assert.equal(b.requests[0].headers.accept, 'application/vnd.amazon.eventstream');
});

test('tools: toolSpec out, parallel toolUse back, toolResults merged into one user turn (ids verified upstream)', async () => {
  b.reset();
  const messages = [{ role: 'user', content: 'CALL get_weather {"city":"Paris"} CALL get_weather {"city":"Rome"}' }];
  const r1 = await client.chat.completions.create({ model: 'claude-br', messages, tools: [WEATHER], tool_choice: 'required' });
  const msg = r1.choices[0].message;
  assert.equal(r1.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 2);
  assert.ok(msg.tool_calls.every((t) => /^tooluse_/.test(t.id)));
  assert.deepEqual(msg.tool_calls.map((t) => JSON.parse(t.function.arguments)), [{ city: 'Paris' }, { city: 'Rome' }]);
  assert.deepEqual(b.requests[0].json.toolConfig, {
    tools: [{ toolSpec: { name: 'get_weather', description: 'Weather for a city', inputSchema: { json: WEATHER.function.parameters } } }],
    toolChoice: { any: {} },
  });
  messages.push(msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: 'sunny' },
    { role: 'tool', tool_call_id: msg.tool_calls[1].id, content: 'rainy' });
  // the fake refuses toolResults whose ids do not answer the previous turn's toolUse blocks
  const r2 = await client.chat.completions.create({ model: 'claude-br', messages, tools: [WEATHER] });
  assert.equal(r2.choices[0].message.content, 'echo: tool result: sunny rainy');
  const sent = b.requests[1].json.messages;
  assert.equal(sent.length, 3);
  assert.deepEqual(sent[2], {
    role: 'user',
    content: [{ toolResult: { toolUseId: msg.tool_calls[0].id, content: [{ text: 'sunny' }] } },
      { toolResult: { toolUseId: msg.tool_calls[1].id, content: [{ text: 'rainy' }] } }],
  });
  assert.deepEqual(sent[1].content[0], { toolUse: { toolUseId: msg.tool_calls[0].id, name: 'get_weather', input: { city: 'Paris' } } });
  // without tools in the follow-up, the history's tool blocks still get the toolConfig Bedrock requires
  const r3 = await client.chat.completions.create({ model: 'claude-br', messages });
  assert.equal(r3.choices[0].message.content, 'echo: tool result: sunny rainy');
  assert.equal(b.requests[2].json.toolConfig.tools[0].toolSpec.name, 'get_weather');
});

test('tools, streamed: contentBlockStart and toolUse input fragments become tool-call deltas', async () => {
  b.reset();
  const stream = await client.chat.completions.create({
    model: 'claude-br', stream: true, tools: [WEATHER],
    messages: [{ role: 'user', content: 'CALL get_weather {"city":"Oslo","days":3}' }],
  });
  const calls = [];
  let finish = null;
  let argChunks = 0;
  for await (const c of stream) {
    for (const tc of c.choices[0]?.delta?.tool_calls || []) {
      if (tc.id) calls[tc.index] = { id: tc.id, name: tc.function.name, args: '' };
      if (tc.function?.arguments) { calls[tc.index].args += tc.function.arguments; argChunks++; }
    }
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.match(calls[0].id, /^tooluse_/);
  assert.deepEqual(JSON.parse(calls[0].args), { city: 'Oslo', days: 3 });
  assert.ok(argChunks > 1, 'arguments arrive in fragments');
});

test('usage: cache reads and writes are part of the prompt; cost prices each part', async () => {
  b.reset();
  b.script([{ cachedTokens: 3, cacheWriteTokens: 2 }]);
  const user = 'a prompt long enough to cache some of it';
  const { data: r, response } = await client.chat.completions.create({ model: 'claude-br', messages: [{ role: 'user', content: user }] }).withResponse();
  const input = tokens(user.length);
  const output = 1 + user.split(' ').length;
  assert.equal(r.usage.prompt_tokens, input, 'prompt_tokens counts cached and written tokens');
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 3);
  assert.equal(r.usage.completion_tokens, output);
  const cost = ((input - 5) * PRICE.input + 3 * PRICE.cached + 2 * PRICE.write + output * PRICE.output) / 1e6;
  assert.ok(Math.abs(Number(response.headers.get('x-agentd-cost-usd')) - cost) < 1e-9, `${response.headers.get('x-agentd-cost-usd')} vs ${cost}`);
});

test('errors from x-amzn-ErrorType keep status, type and retryability', async () => {
  const cases = [
    [{ status: 400 }, 400, 'invalid_request_error', 'ValidationException'],
    // AWS refusing agentd's credentials is agentd's failure, not the client's (issue 15)
    [{ status: 403 }, 502, 'server_error', 'upstream_authentication_failed'],
    [{ status: 404 }, 404, 'invalid_request_error', 'ResourceNotFoundException'],
    [{ status: 408 }, 408, 'timeout_error', 'ModelTimeoutException'],
    [{ status: 429 }, 429, 'rate_limit_error', 'ThrottlingException'],
    [{ status: 429, errorType: 'ModelNotReadyException', message: 'warming up' }, 429, 'rate_limit_error', 'ModelNotReadyException'],
    [{ status: 500 }, 500, 'server_error', 'InternalServerException'],
    [{ status: 503 }, 503, 'server_error', 'ServiceUnavailableException'],
  ];
  for (const [behavior, status, type, code] of cases) {
    b.reset();
    b.script([behavior]);
    const res = await post({ model: 'claude-br', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(res.status, status, JSON.stringify(behavior));
    const j = await res.json();
    assert.equal(j.error.type, type);
    assert.equal(j.error.code, code);
    if (behavior.message) assert.equal(j.error.message, behavior.message);
    assert.equal(b.received(), 1);
  }
  b.reset();
  b.script([{ malformed: true }]);
  const res = await post({ model: 'claude-br', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);
});

test('failover: throttled on the first deployment, the second answers', async () => {
  b.reset();
  b.script([{ status: 429 }]);
  const res = await post({ model: 'br-failover', messages: [{ role: 'user', content: 'still here' }] });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-agentd-attempts'), '2');
  assert.equal(res.headers.get('x-agentd-deployment'), 'bedrock:amazon.nova-lite-v1:0');
  assert.deepEqual(b.requests.map((r) => r.path), ['/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse', '/model/amazon.nova-lite-v1%3A0/converse']);
});

test('a wrong secret or region: a clear 502 naming the deployment and what to check', async () => {
  other.reset();
  let res = await post({ model: 'wrong-secret', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);
  let j = await res.json();
  assert.equal(j.error.type, 'server_error');
  assert.equal(j.error.code, 'upstream_authentication_failed');
  assert.match(j.error.message, /upstream authentication failed at deployment bedrock:.*InvalidSignatureException/);
  assert.match(j.error.message, /AWS_SECRET_ACCESS_KEY/);
  assert.doesNotMatch(j.error.message, /Canonical String/, 'the canonical-request dump stays out of client errors');
  assert.equal(other.received(), 1);
  b.reset();
  res = await post({ model: 'wrong-region', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);
  j = await res.json();
  assert.match(j.error.message, /InvalidSignatureException/);
  assert.match(j.error.message, /region/);
  // the openai SDK's view: a server error, not a permission error about the client's own key
  await assert.rejects(client.chat.completions.create({ model: 'wrong-secret', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.InternalServerError && e.status === 502);
});

test('streams that break: exceptions in the stream, a cut before messageStop, a frame with a bad CRC', async () => {
  const body = { model: 'claude-br', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven eight' }] };
  for (const [behavior, pattern, code] of [
    [{ midStreamError: true, chunks: 6 }, /modelStreamErrorException: The model stream encountered an error/, 'modelStreamErrorException'],
    [{ midStreamError: { type: 'throttlingException' }, chunks: 6 }, /throttlingException: Too many requests/, 'throttlingException'],
    [{ truncate: true, chunks: 6 }, /ended the stream before its final event/, null],
    [{ truncate: 'reset', chunks: 6 }, /upstream/, null],
    [{ malformed: true, chunks: 6 }, /framing is invalid/, null],
  ]) {
    b.reset();
    b.script([behavior]);
    const res = await post(body);
    assert.equal(res.status, 200);
    const data = sseData(await res.text());
    assert.equal(data.at(-1), '[DONE]');
    const last = JSON.parse(data.at(-2));
    assert.ok(last.error, `an error event ends the stream for ${JSON.stringify(behavior)}: ${data.at(-2)}`);
    assert.match(last.error.message, pattern);
    if (code) assert.equal(last.error.code, code);
    const text = data.slice(0, -2).map((x) => JSON.parse(x).choices?.[0]?.delta?.content || '').join('');
    assert.ok(text.startsWith('echo:'), `what arrived before the break was relayed: ${text}`);
    const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
    assert.equal(line.incomplete, true);
  }
});

test('a stream without the metadata event completes at messageStop (usage not reported)', async () => {
  b.reset();
  b.script([{ usage: false }]);
  const res = await post({ model: 'claude-br', stream: true, messages: [{ role: 'user', content: 'no usage here' }] });
  const data = sseData(await res.text());
  assert.equal(data.at(-1), '[DONE]');
  const chunks = data.slice(0, -1).map((x) => JSON.parse(x));
  assert.ok(chunks.every((c) => !c.error));
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content || '').join(''), 'echo: no usage here');
  const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
  assert.equal(line.status, 200);
  assert.equal(line.usage_reported, false);
  assert.equal(line.incomplete, undefined);
});

test('requests Bedrock cannot express are refused before any upstream call', async () => {
  b.reset();
  let res = await post({ model: 'br-embed', input: 'x' }, '/v1/embeddings');
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /model does not support embeddings/);
  res = await post({ model: 'claude-br', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }] });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /does not fetch http URLs/);
  res = await post({ model: 'claude-br', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: { name: 'n', schema: { type: 'object' } } } });
  assert.equal(res.status, 400);
  assert.equal(b.received(), 0);
});

test('images: data URLs become image blocks with bytes', async () => {
  b.reset();
  const jpeg = '/9j/4AAQSkZJRgABAQ==';
  const r = await client.chat.completions.create({
    model: 'claude-br',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: `data:image/jpeg;base64,${jpeg}` } }] }],
  });
  assert.equal(r.choices[0].message.content, 'echo: look [image]');
  assert.deepEqual(b.requests[0].json.messages[0].content[1], { image: { format: 'jpeg', source: { bytes: jpeg } } });
});

test('Anthropic clients reach Bedrock through /v1/messages, tools included', async () => {
  b.reset();
  const anth = new Anthropic({ baseURL: d.url, apiKey: 'sk-client', maxRetries: 0 });
  const m = await anth.messages.create({ model: 'claude-br', max_tokens: 64, system: 'Be brief.', messages: [{ role: 'user', content: 'hello from anthropic' }] });
  assert.deepEqual(m.content, [{ type: 'text', text: 'echo: hello from anthropic' }]);
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.usage.input_tokens, tokens('Be brief.'.length + 'hello from anthropic'.length));
  assert.deepEqual(b.requests[0].json.system, [{ text: 'Be brief.' }]);
  assert.equal(b.requests[0].json.inferenceConfig.maxTokens, 64);

  const tools = [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }];
  const stream = anth.messages.stream({ model: 'claude-br', max_tokens: 64, tools, messages: [{ role: 'user', content: 'CALL get_weather {"city":"Lima"}' }] });
  const final = await stream.finalMessage();
  assert.equal(final.stop_reason, 'tool_use');
  const use = final.content.find((x) => x.type === 'tool_use');
  assert.deepEqual(use.input, { city: 'Lima' });
  assert.match(use.id, /^tooluse_/);
  const m2 = await anth.messages.create({
    model: 'claude-br', max_tokens: 64, tools,
    messages: [{ role: 'user', content: 'CALL get_weather {"city":"Lima"}' }, { role: 'assistant', content: final.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'warm' }] }],
  });
  assert.deepEqual(m2.content, [{ type: 'text', text: 'echo: tool result: warm' }]);
});
