// The official `openai` SDK's Responses API (client.responses.*) against agentd: the mock model, pass-through to
// OpenAI and Azure OpenAI (fake upstreams that speak the real Responses event stream and keep their own state),
// and translation to a chat-only OpenAI-compatible server, Anthropic, Gemini and Bedrock.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const BR_MODEL = 'anthropic.claude-3-5-haiku-20241022-v1:0';
const PASSTHROUGH = new Set(['gpt-resp', 'azure-resp']);
const MODELS = ['mock', 'gpt-resp', 'azure-resp', 'compat', 'claude', 'gem', 'bed'];

let d, f, client;

function config(fake) {
  return `models:
  - name: gpt-resp
    provider: openai
    model: gpt-4o-mini
    base_url: ${fake.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: azure-resp
    provider: azure-openai
    model: my-4o
    base_url: ${fake.urls.azure}
    api_key_env: FAKE_AZURE_KEY
    api_version: "2024-10-21"
  - name: compat
    provider: openai-compatible
    model: llama3
    base_url: ${fake.urls['openai-compatible']}
  - name: compat-resp
    provider: openai-compatible
    model: llama3
    base_url: ${fake.urls['openai-compatible']}
    api: responses
  - name: gpt-chat
    provider: openai
    model: gpt-4o-mini
    base_url: ${fake.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
    api: chat
  - name: claude
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${fake.urls.anthropic}
    api_key_env: FAKE_ANTHROPIC_KEY
  - name: gem
    provider: gemini
    model: gemini-2.0-flash
    base_url: ${fake.urls.gemini}
    api_key_env: FAKE_GEMINI_KEY
  - name: bed
    provider: bedrock
    model: ${BR_MODEL}
    base_url: ${fake.urls.bedrock}
    region: us-east-1
`;
}

const ENV = {
  FAKE_OPENAI_KEY: FAKE_KEYS.openai,
  FAKE_AZURE_KEY: FAKE_KEYS.azure,
  FAKE_ANTHROPIC_KEY: FAKE_KEYS.anthropic,
  FAKE_GEMINI_KEY: FAKE_KEYS.gemini,
  AWS_ACCESS_KEY_ID: FAKE_KEYS.bedrock.accessKeyId,
  AWS_SECRET_ACCESS_KEY: FAKE_KEYS.bedrock.secretAccessKey,
};

before(async () => {
  f = await startFake({ provider: 'all', chunks: 3 });
  d = await startAgentd({ env: ENV, config: config(f) });
  client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client-key', maxRetries: 0 });
});
after(async () => {
  const r = await d.stop();
  await f.close();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

const TOOLS = [{ type: 'function', name: 'lookup', description: 'find things', parameters: { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] } }];

for (const model of MODELS) {
  test(`${model}: responses.create`, async () => {
    const r = await client.responses.create({ model, input: 'hello sdk', instructions: 'be brief' });
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'completed');
    assert.equal(r.output_text, 'echo: hello sdk');
    assert.equal(r.usage.output_tokens, 3);
    assert.ok(r.usage.input_tokens >= 1);
    assert.equal(typeof r.usage.input_tokens_details.cached_tokens, 'number');
    assert.equal(typeof r.usage.output_tokens_details.reasoning_tokens, 'number');
    for (const k of ['id', 'created_at', 'error', 'incomplete_details', 'instructions', 'model', 'output',
      'parallel_tool_calls', 'temperature', 'tool_choice', 'tools', 'top_p', 'metadata']) assert.ok(k in r, k);
  });

  test(`${model}: stream: true gives the typed events in order, usage in response.completed`, async () => {
    const stream = await client.responses.create({ model, input: 'stream me please', stream: true });
    const types = [];
    let text = '', seq = -1, done = null;
    for await (const ev of stream) {
      types.push(ev.type);
      assert.equal(ev.sequence_number, seq + 1, `sequence after ${types.at(-2)}`);
      seq = ev.sequence_number;
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') done = ev.response;
    }
    assert.equal(text, 'echo: stream me please');
    assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
    assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
    assert.equal(done.usage.output_tokens, 4);
    // what the gateway counted for this stream: the usage of the terminal event, never lost
    const line = await d.waitLog((l) => l.msg === 'llm' && l.model === model && l.stream === true && l.output_tokens === 4);
    assert.equal(line.usage_reported, true);
  });

  test(`${model}: responses.stream() helper`, async () => {
    const s = client.responses.stream({ model, input: 'helper stream' });
    const deltas = [];
    s.on('response.output_text.delta', (e) => deltas.push(e.delta));
    const final = await s.finalResponse();
    assert.equal(final.output_text, 'echo: helper stream');
    assert.equal(deltas.join(''), 'echo: helper stream');
  });

  test(`${model}: tools and a multi-turn tool loop (items sent back, store: false)`, async () => {
    const input = [{ role: 'user', content: 'CALL lookup {"q":"agentd"}' }];
    const r1 = await client.responses.create({ model, input, tools: TOOLS, store: false });
    const call = r1.output.find((o) => o.type === 'function_call');
    assert.ok(call, JSON.stringify(r1.output));
    assert.equal(call.name, 'lookup');
    assert.deepEqual(JSON.parse(call.arguments), { q: 'agentd' });
    const r2 = await client.responses.create({
      model, tools: TOOLS, store: false,
      input: [...input, ...r1.output, { type: 'function_call_output', call_id: call.call_id, output: 'found it' }],
    });
    assert.equal(r2.output_text, 'echo: tool result: found it');
  });

  test(`${model}: a streamed tool call, then previous_response_id`, async () => {
    const s = client.responses.stream({ model, input: 'CALL lookup {"q":"x"}', tools: TOOLS });
    let args = '';
    s.on('response.function_call_arguments.delta', (e) => { args += e.delta; });
    const r1 = await s.finalResponse();
    const call = r1.output.find((o) => o.type === 'function_call');
    assert.deepEqual(JSON.parse(call.arguments), { q: 'x' });
    assert.equal(args, call.arguments);
    const r2 = await client.responses.create({
      model, tools: TOOLS, previous_response_id: r1.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: 'sunny' }],
    });
    assert.equal(r2.output_text, 'echo: tool result: sunny');
    assert.equal(r2.previous_response_id, r1.id);
    // the conversation goes on
    const r3 = await client.responses.create({ model, previous_response_id: r2.id, input: 'and now?' });
    assert.equal(r3.output_text, 'echo: and now?');
  });

  if (!PASSTHROUGH.has(model)) {
    test(`${model}: retrieve and delete a stored response`, async () => {
      const r = await client.responses.create({ model, input: 'keep me' });
      const got = await client.responses.retrieve(r.id);
      assert.equal(got.id, r.id);
      assert.equal(got.output_text, 'echo: keep me');
      const items = await client.responses.inputItems.list(r.id);
      assert.equal(items.data.length, 1);
      // a longer conversation: newest first by default, oldest first with order: 'asc'
      const r2 = await client.responses.create({ model, previous_response_id: r.id, input: 'second' });
      const desc = await client.responses.inputItems.list(r2.id);
      assert.deepEqual(desc.data.map((i) => i.content[0]?.text ?? i.content), ['second', 'echo: keep me', 'keep me']);
      const asc = await client.responses.inputItems.list(r2.id, { order: 'asc' });
      assert.deepEqual(asc.data.map((i) => i.content[0]?.text ?? i.content), ['keep me', 'echo: keep me', 'second']);
      await client.responses.delete(r.id);
      await assert.rejects(client.responses.retrieve(r.id), (e) => e.status === 404);
      await assert.rejects(client.responses.create({ model, previous_response_id: r.id, input: 'x' }),
        (e) => e.status === 404 && e.param === 'previous_response_id');
    });

    test(`${model}: store: false keeps nothing`, async () => {
      const r = await client.responses.create({ model, input: 'forget me', store: false });
      await assert.rejects(client.responses.retrieve(r.id), (e) => e.status === 404);
    });
  }
}

for (const model of PASSTHROUGH) {
  test(`${model}: retrieve, input items and delete go to the deployment that holds the response`, async () => {
    const r = await client.responses.create({ model, input: 'kept upstream' });
    const s = client.responses.stream({ model, input: 'streamed and kept' });
    const rs = await s.finalResponse();
    f.reset();
    const got = await client.responses.retrieve(r.id);
    assert.equal(got.id, r.id);
    assert.equal(got.output_text, 'echo: kept upstream');
    const got2 = await client.responses.retrieve(rs.id);
    assert.equal(got2.output_text, 'echo: streamed and kept');
    const paths = f.requests.map((q) => `${q.method} ${q.path}`);
    assert.ok(paths.some((p) => p.startsWith('GET ') && p.endsWith(`/responses/${r.id}`)), paths.join(' '));
    const r2 = await client.responses.create({ model, previous_response_id: r.id, input: 'second' });
    const asc = await client.responses.inputItems.list(r2.id, { order: 'asc' });
    assert.deepEqual(asc.data.map((i) => i.content?.[0]?.text ?? i.content), ['kept upstream', 'echo: kept upstream', 'second']);
    const desc = await client.responses.inputItems.list(r2.id);
    assert.equal(desc.data[0].content, 'second');
    await client.responses.delete(r.id);
    assert.ok(f.requests.some((q) => q.method === 'DELETE' && q.path.endsWith(`/responses/${r.id}`)));
    // gone at the provider: its 404 reaches the client in OpenAI's shape
    await assert.rejects(client.responses.retrieve(r.id), (e) => e.status === 404 && e.error.type === 'invalid_request_error');
    await assert.rejects(client.responses.delete(r.id), (e) => e.status === 404);
    // store: false: nothing recorded, nothing forwarded
    const nf = await client.responses.create({ model, input: 'forget me', store: false });
    f.reset();
    await assert.rejects(client.responses.retrieve(nf.id), (e) => e.status === 404);
    assert.equal(f.requests.length, 0);
  });
}

test('pass-through: the upstream gets the client body with only the model replaced', async () => {
  f.reset();
  await client.responses.create({ model: 'gpt-resp', input: 'bytes', metadata: { a: 'b' }, include: ['reasoning.encrypted_content'] });
  const req = f.requests.find((r) => r.path === '/v1/responses');
  assert.ok(req, 'the fake saw /v1/responses');
  assert.deepEqual(req.json, { model: 'gpt-4o-mini', input: 'bytes', metadata: { a: 'b' }, include: ['reasoning.encrypted_content'] });
  f.reset();
  await client.responses.create({ model: 'azure-resp', input: 'az' });
  assert.ok(f.requests.find((r) => r.path === '/openai/v1/responses' && r.headers['api-key'] === FAKE_KEYS.azure));
});

test('api: responses passes an OpenAI-compatible server through; api: chat translates an OpenAI deployment', async () => {
  f.reset();
  const a = await client.responses.create({ model: 'compat-resp', input: 'via responses' });
  assert.equal(a.output_text, 'echo: via responses');
  const b = await client.responses.create({ model: 'gpt-chat', input: 'via chat' });
  assert.equal(b.output_text, 'echo: via chat');
  const paths = f.requests.map((r) => r.path);
  assert.ok(paths.some((p) => p.endsWith('/responses') && p !== '/v1/responses'), paths.join(' '));
  assert.ok(paths.includes('/v1/chat/completions'), paths.join(' '));
  assert.ok(!paths.includes('/v1/responses'), paths.join(' '));
});

test('pass-through: an upstream stream cut before its terminal event is an incomplete, logged request', async () => {
  f.script([{ truncate: true }]);
  const stream = await client.responses.create({ model: 'gpt-resp', input: 'cut me off', stream: true });
  const types = [];
  for await (const ev of stream) types.push(ev.type);
  assert.ok(!types.includes('response.completed'));
  assert.equal(types.at(-1), 'error');
  const line = await d.waitLog((l) => l.msg === 'llm' && l.model === 'gpt-resp' && l.incomplete === true);
  assert.equal(line.status, 502);
});

test('translation: built-in tools are dropped and named, forcing one is a 400', async () => {
  const { data, response } = await client.responses.create({
    model: 'compat', input: 'hi', tools: [{ type: 'web_search' }, ...TOOLS, { type: 'code_interpreter', container: { type: 'auto' } }],
  }).withResponse();
  assert.equal(data.output_text, 'echo: hi');
  assert.equal(response.headers.get('x-agentd-dropped-fields'), 'tools.web_search, tools.code_interpreter');
  await assert.rejects(client.responses.create({ model: 'compat', input: 'hi', tools: [{ type: 'web_search' }], tool_choice: { type: 'web_search' } }),
    (e) => e.status === 400 && e.param === 'tool_choice');
});

test('bad input: OpenAI-shaped 400/404 before any upstream call', async () => {
  f.reset();
  const cases = [
    [{ model: 'compat', input: [{ type: 'function_call_output', call_id: 'nope', output: 'x' }] }, 400, 'input[0].call_id'],
    [{ model: 'compat', input: [{ type: 'not_an_item' }] }, 400, 'input[0].type'],
    [{ model: 'compat', input: [{ role: 'user', content: [{ type: 'input_video' }] }] }, 400, 'input[0].content[0].type'],
    [{ model: 'compat', input: 'x', previous_response_id: 'resp_unknown' }, 404, 'previous_response_id'],
    [{ model: 'compat', input: 'x', max_output_tokens: 0 }, 400, 'max_output_tokens'],
  ];
  for (const [body, status, param] of cases) {
    await assert.rejects(client.responses.create(body), (e) => {
      assert.equal(e.status, status, JSON.stringify(body));
      assert.equal(e.param, param);
      assert.equal(e.error.type, 'invalid_request_error');
      return true;
    });
  }
  assert.equal(f.requests.length, 0, 'no upstream call for a refused request');
});

test('input_tokens: an estimate, marked as such', async () => {
  const r = await d.fetch('/v1/responses/input_tokens', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'mock', input: 'hello there' }),
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-agentd-token-count'), 'estimate');
  const j = await r.json();
  assert.equal(j.object, 'response.input_tokens');
  assert.equal(j.input_tokens, 3);
  assert.equal(j.estimated, true);
});

test('responses.inputTokens.count: exact from pass-through deployments (their own endpoint), else a marked estimate', async () => {
  for (const model of ['gpt-resp', 'azure-resp']) {
    f.reset();
    const { data, response } = await client.responses.inputTokens.count({ model, input: 'count these words please', instructions: 'Be brief.' }).withResponse();
    assert.equal(response.headers.get('x-agentd-token-count'), 'exact', model);
    assert.equal(data.object, 'response.input_tokens');
    assert.equal(data.estimated, undefined, 'an exact count is the provider\'s own answer');
    const up = f.requests.find((r) => r.path.endsWith('/responses/input_tokens'));
    assert.ok(up, `${model}: the provider's count endpoint was called`);
    assert.equal(up.json.model, model === 'gpt-resp' ? 'gpt-4o-mini' : 'my-4o', 'the deployment\'s model');
    // the fake counts 33 characters / 4
    assert.equal(data.input_tokens, 9);
    // the beta door of the SDK is the same route
    const beta = await client.beta.responses.inputTokens.count({ model, input: 'count these words please', instructions: 'Be brief.' });
    assert.equal(beta.input_tokens, 9);
  }
  // a conversation the provider holds is counted by the provider
  const r1 = await client.responses.create({ model: 'gpt-resp', input: 'first turn here' });
  const c = await client.responses.inputTokens.count({ model: 'gpt-resp', previous_response_id: r1.id, input: 'more' });
  assert.ok(c.input_tokens > 2, String(c.input_tokens));
  // an error of the provider's reaches the client in OpenAI's shape with its status
  await assert.rejects(client.responses.inputTokens.count({ model: 'gpt-resp', previous_response_id: 'resp_nobody', input: 'x' }),
    (e) => e.status === 404 && e.param === 'previous_response_id');
  f.reset();
  const { data, response } = await client.responses.inputTokens.count({ model: 'compat', input: 'hello there' }).withResponse();
  assert.equal(response.headers.get('x-agentd-token-count'), 'estimate');
  assert.equal(data.estimated, true);
  assert.equal(f.requests.length, 0, 'an estimate calls no upstream');
});

test('input_tokens / count_tokens on translated deployments: the provider\'s own count (Anthropic, Gemini, Bedrock)', async () => {
  const cases = [['claude', '/v1/messages/count_tokens'], ['gem', ':countTokens'], ['bed', '/count-tokens']];
  for (const [model, endpoint] of cases) {
    f.reset();
    const { data, response } = await client.responses.inputTokens.count({ model, instructions: 'Be brief.', input: 'count these words please' }).withResponse();
    assert.equal(response.headers.get('x-agentd-token-count'), 'exact', model);
    assert.equal(data.object, 'response.input_tokens');
    assert.equal(data.estimated, undefined);
    // the fakes count characters / 4: 'Be brief.' + 'count these words please' = 33 -> 9
    assert.equal(data.input_tokens, 9, model);
    const up = f.requests.find((r) => r.path.endsWith(endpoint));
    assert.ok(up, `${model}: ${f.requests.map((r) => r.path).join(' ')}`);
    // the Anthropic door on the same deployments
    const r = await d.fetch('/v1/messages/count_tokens', {
      method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model, system: 'Be brief.', messages: [{ role: 'user', content: 'count these words please' }] }),
    });
    if (model === 'claude') continue; // pass-through there: covered by the Anthropic SDK's tests
    assert.equal(r.headers.get('x-agentd-token-count'), 'exact', model);
    assert.deepEqual(await r.json(), { input_tokens: 9 });
  }
  // a provider that cannot count this request: the marked estimate, and why
  f.reset();
  f.script([{ status: 400 }]);
  const { data, response } = await client.responses.inputTokens.count({ model: 'bed', input: 'hello there' }).withResponse();
  assert.equal(response.headers.get('x-agentd-token-count'), 'estimate');
  assert.equal(response.headers.get('x-agentd-count-fallback'), 'upstream HTTP 400');
  assert.equal(data.estimated, true);
  assert.equal(data.input_tokens, 3);
});

test('a conversation continues across a restart (the store is on disk)', async () => {
  const r1 = await client.responses.create({ model: 'mock', input: 'remember me' });
  const dataDir = `${d.dir}/data`;
  const d2 = await startAgentd({ env: ENV, config: config(f), noDataDir: true, args: ['--data-dir', dataDir] });
  try {
    const c2 = new OpenAI({ baseURL: `${d2.url}/v1`, apiKey: 'k', maxRetries: 0 });
    const r2 = await c2.responses.create({ model: 'mock', previous_response_id: r1.id, input: 'what now' });
    assert.equal(r2.output_text, 'echo: what now');
    const got = await c2.responses.retrieve(r1.id);
    assert.equal(got.output_text, 'echo: remember me');
  } finally {
    const r = await d2.stop();
    assert.equal(r.code, 0, d2.rawStderr.slice(-3000));
  }
});
