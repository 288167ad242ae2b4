// Budgets, rate limits and the spend ledger (issue 8 items 2-7) against the real binary and a fake OpenAI that
// bills: every completion it produces is recorded in f.billing, and the ledger must agree with it row by row.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let f;
before(async () => { f = await startFake({ provider: 'openai' }); });
after(async () => { await f.close(); });

// USD per million tokens for the model under test
const PIN = 1000, POUT = 2000;
const model = (extra = '') => `
models:
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  gpt-4o-mini: {input: ${PIN}, output: ${POUT}}
ledger:
  batch_interval: 50ms
${extra}`;

const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai };

function ledgerRows(dataDir) {
  const out = execFileSync('sqlite3', ['-json', join(dataDir, 'ledger.db'),
    'SELECT * FROM ledger_exchanges ORDER BY id'], { encoding: 'utf8' });
  return out.trim() ? JSON.parse(out) : [];
}

function chat(d, body, headers = {}) {
  return d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: 'hello brave new world' }], ...body }),
  });
}

function newDataDir() { return join(mkdtempSync(join(tmpdir(), 'agentd-budget-')), 'data'); }

test('the ledger equals what the provider billed, row by row (plain, streamed, cancelled, timed out)', async () => {
  f.reset();
  const dataDir = newDataDir();
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir],
    config: `server:\n  workers: 2\ngateway:\n  request_timeout: 600ms\n${model()}` });
  try {
    // plain and streamed: the provider's usage, priced
    for (let i = 0; i < 3; i++) {
      const r = await chat(d, { user: `plain${i}`, messages: [{ role: 'user', content: `say ${'x '.repeat(i + 1)}` }] });
      assert.equal(r.status, 200);
      await r.json();
    }
    for (let i = 0; i < 2; i++) {
      const r = await chat(d, { user: `stream${i}`, stream: true });
      assert.equal(r.status, 200);
      await r.text();
    }
    // cancelled: the client goes away after the first chunk of a slow stream
    f.script([{ chunks: 6, chunkIntervalMs: 150 }]);
    const ac = new AbortController();
    const rc = await chat(d, { user: 'cancelled', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven eight' }] }, {});
    const reader = rc.body.getReader();
    await reader.read();
    await reader.cancel();
    ac.abort();
    // timed out mid-stream (gateway.request_timeout 600ms)
    f.script([{ chunks: 6, chunkIntervalMs: 200 }]);
    const rt = await chat(d, { user: 'timeout', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven eight' }] });
    await rt.text();
    await d.waitLog((l) => l.msg === 'llm' && l.status >= 499 && /timeout|cancelled/.test(JSON.stringify(l)) || false, 5000).catch(() => {});
  } finally {
    await d.stop();
  }
  const rows = ledgerRows(dataDir);
  const byUser = Object.fromEntries(rows.map((r) => [r.user, r]));
  const bills = Object.fromEntries(f.billing.map((b) => [b.user, b]));
  for (const u of ['plain0', 'plain1', 'plain2', 'stream0', 'stream1']) {
    const r = byUser[u], b = bills[u];
    assert.ok(r && b, `a ledger row and a bill for ${u}`);
    assert.equal(r.input_tokens, b.input_tokens, u);
    assert.equal(r.output_tokens, b.output_tokens, u);
    assert.equal(r.cached_tokens, b.cached_tokens, u);
    const cost = Math.ceil(((b.input_tokens - b.cached_tokens) * PIN + b.output_tokens * POUT) * 1000) / 1e9;
    assert.ok(Math.abs(r.cost_usd - cost) < 1e-12, `${u}: ${r.cost_usd} vs ${cost}`);
    assert.equal(r.incomplete, 0);
    assert.equal(r.status, 200);
    assert.equal(r.deployment, 'openai:gpt-4o-mini');
    assert.equal(r.provider, 'openai');
    assert.match(r.price_version, /^\d{4}-\d{2}-\d{2}\.\d+\+cfg\.[0-9a-f]{8}$/);
    assert.ok(r.latency_us > 0);
    assert.equal(r.attempts, 1);
  }
  // cut short: never $0 for a request that produced tokens; marked incomplete; at most what the provider billed
  // for the whole generation plus the input estimate's margin
  for (const u of ['cancelled', 'timeout']) {
    const r = byUser[u];
    assert.ok(r, `a ledger row for ${u}`);
    assert.equal(r.incomplete, 1, u);
    assert.ok(r.output_tokens > 0 && r.cost_usd > 0, `${u} is charged what it relayed`);
    assert.ok(r.output_tokens <= bills[u].output_tokens, u);
  }
  assert.equal(byUser.cancelled.status, 499);
  assert.equal(byUser.timeout.status, 504);
});

test('500 concurrent requests against a $1.00 budget: never more than $1.00, never a refusal it could cover', async () => {
  f.reset();
  const dataDir = newDataDir();
  // Input is free and each request produces exactly max_tokens (4) tokens, so a request costs exactly its
  // reservation: $0.01. Exactly 100 fit in $1.00.
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: `
server:
  workers: 2
models:
  - name: gpt
    provider: openai
    model: exact
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  exact: {input: 0, output: 2500}
budgets:
  - {scope: user, name: spender, usd: 1.00, window: day}
ledger:
  batch_interval: 50ms
` });
  let ok = 0, refused = 0;
  try {
    const rs = await Promise.all(Array.from({ length: 500 }, () =>
      chat(d, { user: 'spender', max_tokens: 4, messages: [{ role: 'user', content: 'a b c d e f g' }] })
        .then(async (r) => ({ status: r.status, body: await r.json(), retry: r.headers.get('retry-after') }))));
    for (const r of rs) {
      if (r.status === 200) { ok++; assert.equal(r.body.usage.completion_tokens, 4); }
      else {
        refused++;
        assert.equal(r.status, 429);
        assert.equal(r.body.error.code, 'budget_exceeded');
        assert.match(r.body.error.message, /user 'spender'/);
        assert.ok(Number(r.retry) > 0 && Number(r.retry) <= 86400);
      }
    }
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_budget_refusals_total\{scope="user"\} 400/);
    // the whole $1.00 is spent: the ratio is 0, and the line is valid exposition (quoted label values)
    assert.match(m, /^agentd_budget_remaining_ratio\{scope="user",name="spender",window="day"\} 0\.000000$/m);
  } finally {
    await d.stop();
  }
  assert.equal(ok, 100);
  assert.equal(refused, 400);
  const rows = ledgerRows(dataDir).filter((r) => r.status === 200);
  const spent = rows.reduce((s, r) => s + r.cost_nusd, 0);
  assert.equal(rows.length, 100);
  assert.equal(spent, 1e9); // nano-USD: exactly $1.00
  // budgets are rebuilt from the ledger at start: the next request is refused after a restart
  const ADMIN = 'admin-key-0123456789abcdef';
  const d2 = await startAgentd({ env: { ...env, AGENTD_ADMIN_KEY: ADMIN }, noDataDir: true, args: ['--data-dir', dataDir], config: `
models:
  - name: gpt
    provider: openai
    model: exact
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  exact: {input: 0, output: 2500}
budgets:
  - {scope: user, name: spender, usd: 1.00, window: day}
` });
  try {
    const r = await chat(d2, { user: 'spender', max_tokens: 4 });
    assert.equal(r.status, 429);
    const r2 = await chat(d2, { user: 'someone-else', max_tokens: 4 });
    assert.equal(r2.status, 200);
    // GET /admin/spend: the admin key is required, and the grouping is the CLI's
    assert.equal((await d2.fetch('/admin/spend?by=user&since=1d')).status, 401);
    assert.equal((await d2.fetch('/admin/spend?by=user&since=1d', { headers: { authorization: 'Bearer nope' } })).status, 401);
    const bad = await d2.fetch('/admin/spend?by=colour', { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(bad.status, 400);
    const adm = await d2.fetch('/admin/spend?by=user&since=1d', { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(adm.status, 200);
    const rowsA = await adm.json();
    const spA = rowsA.find((x) => x.user === 'spender');
    assert.ok(spA.requests >= 500 && Math.abs(spA.cost_usd - 1.0) < 1e-9);
  } finally {
    await d2.stop();
  }
  // the report agrees
  const rep = JSON.parse(execFileSync(BIN, ['spend', 'report', '--by', 'user', '--since', '1d', '--format', 'json',
    '--data-dir', dataDir], { encoding: 'utf8' }));
  const sp = rep.find((r) => r.user === 'spender');
  assert.equal(sp.requests, 501); // and the one refused after the restart
  assert.ok(Math.abs(sp.cost_usd - 1.0) < 1e-9);
  assert.equal(sp.incomplete, 0);
  for (const k of ['requests', 'input_tokens', 'output_tokens', 'cost_usd', 'incomplete']) assert.ok(k in sp);
});

test('clamp lowers max_tokens to what the budget covers', async () => {
  f.reset();
  const d = await startAgentd({ env, config: model(`
budgets:
  - {scope: user, name: clampy, usd: 0.1, window: total, on_insufficient: clamp}
`) });
  try {
    // input ~ body/4 (about 50) tokens at $1000/M; output at $2000/M: $0.10 covers about 25 output tokens, fewer
    // than the 61 words of the reply
    const r = await chat(d, { user: 'clampy', max_tokens: 100, messages: [{ role: 'user', content: 'w '.repeat(60) }] });
    assert.equal(r.status, 200);
    const sent = f.requests.at(-1).json;
    assert.ok(sent.max_tokens > 0 && sent.max_tokens < 100, `upstream got max_tokens ${sent.max_tokens}`);
    const j = await r.json();
    assert.equal(j.choices[0].finish_reason, 'length');
  } finally {
    await d.stop();
  }
});

test('rate limits hold exactly across 2 workers, with OpenAI and Anthropic header names; reload keeps counters', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `server:\n  workers: 2\n${model(`
ratelimits:
  - {scope: user, name: "*", rpm: 10}
budgets:
  - {scope: user, name: reload, usd: 0.1, window: month}
`)}` });
  try {
    const rs = await Promise.all(Array.from({ length: 30 }, () => chat(d, { user: 'rl' })));
    const codes = rs.map((r) => r.status);
    assert.equal(codes.filter((c) => c === 200).length, 10);
    assert.equal(codes.filter((c) => c === 429).length, 20);
    const refused = rs.find((r) => r.status === 429);
    assert.equal(refused.headers.get('x-ratelimit-limit-requests'), '10');
    assert.equal(refused.headers.get('x-ratelimit-remaining-requests'), '0');
    assert.match(refused.headers.get('x-ratelimit-reset-requests'), /^\d+(ms|s|m\d+s)$/);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    const body = await refused.json();
    assert.equal(body.error.code, 'rate_limit_exceeded');
    await Promise.all(rs.map((r) => (r.bodyUsed ? null : r.body.cancel())));
    // Anthropic's door names them anthropic-ratelimit-*
    const a = await d.fetch('/v1/messages', { method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'gpt', max_tokens: 10, metadata: { user_id: 'anth' }, messages: [{ role: 'user', content: 'hi' }] }) });
    assert.equal(a.headers.get('anthropic-ratelimit-requests-limit'), '10');
    assert.match(a.headers.get('anthropic-ratelimit-requests-reset'), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    await a.text();
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_ratelimit_refusals_total\{scope="user"\} 20/);

    // a budget spent down to a refusal stays spent across a reload
    let first;
    for (let i = 0; i < 20; i++) {
      const r = await chat(d, { user: 'reload', max_tokens: 5 });
      await r.text();
      if (r.status === 429 && (await Promise.resolve(r.headers.get('retry-after'))) !== null) { first = i; break; }
    }
    assert.ok(first !== undefined && first > 0, 'the budget ran out');
    writeFileSync(d.configPath, `server:\n  workers: 2\n${model(`
ratelimits:
  - {scope: user, name: "*", rpm: 1000}
budgets:
  - {scope: user, name: reload, usd: 0.1, window: month}
`)}`);
    d.signal('SIGHUP');
    await d.waitLog((l) => /configuration reloaded/.test(l.msg || ''));
    const r = await chat(d, { user: 'reload', max_tokens: 5 });
    assert.equal(r.status, 429);
    assert.equal((await r.json()).error.code, 'budget_exceeded');
  } finally {
    await d.stop();
  }
});

test('an unpriced model under a USD budget is refused by default (unpriced: deny)', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `
models:
  - name: free
    provider: openai
    model: no-price-here
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
budgets:
  - {scope: user, name: "*", usd: 10}
` });
  try {
    const r = await d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'free', user: 'u', messages: [{ role: 'user', content: 'hi' }] }) });
    assert.equal(r.status, 403);
    assert.equal((await r.json()).error.code, 'model_unpriced');
    assert.equal(f.received(), 0);
  } finally {
    await d.stop();
  }
});

test("a key's own budget and rate limit apply, and its id is on the ledger row", async () => {
  f.reset();
  const dataDir = newDataDir();
  const k = JSON.parse(execFileSync(BIN, ['keys', 'create', '--name', 'gov', '--team', 'tk', '--rpm', '2',
    '--budget-usd', '5', '--budget-window', 'day', '--data-dir', dataDir], { encoding: 'utf8' }));
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: model() });
  try {
    const auth = { authorization: `Bearer ${k.key}` };
    const codes = [];
    for (let i = 0; i < 3; i++) {
      const r = await chat(d, { max_tokens: 5 }, auth);
      codes.push(r.status);
      if (i === 2) {
        assert.equal(r.headers.get('x-ratelimit-limit-requests'), '2');
        assert.equal((await r.json()).error.code, 'rate_limit_exceeded');
      } else await r.text();
    }
    assert.deepEqual(codes, [200, 200, 429]);
  } finally {
    await d.stop();
  }
  const rows = ledgerRows(dataDir);
  assert.equal(rows.length, 3);
  for (const r of rows) {
    assert.equal(r.key_id, k.id);
    assert.equal(r.team, 'tk');
  }
});
