// MCP server at /mcp (issue 12): the official @modelcontextprotocol/sdk 1.x client over Streamable HTTP lists and
// calls agentd's tools (agents and built-ins); raw requests for both eras (2025-11-25 sessions, 2026-07-28
// stateless) and every kind of bad input get the era's JSON-RPC error with the right HTTP status, nothing run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { startAgentd } from '../lib/agentd.mjs';

const ADMIN = 'adm-' + 'm'.repeat(24);
const CONFIG = `auth:
  mode: keys
agents:
  - name: helper
    model: mock
    description: "A test agent that follows the mock's script."
    tools: [echo]
  - name: stepper
    model: mock
    tools: [echo]
    limits: {max_steps: 1}
`;

let d, key, key2;

async function adminKey(name) {
  const r = await d.fetch('/admin/keys', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
  const t = await r.text();
  assert.equal(r.status, 201, t);
  return JSON.parse(t).key;
}

before(async () => {
  d = await startAgentd({ env: { AGENTD_ADMIN_KEY: ADMIN }, config: CONFIG });
  key = await adminKey('mcp-test');
  key2 = await adminKey('mcp-other');
  // keys take effect within a second (the keyring polls its store): wait until both are known
  for (const k of [key, key2]) {
    for (let i = 0; i < 200; i++) {
      const r = await d.fetch('/v1/me', { headers: { authorization: `Bearer ${k}` } });
      await r.arrayBuffer();
      if (r.status === 200) break;
      await new Promise((res) => setTimeout(res, 20));
    }
  }
});

after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

async function sdkClient(k = key) {
  const client = new Client({ name: 'agentd-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(d.url + '/mcp'), {
    requestInit: { headers: { authorization: `Bearer ${k}` } },
  });
  await client.connect(transport);
  return { client, transport };
}

const LEGACY_H = (extra = {}) => ({
  'content-type': 'application/json', accept: 'application/json, text/event-stream',
  authorization: `Bearer ${key}`, ...extra,
});

async function post(body, headers = LEGACY_H()) {
  const r = await d.fetch('/mcp', { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await r.text();
  const json = text && /json/.test(r.headers.get('content-type') || '') ? JSON.parse(text) : null;
  return { status: r.status, headers: r.headers, text, json };
}

async function session(version = '2025-11-25') {
  const r = await post({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: version, capabilities: {}, clientInfo: { name: 'raw', version: '0' } } });
  assert.equal(r.status, 200, r.text);
  const sid = r.headers.get('mcp-session-id');
  assert.match(sid, /^[0-9a-f]{32}$/);
  return { sid, init: r.json };
}

test('the official SDK client: connect, list the tools in name order, call a built-in tool and an agent', async () => {
  const { client, transport } = await sdkClient();
  assert.equal(client.getServerVersion().name, 'agentd');
  assert.ok(transport.sessionId, 'a session id was minted');
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name), ['code_exec', 'echo', 'helper', 'stepper', 'wait']);
  const helper = tools.find((t) => t.name === 'helper');
  assert.equal(helper.description, "A test agent that follows the mock's script.");
  assert.deepEqual(helper.inputSchema.required, ['input']);

  const echo = await client.callTool({ name: 'echo', arguments: { text: 'hello mcp' } });
  assert.equal(echo.isError, false);
  assert.deepEqual(echo.content, [{ type: 'text', text: 'hello mcp' }]);

  const run = await client.callTool({ name: 'helper', arguments: { input: 'CALL echo {"text":"x"}\n---\nthe final answer' } });
  assert.equal(run.isError, false, JSON.stringify(run));
  assert.deepEqual(run.content, [{ type: 'text', text: 'the final answer' }]);
  assert.match(run._meta['agentd/run_id'], /^run_/);
  assert.equal(run._meta['agentd/run_status'], 'succeeded');

  // a run that ends at a limit is a tool error, not a protocol error
  const limited = await client.callTool({ name: 'stepper', arguments: { input: 'CALL echo {"text":"x"}\n---\nnever' } });
  assert.equal(limited.isError, true);
  assert.match(limited.content[0].text, /limit_exceeded/);

  // a built-in tool's own error (here: arguments it does not take) is a tool error too
  const bad = await client.callTool({ name: 'code_exec', arguments: { language: 'cobol', code: 'x' } });
  assert.equal(bad.isError, true);
  assert.match(bad.content[0].text, /language/);

  await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }),
    (e) => e instanceof McpError && e.code === -32602 && /Unknown tool: no_such_tool/.test(e.message));
  await client.ping();

  // closing ends the session (DELETE): the id is then unknown
  const sid = transport.sessionId;
  await transport.terminateSession();
  await client.close();
  const r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' }, LEGACY_H({ 'mcp-session-id': sid }));
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, -32001);
});

test('2025-11-25: version negotiation, sessions bound to their key, notifications get 202', async () => {
  const { sid, init } = await session('2025-06-18');
  assert.equal(init.result.protocolVersion, '2025-06-18');
  assert.ok(init.result.capabilities.tools);
  const other = await session('1999-01-01');
  assert.equal(other.init.result.protocolVersion, '2025-11-25', 'an unknown version gets the latest');

  const n = await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, LEGACY_H({ 'mcp-session-id': sid }));
  assert.equal(n.status, 202);
  assert.equal(n.text, '');
  const resp = await post({ jsonrpc: '2.0', id: 'x', result: {} }, LEGACY_H({ 'mcp-session-id': sid }));
  assert.equal(resp.status, 202);

  const ping = await post({ jsonrpc: '2.0', id: 'p1', method: 'ping' }, LEGACY_H({ 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18' }));
  assert.deepEqual(ping.json, { jsonrpc: '2.0', id: 'p1', result: {} });

  // another key presenting the id: as if it did not exist
  const stolen = await post({ jsonrpc: '2.0', id: 3, method: 'tools/list' }, LEGACY_H({ 'mcp-session-id': sid, authorization: `Bearer ${key2}` }));
  assert.equal(stolen.status, 404);
  assert.equal(stolen.json.error.code, -32001);

  // DELETE ends it; a second DELETE and any request then get 404
  const del = await d.fetch('/mcp', { method: 'DELETE', headers: LEGACY_H({ 'mcp-session-id': sid }) });
  assert.equal(del.status, 200);
  const again = await d.fetch('/mcp', { method: 'DELETE', headers: LEGACY_H({ 'mcp-session-id': sid }) });
  assert.equal(again.status, 404);
  const gone = await post({ jsonrpc: '2.0', id: 4, method: 'ping' }, LEGACY_H({ 'mcp-session-id': sid }));
  assert.equal(gone.status, 404);

  // GET: no server-initiated stream (405, as the spec allows)
  const g = await d.fetch('/mcp', { headers: LEGACY_H({ accept: 'text/event-stream', 'mcp-session-id': other.sid }) });
  assert.equal(g.status, 405);
  await g.arrayBuffer();
});

test('2025-11-25: a client that accepts only SSE gets the response as one event', async () => {
  const { sid } = await session();
  const r = await post({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: { text: 'over sse' } } },
    LEGACY_H({ 'mcp-session-id': sid, accept: 'text/event-stream' }));
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const m = /^event: message\ndata: (.*)$/m.exec(r.text);
  assert.ok(m, r.text);
  assert.equal(JSON.parse(m[1]).result.content[0].text, 'over sse');
});

test('bad input: the JSON-RPC error of the era, with its status, nothing executed', async () => {
  const { sid } = await session();
  const S = LEGACY_H({ 'mcp-session-id': sid });
  let r = await post('{"jsonrpc":"2.0","id":1,', S);
  assert.equal(r.status, 400);
  assert.deepEqual(r.json, { jsonrpc: '2.0', id: null, error: { code: -32700, message: r.json.error.message } });
  r = await post({ jsonrpc: '1.0', id: 1, method: 'ping' }, S);
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32600);
  assert.equal(r.json.id, 1);
  r = await post({ jsonrpc: '2.0', id: null, method: 'ping' }, S);
  assert.equal(r.json.error.code, -32600);
  assert.equal(r.json.id, null);
  r = await post({ jsonrpc: '2.0', id: 1.5, method: 'ping' }, S);
  assert.equal(r.json.error.code, -32600);
  r = await post({ jsonrpc: '2.0', id: { a: 1 }, method: 'ping' }, S);
  assert.equal(r.json.error.code, -32600);
  r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: [1] }, S);
  assert.equal(r.json.error.code, -32602);
  r = await post({ jsonrpc: '2.0', id: 3, method: 'no/such/method' }, S);
  assert.equal(r.status, 200);
  assert.equal(r.json.error.code, -32601);
  r = await post({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'echo', arguments: 'text' } }, S);
  assert.equal(r.json.error.code, -32602);
  r = await post({ jsonrpc: '2.0', id: 5, method: 'tools/list', params: { cursor: 'bogus' } }, S);
  assert.equal(r.json.error.code, -32602);
  r = await post({ jsonrpc: '2.0', id: 5, method: 'logging/setLevel', params: { level: 'loud' } }, S);
  assert.equal(r.json.error.code, -32602);
  r = await post({ jsonrpc: '2.0', id: 5, method: 'logging/setLevel', params: { level: 'warning' } }, S);
  assert.deepEqual(r.json.result, {});
  r = await post({ jsonrpc: '2.0', id: 5, method: 'completion/complete', params: { ref: 'x' } }, S);
  assert.equal(r.json.error.code, -32602);
  // batches were removed after 2025-03-26
  r = await post([{ jsonrpc: '2.0', id: 6, method: 'ping' }], S);
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32600);
  // no session / a wrong session
  r = await post({ jsonrpc: '2.0', id: 7, method: 'ping' });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32600);
  r = await post({ jsonrpc: '2.0', id: 8, method: 'ping' }, LEGACY_H({ 'mcp-session-id': 'f'.repeat(32) }));
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, -32001);
  // an unsupported protocol version header
  r = await post({ jsonrpc: '2.0', id: 9, method: 'ping' }, LEGACY_H({ 'mcp-session-id': sid, 'mcp-protocol-version': '1999-01-01' }));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32022);
  assert.ok(r.json.error.data.supported.includes('2025-11-25'));
  // not JSON, a foreign Origin, a foreign Host on a loopback server
  r = await post('{}', LEGACY_H({ 'mcp-session-id': sid, 'content-type': 'text/plain' }));
  assert.equal(r.status, 415);
  r = await post({ jsonrpc: '2.0', id: 10, method: 'ping' }, LEGACY_H({ 'mcp-session-id': sid, origin: 'http://evil.example.com' }));
  assert.equal(r.status, 403);
  assert.equal(r.json.error.code, -32600);
  r = await post({ jsonrpc: '2.0', id: 11, method: 'ping' }, LEGACY_H({ 'mcp-session-id': sid, origin: `http://localhost:${d.port}` }));
  assert.equal(r.status, 200);
});

test('2025-03-26: a batch answers each request in one array, notifications left out', async () => {
  const { sid } = await session('2025-03-26');
  const r = await post([
    { jsonrpc: '2.0', id: 1, method: 'ping' },
    { jsonrpc: '2.0', method: 'notifications/initialized' },
    { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: 'b', delay_ms: 30 } } },
    { jsonrpc: '2.0', id: 3, method: 'nope' },
    { jsonrpc: '2.0', id: 4, method: 'initialize', params: { protocolVersion: '2025-03-26' } },
    7,
  ], LEGACY_H({ 'mcp-session-id': sid }));
  assert.equal(r.status, 200);
  assert.equal(r.json.length, 5);
  assert.deepEqual(r.json[0], { jsonrpc: '2.0', id: 1, result: {} });
  assert.equal(r.json[1].result.content[0].text, 'b');
  assert.equal(r.json[2].error.code, -32601);
  assert.equal(r.json[3].error.code, -32600);
  assert.equal(r.json[4].error.code, -32600);
});

const MODERN_META = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
const MODERN_H = (method, extra = {}) => ({
  'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${key}`,
  'mcp-protocol-version': '2026-07-28', 'mcp-method': method, ...extra,
});

test('2026-07-28: stateless requests, discover, list and call with matching headers', async () => {
  let r = await post({ jsonrpc: '2.0', id: 1, method: 'server/discover', params: { _meta: MODERN_META } }, MODERN_H('server/discover'));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('mcp-session-id'), null);
  assert.deepEqual(r.json.result.supportedVersions, ['2026-07-28']);
  assert.equal(r.json.result.resultType, 'complete');
  assert.equal(r.json.result._meta['io.modelcontextprotocol/serverInfo'].name, 'agentd');
  r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: { _meta: MODERN_META } }, MODERN_H('tools/list'));
  assert.deepEqual(r.json.result.tools.map((t) => t.name), ['code_exec', 'echo', 'helper', 'stepper', 'wait']);
  assert.equal(typeof r.json.result.ttlMs, 'number');
  assert.ok(['public', 'private'].includes(r.json.result.cacheScope));
  r = await post({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'helper', arguments: { input: 'CALL echo {"text":"m"}\n---\nmodern answer' }, _meta: MODERN_META } },
    MODERN_H('tools/call', { 'mcp-name': 'helper' }));
  assert.equal(r.json.result.content[0].text, 'modern answer');
  assert.equal(r.json.result.resultType, 'complete');
  // a notification: 202
  r = await post({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1, _meta: MODERN_META } }, MODERN_H('notifications/cancelled'));
  assert.equal(r.status, 202);
});

test('2026-07-28: header/body spoofing, missing _meta, unknown versions and methods are refused', async () => {
  const call = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'wait', arguments: { ms: 1 }, _meta: MODERN_META } };
  // Mcp-Name says one tool, the body calls another
  let r = await post(call, MODERN_H('tools/call', { 'mcp-name': 'echo' }));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32020);
  r = await post(call, MODERN_H('tools/call'));
  assert.equal(r.json.error.code, -32020);
  r = await post(call, MODERN_H('tools/call', { 'mcp-name': 'wait', 'mcp-protocol-version': '2025-11-25' }));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32020);
  r = await post(call, MODERN_H('tools/list', { 'mcp-name': 'wait' }));
  assert.equal(r.json.error.code, -32020);
  r = await post({ ...call, params: { name: 'wait', arguments: { ms: 1 }, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28' } } },
    MODERN_H('tools/call', { 'mcp-name': 'wait' }));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32602);
  r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} }, MODERN_H('tools/list'));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32602);
  r = await post({ jsonrpc: '2.0', id: 3, method: 'tools/list', params: { _meta: { ...MODERN_META, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } } },
    MODERN_H('tools/list', { 'mcp-protocol-version': '2099-01-01' }));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32022);
  assert.equal(r.json.error.data.requested, '2099-01-01');
  assert.deepEqual(r.json.error.data.supported, ['2026-07-28']);
  r = await post({ jsonrpc: '2.0', id: 4, method: 'initialize', params: { _meta: MODERN_META } }, MODERN_H('initialize'));
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, -32601);
  r = await post([{ jsonrpc: '2.0', id: 5, method: 'tools/list', params: { _meta: MODERN_META } }], MODERN_H('tools/list'));
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, -32600);
  for (const method of ['GET', 'DELETE']) {
    const g = await d.fetch('/mcp', { method, headers: MODERN_H('x') });
    assert.equal(g.status, 405);
    await g.arrayBuffer();
  }
});

test('authentication: a virtual key as bearer; 401 points at the protected-resource metadata', async () => {
  const r = await post({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25' } }, LEGACY_H({ authorization: 'Bearer sk-agentd-nope' }));
  assert.equal(r.status, 401);
  const www = r.headers.get('www-authenticate');
  assert.match(www, /^Bearer resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/);
  const none = await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { 'content-type': 'application/json' });
  assert.equal(none.status, 401);
  const url = /resource_metadata="([^"]+)"/.exec(www)[1];
  const m = await fetch(url);
  assert.equal(m.status, 200);
  const doc = await m.json();
  assert.equal(doc.resource, `${d.url}/mcp`);
  assert.deepEqual(doc.bearer_methods_supported, ['header']);
  const root = await d.fetch('/.well-known/oauth-protected-resource');
  assert.equal((await root.json()).resource, `${d.url}/mcp`);
  // the SDK client with a bad key fails to connect
  await assert.rejects(sdkClient('sk-agentd-bad'));
});

test('resources: agent definitions as agentd://agents/{name}; prompts: none; not found per era', async () => {
  const { client } = await sdkClient();
  const { resources } = await client.listResources();
  assert.deepEqual(resources.map((r) => r.uri), ['agentd://agents/helper', 'agentd://agents/stepper']);
  const read = await client.readResource({ uri: 'agentd://agents/helper' });
  assert.equal(read.contents[0].mimeType, 'application/json');
  assert.equal(JSON.parse(read.contents[0].text).name, 'helper');
  await assert.rejects(client.readResource({ uri: 'agentd://agents/nobody' }), (e) => e.code === -32002);
  assert.deepEqual((await client.listPrompts()).prompts, []);
  await client.close();
  const r = await post({ jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'agentd://agents/nobody', _meta: MODERN_META } },
    MODERN_H('resources/read', { 'mcp-name': 'agentd://agents/nobody' }));
  assert.equal(r.json.error.code, -32602);
  assert.equal(r.json.error.data.uri, 'agentd://agents/nobody');
  const l = await post({ jsonrpc: '2.0', id: 2, method: 'resources/list', params: { _meta: MODERN_META } }, MODERN_H('resources/list'));
  assert.equal(typeof l.json.result.ttlMs, 'number');
  assert.equal(l.json.result.resources.length, 2);
});

test('a client that goes away mid-call: the built-in call is cancelled, the agent run goes on, nothing leaks', async () => {
  const { sid } = await session();
  const S = LEGACY_H({ 'mcp-session-id': sid });
  for (const params of [
    { name: 'wait', arguments: { ms: 5000 } },
    { name: 'helper', arguments: { input: 'CALL echo {"text":"x","delay_ms":400}\n---\nlate answer' } },
  ]) {
    const ac = new AbortController();
    const p = d.fetch('/mcp', { method: 'POST', headers: S, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }), signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(p, (e) => e.name === 'AbortError');
  }
  // the server still answers on the same session; the agent's run finishes on its own (the stop in after() checks
  // that nothing leaked)
  const r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: 'still here' } } }, S);
  assert.equal(r.json.result.content[0].text, 'still here');
  const runs = await d.fetch('/v1/runs?agent=helper', { headers: { authorization: `Bearer ${key}` } });
  const list = await runs.json();
  assert.ok(list.data.some((x) => x.status === 'running' || x.status === 'succeeded'), JSON.stringify(list));
});
