// Virtual keys (issue 8 item 1): keys created with the CLI against a running daemon's data dir, or through the
// admin API, take effect within a second; wrong, revoked, expired and wrong-model keys are refused in the
// caller's own error format; each header form works (Bearer, x-api-key through the official Anthropic SDK,
// api-key); the admin API needs AGENTD_ADMIN_KEY; attribution reaches the `llm` log line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { startAgentd, BIN } from '../lib/agentd.mjs';

const ADMIN = 'adm-' + 'x'.repeat(20);
let d, dataDir;

before(async () => {
  d = await startAgentd({
    env: { AGENTD_ADMIN_KEY: ADMIN },
    config: 'auth:\n  mode: keys\nmodels:\n  - name: other\n    provider: mock\n',
  });
  dataDir = join(d.dir, 'data');
});

after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-2000));
});

function cli(args) {
  const r = spawnSync(BIN, ['keys', ...args, '--data-dir', dataDir], { encoding: 'utf8',
    env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:exitcode=86' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function create(args) {
  const r = cli(['create', ...args]);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out);
}

const chat = (key, model = 'mock', headers = {}) => d.fetch('/v1/chat/completions', {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
  body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello there' }] }),
});

const messages = (headers, model = 'mock') => d.fetch('/v1/messages', {
  method: 'POST',
  headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers },
  body: JSON.stringify({ model, max_tokens: 20, messages: [{ role: 'user', content: 'hello there' }] }),
});

// Polls until fn() resolves to a response with the wanted status; returns the milliseconds it took.
async function until(fn, status, limitMs) {
  const t0 = Date.now();
  for (;;) {
    const r = await fn();
    await r.arrayBuffer();
    if (r.status === status) return Date.now() - t0;
    if (Date.now() - t0 > limitMs) assert.fail(`still ${r.status} after ${limitMs}ms, wanted ${status}`);
  }
}

async function openaiError(res, status) {
  assert.equal(res.status, status);
  const b = await res.json();
  assert.equal(typeof b.error, 'object', JSON.stringify(b));
  assert.equal(typeof b.error.message, 'string');
  assert.equal(typeof b.error.type, 'string');
  assert.ok('code' in b.error);
  return b.error;
}

async function anthropicError(res, status) {
  assert.equal(res.status, status);
  const b = await res.json();
  assert.equal(b.type, 'error', JSON.stringify(b));
  assert.equal(typeof b.error.type, 'string');
  assert.equal(typeof b.error.message, 'string');
  return b.error;
}

test('no key, a wrong key, a malformed key: 401 in the caller\'s format, one answer for all', async () => {
  const none = await openaiError(await chat(null), 401);
  assert.equal(none.type, 'authentication_error');
  assert.equal(none.code, 'invalid_api_key');
  const wrong = await openaiError(await chat('sk-agentd-' + 'A'.repeat(43)), 401);
  const junk = await openaiError(await chat('not-a-key'), 401);
  assert.equal(wrong.message, none.message); // no hint of which part was wrong
  assert.equal(junk.message, none.message);
  const a = await anthropicError(await messages({}), 401);
  assert.equal(a.type, 'authentication_error');
  const a2 = await anthropicError(await messages({ 'x-api-key': 'sk-agentd-nope' }), 401);
  assert.equal(a2.message, a.message);
  // an unknown model tells an unauthenticated caller nothing either
  await openaiError(await chat(null, 'no-such-model'), 401);
});

test('GET /v1/models needs a key too under auth.mode keys', async () => {
  await openaiError(await d.fetch('/v1/models'), 401);
  await anthropicError(await d.fetch('/v1/models', { headers: { 'anthropic-version': '2023-06-01', 'x-api-key': 'sk-agentd-no' } }), 401);
  const k = create(['--name', 'lister', '--models', 'mock']);
  await until(() => d.fetch('/v1/models', { headers: { authorization: `Bearer ${k.key}` } }), 200, 3000);
  const r = await d.fetch('/models', { headers: { 'x-api-key': k.key, 'anthropic-version': '2023-06-01' } });
  assert.equal(r.status, 200);
  assert.ok((await r.json()).data.some((m) => m.id === 'mock'));
});

test('POST /v1/messages/count_tokens needs a key under auth.mode keys', async () => {
  const body = JSON.stringify({ model: 'mock', messages: [{ role: 'user', content: 'count me' }] });
  const post = (headers) => d.fetch('/v1/messages/count_tokens', { method: 'POST', body, headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers } });
  await anthropicError(await post({}), 401);
  await anthropicError(await post({ 'x-api-key': 'sk-agentd-no' }), 401);
  const k = create(['--name', 'counter', '--models', 'mock']);
  await until(() => post({ 'x-api-key': k.key }), 200, 3000);
  const r = await post({ 'x-api-key': k.key });
  assert.equal(r.headers.get('x-agentd-token-count'), 'estimate');
  assert.equal((await r.json()).input_tokens, 2);
});

test('a key created with the CLI works in the running daemon within 1 s', async () => {
  const k = create(['--name', 'ci', '--user', 'bob', '--team', 'core', '--tag', 'workflow=triage']);
  assert.match(k.key, /^sk-agentd-[A-Za-z0-9_-]{40,}$/);
  assert.match(k.id, /^key_[0-9a-f]{16}$/);
  const ms = await until(() => chat(k.key), 200, 3000);
  console.log(`# key usable ${ms}ms after the CLI returned`);
  assert.ok(ms < 1000, `took ${ms}ms`);
  // the secret is never stored or listed
  const list = cli(['list', '--json']);
  assert.equal(list.code, 0, list.err);
  assert.ok(!list.out.includes(k.key));
  const shown = JSON.parse(cli(['show', k.id, '--json']).out);
  assert.equal(shown.user, 'bob');
  assert.equal(shown.key, undefined);
  // attribution in the llm line
  const line = await d.waitLog((l) => l.msg === 'llm' && l.key_id === k.id && l.status === 200);
  assert.equal(line.user, 'bob');
  assert.equal(line.team, 'core');
  assert.equal(line.workflow, 'triage');
});

test('each header form: Bearer (OpenAI SDK), x-api-key (Anthropic SDK), api-key (Azure)', async () => {
  const k = create(['--name', 'forms']);
  await until(() => chat(k.key), 200, 3000);
  const oa = new OpenAI({ baseURL: d.url + '/v1', apiKey: k.key, maxRetries: 0 });
  const c = await oa.chat.completions.create({ model: 'mock', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(c.object, 'chat.completion');
  const an = new Anthropic({ baseURL: d.url, apiKey: k.key, maxRetries: 0 });
  const m = await an.messages.create({ model: 'mock', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(m.type, 'message');
  const bad = new Anthropic({ baseURL: d.url, apiKey: 'sk-agentd-wrong', maxRetries: 0 });
  await assert.rejects(bad.messages.create({ model: 'mock', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status === 401 && e.error?.type === 'error' && e.error?.error?.type === 'authentication_error');
  let r = await chat(null, 'mock', { 'api-key': k.key });
  assert.equal(r.status, 200, await r.text());
  r = await messages({ 'x-api-key': k.key });
  assert.equal(r.status, 200, await r.text());
});

test('revoked with the CLI: refused within 1 s; expired: refused', async () => {
  const k = create(['--name', 'short-lived']);
  await until(() => chat(k.key), 200, 3000);
  const rv = cli(['revoke', k.id]);
  assert.equal(rv.code, 0, rv.err);
  assert.equal(JSON.parse(rv.out).status, 'revoked');
  const ms = await until(() => chat(k.key), 401, 3000);
  console.log(`# key refused ${ms}ms after the CLI returned`);
  assert.ok(ms < 1000, `took ${ms}ms`);
  await anthropicError(await messages({ 'x-api-key': k.key }), 401);

  const e = create(['--name', 'expiring', '--expires', '2s']);
  await until(() => chat(e.key), 200, 3000);
  await until(() => chat(e.key), 401, 5000); // its expiry passes while we poll
  const err = await openaiError(await chat(e.key), 401);
  assert.equal(err.code, 'invalid_api_key');
});

test('a model the key may not use: 403 in both formats', async () => {
  const k = create(['--name', 'limited', '--models', 'mock']);
  await until(() => chat(k.key), 200, 3000);
  const e = await openaiError(await chat(k.key, 'other'), 403);
  assert.equal(e.type, 'permission_error');
  const a = await anthropicError(await messages({ 'x-api-key': k.key }, 'other'), 403);
  assert.equal(a.type, 'permission_error');
  // update widens it
  const up = cli(['update', k.id, '--models', 'mock,other']);
  assert.equal(up.code, 0, up.err);
  await until(() => chat(k.key, 'other'), 200, 3000);
});

test('caller attribution: user and workflow from the request only when the key allows it', async () => {
  const open = create(['--name', 'attr', '--team', 'web', '--caller-attribution']);
  const closed = create(['--name', 'noattr', '--user', 'fixed', '--tag', 'workflow=own']);
  await until(() => chat(open.key), 200, 3000);
  await until(() => chat(closed.key), 200, 3000);
  const send = (key) => d.fetch('/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'x-agentd-workflow': 'nightly' },
    body: JSON.stringify({ model: 'mock', user: 'end-user-42', messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.equal((await send(open.key)).status, 200);
  assert.equal((await send(closed.key)).status, 200);
  const l1 = await d.waitLog((l) => l.msg === 'llm' && l.key_id === open.id && l.workflow === 'nightly');
  assert.equal(l1.user, 'end-user-42');
  assert.equal(l1.team, 'web');
  const l2 = await d.waitLog((l) => l.msg === 'llm' && l.key_id === closed.id && l.workflow);
  assert.equal(l2.workflow, 'own');
  assert.equal(l2.user, 'fixed');
  // Anthropic's metadata.user_id
  const r = await messages({ 'x-api-key': open.key, 'x-agentd-workflow': 'anth' });
  assert.equal(r.status, 200);
  const r2 = await d.fetch('/v1/messages', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': open.key },
    body: JSON.stringify({ model: 'mock', max_tokens: 8, metadata: { user_id: 'anth-user' }, messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.equal(r2.status, 200);
  await d.waitLog((l) => l.msg === 'llm' && l.key_id === open.id && l.user === 'anth-user');
});

test('admin API: without or with a wrong admin key 401; create, use, patch, revoke', async () => {
  const admin = (method, path, body, key = ADMIN) => d.fetch(path, {
    method, headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  await openaiError(await admin('GET', '/admin/keys', undefined, null), 401);
  await openaiError(await admin('GET', '/admin/keys', undefined, 'adm-wrong'), 401);
  await openaiError(await admin('GET', '/admin/keys', undefined, ADMIN + 'x'), 401);
  await openaiError(await admin('POST', '/admin/keys', { name: 'sneaky' }, 'sk-agentd-' + 'A'.repeat(43)), 401);
  const before = (await (await admin('GET', '/admin/keys')).json()).length;

  // bad input: a clear 400 naming the field, nothing created
  let e = await openaiError(await admin('POST', '/admin/keys', { name: 'x', rpm: 'ten' }), 400);
  assert.equal(e.param, 'rpm');
  e = await openaiError(await admin('POST', '/admin/keys', { name: 'x', models: [1] }), 400);
  assert.equal(e.param, 'models');
  e = await openaiError(await admin('POST', '/admin/keys', { user: 'no-name' }), 400);
  assert.equal(e.param, 'name');
  e = await openaiError(await admin('POST', '/admin/keys', { name: 'x', surprise: true }), 400);
  assert.equal(e.param, 'surprise');
  await openaiError(await admin('POST', '/admin/keys', '{"name":'), 400);
  await openaiError(await admin('POST', '/admin/keys', '[]'), 400);
  assert.equal((await (await admin('GET', '/admin/keys')).json()).length, before);

  let r = await admin('POST', '/admin/keys', { name: 'via-api', models: ['mock'], rpm: 60 });
  assert.equal(r.status, 201);
  const k = await r.json();
  assert.match(k.key, /^sk-agentd-/);
  await until(() => chat(k.key), 200, 3000);

  r = await admin('GET', `/admin/keys/${k.id}`);
  assert.equal(r.status, 200);
  const shown = await r.json();
  assert.equal(shown.rpm, 60);
  assert.equal(shown.key, undefined);

  e = await openaiError(await admin('PATCH', `/admin/keys/${k.id}`, { rpm: -5 }), 400);
  assert.equal(e.param, 'rpm');
  r = await admin('PATCH', `/admin/keys/${k.id}`, { rpm: 30, team: 'ops' });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).rpm, 30);
  await openaiError(await admin('GET', '/admin/keys/key_ffffffffffffffff'), 404);
  await openaiError(await admin('PATCH', '/admin/keys/key_ffffffffffffffff', { rpm: 1 }), 404);

  r = await admin('DELETE', `/admin/keys/${k.id}`);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).status, 'revoked');
  await until(() => chat(k.key), 401, 3000);
});

test('loopback without auth config: no key needed (warning at start), admin API absent, agentd keys still checked', async () => {
  const z = await startAgentd({ env: { AGENTD_ADMIN_KEY: '' } });
  try {
    await z.waitLog((l) => l.level === 'warn' && /auth\.mode is none/.test(l.msg));
    const body = JSON.stringify({ model: 'mock', messages: [{ role: 'user', content: 'hi' }] });
    let r = await z.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(r.status, 200);
    // a client's placeholder key is fine; a key shaped like an agentd key is checked
    r = await z.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer sk-placeholder' }, body });
    assert.equal(r.status, 200);
    r = await z.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer sk-agentd-revokedorwrong' }, body });
    assert.equal(r.status, 401);
    r = await z.fetch('/admin/keys', { headers: { authorization: 'Bearer anything' } });
    assert.equal(r.status, 404);
    await r.arrayBuffer();
  } finally {
    const s = await z.stop();
    assert.equal(s.code, 0);
  }
});

test('every /admin route has one guard: 404 with an admin key under 16 characters, 401 with a wrong key', async () => {
  const routes = ['/admin/keys', '/admin/agents', '/admin/spend?by=user', '/admin/deployments'];
  const short = await startAgentd({ env: { AGENTD_ADMIN_KEY: 'short-key' } });
  try {
    await short.waitLog((l) => l.level === 'warn' && /AGENTD_ADMIN_KEY is shorter/.test(l.msg));
    for (const p of routes) {
      const r = await short.fetch(p, { headers: { authorization: 'Bearer short-key' } });
      assert.equal(r.status, 404, p);
      await r.arrayBuffer();
    }
  } finally {
    assert.equal((await short.stop()).code, 0);
  }
  const full = await startAgentd({ env: { AGENTD_ADMIN_KEY: ADMIN } });
  try {
    for (const p of routes) {
      for (const headers of [{}, { authorization: 'Bearer ' + ADMIN.slice(0, -1) + 'y' }, { 'x-api-key': 'nope' }]) {
        const r = await full.fetch(p, { headers });
        assert.equal(r.status, 401, p);
        assert.equal(r.headers.get('www-authenticate'), 'Bearer', p);
        const e = await r.json();
        assert.equal(e.error.type, 'authentication_error', p);
      }
      for (const headers of [{ authorization: `Bearer ${ADMIN}` }, { 'x-api-key': ADMIN }, { 'api-key': ADMIN }]) {
        const r = await full.fetch(p, { headers });
        assert.equal(r.status, 200, p + ' ' + Object.keys(headers)[0]);
        await r.arrayBuffer();
      }
    }
    const m = await (await full.opsFetch('/metrics')).text();
    assert.match(m, /agentd_auth_refused_total\{reason="admin_key"\} 12\b/);
  } finally {
    assert.equal((await full.stop()).code, 0);
  }
});

test('CLI: --help on each command exits 0; bad flags exit 2', () => {
  for (const c of ['create', 'list', 'show', 'update', 'revoke']) {
    const r = spawnSync(BIN, ['keys', c, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, c);
    assert.match(r.stdout, /usage: agentd keys/);
  }
  let r = cli(['create', '--name', 'x', '--rpm', 'ten']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--rpm/);
  r = cli(['create', '--rpm', '5']);
  assert.equal(r.code, 2);
  assert.match(r.err, /name/);
  r = cli(['show', 'key_ffffffffffffffff']);
  assert.equal(r.code, 3);
});
