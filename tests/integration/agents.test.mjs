// Agents (issue 11): definitions in the YAML and through /admin/agents, the run loop driven by the mock's scripts
// (parallel tool calls, every limit, tool timeouts and truncation, the output schema), the runs API (wait, 202,
// get, list, SSE events, cancel mid-step), virtual keys and the workflow budget, and durability: kill -9 in the
// middle of a run, restart on the same data dir, the run resumes (a completed tool call is not run again, an
// idempotent one in flight is, a non-idempotent one in flight is reported interrupted).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { startAgentd, BIN } from '../lib/agentd.mjs';

const ADMIN = 'adm-' + 'a'.repeat(24);
const CONFIG = (web) => `auth:
  mode: keys
budgets:
  - {scope: workflow, name: tight-wf, tokens: 40}
models:
  - name: priced
    provider: mock
prices:
  priced: {input: 1000, output: 1000}
agents:
  - name: calc
    model: mock
    instructions: "You are a test agent."
    tools: [echo, wait, code_exec, http_fetch]
  - name: serial
    model: mock
    tools: [echo]
    limits: {max_parallel_tools: 1}
  - name: short
    model: mock
    tools: [echo, wait]
    limits: {max_steps: 2, deadline: 400ms, tool_timeout: 150ms, tool_output_bytes: 64}
  - name: late
    model: mock
    tools: [wait]
    limits: {deadline: 300ms}
  - name: frugal
    model: mock
    tools: [echo]
    limits: {max_tokens: 30}
  - name: typed
    model: mock
    output_schema: '{"type":"object","required":["answer"],"properties":{"answer":{"type":"integer"}}}'
    limits: {max_steps: 3}
  - name: pricey
    model: priced
    tools: [echo]
    limits: {max_usd: 0.01}
  - name: tight
    model: mock
    workflow: tight-wf
    tools: [echo]
  - name: fetcher
    model: mock
    tools: [http_fetch]
    allow_urls: ["${web}/"]
    allow_private_networks: true
    limits: {tool_output_bytes: 100}
  - name: guarded
    model: mock
    tools: [http_fetch]
    allow_urls: ["${web}/", "http://localhost:"]
`;

let d, key, key2, web, webRequests = [];

async function adminKey(dd, name) {
  const r = await dd.fetch('/admin/keys', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
  const t = await r.text();
  assert.equal(r.status, 201, t);
  return JSON.parse(t).key;
}

before(async () => {
  // a web server for http_fetch (on loopback: only agents with allow_private_networks may reach it)
  web = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      webRequests.push({ method: req.method, url: req.url, host: req.headers.host, body });
      if (req.url === '/hello') { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('hello'); return; }
      if (req.url === '/moved') { res.writeHead(302, { location: '/hello' }); res.end(); return; }
      if (req.url === '/away') { res.writeHead(301, { location: 'http://127.0.0.2:9/x' }); res.end(); return; }
      if (req.url === '/big') { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('b'.repeat(10000)); return; }
      if (req.url === '/echo') { res.writeHead(201, { 'content-type': 'application/json' }); res.end(body); return; }
      res.writeHead(404); res.end('no');
    });
  });
  await new Promise((res) => web.listen(0, '127.0.0.1', res));
  const webUrl = `http://127.0.0.1:${web.address().port}`;
  d = await startAgentd({ env: { AGENTD_ADMIN_KEY: ADMIN }, config: CONFIG(webUrl) });
  key = await adminKey(d, 'agents-test');
  key2 = await adminKey(d, 'someone-else');
  // keys take effect within a second (the keyring polls its store)
  for (let i = 0; i < 100; i++) {
    const r = await d.fetch('/v1/runs', { headers: { authorization: `Bearer ${key2}` } });
    await r.arrayBuffer();
    if (r.status === 200) break;
    await new Promise((res) => setTimeout(res, 20));
  }
});

after(async () => {
  web.close();
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

const H = (k = key) => ({ 'content-type': 'application/json', authorization: `Bearer ${k}` });

async function run(agent, input, opts = {}, dd = d) {
  const r = await dd.fetch(`/v1/agents/${agent}/runs`, { method: 'POST', headers: H(opts.key), body: JSON.stringify({ input, wait: opts.wait ?? true }) });
  const body = await r.json();
  return { status: r.status, body };
}

// Reads the run's SSE stream until run.finished (or until stopAt(event) is true); returns the events.
async function events(id, stopAt = () => false, dd = d) {
  const r = await dd.fetch(`/v1/runs/${id}/events`, { headers: H(dd === d ? key : 'none') });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/event-stream/);
  const out = [];
  const dec = new TextDecoder();
  let buf = '';
  const reader = r.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = /^event: (.*)$/m.exec(block);
      const data = /^data: (.*)$/m.exec(block);
      if (!ev) continue;
      const e = { event: ev[1], data: JSON.parse(data[1]) };
      out.push(e);
      if (stopAt(e)) { await reader.cancel(); return out; }
    }
  }
  return out;
}

const tools = (run) => run.steps.filter((s) => s.type === 'tool_call');

test('a multi-step run: parallel tool calls, tool results, the final answer, usage', async () => {
  const script = 'CALL echo {"text":"one","delay_ms":200} CALL echo {"text":"two","delay_ms":200}\n---\nCALL echo {"text":"three"}\n---\nall done';
  const { status, body } = await run('calc', script);
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.status, 'succeeded');
  assert.equal(body.output, 'all done');
  assert.match(body.id, /^run_[0-9a-f]{24}$/);
  assert.equal(body.step_count, 3);
  assert.ok(body.usage.input_tokens > 0 && body.usage.output_tokens > 0);
  const t = tools(body);
  assert.deepEqual(t.map((s) => [s.tool, s.status, s.result]), [['echo', 'ok', 'one'], ['echo', 'ok', 'two'], ['echo', 'ok', 'three']]);
  // the two calls of the first step ran at the same time: each started before the other ended
  assert.ok(t[0].started_at_ms < t[1].ended_at_ms && t[1].started_at_ms < t[0].ended_at_ms, JSON.stringify(t));
  // the model saw the tool results: its next step's request carried them (the mock played step 2 after them)
  assert.equal(body.steps.filter((s) => s.type === 'llm').length, 3);
  assert.equal(body.workflow, 'calc');
  // GET and the list say the same
  const g = await d.fetch(`/v1/runs/${body.id}`, { headers: H() });
  assert.equal(g.status, 200);
  const gb = await g.json();
  assert.equal(gb.status, 'succeeded');
  assert.equal(gb.steps.length, body.steps.length);
  const l = await (await d.fetch('/v1/runs?agent=calc&status=succeeded', { headers: H() })).json();
  assert.ok(l.data.some((x) => x.id === body.id));
});

test('max_parallel_tools: 1 runs the calls one after the other', async () => {
  const { body } = await run('serial', 'CALL echo {"text":"a","delay_ms":100} CALL echo {"text":"b","delay_ms":100}\n---\nok');
  assert.equal(body.status, 'succeeded');
  const [a, b] = tools(body);
  assert.ok(b.started_at_ms >= a.ended_at_ms, JSON.stringify([a, b]));
});

test('tools that fail answer a tool error the model sees; the run goes on', async () => {
  const { body } = await run('calc', 'CALL code_exec {"language":"cobol","code":"DISPLAY 1"} CALL http_fetch {"url":"http://127.0.0.1/"}\n---\nfine');
  assert.equal(body.status, 'succeeded');
  const [c, h] = tools(body);
  assert.equal(c.status, 'bad_args');
  assert.match(c.result, /language/);
  assert.equal(h.status, 'error');
  assert.match(h.result, /not under one of the agent's allow_urls/);
  // a tool the agent does not have is refused to the model, never run
  const { body: b2 } = await run('serial', 'CALL echo {"text":"x"}\n---\nfine');
  assert.equal(b2.status, 'succeeded');
});

test('limits: max_steps, deadline, tool timeout, tool output truncation, max_usd, max_tokens', async () => {
  let { body } = await run('short', 'CALL echo {"text":"1"}\n---\nCALL echo {"text":"2"}\n---\nCALL echo {"text":"3"}\n---\nend');
  assert.equal(body.status, 'limit_exceeded');
  assert.equal(body.limit, 'max_steps');
  assert.equal(body.step_count, 2);

  ({ body } = await run('late', 'CALL wait {"ms":20000}\n---\nnever'));
  assert.equal(body.status, 'limit_exceeded');
  assert.equal(body.limit, 'deadline');
  assert.equal(tools(body)[0].status, 'cancelled');

  ({ body } = await run('short', 'CALL echo {"text":"x","delay_ms":1000}\n---\nafter the timeout'));
  assert.equal(body.status, 'succeeded');
  assert.equal(tools(body)[0].status, 'timeout');
  assert.equal(body.output, 'after the timeout');

  ({ body } = await run('short', 'CALL echo {"text":"' + 'z'.repeat(500) + '"}\n---\ndone'));
  const t = tools(body)[0];
  assert.equal(t.status, 'ok');
  assert.match(t.result, /^z{64}\n\[truncated: the tool answered 500 bytes, the first 64 are shown\]$/);

  ({ body } = await run('pricey', 'CALL echo {"text":"' + 'p'.repeat(200) + '"}\n---\nCALL echo {"text":"again"}\n---\nend'));
  assert.equal(body.status, 'limit_exceeded', JSON.stringify(body));
  assert.equal(body.limit, 'max_usd');
  assert.ok(body.cost_usd > 0.01, String(body.cost_usd));

  ({ body } = await run('frugal', 'CALL echo {"text":"' + 'y'.repeat(200) + '"}\n---\nCALL echo {"text":"again"}\n---\nend'));
  assert.equal(body.status, 'limit_exceeded');
  assert.equal(body.limit, 'max_tokens');
});

test('the output schema: an answer that satisfies it succeeds, one that never does ends at max_steps', async () => {
  let { body } = await run('typed', '{"answer": 42}\n---\nunused');
  assert.equal(body.status, 'succeeded');
  assert.deepEqual(JSON.parse(body.output), { answer: 42 });
  ({ body } = await run('typed', 'not json at all\n---\nunused'));
  assert.equal(body.status, 'limit_exceeded');
  assert.equal(body.limit, 'max_steps');
  assert.equal(body.step_count, 3);
});

test('202, then the run as server-sent events until run.finished', async () => {
  const { status, body } = await run('calc', 'CALL echo {"text":"e1"}\n---\nfinished', { wait: false });
  assert.equal(status, 202);
  assert.ok(body.id);
  const ev = await events(body.id);
  const names = ev.map((e) => e.event);
  assert.equal(names[0], 'run.status');
  assert.ok(names.includes('step.finished'));
  assert.ok(names.includes('tool.result'));
  assert.equal(names.at(-1), 'run.finished');
  assert.equal(ev.at(-1).data.status, 'succeeded');
  assert.equal(ev.at(-1).data.output, 'finished');
});

test('cancel mid-step: the tool in flight stops, the run ends cancelled', async () => {
  const { body } = await run('calc', 'CALL wait {"ms":20000}\n---\nnever', { wait: false });
  await events(body.id, (e) => e.event === 'tool.started');
  const c = await d.fetch(`/v1/runs/${body.id}/cancel`, { method: 'POST', headers: H() });
  assert.equal(c.status, 202, await c.text());
  const ev = await events(body.id);
  const fin = ev.at(-1);
  assert.equal(fin.event, 'run.finished');
  assert.equal(fin.data.status, 'cancelled');
  const g = await (await d.fetch(`/v1/runs/${body.id}`, { headers: H() })).json();
  assert.equal(tools(g)[0].status, 'cancelled');
  // cancelling a finished run is a 409
  const again = await d.fetch(`/v1/runs/${body.id}/cancel`, { method: 'POST', headers: H() });
  assert.equal(again.status, 409);
});

test('bad input: 400 in OpenAI format; unknown agent 404; keys required; a run is its key\'s', async () => {
  for (const [b, param] of [[{ input: 5 }, 'input'], [{}, 'input'], [{ input: 'x', extra: 1 }, 'extra'], [{ input: 'x', wait: 'yes' }, 'wait'],
    [{ input: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] }, 'input'], [{ input: [{ role: 'system', content: 'x' }] }, 'input']]) {
    const r = await d.fetch('/v1/agents/calc/runs', { method: 'POST', headers: H(), body: JSON.stringify(b) });
    assert.equal(r.status, 400, JSON.stringify(b));
    const e = (await r.json()).error;
    assert.equal(e.type, 'invalid_request_error');
    assert.equal(e.param, param);
  }
  const nb = await d.fetch('/v1/agents/calc/runs', { method: 'POST', headers: H(), body: 'not json' });
  assert.equal(nb.status, 400);
  const na = await d.fetch('/v1/agents/nope/runs', { method: 'POST', headers: H(), body: '{"input":"x"}' });
  assert.equal(na.status, 404);
  assert.equal((await na.json()).error.code, 'agent_not_found');
  const nk = await d.fetch('/v1/agents/calc/runs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"input":"x"}' });
  assert.equal(nk.status, 401);
  assert.equal((await d.fetch('/v1/runs')).status, 401);
  const { body } = await run('calc', 'mine');
  assert.equal(body.key_id !== undefined, true);
  const other = await d.fetch(`/v1/runs/${body.id}`, { headers: H(key2) });
  assert.equal(other.status, 404);
  const list2 = await (await d.fetch('/v1/runs', { headers: H(key2) })).json();
  assert.ok(!list2.data.some((x) => x.id === body.id));
  assert.equal((await d.fetch('/v1/runs/run_zz', { headers: H() })).status, 404);
  assert.equal((await d.fetch('/v1/runs/run_0123456789abcdef01234567', { headers: H() })).status, 404);
});

test('the run\'s LLM spend is charged to the key and the agent\'s workflow, and budgeted', async () => {
  // tight-wf has a 40-token budget: the second step of this run cannot be covered
  const { body } = await run('tight', 'CALL echo {"text":"' + 'q'.repeat(120) + '"}\n---\nCALL echo {"text":"b"}\n---\nend');
  assert.equal(body.status, 'failed', JSON.stringify(body));
  assert.match(body.error, /status 429/);
  assert.equal(body.workflow, 'tight-wf');
  // the ledger knows the workflow
  let found = false;
  for (let i = 0; i < 100 && !found; i++) {
    const s = await (await d.fetch('/admin/spend?by=workflow&since=1d', { headers: { authorization: `Bearer ${ADMIN}` } })).json();
    found = JSON.stringify(s).includes('tight-wf');
    if (!found) await new Promise((res) => setTimeout(res, 50)); // the ledger's writer batches every second
  }
  assert.ok(found, 'the ledger has rows for the workflow');
});

test('/admin/agents: create, run, list, replace, delete; guarded by the admin key', async () => {
  const A = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' };
  assert.equal((await d.fetch('/admin/agents')).status, 401);
  let r = await d.fetch('/admin/agents', { method: 'POST', headers: A, body: JSON.stringify({ name: 'dyn', model: 'mock', tools: ['echo'], limits: { max_steps: 3 } }) });
  assert.equal(r.status, 201, await r.text());
  r = await d.fetch('/admin/agents', { method: 'POST', headers: A, body: JSON.stringify({ name: 'dyn', model: 'mock' }) });
  assert.equal(r.status, 409);
  r = await d.fetch('/admin/agents', { method: 'POST', headers: A, body: JSON.stringify({ name: 'bad', model: 'mock', tools: ['rm_rf'] }) });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error.message, /unknown tool 'rm_rf'/);
  const { body } = await run('dyn', 'CALL echo {"text":"d"}\n---\ndynamic');
  assert.equal(body.output, 'dynamic');
  const list = await (await d.fetch('/admin/agents', { headers: A })).json();
  assert.deepEqual(list.data.filter((a) => a.name === 'dyn' || a.name === 'calc').map((a) => [a.name, a.source]).sort(), [['calc', 'config'], ['dyn', 'admin']]);
  r = await d.fetch('/admin/agents/calc', { method: 'DELETE', headers: A });
  assert.equal(r.status, 409);
  r = await d.fetch('/admin/agents/dyn', { method: 'PUT', headers: A, body: JSON.stringify({ model: 'mock', instructions: 'new' }) });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).instructions, 'new');
  r = await d.fetch('/admin/agents/dyn', { method: 'DELETE', headers: A });
  assert.equal(r.status, 204);
  const gone = await d.fetch('/v1/agents/dyn/runs', { method: 'POST', headers: H(), body: '{"input":"x"}' });
  assert.equal(gone.status, 404);
});

test('a malformed agent definition is a configuration error naming file:line:column', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-agents-cfg-'));
  const p = join(dir, 'bad.yaml');
  writeFileSync(p, 'agents:\n  - name: ok\n    model: mock\n    tools: [echo, teleport]\n  - name: "bad name"\n    model: mock\n    limits: {max_steps: 0}\n');
  const r = spawnSync(BIN, ['config', 'check', p], { encoding: 'utf8' });
  rmSync(dir, { recursive: true, force: true });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /bad\.yaml:4:\d+: .*unknown tool 'teleport'/);
  assert.match(r.stderr, /bad\.yaml:5:\d+: .*agent name has only letters/);
  assert.match(r.stderr, /bad\.yaml:7:\d+: .*max_steps: 0 is out of range/);
});

test('kill -9 in the middle of a run, restart: the run resumes from its last committed step', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agentd-agents-data-'));
  const cfg = 'agents:\n  - name: calc\n    model: mock\n    tools: [echo, wait]\n';
  const opts = { config: cfg, noDataDir: true, args: ['--data-dir', dataDir] };
  const a = await startAgentd(opts);
  // step 1: a quick echo (completes before the kill); step 2: a slow idempotent echo and a slow wait (in flight)
  const script = 'CALL echo {"text":"first"}\n---\nCALL echo {"text":"again","delay_ms":30000} CALL wait {"ms":30000}\n---\nresumed fine';
  const { status, body } = await run('calc', script, { wait: false, key: 'none' }, a);
  assert.equal(status, 202);
  const seen = new Set();
  await events(body.id, (e) => { if (e.event === 'tool.started' && e.data.seq > 2) seen.add(e.data.seq); return seen.size === 2; }, a);
  const before = await (await a.fetch(`/v1/runs/${body.id}`)).json();
  const firstEcho = tools(before)[0];
  assert.equal(firstEcho.status, 'ok');
  a.signal('SIGKILL');
  await a.exited;
  const b = await startAgentd(opts);
  try {
    await b.waitLog((l) => l.msg && l.msg.includes(`agent run ${body.id} (calc): resumed after 2 steps (1 tool calls run again, 1 interrupted)`));
    // the re-run echo waits 30 s again: cancel is not the point here, so read the state and stop
    const mid = await (await b.fetch(`/v1/runs/${body.id}`)).json();
    assert.equal(mid.status, 'running');
    const t = tools(mid);
    assert.equal(t[0].status, 'ok');
    assert.equal(t[0].ended_at_ms, firstEcho.ended_at_ms, 'the completed call was not run again');
    const w = t.find((s) => s.tool === 'wait');
    assert.equal(w.status, 'interrupted');
    assert.match(w.result, /not run again/);
    const e = t.find((s) => s.tool === 'echo' && s.seq > 2);
    assert.equal(e.status, 'started', 'the idempotent call runs again');
    // cancel it and see the end
    const c = await b.fetch(`/v1/runs/${body.id}/cancel`, { method: 'POST' });
    assert.equal(c.status, 202);
    const ev = await events(body.id, () => false, b);
    assert.equal(ev.at(-1).data.status, 'cancelled');
  } finally {
    const r = await b.stop();
    assert.equal(r.code, 0, b.rawStderr.slice(-3000));
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('a run that completes after a restart: the model gets the interrupted result and answers', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agentd-agents-data-'));
  const cfg = 'agents:\n  - name: calc\n    model: mock\n    tools: [echo, wait]\n';
  const opts = { config: cfg, noDataDir: true, args: ['--data-dir', dataDir] };
  const a = await startAgentd(opts);
  const { body } = await run('calc', 'CALL wait {"ms":30000}\n---\nthe end', { wait: false, key: 'none' }, a);
  await events(body.id, (e) => e.event === 'tool.started', a);
  a.signal('SIGKILL');
  await a.exited;
  const b = await startAgentd(opts);
  try {
    const ev = await events(body.id, () => false, b);
    const fin = ev.at(-1).data;
    assert.equal(fin.status, 'succeeded');
    assert.equal(fin.output, 'the end');
  } finally {
    const r = await b.stop();
    assert.equal(r.code, 0, b.rawStderr.slice(-3000));
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('SIGTERM mid-run: the daemon stops promptly and the run resumes at the next start', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agentd-agents-data-'));
  const cfg = 'agents:\n  - name: calc\n    model: mock\n    tools: [echo]\n';
  const opts = { config: cfg, noDataDir: true, args: ['--data-dir', dataDir] };
  const a = await startAgentd(opts);
  const { body } = await run('calc', 'CALL echo {"text":"slow","delay_ms":1500}\n---\nafter restart', { wait: false, key: 'none' }, a);
  await events(body.id, (e) => e.event === 'tool.started', a);
  const r = await a.stop('SIGTERM'); // removes nothing of dataDir (stop removes a.dir, not dataDir)
  assert.equal(r.code, 0, a.rawStderr.slice(-3000));
  const b = await startAgentd(opts);
  try {
    const ev = await events(body.id, () => false, b);
    assert.equal(ev.at(-1).data.status, 'succeeded');
    assert.equal(ev.at(-1).data.output, 'after restart');
  } finally {
    const r2 = await b.stop();
    assert.equal(r2.code, 0, b.rawStderr.slice(-3000));
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('telemetry: an invoke_agent span, the steps\' gateway spans and execute_tool spans in one trace', async () => {
  const { startReceiver } = await import('../lib/otlp_receiver.mjs');
  const rx = await startReceiver();
  const t = await startAgentd({
    config: 'agents:\n  - name: calc\n    model: mock\n    tools: [echo]\n',
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_METRIC_EXPORT_INTERVAL: '200' },
  });
  try {
    const { body } = await run('calc', 'CALL echo {"text":"traced"}\n---\ndone', { key: 'none' }, t);
    assert.equal(body.status, 'succeeded');
    // the exporter sends in batches: wait until the agent span and its children have all arrived
    const family = (r) => {
      const a = r.spans().find((s) => s.name === 'invoke_agent calc');
      return a && r.spans().filter((s) => s.traceId === a.traceId).length >= 6;
    };
    await rx.waitFor(family);
    const spans = rx.spans();
    const agent = spans.find((s) => s.name === 'invoke_agent calc');
    assert.equal(agent.attrs['gen_ai.operation.name'], 'invoke_agent');
    assert.equal(agent.attrs['gen_ai.agent.id'], body.id);
    assert.equal(agent.attrs['agent.workflow'], 'calc');
    const tool = spans.find((s) => s.name === 'execute_tool echo');
    assert.ok(tool, JSON.stringify(spans.map((s) => s.name)));
    assert.equal(tool.traceId, agent.traceId);
    assert.equal(tool.parentSpanId, agent.spanId);
    assert.equal(tool.attrs['tool.name'], 'echo');
    // each LLM step is a gateway request in the run's trace, under the agent span, with its workflow
    const steps = spans.filter((s) => s.traceId === agent.traceId && s.parentSpanId === agent.spanId && s.kind === 2);
    assert.equal(steps.length, 2, JSON.stringify(spans.map((s) => [s.name, s.kind])));
    assert.equal(steps[0].attrs['agent.workflow'], 'calc');
    // metric names of every export so far (an export may carry a scope with no metrics yet)
    const names = (r) => new Set(r.requests.filter((q) => q.path === '/v1/metrics' && q.status === 200 && q.decoded)
      .flatMap((q) => (q.decoded.resourceMetrics || []).flatMap((rm) => (rm.scopeMetrics || [])
        .flatMap((sm) => (sm.metrics || []).map((m) => m.name)))));
    await rx.waitFor((r) => names(r).has('gen_ai.invoke_agent.duration') && names(r).has('gen_ai.execute_tool.duration'));
  } finally {
    const r = await t.stop();
    await rx.close();
    assert.equal(r.code, 0, t.rawStderr.slice(-3000));
  }
});

test('http_fetch: allowlist, private addresses refused after resolution and on redirects, size cap, POST', async () => {
  const port = web.address().port;
  const base = `http://127.0.0.1:${port}`;
  const script = [
    `CALL http_fetch {"url":"${base}/hello"} CALL http_fetch {"url":"${base}/moved"} CALL http_fetch {"url":"${base}/big"}` +
    ` CALL http_fetch {"url":"${base}/echo","method":"POST","body":"{\\"a\\":1}"} CALL http_fetch {"url":"${base}/away"}` +
    ` CALL http_fetch {"url":"http://user@127.0.0.1:${port}/hello"} CALL http_fetch {"url":"ftp://x/"}`,
    'done'].join('\n---\n');
  webRequests = [];
  const { body } = await run('fetcher', script);
  assert.equal(body.status, 'succeeded', JSON.stringify(body));
  const t = tools(body);
  assert.equal(t[0].status, 'ok');
  assert.equal(t[0].result, 'HTTP 200 (text/plain)\n\nhello');
  assert.equal(t[1].result, 'HTTP 200 (text/plain)\n\nhello', 'the redirect is followed');
  assert.match(t[2].result, /^HTTP 200 \(text\/plain\)\n\nb+\n\[truncated: the tool answered \d+ bytes, the first 100 are shown\]$/);
  assert.equal(t[3].result, 'HTTP 201 (application/json)\n\n{"a":1}');
  assert.equal(t[4].status, 'error');
  assert.match(t[4].result, /not under one of the agent's allow_urls/, 'a redirect target is checked again');
  assert.equal(t[5].status, 'error');
  assert.equal(t[6].status, 'error');
  assert.ok(webRequests.some((r) => r.method === 'POST' && r.body === '{"a":1}'));
  assert.ok(webRequests.every((r) => r.host === `127.0.0.1:${port}`));
  // without allow_private_networks, loopback is refused whatever the allowlist says: by address and by name
  webRequests = [];
  const { body: g } = await run('guarded', `CALL http_fetch {"url":"${base}/hello"} CALL http_fetch {"url":"http://localhost:${port}/hello"}\n---\nok`);
  const gt = tools(g);
  assert.equal(gt[0].status, 'error');
  assert.match(gt[0].result, /refused: 127\.0\.0\.1 resolves to a private, loopback or link-local address/);
  assert.match(gt[1].result, /refused: localhost resolves to a private/);
  assert.equal(webRequests.length, 0, 'nothing reached the server');
});

test('a step refused for a while (the gateway\'s admission is full) is asked again, not failed', async () => {
  const cfg = 'gateway:\n  max_concurrent_requests: 1\n  admission: {queue_size: 0}\nmodels:\n  - name: slow\n    provider: mock\n    mock: {latency: 400ms}\n' +
    'agents:\n  - name: slowpoke\n    model: slow\n';
  const t = await startAgentd({ config: cfg });
  try {
    const first = await run('slowpoke', 'one', { wait: false, key: 'none' }, t);
    assert.equal(first.status, 202);
    const second = await run('slowpoke', 'two', { key: 'none' }, t); // its first try finds the one slot taken
    assert.equal(second.body.status, 'succeeded', JSON.stringify(second.body));
    assert.equal(second.body.output, 'echo: two');
    await t.waitLog((l) => l.msg && new RegExp(`^agent run ${second.body.id}: step 1 refused with (429|503)`).test(l.msg));
  } finally {
    const r = await t.stop();
    assert.equal(r.code, 0, t.rawStderr.slice(-3000));
  }
});
