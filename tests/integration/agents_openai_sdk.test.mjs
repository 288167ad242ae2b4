// The runs API driven by the official `openai` npm SDK, untouched (issue 11 item 8): its generic client.post and
// client.get calls against /v1/agents/{name}/runs and /v1/runs, with a virtual key as the SDK's
// apiKey (Authorization: Bearer), the SDK's own SSE reader on /v1/runs/{id}/events, and agentd's errors surfacing
// as the SDK's typed errors (BadRequestError, AuthenticationError, NotFoundError, ConflictError) with the OpenAI
// error body.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startAgentd } from '../lib/agentd.mjs';

const ADMIN = 'adm-' + 'o'.repeat(24);
let d, client, key;

before(async () => {
  d = await startAgentd({
    env: { AGENTD_ADMIN_KEY: ADMIN },
    config: `
auth:
  mode: keys
agents:
  - name: calc
    model: mock
    tools: [echo, wait]
`,
  });
  const r = await d.fetch('/admin/keys', {
    method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'sdk-runs' }),
  });
  key = (await r.json()).key;
  client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: key, maxRetries: 0 });
  for (let i = 0; ; i++) { // keys take effect within a second (the keyring polls its store)
    const m = await d.fetch('/v1/runs', { headers: { authorization: `Bearer ${key}` } });
    await m.arrayBuffer();
    if (m.status === 200) break;
    assert.ok(i < 200, 'the key never took effect');
    await new Promise((res) => setTimeout(res, 20));
  }
});
after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

test('POST /v1/agents/{name}/runs with wait: the finished run (id, status, output, steps, usage)', async () => {
  const run = await client.post('/agents/calc/runs', {
    body: { input: 'CALL echo {"text":"a"} CALL echo {"text":"b"}\n---\nthe answer is 42', wait: true },
  });
  assert.match(run.id, /^run_/);
  assert.equal(run.status, 'succeeded');
  assert.equal(run.output, 'the answer is 42');
  assert.equal(run.object, 'agent.run');
  const calls = run.steps.filter((s) => s.type === 'tool_call');
  assert.deepEqual(calls.map((c) => c.result), ['a', 'b']);
  assert.ok(run.usage.total_tokens > 0);

  const again = await client.get(`/runs/${run.id}`);
  assert.equal(again.id, run.id);
  assert.equal(again.output, run.output);
  const list = await client.get('/runs', { query: { agent: 'calc', status: 'succeeded' } });
  assert.ok(list.data.some((r) => r.id === run.id), JSON.stringify(list));
});

test('202 then the events through the SDK\'s own SSE reader, to [DONE]', async () => {
  const started = await client.post('/agents/calc/runs', { body: { input: 'CALL wait {"ms":50}\n---\ndone' } });
  assert.equal(started.status === 'queued' || started.status === 'running', true, JSON.stringify(started));
  const stream = await client.get(`/runs/${started.id}/events`, { stream: true });
  const seen = [];
  for await (const data of stream) seen.push(data);
  const last = seen.at(-1);
  assert.equal(last.id, started.id);
  assert.equal(last.status, 'succeeded');
  assert.equal(last.output, 'done');
  assert.ok(seen.some((e) => e.type === 'tool_call' && e.status === 'ok'), JSON.stringify(seen));
});

test('cancel through the SDK; a second cancel is a ConflictError', async () => {
  const started = await client.post('/agents/calc/runs', { body: { input: 'CALL wait {"ms":20000}\n---\nnever' } });
  const c = await client.post(`/runs/${started.id}/cancel`);
  assert.equal(c.id, started.id);
  for (let i = 0; ; i++) {
    const r = await client.get(`/runs/${started.id}`);
    if (r.status === 'cancelled') break;
    assert.ok(i < 300, `still ${r.status}`);
    await new Promise((res) => setTimeout(res, 20));
  }
  await assert.rejects(client.post(`/runs/${started.id}/cancel`), (e) => e instanceof OpenAI.ConflictError && e.status === 409);
});

test("agentd's errors are the SDK's typed errors with the OpenAI error body", async () => {
  await assert.rejects(client.post('/agents/calc/runs', { body: { input: 42 } }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.status, 400);
    assert.equal(typeof e.error.message, 'string');
    assert.equal(e.param, 'input');
    return true;
  });
  await assert.rejects(client.post('/agents/nobody/runs', { body: { input: 'x' } }), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(client.get('/runs/run_doesnotexist'), (e) => e instanceof OpenAI.NotFoundError);
  const stranger = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-not-a-key', maxRetries: 0 });
  await assert.rejects(stranger.post('/agents/calc/runs', { body: { input: 'x', wait: true } }), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});
