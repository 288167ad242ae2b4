// Token counts go through the spine (issue 8: no route bypasses admit and settle): POST /v1/messages/count_tokens
// and POST /v1/responses/input_tokens are authenticated, routed and admitted like any request. A key's rpm counts
// them (429 in the caller's own format past it), a model the key may not use is 403, and each count is settled
// with a ledger row of 0 tokens and $0.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd } from '../lib/agentd.mjs';

const ADMIN = 'adm-' + 'c'.repeat(20);
let d;
before(async () => {
  d = await startAgentd({
    env: { AGENTD_ADMIN_KEY: ADMIN },
    config: 'server:\n  workers: 2\nauth:\n  mode: keys\nledger:\n  batch_interval: 50ms\n' +
      'models:\n  - name: other\n    provider: mock\n    model: other\n',
  });
});
after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000)); // nothing leaked (ASan) and a clean exit
});

async function withKey(fields) {
  const r = await d.fetch('/admin/keys', {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify({ name: 'counter', ...fields }),
  });
  const text = await r.text();
  assert.equal(r.status, 201, text);
  const k = JSON.parse(text);
  for (let i = 0; ; i++) { // the keyring refreshes within a second (GET /v1/models does not count against rpm)
    const m = await d.fetch('/v1/models', { headers: { authorization: `Bearer ${k.key}` } });
    await m.arrayBuffer();
    if (m.status === 200) break;
    if (i > 300) assert.fail(`key never became valid (${m.status})`);
    await new Promise((res) => setTimeout(res, 10));
  }
  return k;
}

const countTokens = (key, model = 'mock') => d.fetch('/v1/messages/count_tokens', {
  method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': key },
  body: JSON.stringify({ model, messages: [{ role: 'user', content: 'count me' }] }),
});
const inputTokens = (key, model = 'mock') => d.fetch('/v1/responses/input_tokens', {
  method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
  body: JSON.stringify({ model, input: 'count me please' }),
});
const chat = (key) => d.fetch('/v1/chat/completions', {
  method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
  body: JSON.stringify({ model: 'mock', messages: [{ role: 'user', content: 'hi' }] }),
});

test('count_tokens: the key\'s rpm counts it; the third of rpm 2 is 429 in Anthropic\'s shape', async () => {
  const k = await withKey({ rpm: 2, models: ['mock'] });
  for (let i = 0; i < 2; i++) {
    const r = await countTokens(k.key);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-agentd-token-count'), 'estimate');
    assert.equal((await r.json()).input_tokens, 2);
  }
  const r = await countTokens(k.key);
  assert.equal(r.status, 429);
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  const j = await r.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'rate_limit_error');
  assert.match(j.error.message, /rate limit reached for key/);
});

test('responses input_tokens: the key\'s rpm counts it; the third of rpm 2 is 429 in OpenAI\'s shape', async () => {
  const k = await withKey({ rpm: 2, models: ['mock'] });
  for (let i = 0; i < 2; i++) {
    const r = await inputTokens(k.key);
    assert.equal(r.status, 200, await r.clone().text());
    const j = await r.json();
    assert.equal(j.object, 'response.input_tokens');
    assert.ok(j.input_tokens > 0);
  }
  const r = await inputTokens(k.key);
  assert.equal(r.status, 429);
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  const j = await r.json();
  assert.equal(j.error.type, 'rate_limit_error');
  assert.equal(j.error.code, 'rate_limit_exceeded');
});

test('a count and a chat share the key\'s rpm: one count leaves a key of rpm 1 nothing for the chat', async () => {
  const k = await withKey({ rpm: 1 });
  const c = await countTokens(k.key);
  assert.equal(c.status, 200);
  await c.arrayBuffer();
  const r = await chat(k.key);
  assert.equal(r.status, 429);
  assert.equal((await r.json()).error.code, 'rate_limit_exceeded');
});

test('a model the key may not use: 403 on both count routes, each in its format; no key 401', async () => {
  const k = await withKey({ models: ['mock'] });
  let r = await countTokens(k.key, 'other');
  assert.equal(r.status, 403);
  let j = await r.json();
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'permission_error');
  r = await inputTokens(k.key, 'other');
  assert.equal(r.status, 403);
  j = await r.json();
  assert.equal(j.error.code, 'model_not_allowed');
  r = await countTokens(k.key, 'nope'); // as on /v1/messages: a limited key learns nothing of other models
  assert.equal(r.status, 403);
  assert.equal((await r.json()).type, 'error');
  r = await inputTokens('sk-agentd-wrong');
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.code, 'invalid_api_key');
  // a malformed body is the caller's 400 before anything else
  r = await d.fetch('/v1/responses/input_tokens', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
  assert.equal(r.status, 400);
  await r.arrayBuffer();
});

test('each admitted count is settled: a ledger row of 0 tokens and $0 attributed to the key', async () => {
  const k = await withKey({ models: ['mock'] });
  for (const f of [countTokens, inputTokens, countTokens]) {
    const r = await f(k.key);
    assert.equal(r.status, 200);
    await r.arrayBuffer();
  }
  for (let i = 0; ; i++) {
    const s = await (await d.fetch('/admin/spend?by=key&since=1d&format=json', { headers: { authorization: `Bearer ${ADMIN}` } })).json();
    const row = (Array.isArray(s) ? s : s.rows || []).find((x) => x.key === k.id);
    if (row && row.requests === 3) {
      assert.equal(row.cost_usd, 0);
      assert.equal(row.input_tokens, 0);
      assert.equal(row.output_tokens, 0);
      break;
    }
    if (i > 200) assert.fail(`ledger rows: ${JSON.stringify(row)}`);
    await new Promise((res) => setTimeout(res, 25));
  }
});

test('a client that leaves during an upstream count ends its exchange: the key\'s slot is free for the next', async () => {
  const http = await import('node:http');
  const held = [];
  let closed = 0;
  const up = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      res.on('close', () => { if (!res.writableEnded) closed++; });
      held.push(() => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"input_tokens":7}'); });
    });
  });
  await new Promise((r) => up.listen(0, '127.0.0.1', r));
  const d2 = await startAgentd({
    env: { AGENTD_ADMIN_KEY: ADMIN, UPKEY: 'sk-ant-up-0123456789' },
    config: 'server:\n  workers: 1\nauth:\n  mode: keys\ngateway:\n  admission:\n    max_wait: 300ms\n' +
      `models:\n  - name: claude\n    provider: anthropic\n    model: claude-x\n    base_url: http://127.0.0.1:${up.address().port}\n    api_key_env: UPKEY\n`,
  });
  try {
    const r0 = await d2.fetch('/admin/keys', {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ name: 'one-at-a-time', max_concurrent: 1 }),
    });
    const k = await r0.json();
    for (let i = 0; ; i++) {
      const m = await d2.fetch('/v1/models', { headers: { authorization: `Bearer ${k.key}` } });
      await m.arrayBuffer();
      if (m.status === 200) break;
      if (i > 300) assert.fail('key never became valid');
      await new Promise((res) => setTimeout(res, 10));
    }
    const count = (signal) => d2.fetch('/v1/messages/count_tokens', {
      method: 'POST', signal,
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': k.key },
      body: JSON.stringify({ model: 'claude', messages: [{ role: 'user', content: 'count me' }] }),
    });
    const ac = new AbortController();
    const gone = count(ac.signal).catch((e) => e);
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5)); // at the upstream, holding the key's slot
    ac.abort();
    await gone;
    while (closed < 1) await new Promise((r) => setTimeout(r, 5)); // the upstream call was cancelled
    let failed = null;
    const next = count().catch((e) => { failed = e; });
    while (held.length < 2) { // admitted: the slot was given back
      if (failed) throw failed;
      await new Promise((r) => setTimeout(r, 5));
    }
    held[1]();
    const r = await next;
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-agentd-token-count'), 'exact');
    assert.equal(r.headers.get('x-agentd-deployment'), 'anthropic:claude-x');
    assert.equal((await r.json()).input_tokens, 7);
  } catch (e) {
    console.error('STDERR', d2.rawStderr.slice(-6000));
    throw e;
  } finally {
    const st = await d2.stop();
    assert.equal(st.code, 0, d2.rawStderr.slice(-3000));
    up.closeAllConnections();
    await new Promise((r) => up.close(r));
  }
});
