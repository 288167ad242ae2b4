// The official 2.x TypeScript client (@modelcontextprotocol/client, issue 12 item 7) against /mcp, in both eras:
// the 2025-11-25 session era (its default, `initialize`) and 2026-07-28 (version negotiation pinned: stateless,
// server/discover, _meta on every request). It lists and calls an agent and a built-in tool; a key's mcp_deny
// hides a tool from it (absent, and "Unknown tool" when called).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { startAgentd } from '../lib/agentd.mjs';

const ADMIN = 'adm-' + 'c'.repeat(24);
let d;
const keys = {};

before(async () => {
  d = await startAgentd({ env: { AGENTD_ADMIN_KEY: ADMIN }, config: `
auth: {mode: keys}
agents:
  - name: helper
    model: mock
    tools: [echo]
` });
  for (const [name, body] of [['open', {}], ['noecho', { mcp_deny: ['echo'] }]]) {
    const r = await d.fetch('/admin/keys', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name, ...body }) });
    assert.equal(r.status, 201);
    keys[name] = (await r.json()).key;
  }
  for (const k of Object.values(keys)) {
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

async function connect(key, versionNegotiation) {
  const c = new Client({ name: 'agentd-client2-test', version: '1.0.0' }, versionNegotiation ? { versionNegotiation } : {});
  await c.connect(new StreamableHTTPClientTransport(new URL(d.url + '/mcp'), {
    requestInit: { headers: { authorization: `Bearer ${key}` } },
  }));
  return c;
}

for (const [era, vn, version] of [['2025-11-25', undefined, '2025-11-25'], ['2026-07-28', { mode: { pin: '2026-07-28' } }, '2026-07-28']]) {
  test(`2.x client, ${era}: lists and calls an agent and a built-in tool`, async () => {
    const c = await connect(keys.open, vn);
    assert.equal(c.getNegotiatedProtocolVersion(), version);
    const { tools } = await c.listTools();
    const names = tools.map((t) => t.name);
    assert.ok(names.includes('helper') && names.includes('echo'), names.join(','));
    const e = await c.callTool({ name: 'echo', arguments: { text: 'hi' } });
    assert.equal(e.isError, false);
    assert.match(e.content[0].text, /hi/);
    const a = await c.callTool({ name: 'helper', arguments: { input: 'hello' } });
    assert.equal(a.isError, false, JSON.stringify(a));
    assert.ok(a.content[0].text.length > 0);
    await c.close();
  });

  test(`2.x client, ${era}: a denied tool is absent and unknown`, async () => {
    const c = await connect(keys.noecho, vn);
    const names = (await c.listTools()).tools.map((t) => t.name);
    assert.ok(!names.includes('echo') && names.includes('helper'), names.join(','));
    await assert.rejects(c.callTool({ name: 'echo', arguments: { text: 'x' } }), /Unknown tool: echo/);
    await c.close();
  });
}
