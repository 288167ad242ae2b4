// Agents' MCP client in the 2026-07-28 stateless era (issue 11 item 5), against agentd's own /mcp server (which
// speaks both eras) through a recording proxy: the client asks server/discover first, the server names
// 2026-07-28, and from then on there is no initialize and no session: every request carries
// _meta["io.modelcontextprotocol/protocolVersion"] and ["io.modelcontextprotocol/clientCapabilities"], and the
// MCP-Protocol-Version, Mcp-Method and (tools/call) Mcp-Name headers. (The fallback to initialize for a
// session-era server is in agents_mcp.test.mjs.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { startAgentd } from '../lib/agentd.mjs';

const seen = []; // {rpc, headers, body}
let peer, d, proxy;

before(async () => {
  peer = await startAgentd({ config: 'server: { workers: 1 }\n' });
  proxy = createServer(async (req, res) => {
    let text = '';
    for await (const c of req) text += c;
    let body;
    try { body = JSON.parse(text); } catch { body = undefined; }
    seen.push({ rpc: body?.method ?? req.method, headers: req.headers, body });
    const headers = {};
    for (const h of ['content-type', 'accept', 'mcp-protocol-version', 'mcp-method', 'mcp-name', 'mcp-session-id'])
      if (req.headers[h] !== undefined) headers[h] = req.headers[h];
    const r = await peer.fetch('/mcp', { method: req.method, headers, body: req.method === 'POST' ? text : undefined });
    const out = Buffer.from(await r.arrayBuffer());
    const rh = { 'content-type': r.headers.get('content-type') ?? 'application/json' };
    if (r.headers.get('mcp-session-id')) rh['mcp-session-id'] = r.headers.get('mcp-session-id');
    res.writeHead(r.status, rh);
    res.end(out);
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  d = await startAgentd({
    config: `
server: { workers: 1 }
agents:
  - name: fed
    model: mock
    mcp_servers:
      - {name: up, url: "http://127.0.0.1:${proxy.address().port}/mcp"}
`,
  });
});
after(async () => {
  const r = d ? await d.stop() : { code: 0 };
  const p = peer ? await peer.stop() : { code: 0 };
  proxy?.close();
  assert.equal(r.code, 0, d?.rawStderr.slice(-3000));
  assert.equal(p.code, 0);
});

test('a 2026-07-28 server: server/discover, then stateless requests with _meta and the Mcp-* headers', async () => {
  const r = await d.fetch('/v1/agents/fed/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input: 'CALL up__echo {"text":"through the stateless era"}\n---\ndone', wait: true }),
  });
  const b = await r.json();
  assert.equal(b.status, 'succeeded', JSON.stringify(b));
  const call = b.steps.find((s) => s.type === 'tool_call');
  assert.equal(call.tool, 'up__echo');
  assert.equal(call.status, 'ok', call.result);
  assert.match(call.result, /through the stateless era/);

  const rpcs = seen.map((s) => s.rpc);
  assert.deepEqual(rpcs, ['server/discover', 'tools/list', 'tools/call'], JSON.stringify(rpcs));
  for (const s of seen) {
    assert.equal(s.headers['mcp-protocol-version'], '2026-07-28');
    assert.equal(s.headers['mcp-method'], s.rpc);
    assert.equal(s.headers['mcp-session-id'], undefined, 'no session in the stateless era');
    assert.equal(s.body.params._meta['io.modelcontextprotocol/protocolVersion'], '2026-07-28');
    // elicitation (form) is declared: agentd answers one with the server's defaults, or declines (docs/mcp.md)
    assert.deepEqual(s.body.params._meta['io.modelcontextprotocol/clientCapabilities'], { elicitation: { form: {} } });
    assert.equal(s.body.params._meta['io.modelcontextprotocol/clientInfo'].name, 'agentd');
  }
  assert.equal(seen[2].headers['mcp-name'], 'echo');
  assert.equal(seen[2].body.params.name, 'echo');
  assert.deepEqual(seen[2].body.params.arguments, { text: 'through the stateless era' });
  assert.equal(seen[1].headers['mcp-name'], undefined);
  assert.ok(await d.waitLog((l) => /MCP server up speaks protocol version 2026-07-28/.test(l.msg ?? '')));
});

test('the era is remembered: the next run goes straight to tools/call (its tools/list cached by ttlMs)', async () => {
  const n = seen.length;
  const r = await d.fetch('/v1/agents/fed/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input: 'CALL up__echo {"text":"again"}\n---\ndone', wait: true }),
  });
  const b = await r.json();
  assert.equal(b.steps.find((s) => s.type === 'tool_call').status, 'ok');
  const rpcs = seen.slice(n).map((s) => s.rpc);
  assert.ok(!rpcs.includes('server/discover') && !rpcs.includes('initialize'), JSON.stringify(rpcs));
  assert.equal(rpcs.at(-1), 'tools/call');
});
