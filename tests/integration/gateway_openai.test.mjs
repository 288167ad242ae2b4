// Gateway: OpenAI front door over the mock model and the OpenAI-family providers (OpenAI, Azure, compatible),
// against fake upstreams that speak the real wire formats. What agentd sends upstream is asserted as well as
// what the client receives.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startAgentd, parseResponses } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let d, oa, az, compat, slow;
const slowState = { closed: 0, requests: 0 };

before(async () => {
  oa = await startFake({ provider: 'openai' });
  az = await startFake({ provider: 'azure', azureDeployments: { 'my-4o': 'gpt-4o-mini' } });
  compat = await startFake({ provider: 'openai-compatible', compatFlavor: 'vllm' });
  // A raw upstream that streams slowly and reports when agentd closes the connection.
  slow = http.createServer((req, res) => {
    slowState.requests++;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    let i = 0;
    const t = setInterval(() => {
      res.write(`data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"t${i++} "},"finish_reason":null}]}\n\n`);
    }, 20);
    res.on('close', () => { clearInterval(t); slowState.closed++; });
  });
  await new Promise((r) => slow.listen(0, '127.0.0.1', r));
  d = await startAgentd({
    env: { FAKE_OPENAI_KEY: FAKE_KEYS.openai, FAKE_AZURE_KEY: FAKE_KEYS.azure },
    config: `
server:
  workers: 2
gateway:
  first_byte_timeout: 1500ms
models:
  - name: gpt-test
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
    retries: { max_attempts: 1 }   # these tests see the upstream's own errors (retries: resilience*.test.mjs)
  - name: embed-test
    embeddings: true
    provider: openai
    model: text-embedding-3-small
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: azure-test
    provider: azure-openai
    model: my-4o
    base_url: ${az.url}
    api_key_env: FAKE_AZURE_KEY
    api_version: "2024-10-21"
  - name: vllm-test
    provider: openai-compatible
    model: meta-llama/Llama-3.1-8B-Instruct
    base_url: ${compat.urls['openai-compatible']}
  - name: failover
    deployments:
      - provider: openai
        model: gpt-4o-mini
        base_url: http://127.0.0.1:1/v1
        api_key_env: FAKE_OPENAI_KEY
        weight: 1000000
      - provider: openai
        model: gpt-4o-mini
        base_url: ${oa.urls.openai}
        api_key_env: FAKE_OPENAI_KEY
        weight: 0
  - name: slow-stream
    provider: openai-compatible
    model: m
    base_url: http://127.0.0.1:${slow.address().port}/v1
  - name: no-key
    provider: openai
    model: gpt-4o
    api_key_env: AGENTD_TEST_UNSET_KEY
prices:
  gpt-4o-mini: {input: 1.0, output: 2.0}
`,
  });
});

after(async () => {
  const r = await d.stop();
  await Promise.all([oa.close(), az.close(), compat.close()]);
  slow.close();
  assert.equal(r.code, 0, d.rawStderr.slice(-4000));
});

const post = (path, body, headers = {}) =>
  d.fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

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

test('models list: configured models plus the mock', async () => {
  const res = await d.fetch('/v1/models');
  const j = await res.json();
  assert.equal(j.object, 'list');
  const ids = j.data.map((m) => m.id);
  for (const id of ['gpt-test', 'azure-test', 'vllm-test', 'failover', 'mock', 'mock-embedding']) assert.ok(ids.includes(id), id);
});

test('mock: plain completion, deterministic text and usage', async () => {
  const res = await post('/v1/chat/completions', { model: 'mock', messages: [{ role: 'system', content: 'be terse' }, { role: 'user', content: 'hello brave world' }] });
  assert.equal(res.status, 200);
  const j = await res.json();
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.choices[0].message.content, 'echo: hello brave world');
  assert.equal(j.choices[0].finish_reason, 'stop');
  // input = ceil((8 + 17) / 4) = 7 bytes rule; output = 4 words
  assert.deepEqual([j.usage.prompt_tokens, j.usage.completion_tokens, j.usage.total_tokens], [7, 4, 11]);
  assert.equal(res.headers.get('x-agentd-deployment'), 'mock:mock');
  assert.equal(res.headers.get('x-agentd-input-tokens'), '7');
  assert.match(res.headers.get('x-agentd-overhead-us'), /^\d+$/);
  assert.match(res.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
});

test('mock: streaming with and without include_usage', async () => {
  let res = await post('/v1/chat/completions', { model: 'mock', stream: true, messages: [{ role: 'user', content: 'one two three' }] });
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  let evs = sseEvents(await res.text());
  assert.equal(evs.at(-1).data, '[DONE]');
  const chunks = evs.slice(0, -1).map((e) => JSON.parse(e.data));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content || '').join(''), 'echo: one two three');
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  assert.ok(chunks.every((c) => c.usage === undefined), 'no usage chunk unless asked');
  res = await post('/v1/chat/completions', { model: 'mock', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'one two three' }] });
  evs = sseEvents(await res.text());
  const last = JSON.parse(evs.at(-2).data);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 4);
});

test('mock: tool calls, plain and streamed, and the tool-result turn', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const messages = [{ role: 'user', content: 'CALL get_weather {"city":"Paris"}' }];
  let j = await (await post('/v1/chat/completions', { model: 'mock', messages, tools })).json();
  const tc = j.choices[0].message.tool_calls[0];
  assert.equal(j.choices[0].finish_reason, 'tool_calls');
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { city: 'Paris' });
  const res = await post('/v1/chat/completions', { model: 'mock', stream: true, messages, tools });
  const chunks = sseEvents(await res.text()).slice(0, -1).map((e) => JSON.parse(e.data));
  const args = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls || []).map((t) => t.function.arguments || '').join('');
  assert.deepEqual(JSON.parse(args), { city: 'Paris' });
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'tool_calls');
  j = await (await post('/v1/chat/completions', {
    model: 'mock', tools,
    messages: [...messages, { role: 'assistant', content: null, tool_calls: [tc] }, { role: 'tool', tool_call_id: tc.id, content: 'sunny' }],
  })).json();
  assert.equal(j.choices[0].message.content, 'echo: tool result: sunny');
});

test('mock: max_tokens, stop, error directive with retry hint', async () => {
  let j = await (await post('/v1/chat/completions', { model: 'mock', max_tokens: 2, messages: [{ role: 'user', content: 'a b c d' }] })).json();
  assert.equal(j.choices[0].message.content, 'echo: a');
  assert.equal(j.choices[0].finish_reason, 'length');
  j = await (await post('/v1/chat/completions', { model: 'mock', stop: ['d'], messages: [{ role: 'user', content: 'a b c d' }] })).json();
  assert.equal(j.choices[0].message.content, 'echo: a b c ');
  const res = await post('/v1/chat/completions', { model: 'mock', messages: [{ role: 'user', content: 'mock:error=429' }] });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '1');
  assert.equal((await res.json()).error.type, 'rate_limit_error');
});

test('invalid requests are refused before any upstream call, in OpenAI format', async () => {
  oa.reset();
  const cases = [
    [{ messages: [{ role: 'user', content: 'x' }] }, 'model'],
    [{ model: 'gpt-test' }, 'messages'],
    [{ model: 'gpt-test', messages: [] }, 'messages'],
    [{ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }], temperature: 7 }, 'temperature'],
    [{ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }], stream_options: { include_usage: true } }, 'stream_options'],
    [{ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }], max_tokens: 0 }, 'max_tokens'],
  ];
  for (const [body, param] of cases) {
    const res = await post('/v1/chat/completions', body);
    assert.equal(res.status, 400, JSON.stringify(body));
    const j = await res.json();
    assert.equal(j.error.type, 'invalid_request_error');
    assert.equal(j.error.param, param);
  }
  const dup = await d.fetch('/v1/chat/completions', { method: 'POST', body: '{"model":"mock","messages":[{"role":"user","content":"x"}],"model":"gpt-test"}' });
  assert.equal(dup.status, 400, 'a duplicated model member is refused (parsers disagree on which copy wins)');
  assert.match((await dup.json()).error.message, /duplicate member/);
  const bad = await d.fetch('/v1/chat/completions', { method: 'POST', body: '{"model": "gpt-test", "messages": [' });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error.message, /could not parse the JSON body/);
  const unknown = await post('/v1/chat/completions', { model: 'nope', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json()).error.code, 'model_not_found');
  const nokey = await post('/v1/chat/completions', { model: 'no-key', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(nokey.status, 503);
  assert.match((await nokey.json()).error.message, /AGENTD_TEST_UNSET_KEY/);
  assert.equal(oa.received(), 0, 'no upstream call for invalid requests');
});

test('openai passthrough: body spliced, usage read, cost computed', async () => {
  oa.reset();
  const res = await post('/v1/chat/completions', { model: 'gpt-test', messages: [{ role: 'user', content: 'hello world' }], temperature: 0.5, user: 'u1' });
  assert.equal(res.status, 200);
  const j = await res.json();
  assert.equal(j.choices[0].message.content, 'echo: hello world');
  const sent = oa.requests[0];
  assert.equal(sent.path, '/v1/chat/completions');
  assert.equal(sent.headers.authorization, `Bearer ${FAKE_KEYS.openai}`);
  assert.deepEqual(sent.json, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello world' }], temperature: 0.5, user: 'u1' });
  assert.equal(res.headers.get('x-agentd-deployment'), 'openai:gpt-4o-mini');
  // prices: input 1.0 and output 2.0 per million: 3 input tokens (11 chars) + 3 output tokens
  assert.equal(res.headers.get('x-agentd-input-tokens'), '3');
  assert.equal(res.headers.get('x-agentd-output-tokens'), '3');
  assert.equal(Number(res.headers.get('x-agentd-cost-usd')), (3 * 1.0 + 3 * 2.0) / 1e6);
});

test('openai passthrough stream: include_usage forced upstream, usage chunk dropped for the client', async () => {
  oa.reset();
  let res = await post('/v1/chat/completions', { model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'a b c' }] });
  let evs = sseEvents(await res.text());
  assert.deepEqual(oa.requests[0].json.stream_options, { include_usage: true });
  assert.equal(evs.at(-1).data, '[DONE]');
  const chunks = evs.slice(0, -1).map((e) => JSON.parse(e.data));
  assert.ok(chunks.every((c) => !c.usage), 'the forced usage chunk is not shown to a client that did not ask');
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content || '').join(''), 'echo: a b c');
  const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
  assert.equal(line.output_tokens, 4);
  assert.equal(line.usage_reported, true);
  // A client that asks gets it.
  res = await post('/v1/chat/completions', { model: 'gpt-test', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'a b c' }] });
  evs = sseEvents(await res.text());
  assert.equal(JSON.parse(evs.at(-2).data).usage.completion_tokens, 4);
});

test('upstream errors keep their status and retry hints', async () => {
  oa.reset();
  oa.script([{ status: 429, retryAfter: 7 }]);
  let res = await post('/v1/chat/completions', { model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 429);
  assert.equal(res.headers.get('retry-after'), '7');
  let j = await res.json();
  assert.equal(j.error.type, 'rate_limit_error');
  assert.equal(j.error.code, 'rate_limit_exceeded');
  oa.script([{ status: 400, message: 'bad thing' }]);
  res = await post('/v1/chat/completions', { model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 400);
  j = await res.json();
  assert.equal(j.error.message, 'bad thing');
  oa.script([{ malformed: true }]);
  res = await post('/v1/chat/completions', { model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 502);
  oa.script([{ hang: true }]);
  res = await post('/v1/chat/completions', { model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 504);
  assert.equal((await res.json()).error.type, 'timeout_error');
});

test('failover: a failing deployment falls through to the next one', async () => {
  oa.reset();
  const res = await post('/v1/chat/completions', { model: 'failover', messages: [{ role: 'user', content: 'still here' }] });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-agentd-attempts'), '2');
  assert.equal((await res.json()).choices[0].message.content, 'echo: still here');
  assert.equal(oa.received(), 1);
});

test('a stream cut by the upstream ends with an error event after what was relayed', async () => {
  oa.reset();
  oa.script([{ truncate: true, chunks: 6 }]);
  const res = await post('/v1/chat/completions', { model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven' }] });
  const evs = sseEvents(await res.text());
  assert.equal(evs.at(-1).data, '[DONE]');
  const err = JSON.parse(evs.at(-2).data);
  assert.match(err.error.message, /ended the stream before its final event/);
  const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
  assert.equal(line.incomplete, true);
});

test('passthrough stream: an error object mid-stream ends it with the error event; content is relayed unscanned', async () => {
  oa.reset();
  oa.script([{ midStreamError: true, chunks: 6 }]);
  const res = await post('/v1/chat/completions', { model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven' }] });
  assert.equal(res.status, 200);
  const evs = sseEvents(await res.text());
  assert.ok(evs.some((e) => e.data !== '[DONE]' && JSON.parse(e.data).choices?.[0]?.delta?.content), 'content before the error');
  assert.equal(evs.at(-1).data, '[DONE]');
  const err = JSON.parse(evs.at(-2).data);
  assert.ok(err.error && err.error.message, 'the last event before [DONE] is the error');
  const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
  assert.ok(line.status >= 500, `status ${line.status}`);
  // usage still counted when it arrives as an object after content chunks that carry "usage":null
  oa.reset();
  const ok = await post('/v1/chat/completions', { model: 'gpt-test', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'count me' }] });
  const okEvs = sseEvents(await ok.text());
  const usage = okEvs.filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data)).find((c) => c.usage);
  assert.ok(usage && usage.usage.completion_tokens > 0);
  const okLine = await d.waitLog((l) => l.msg === 'llm' && l.request_id === ok.headers.get('x-request-id'));
  assert.equal(okLine.output_tokens, usage.usage.completion_tokens);
  assert.equal(okLine.input_tokens, usage.usage.prompt_tokens);
});

test('client disconnect mid-stream cancels the upstream transfer at once', async () => {
  const before = slowState.closed;
  const r = await d.raw(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n${JSON.stringify({ model: 'slow-stream', stream: true, messages: [{ role: 'user', content: 'x' }] }).padEnd(80)}`,
    { until: (s) => s.includes('t1 ') });
  assert.match(r.data, /t0 /);
  // The raw socket is destroyed by now; agentd must close its upstream connection promptly.
  const t0 = Date.now();
  while (slowState.closed === before) {
    if (Date.now() - t0 > 3000) assert.fail('upstream connection still open 3 s after the client left');
    await new Promise((res) => setTimeout(res, 10));
  }
  const line = await d.waitLog((l) => l.msg === 'llm' && l.model === 'slow-stream' && l.status === 499);
  assert.equal(line.status, 499);
});

test('azure: deployment URL, api-key header, api-version; content filter chunk tolerated', async () => {
  az.reset();
  let res = await post('/v1/chat/completions', { model: 'azure-test', messages: [{ role: 'user', content: 'hi azure' }] });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).choices[0].message.content, 'echo: hi azure');
  const sent = az.requests[0];
  assert.equal(sent.path, '/openai/deployments/my-4o/chat/completions');
  assert.equal(sent.query['api-version'], '2024-10-21');
  assert.equal(sent.headers['api-key'], FAKE_KEYS.azure);
  res = await post('/v1/chat/completions', { model: 'azure-test', stream: true, messages: [{ role: 'user', content: 'x y' }] });
  const evs = sseEvents(await res.text());
  assert.equal(evs.at(-1).data, '[DONE]');
  const text = evs.slice(0, -1).map((e) => JSON.parse(e.data)).map((c) => c.choices[0]?.delta?.content || '').join('');
  assert.equal(text, 'echo: x y');
});

test('openai-compatible server (vLLM flavour): no key, usage, errors', async () => {
  compat.reset();
  const res = await post('/v1/chat/completions', { model: 'vllm-test', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).choices[0].message.content, 'echo: hi');
  assert.equal(compat.requests[0].headers.authorization, undefined);
  assert.equal(compat.requests[0].json.model, 'meta-llama/Llama-3.1-8B-Instruct');
  compat.script([{ status: 400, message: 'context too long' }]);
  const bad = await post('/v1/chat/completions', { model: 'vllm-test', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error.message, /context too long/);
});

test('embeddings: passthrough to OpenAI and the mock embedding model', async () => {
  oa.reset();
  let res = await post('/v1/embeddings', { model: 'embed-test', input: ['a', 'bb'], dimensions: 8 });
  assert.equal(res.status, 200);
  let j = await res.json();
  assert.equal(j.data.length, 2);
  assert.equal(j.data[0].embedding.length, 8);
  assert.equal(oa.requests[0].json.model, 'text-embedding-3-small');
  res = await post('/v1/embeddings', { model: 'mock-embedding', input: 'hello', dimensions: 4 });
  j = await res.json();
  assert.equal(j.data[0].embedding.length, 4);
  const norm = Math.sqrt(j.data[0].embedding.reduce((s, x) => s + x * x, 0));
  assert.ok(Math.abs(norm - 1) < 1e-5);
  res = await post('/v1/embeddings', { model: 'mock', input: 'x' });
  assert.equal(res.status, 400, 'a chat model is not an embeddings model');
  res = await post('/v1/chat/completions', { model: 'mock-embedding', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(res.status, 400);
});

test('pipelined gateway requests on one connection answer in order', async () => {
  const body = (t) => JSON.stringify({ model: 'mock', messages: [{ role: 'user', content: t }] });
  const req = (t) => `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${body(t).length}\r\n\r\n${body(t)}`;
  const r = await d.raw(req('first') + req('second') + req('third'), { until: (s) => parseResponses(s).length === 3 });
  const rs = parseResponses(r.data).map((x) => JSON.parse(x.body).choices[0].message.content);
  assert.deepEqual(rs, ['echo: first', 'echo: second', 'echo: third']);
});

test('overhead is agentd\'s own time: the request deadline cutting a hung or trickling upstream is not overhead', async () => {
  // Two raw upstreams: one takes the request and never answers, one answers headers then trickles its body.
  const open = new Set();
  const up = http.createServer((req, res) => {
    open.add(res);
    res.on('close', () => open.delete(res));
    if (req.url.startsWith('/trickle')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      const t = setInterval(() => res.write(' '), 20);
      res.on('close', () => clearInterval(t));
    }
  });
  await new Promise((r) => up.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${up.address().port}`;
  const dd = await startAgentd({
    config: `
gateway:
  request_timeout: 400ms
  first_byte_timeout: 0ms
models:
  - name: hung
    provider: openai-compatible
    model: m
    base_url: ${base}/hang/v1
  - name: trickle
    provider: openai-compatible
    model: m
    base_url: ${base}/trickle/v1
`,
  });
  try {
    for (const model of ['hung', 'trickle']) {
      const t0 = Date.now();
      const res = await dd.fetch('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'x' }] }),
      });
      const waited = Date.now() - t0;
      assert.equal(res.status, 504, model);
      assert.equal((await res.json()).error.type, 'timeout_error');
      assert.ok(waited >= 390, `${model}: answered after ${waited} ms, before the deadline`);
      const overheadUs = Number(res.headers.get('x-agentd-overhead-us'));
      // The 400 ms were spent waiting on the upstream; agentd's own share is a tiny fraction of it.
      assert.ok(overheadUs < 50000, `${model}: x-agentd-overhead-us ${overheadUs} for a ${waited} ms wait`);
      const line = await dd.waitLog((l) => l.msg === 'llm' && l.request_id === res.headers.get('x-request-id'));
      assert.ok(line.overhead_us < 50000, `${model}: llm overhead_us ${line.overhead_us}`);
      assert.ok(line.duration_us >= 390000, `${model}: llm duration_us ${line.duration_us}`);
    }
  } finally {
    const r = await dd.stop();
    for (const res of open) res.destroy();
    up.close();
    assert.equal(r.code, 0, dd.rawStderr.slice(-4000));
  }
});
