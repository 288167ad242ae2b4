// Agents' MCP client over stdio (issue 11 item 5): a server built with the official @modelcontextprotocol/sdk
// (McpServer + StdioServerTransport, agents_mcp_stdio_server.mjs) configured by command, args and env. agentd
// starts it with libuv pipes, initializes it (initialize, notifications/initialized), lists and calls its tools
// with newline-delimited JSON-RPC, tells it about calls it gave up on (notifications/cancelled), logs its stderr
// (bounded), starts it again when it dies, and stops it at shutdown.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, startAgentd } from '../lib/agentd.mjs';

const server = new URL('./agents_mcp_stdio_server.mjs', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'agentd-mcp-stdio-'));
const mcpLog = join(tmp, 'mcp.log');
const received = () => (existsSync(mcpLog) ? readFileSync(mcpLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l)) : []);

const ADMIN = 'admin-key-for-stdio-test';
let d;
before(async () => {
  d = await startAgentd({
    env: { AGENTD_ADMIN_KEY: ADMIN },
    config: `
server: { workers: 1 }
agents:
  - name: stdio
    model: mock
    mcp_servers:
      - {name: tools, command: "${process.execPath}", args: ["${server}"], env: ["MCP_LOG=${mcpLog}", "GREETING=hi"], tools_ttl: 1h}
  - name: impatient
    model: mock
    limits: {tool_timeout: 300ms}
    mcp_servers:
      - {name: tools, command: "${process.execPath}", args: ["${server}"], env: ["MCP_LOG=${mcpLog}", "GREETING=hi"], tools_ttl: 1h}
  - name: missing
    model: mock
    mcp_servers:
      - {name: nope, command: /nonexistent/mcp-server}
`,
  });
});
after(async () => {
  if (d) await d.stop();
  rmSync(tmp, { recursive: true, force: true });
});

async function run(agent, input) {
  const r = await d.fetch(`/v1/agents/${agent}/runs`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input, wait: true }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  return body;
}
const calls = (b) => b.steps.filter((s) => s.type === 'tool_call');

test('a stdio server: started, initialized, listed and called; env reaches it; its errors are tool errors', async () => {
  const b = await run('stdio', 'CALL tools__add {"a":2,"b":3} CALL tools__fail {}\n---\ndone');
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  const [add, fail] = calls(b);
  assert.equal(add.status, 'ok', add.result);
  assert.equal(add.result, 'sum=5 greeting=hi');
  assert.equal(fail.status, 'error');
  assert.match(fail.result, /the disk is on fire/);
  const methods = received().map((m) => m.method);
  assert.deepEqual(methods.slice(0, 3), ['initialize', 'notifications/initialized', 'tools/list'], JSON.stringify(methods));
  assert.equal(received()[0].params.protocolVersion, '2025-11-25');
  assert.equal(methods.filter((m) => m === 'tools/call').length, 2);
});

test('a call past tool_timeout is cancelled with notifications/cancelled naming its id', async () => {
  const b = await run('impatient', 'CALL tools__slow {"ms":3000}\n---\ngave up');
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  assert.equal(calls(b)[0].status, 'timeout');
  const slow = received().find((m) => m.method === 'tools/call' && m.params.name === 'slow');
  assert.ok(slow, 'the call reached the server');
  for (let i = 0; !received().some((m) => m.method === 'notifications/cancelled' && m.params.requestId === slow.id); i++) {
    assert.ok(i < 300, `no notifications/cancelled for id ${slow.id}: ${JSON.stringify(received())}`);
    await new Promise((r) => setTimeout(r, 10));
  }
});

test('a server that dies is started again; its call in flight is a tool error', async () => {
  const pid1 = Number(calls(await run('stdio', 'CALL tools__pid {}\n---\nok'))[0].result);
  assert.ok(pid1 > 0);
  const b = await run('stdio', 'CALL tools__die {}\n---\nnoted');
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  assert.equal(calls(b)[0].status, 'error');
  assert.match(calls(b)[0].result, /exited \(status 3\)/);
  const c = calls(await run('stdio', 'CALL tools__pid {}\n---\nok'))[0];
  assert.equal(c.status, 'ok', c.result);
  const pid2 = Number(c.result);
  assert.ok(pid2 > 0 && pid2 !== pid1, `a new process: ${pid1} then ${pid2}`);
  assert.throws(() => process.kill(pid1, 0), /ESRCH/);
  await d.waitLog((l) => /MCP server tools exited \(status 3\); restarting it/.test(l.msg ?? ''));
});

test("the server's stderr is logged, a line at a time, bounded", async () => {
  const b = await run('stdio', 'CALL tools__noisy {"n":40}\n---\nok');
  assert.equal(calls(b)[0].result, 'noisy');
  const first = await d.waitLog((l) => /MCP server tools stderr: noise line 0 /.test(l.msg ?? ''));
  assert.ok(first.msg.length < 700, `a long line is cut: ${first.msg.length}`);
  assert.ok(first.msg.endsWith('...'));
  await d.waitLog((l) => /MCP server tools stderr: noise line 19 /.test(l.msg ?? ''));
  // lines past 20 per 10 s are counted, not logged
  const more = d.logs.filter((l) => /noise line (2[0-9]|3[0-9]) /.test(l.msg ?? ''));
  assert.equal(more.length, 0, JSON.stringify(more.slice(0, 2)));
});

test('a command that cannot start offers no tools; the run goes on', async () => {
  const b = await run('missing', 'CALL nope__anything {}\n---\nfine');
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  assert.equal(calls(b).length, 0);
  await d.waitLog((l) => /MCP server nope: cannot start '\/nonexistent\/mcp-server'/.test(l.msg ?? ''));
});

test('the admin API cannot define a stdio server (no program starts through HTTP)', async () => {
  const r = await d.fetch('/admin/agents', {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify({ name: 'sneaky', model: 'mock', mcp_servers: [{ name: 'sh', command: '/bin/sh', args: ['-c', 'touch /tmp/x'] }] }),
  });
  const body = await r.json();
  assert.equal(r.status, 400, JSON.stringify(body));
  assert.match(body.error.message, /stdio server \(command\) can only be configured in the configuration file/);
  const ok = await d.fetch('/admin/agents', {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify({ name: 'fine', model: 'mock', mcp_servers: [{ name: 'h', url: 'http://127.0.0.1:9/mcp' }] }),
  });
  assert.equal(ok.status, 201, await ok.text());
});

test('a malformed stdio server is a configuration error naming file:line:column', () => {
  const f = join(tmp, 'bad.yaml');
  writeFileSync(f, 'agents:\n  - name: a\n    model: mock\n    mcp_servers:\n      - {name: both, url: "http://x/mcp", command: /bin/true}\n      - {name: neither}\n      - {name: env, command: /bin/true, env: ["NOEQUALS"]}\n');
  const r = spawnSync(BIN, ['config', 'check', f], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /bad\.yaml:5:9: .*either a url \(Streamable HTTP\) or a command \(stdio\), not both/);
  assert.match(r.stderr, /bad\.yaml:6:9: .*either a url/);
  assert.match(r.stderr, /bad\.yaml:7:9: .*env entries must be "NAME=value"/);
});

test('at shutdown the server process is stopped', async () => {
  const pid = Number(calls(await run('stdio', 'CALL tools__pid {}\n---\nok'))[0].result);
  assert.equal(process.kill(pid, 0), true);
  const r = await d.stop();
  d = null;
  assert.equal(r.code, 0);
  for (let i = 0; ; i++) {
    try { process.kill(pid, 0); } catch (e) { assert.equal(e.code, 'ESRCH'); break; }
    assert.ok(i < 300, `the MCP server ${pid} outlived agentd`);
    await new Promise((r) => setTimeout(r, 10));
  }
});
