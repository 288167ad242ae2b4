// The MCP gateway at /mcp (issue 12 item 3): upstream MCP servers from `mcp.servers:` federated behind /mcp as
// `<server>__<tool>`, calls demultiplexed to the right server, per-key tool allow/deny lists (a denied tool is
// absent from tools/list and "Unknown tool" when called, word for word what a tool nobody has gets), the trace
// context propagated in `_meta` (traceparent, tracestate, baggage), upstream errors mapped, an upstream that
// crashes, hangs or answers garbage contained, every call counted against the key's rpm and in the metrics. One
// upstream is a stdio server (a process agentd starts), the others Streamable HTTP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';
import { startAgentd } from '../lib/agentd.mjs';
import { startReceiver } from '../lib/otlp_receiver.mjs';

const ADMIN = 'adm-' + 'g'.repeat(24);

async function readBody(req) {
  let b = '';
  for await (const c of req) b += c;
  return b;
}

// ---- upstream "files": the official SDK server ----

const filesCalls = []; // the tools/call bodies it received
const sessions = new Map();
const filesServers = new Set(); // each session's McpServer
function filesServer() {
  const s = new McpServer({ name: 'files', version: '1.0.0' });
  s.registerTool('read', { description: 'Reads a file', inputSchema: { path: z.string() } },
    async ({ path }) => ({ content: [{ type: 'text', text: `contents of ${path}` }] }));
  s.registerTool('rm', { description: 'Removes a file', inputSchema: { path: z.string() } },
    async ({ path }) => ({ content: [{ type: 'text', text: `removed ${path}` }] }));
  s.registerTool('fail', { description: 'Always fails', inputSchema: {} }, async () => {
    throw new Error('the disk is on fire');
  });
  s.registerTool('pic', { description: 'An image', inputSchema: {}, annotations: { readOnlyHint: true } }, async () => ({
    content: [{ type: 'image', data: 'aGVsbG8=', mimeType: 'image/png' }],
  }));
  return s;
}

// ---- upstream "bad": answers tools/list, then crashes, hangs or talks garbage on calls ----

const hung = [];
function badHandler(req, res, body) {
  let m;
  try { m = JSON.parse(body); } catch { res.writeHead(400); res.end(); return; }
  if (m.id === undefined) { res.writeHead(202); res.end(); return; }
  const answer = (result) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: m.id, result }));
  };
  if (m.method === 'initialize') return answer({ protocolVersion: '2025-11-25', capabilities: { tools: {} }, serverInfo: { name: 'bad', version: '0' } });
  if (m.method === 'tools/list') {
    return answer({ tools: ['garbage', 'crash', 'hang', 'rpcerr'].map((name) => ({ name, inputSchema: { type: 'object' } })) });
  }
  const name = m.params?.name;
  if (name === 'garbage') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"jsonrpc":"2.0","id":'); return; }
  if (name === 'crash') { req.socket.destroy(); return; }
  if (name === 'hang') { hung.push(res); return; }
  if (name === 'rpcerr') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32099, message: 'quota exhausted upstream' } }));
    return;
  }
  answer({ content: [{ type: 'text', text: 'unexpected' }] });
}

let up, upBase, deadPort;
async function startUpstreams() {
  up = createServer(async (req, res) => {
    const body = req.method === 'POST' ? await readBody(req) : '';
    if (req.url === '/bad') return badHandler(req, res, body);
    if (req.url !== '/files') { res.writeHead(404); res.end(); return; }
    let parsed;
    try { parsed = body ? JSON.parse(body) : undefined; } catch { parsed = undefined; }
    if (parsed?.method === 'tools/call') filesCalls.push(parsed);
    const sid = req.headers['mcp-session-id'];
    let t = sid ? sessions.get(sid) : undefined;
    if (!t) {
      t = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), enableJsonResponse: true,
        onsessioninitialized: (id) => sessions.set(id, t) });
      const srv = filesServer();
      filesServers.add(srv);
      await srv.connect(t);
    }
    await t.handleRequest(req, res, parsed);
  });
  await new Promise((r) => up.listen(0, '127.0.0.1', r));
  upBase = `http://127.0.0.1:${up.address().port}`;
  const dead = createServer();
  await new Promise((r) => dead.listen(0, '127.0.0.1', r));
  deadPort = dead.address().port;
  await new Promise((r) => dead.close(r));
}

// ---- agentd ----

let d, rx;
const keys = {};
async function adminKey(body) {
  const r = await d.fetch('/admin/keys', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const t = await r.text();
  assert.equal(r.status, 201, t);
  return JSON.parse(t);
}

before(async () => {
  await startUpstreams();
  rx = await startReceiver();
  d = await startAgentd({
    env: { AGENTD_ADMIN_KEY: ADMIN, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '100',
      AGENTD_TELEMETRY_LOGS: 'false' },
    config: `
auth:
  mode: keys
server: { workers: 1 }
mcp:
  servers:
    - {name: files, url: "${upBase}/files"}
    - {name: bad, url: "${upBase}/bad", timeout: 700ms}
    - {name: dead, url: "http://127.0.0.1:${deadPort}/mcp", timeout: 2s}
    - {name: local, command: "${process.execPath}", args: ["${new URL('./agents_mcp_stdio_server.mjs', import.meta.url).pathname}"], env: ["GREETING=gw"]}
`,
  });
  keys.all = await adminKey({ name: 'gw-all' });
  keys.limited = await adminKey({ name: 'gw-limited', mcp_tools: ['files__*'], mcp_deny: ['files__rm'] });
  keys.slow = await adminKey({ name: 'gw-rpm', rpm: 2 });
  for (const k of Object.values(keys)) {
    for (let i = 0; i < 200; i++) {
      const r = await d.fetch('/v1/me', { headers: { authorization: `Bearer ${k.key}` } });
      await r.arrayBuffer();
      if (r.status === 200) break;
      await new Promise((res) => setTimeout(res, 20));
    }
  }
});

after(async () => {
  for (const res of hung) res.destroy();
  const r = await d.stop();
  up.close();
  up.closeAllConnections();
  await rx.close();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

async function client(k) {
  const c = new Client({ name: 'gw-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(d.url + '/mcp'), {
    requestInit: { headers: { authorization: `Bearer ${k.key}` } },
  });
  await c.connect(transport);
  return c;
}

async function rpcError(p) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof McpError, String(e));
    return e;
  }
  assert.fail('the call succeeded');
}

test('upstream tools are listed as <server>__<tool>, with their schemas and annotations, in name order', async () => {
  const c = await client(keys.all);
  const { tools } = await c.listTools();
  const names = tools.map((t) => t.name);
  for (const n of ['files__read', 'files__rm', 'files__fail', 'files__pic', 'bad__garbage', 'bad__hang', 'echo'])
    assert.ok(names.includes(n), `${n} in ${names}`);
  assert.ok(!names.some((n) => n.startsWith('dead__')), 'an unreachable server lists nothing');
  assert.deepEqual(names, [...names].sort());
  const read = tools.find((t) => t.name === 'files__read');
  assert.equal(read.description, 'Reads a file');
  assert.equal(read.inputSchema.properties.path.type, 'string');
  assert.equal(tools.find((t) => t.name === 'files__pic').annotations.readOnlyHint, true);
  await c.close();
});

test('a call goes to its server as the plain tool name; content passes through; the trace context goes in _meta', async () => {
  const c = await client(keys.all);
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const before = filesCalls.length;
  const r = await c.callTool({ name: 'files__read', arguments: { path: '/etc/motd' },
    _meta: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: 'vendor=abc', baggage: 'tenant=t1' } });
  assert.deepEqual(r.content, [{ type: 'text', text: 'contents of /etc/motd' }]);
  assert.ok(!r.isError);
  const sent = filesCalls.slice(before).find((m) => m.params.name === 'read');
  assert.ok(sent, 'the upstream got tools/call of "read"');
  assert.deepEqual(sent.params.arguments, { path: '/etc/motd' });
  const tp = sent.params._meta.traceparent;
  assert.match(tp, new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`), 'the same trace');
  assert.notEqual(tp.split('-')[2], '00f067aa0ba902b7', 'a span of agentd\'s as the parent');
  assert.equal(sent.params._meta.tracestate, 'vendor=abc');
  assert.equal(sent.params._meta.baggage, 'tenant=t1');
  const pic = await c.callTool({ name: 'files__pic', arguments: {} });
  assert.deepEqual(pic.content, [{ type: 'image', data: 'aGVsbG8=', mimeType: 'image/png' }]);
  const fail = await c.callTool({ name: 'files__fail', arguments: {} });
  assert.equal(fail.isError, true);
  assert.match(fail.content[0].text, /the disk is on fire/);
  await c.close();
});

test('a stdio upstream is federated the same way', async () => {
  const c = await client(keys.all);
  const names = (await c.listTools()).tools.map((t) => t.name);
  assert.ok(names.includes('local__add'), names.join(','));
  const r = await c.callTool({ name: 'local__add', arguments: { a: 2, b: 3 } });
  assert.deepEqual(r.content, [{ type: 'text', text: 'sum=5 greeting=gw' }]);
  await c.close();
});

test('spans: SERVER "tools/call <tool>" continuing the client\'s trace, CLIENT to the upstream as its child', async () => {
  const c = await client(keys.all);
  const traceId = '0af7651916cd43dd8448eb211c80319c';
  const before = filesCalls.length;
  await c.callTool({ name: 'files__read', arguments: { path: 'traced' }, _meta: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } });
  await c.callTool({ name: 'files__fail', arguments: {}, _meta: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } });
  await c.close();
  const sentSpan = filesCalls.slice(before).find((m) => m.params.name === 'read').params._meta.traceparent.split('-')[2];
  await rx.waitFor((r) => r.spans().filter((x) => x.traceId === traceId).length >= 4);
  const spans = rx.spans().filter((x) => x.traceId === traceId);
  const server = spans.find((x) => x.kind === 2 && x.name === 'tools/call files__read');
  assert.ok(server, JSON.stringify(spans.map((x) => [x.name, x.kind])));
  assert.equal(server.parentSpanId, 'b7ad6b7169203331');
  assert.equal(server.attrs['mcp.method.name'], 'tools/call');
  assert.equal(server.attrs['gen_ai.tool.name'], 'files__read');
  assert.equal(server.attrs['gen_ai.operation.name'], 'execute_tool');
  assert.equal(server.attrs['mcp.protocol.version'], '2025-11-25');
  assert.match(server.attrs['mcp.session.id'], /^[0-9a-f]{32}$/);
  assert.equal(server.attrs['agentd.key.id'], keys.all.id);
  const cl = spans.find((x) => x.kind === 3 && x.name === 'tools/call read');
  assert.ok(cl, JSON.stringify(spans.map((x) => [x.name, x.kind])));
  assert.equal(cl.parentSpanId, server.spanId);
  assert.equal(cl.spanId, sentSpan, 'the upstream\'s parent is the CLIENT span');
  assert.equal(cl.attrs['agentd.mcp.server'], 'files');
  const failed = spans.find((x) => x.kind === 2 && x.name === 'tools/call files__fail');
  assert.equal(failed.attrs['error.type'], 'tool_error');
});

test('per-key lists: a denied tool is absent, and calling it is "Unknown tool" exactly like a tool nobody has', async () => {
  const c = await client(keys.limited);
  const names = (await c.listTools()).tools.map((t) => t.name);
  assert.ok(names.includes('files__read'));
  assert.ok(!names.includes('files__rm'), 'denied');
  assert.ok(!names.includes('echo') && !names.some((n) => n.startsWith('bad__')), 'not on the allow list');
  const before = filesCalls.length;
  const denied = await rpcError(c.callTool({ name: 'files__rm', arguments: { path: '/' } }));
  assert.equal(denied.code, -32602);
  assert.equal(denied.message, 'MCP error -32602: Unknown tool: files__rm');
  const echo = await rpcError(c.callTool({ name: 'echo', arguments: { text: 'x' } }));
  assert.equal(echo.message, 'MCP error -32602: Unknown tool: echo');
  assert.equal(filesCalls.length, before, 'nothing reached the upstream');
  const ok = await c.callTool({ name: 'files__read', arguments: { path: 'a' } });
  assert.equal(ok.content[0].text, 'contents of a');
  await c.close();
  const all = await client(keys.all);
  const nobody = await rpcError(all.callTool({ name: 'nosuch__rm', arguments: {} }));
  assert.equal(nobody.message, 'MCP error -32602: Unknown tool: nosuch__rm', 'the same words for a tool nobody has');
  await all.close();
});

test('an upstream that answers garbage, crashes, hangs or is down fails only its call, as a tool error', async () => {
  const c = await client(keys.all);
  for (const name of ['bad__garbage', 'bad__crash', 'bad__hang']) {
    const t0 = Date.now();
    const r = await c.callTool({ name, arguments: {} });
    assert.equal(r.isError, true, name);
    assert.match(r.content[0].text, /^MCP server bad failed: /, name);
    assert.equal(r._meta['agentd/upstream_error'], true);
    assert.ok(Date.now() - t0 < 10000, `${name} is bounded by the server's timeout`);
  }
  const e = await rpcError(c.callTool({ name: 'bad__rpcerr', arguments: {} }));
  assert.equal(e.code, -32099, 'an implementation-defined code is kept');
  assert.match(e.message, /quota exhausted upstream \(MCP server bad\)/);
  const down = await c.callTool({ name: 'dead__anything', arguments: {} });
  assert.equal(down.isError, true);
  assert.match(down.content[0].text, /^MCP server dead failed: /);
  const ok = await c.callTool({ name: 'files__read', arguments: { path: 'still' } });
  assert.equal(ok.content[0].text, 'contents of still', 'the others go on working');
  await c.close();
});

test('the stateless era (2026-07-28) lists and calls federated tools too', async () => {
  const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
  const h = (method, name) => ({ 'content-type': 'application/json', accept: 'application/json, text/event-stream',
    authorization: `Bearer ${keys.limited.key}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': method,
    ...(name ? { 'mcp-name': name } : {}) });
  let r = await d.fetch('/mcp', { method: 'POST', headers: h('tools/list'), body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { _meta: meta } }) });
  let j = await r.json();
  assert.equal(r.status, 200);
  assert.deepEqual(j.result.tools.map((t) => t.name), ['files__fail', 'files__pic', 'files__read']);
  assert.equal(j.result.resultType, 'complete');
  r = await d.fetch('/mcp', { method: 'POST', headers: h('tools/call', 'files__read'), body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'files__read', arguments: { path: 'p' }, _meta: meta } }) });
  j = await r.json();
  assert.equal(j.result.content[0].text, 'contents of p');
  assert.equal(j.result._meta['io.modelcontextprotocol/serverInfo'].name, 'agentd');
  // Mcp-Name naming an allowed tool while the body calls a denied one: refused before anything runs
  const before = filesCalls.length;
  r = await d.fetch('/mcp', { method: 'POST', headers: h('tools/call', 'files__read'), body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'files__rm', arguments: { path: '/' }, _meta: meta } }) });
  j = await r.json();
  assert.equal(r.status, 400);
  assert.equal(j.error.code, -32020);
  assert.equal(filesCalls.length, before);
});

test('every tools/call counts against the key\'s rpm: over it, HTTP 429 with Retry-After and -32029', async () => {
  const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
  const call = (id) => d.fetch('/mcp', { method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream',
      authorization: `Bearer ${keys.slow.key}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'files__read' },
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'files__read', arguments: { path: String(id) }, _meta: meta } }) });
  for (const id of [1, 2]) {
    const r = await call(id);
    assert.equal(r.status, 200, await r.text());
  }
  const before = filesCalls.length;
  const r = await call(3);
  const j = await r.json();
  assert.equal(r.status, 429);
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  assert.equal(j.error.code, -32029);
  assert.match(j.error.message, /Rate limit reached for key/);
  assert.ok(j.error.data.retryAfterMs > 0);
  assert.equal(filesCalls.length, before, 'nothing reached the upstream');
  // listing is not a call: still answered
  const c = await client(keys.slow);
  assert.ok((await c.listTools()).tools.length > 0);
  await c.close();
});

test('metrics: requests by key, method and outcome; server and client operation durations', async () => {
  const r = await d.opsFetch('/metrics');
  const m = await r.text();
  const id = keys.limited.id;
  assert.match(m, new RegExp(`agentd_mcp_requests_total\\{key="${id}",method="tools/call",outcome="-32602"\\} [1-9]`));
  assert.match(m, new RegExp(`agentd_mcp_requests_total\\{key="${id}",method="tools/call",outcome="ok"\\} [1-9]`));
  assert.match(m, /agentd_mcp_requests_total\{key="[^"]+",method="tools\/call",outcome="upstream_error"\} 4/);
  assert.match(m, /agentd_mcp_requests_total\{key="[^"]+",method="tools\/call",outcome="tool_error"\} 2/, 'files__fail twice; upstream failures are not tool_error');
  assert.match(m, /agentd_mcp_requests_total\{key="[^"]+",method="tools\/call",outcome="rate_limited"\} 1/);
  assert.match(m, /mcp_server_operation_duration_seconds_count\{mcp_method_name="tools\/call",gen_ai_tool_name="files__read",error_type="",mcp_protocol_version="2025-11-25"\} [1-9]/);
  assert.match(m, /mcp_client_operation_duration_seconds_count\{mcp_method_name="tools\/call",gen_ai_tool_name="read",error_type="",server="files"\} [1-9]/);
  assert.match(m, /mcp_client_operation_duration_seconds_count\{mcp_method_name="tools\/list",gen_ai_tool_name="",error_type="upstream_error",server="dead"\} [1-9]/);
});

test('an upstream that announces a changed tool list (list_changed, on its GET stream) is listed again before its tools_ttl', async () => {
  const c = await client(keys.all);
  let names = (await c.listTools()).tools.map((t) => t.name);
  assert.ok(names.includes('files__read') && !names.includes('files__touch'), names.join());
  // registering a tool on a connected SDK server sends notifications/tools/list_changed
  for (const s of filesServers) {
    if (s.isConnected()) s.registerTool('touch', { description: 'Touches a file', inputSchema: {} }, async () => ({ content: [{ type: 'text', text: 'touched' }] }));
  }
  assert.ok(await d.waitLog((l) => /^MCP server files: its tool list changed/.test(l.msg ?? '')));
  names = (await c.listTools()).tools.map((t) => t.name);
  assert.ok(names.includes('files__touch'), names.join());
  await c.close();
});
