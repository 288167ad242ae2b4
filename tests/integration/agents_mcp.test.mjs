// Agents' MCP client (issue 11 item 5): tools from MCP servers over Streamable HTTP, against a real server built
// with the official @modelcontextprotocol/sdk (McpServer + StreamableHTTPServerTransport): one endpoint answering
// with SSE streams, one with JSON bodies. The mock model calls `<server>__<tool>`; agentd initializes a session
// (server/discover first, refused by this session-era server, so initialize, notifications/initialized, then
// Mcp-Session-Id and MCP-Protocol-Version on every request), lists
// the tools (cached), calls them, gives the content back to the model, turns the server's errors into tool
// errors, and makes a new session when the server forgets its own (404).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';
import { startAgentd } from '../lib/agentd.mjs';

// ---- the MCP server ----

const seen = []; // {path, rpc, session, version}
const sessions = new Map(); // session id -> transport
const servers = new Set(); // the McpServer of each session

function newMcpServer() {
  const s = new McpServer({ name: 'agentd-test-server', version: '1.0.0' }, { capabilities: { logging: {} } });
  s.registerTool('add', { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }, extra) => {
      // a notification on the response's SSE stream before the result: the client must skip it
      await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', data: 'adding' } });
      return { content: [{ type: 'text', text: `sum=${a + b}` }] };
    });
  s.registerTool('fail', { description: 'Always fails', inputSchema: {} }, async () => {
    throw new Error('the disk is on fire');
  });
  s.registerTool('slow', { description: 'Answers after ms', inputSchema: { ms: z.number() } }, async ({ ms }) => {
    await new Promise((r) => setTimeout(r, ms));
    return { content: [{ type: 'text', text: 'slept' }] };
  });
  s.registerTool('pic', { description: 'An image and a structured result', inputSchema: {} }, async () => ({
    content: [{ type: 'text', text: 'here:' }, { type: 'image', data: 'aGVsbG8=', mimeType: 'image/png' }],
  }));
  return s;
}

async function readBody(req) {
  let b = '';
  for await (const c of req) b += c;
  return b;
}

let mcpHttp, mcpBase;
async function startMcp() {
  mcpHttp = createServer(async (req, res) => {
    const json = req.url === '/json-mcp';
    if (req.url === '/list-changed') { // every session's server says its tool list changed (on its GET stream)
      for (const s of servers) if (s.isConnected()) s.sendToolListChanged();
      res.end('sent');
      return;
    }
    if (req.url === '/drop-sessions') { // the server forgets every session (as after a restart)
      for (const t of sessions.values()) await t.close();
      sessions.clear();
      res.end('dropped');
      return;
    }
    if (req.url !== '/sse-mcp' && !json) { res.writeHead(404); res.end(); return; }
    const text = req.method === 'POST' ? await readBody(req) : '';
    let body;
    try { body = text ? JSON.parse(text) : undefined; } catch { body = undefined; }
    const sid = req.headers['mcp-session-id'];
    seen.push({ path: req.url, rpc: body?.method ?? (body?.id !== undefined ? 'response' : req.method), session: sid, version: req.headers['mcp-protocol-version'], accept: req.headers.accept });
    let transport = sid ? sessions.get(sid) : undefined;
    if (sid && !transport) { // an unknown or ended session: 404, the spec's signal to initialize again
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null }));
      return;
    }
    if (!transport) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: json,
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      const srv = newMcpServer();
      servers.add(srv);
      await srv.connect(transport);
    }
    await transport.handleRequest(req, res, body);
  });
  await new Promise((r) => mcpHttp.listen(0, '127.0.0.1', r));
  mcpBase = `http://127.0.0.1:${mcpHttp.address().port}`;
}

// ---- agentd ----

let d, deadPort;
before(async () => {
  await startMcp();
  const dead = createServer();
  await new Promise((r) => dead.listen(0, '127.0.0.1', r));
  deadPort = dead.address().port;
  await new Promise((r) => dead.close(r));
  d = await startAgentd({
    config: `
server: { workers: 1 }
agents:
  - name: mcper
    model: mock
    tools: [echo]
    mcp_servers:
      - {name: calc, url: "${mcpBase}/sse-mcp", tools_ttl: 1h}
      - {name: jcalc, url: "${mcpBase}/json-mcp", headers: ["X-Test: yes"]}
  - name: impatient
    model: mock
    limits: {tool_timeout: 300ms}
    mcp_servers:
      - {name: calc, url: "${mcpBase}/sse-mcp"}
  - name: lonely
    model: mock
    mcp_servers:
      - {name: gone, url: "http://127.0.0.1:${deadPort}/mcp", timeout: 2s}
`,
  });
});
after(async () => {
  const r = await d.stop();
  mcpHttp.close();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
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
const count = (path, rpc) => seen.filter((s) => s.path === path && s.rpc === rpc).length;

test('MCP tools over Streamable HTTP (SSE and JSON responses): session, list, call', async () => {
  const b = await run('mcper', 'CALL calc__add {"a":2,"b":3} CALL jcalc__add {"a":40,"b":2} CALL echo {"text":"built-in"}\n---\ndone');
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  const [c1, c2, c3] = calls(b);
  assert.equal(c1.tool, 'calc__add');
  assert.equal(c1.status, 'ok', c1.result);
  assert.equal(c1.result, 'sum=5');
  assert.equal(c2.status, 'ok', c2.result);
  assert.equal(c2.result, 'sum=42');
  assert.equal(c3.result, 'built-in');

  for (const path of ['/sse-mcp', '/json-mcp']) {
    const all = seen.filter((s) => s.path === path);
    const mine = all.filter((s) => s.rpc !== 'GET');
    // 2026-07-28 first (server/discover); this SDK server speaks only the session era, so: initialize
    assert.deepEqual(mine.slice(0, 5).map((s) => s.rpc), ['server/discover', 'initialize', 'notifications/initialized', 'tools/list', 'tools/call'], JSON.stringify(mine));
    assert.equal(mine[0].version, '2026-07-28');
    assert.equal(mine[1].session, undefined, 'initialize carries no session');
    assert.match(mine[1].accept, /application\/json/);
    assert.match(mine[1].accept, /text\/event-stream/);
    for (const s of mine.slice(2)) {
      assert.ok(s.session && sessions.has(s.session), `the session id is echoed: ${JSON.stringify(s)}`);
      assert.equal(s.version, '2025-11-25');
    }
    // once the session is ready, its GET stream (the server's requests and notifications) is opened in it
    const get = all.find((s) => s.rpc === 'GET');
    assert.ok(get && get.session === mine[2].session && get.version === '2025-11-25', JSON.stringify(all));
    assert.equal(get.accept, 'text/event-stream');
  }
});

test('tools/list is cached; a forgotten session (404) is made again', async () => {
  const lists = count('/sse-mcp', 'tools/list');
  let b = await run('mcper', 'CALL calc__add {"a":1,"b":1}\n---\ndone');
  assert.equal(calls(b)[0].result, 'sum=2');
  assert.equal(count('/sse-mcp', 'tools/list'), lists, 'tools_ttl 1h: listed once');

  const inits = count('/sse-mcp', 'initialize');
  await (await fetch(`${mcpBase}/drop-sessions`)).text();
  b = await run('mcper', 'CALL calc__add {"a":3,"b":4}\n---\ndone');
  assert.equal(calls(b)[0].status, 'ok', calls(b)[0].result);
  assert.equal(calls(b)[0].result, 'sum=7');
  assert.equal(count('/sse-mcp', 'initialize'), inits + 1, 'a new session after the 404');
});

test("the server's errors are tool errors the model sees, not run failures", async () => {
  const b = await run('mcper', 'CALL calc__fail {} CALL jcalc__pic {} CALL calc__add {"a":"x"}\n---\nhandled');
  assert.equal(b.status, 'succeeded');
  assert.equal(b.output, 'handled');
  const [f, p, bad] = calls(b);
  assert.equal(f.status, 'error');
  assert.match(f.result, /the disk is on fire/);
  assert.equal(p.status, 'ok');
  assert.equal(p.result, 'here:\n[image image/png, 8 bytes of base64]');
  assert.equal(bad.status, 'error', bad.result); // input validation: isError (or a JSON-RPC error)
});

test('a call past tool_timeout ends timeout and the server is told (notifications/cancelled)', async () => {
  const before_ = count('/sse-mcp', 'notifications/cancelled');
  const b = await run('impatient', 'CALL calc__slow {"ms":3000}\n---\ngave up');
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  assert.equal(calls(b)[0].status, 'timeout');
  // the notification is sent as the call is cancelled; wait for it to arrive (bounded)
  for (let i = 0; count('/sse-mcp', 'notifications/cancelled') === before_; i++) {
    assert.ok(i < 200, 'no notifications/cancelled reached the server');
    await new Promise((r) => setTimeout(r, 10));
  }
});

test('an MCP server that cannot be reached offers no tools; the run goes on', async () => {
  const b = await run('lonely', 'CALL gone__anything {}\n---\nfine');
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  assert.equal(calls(b).length, 0, 'the tool was never offered, so the mock did not call it');
});

test('notifications/tools/list_changed on the session GET stream drops the cached tool list', async () => {
  let b = await run('mcper', 'CALL calc__add {"a":1,"b":2}\n---\ndone'); // a session, its GET stream, the list cached
  assert.equal(calls(b)[0].result, 'sum=3');
  const lists = count('/sse-mcp', 'tools/list');
  await (await fetch(`${mcpBase}/list-changed`)).text();
  assert.ok(await d.waitLog((l) => /^MCP server calc: its tool list changed/.test(l.msg ?? '')));
  b = await run('mcper', 'CALL calc__add {"a":2,"b":2}\n---\ndone');
  assert.equal(calls(b)[0].result, 'sum=4');
  assert.equal(count('/sse-mcp', 'tools/list'), lists + 1, 'tools_ttl 1h, yet listed again after list_changed');
});
