// Governance, the rest of issue 8: a client that goes away mid-stream is charged what was relayed on every route
// (OpenAI and Anthropic, relayed as received and translated); a stream that reaches its budget reservation is ended
// by the gateway in the caller's format and charged exactly the reservation; a deployment's rate limit counts only
// the requests that deployment serves; GET /v1/me; agentd_auth_refused_total{reason} and the audit log lines.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let oa, an;
before(async () => {
  oa = await startFake({ provider: 'openai' });
  an = await startFake({ provider: 'anthropic' });
});
after(async () => { await oa.close(); await an.close(); });

const PIN = 1000, POUT = 2000; // USD per million tokens, both models
const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai, FAKE_ANTHROPIC_KEY: FAKE_KEYS.anthropic };
const models = (moreModels = '', morePrices = '') => `
models:${moreModels}
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: claude
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${an.urls.anthropic}
    api_key_env: FAKE_ANTHROPIC_KEY
prices:
  gpt-4o-mini: {input: ${PIN}, output: ${POUT}}
  claude-haiku-4-5: {input: ${PIN}, output: ${POUT}}${morePrices}
ledger:
  batch_interval: 50ms
`;

function ledgerRows(dataDir) {
  const out = execFileSync('sqlite3', ['-json', join(dataDir, 'ledger.db'),
    'SELECT * FROM ledger_exchanges ORDER BY id'], { encoding: 'utf8' });
  return out.trim() ? JSON.parse(out) : [];
}

// The rows, or none while the database is being created.
function ledgerRowsSafe(dataDir) {
  try { return ledgerRows(dataDir); } catch { return []; }
}

const newDataDir = () => join(mkdtempSync(join(tmpdir(), 'agentd-gov-')), 'data');

// One streamed request in the client's format (chat: OpenAI, messages: Anthropic), attributed to `user`.
function stream(d, route, model, user, extra = {}, headers = {}) {
  const text = 'one two three four five six seven eight nine ten eleven twelve';
  const body = route === 'chat'
    ? { model, user, stream: true, messages: [{ role: 'user', content: text }], ...extra }
    : { model, max_tokens: 200, metadata: { user_id: user }, stream: true, messages: [{ role: 'user', content: text }], ...extra };
  return d.fetch(route === 'chat' ? '/v1/chat/completions' : '/v1/messages', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(route === 'messages' ? { 'anthropic-version': '2023-06-01' } : {}), ...headers },
    body: JSON.stringify(body),
  });
}

const price = (input, output) => Math.ceil((input * PIN + output * POUT) * 1000) / 1e9;

// route, model, the fake that serves it, and whether agentd relays it as received
const ROUTES = [
  ['chat', 'gpt', () => oa, 'openai passthrough'],
  ['messages', 'claude', () => an, 'anthropic passthrough'],
  ['chat', 'claude', () => an, 'openai -> anthropic (translated)'],
  ['messages', 'gpt', () => oa, 'anthropic -> openai (translated)'],
];

test('a client that disconnects mid-stream is charged what was relayed, on every route (never $0)', async () => {
  oa.reset(); an.reset();
  const dataDir = newDataDir();
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: models() });
  const bills = {};
  try {
    for (const [route, model, fake, name] of ROUTES) {
      const user = `cut-${name.replace(/[^a-z]+/g, '-')}`;
      fake().script([{ chunks: 10, chunkIntervalMs: 120 }]);
      const r = await stream(d, route, model, user);
      assert.equal(r.status, 200, name);
      const reader = r.body.getReader();
      let seen = '';
      while (!/echo/.test(seen)) { // some content reached the client
        const { value, done } = await reader.read();
        assert.ok(!done, `${name}: the stream ended before any content`);
        seen += Buffer.from(value).toString();
      }
      await reader.cancel();
      bills[user] = fake().billing.at(-1);
      const rid = r.headers.get('x-request-id');
      await d.waitLog((l) => l.msg === 'llm' && l.request_id === rid && l.status === 499);
    }
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
  const rows = ledgerRows(dataDir);
  for (const [user, bill] of Object.entries(bills)) {
    const r = rows.find((x) => x.user === user);
    assert.ok(r, `a ledger row for ${user}`);
    assert.equal(r.status, 499, user);
    assert.equal(r.incomplete, 1, user);
    assert.ok(r.input_tokens > 0, `${user}: input charged`);
    assert.ok(r.output_tokens > 0, `${user}: output relayed is charged`);
    assert.ok(r.output_tokens <= bill.output_tokens, `${user}: ${r.output_tokens} <= billed ${bill.output_tokens}`);
    assert.ok(r.cost_usd > 0, `${user} is not free`);
    assert.ok(Math.abs(r.cost_usd - price(r.input_tokens, r.output_tokens)) < 1e-12, user);
  }
});

test('failed over, and failed mid-stream: the ledger equals what was billed', async () => {
  oa.reset();
  const dataDir = newDataDir();
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: models(`
  - name: fo
    deployments:
      - {provider: openai, model: fo-a, base_url: "${oa.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 1000000}
      - {provider: openai, model: fo-b, base_url: "${oa.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 0}`, `
  fo-a: {input: ${PIN}, output: ${POUT}}
  fo-b: {input: ${PIN}, output: ${POUT}}`) });
  try {
    oa.script([{ status: 500 }]); // the first deployment fails before any byte: the second serves
    const r = await d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fo', user: 'failover', messages: [{ role: 'user', content: 'one two three' }] }) });
    assert.equal(r.status, 200);
    await r.json();
    oa.script([{ midStreamError: true, chunks: 8 }]);
    const m = await stream(d, 'chat', 'gpt', 'midway');
    assert.match(await m.text(), /"error"/);
    await d.waitLog((l) => l.msg === 'llm' && l.request_id === m.headers.get('x-request-id'));
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
  const rows = ledgerRows(dataDir);
  const fo = rows.find((x) => x.user === 'failover');
  const bill = oa.billing.find((b) => b.user === 'failover');
  assert.equal(oa.billing.filter((b) => b.user === 'failover').length, 1, 'the failed attempt produced nothing');
  assert.equal(fo.attempts, 2);
  assert.equal(fo.deployment, 'openai:fo-b');
  assert.deepEqual([fo.input_tokens, fo.output_tokens, fo.incomplete], [bill.input_tokens, bill.output_tokens, 0]);
  assert.ok(Math.abs(fo.cost_usd - price(bill.input_tokens, bill.output_tokens)) < 1e-12);
  const mid = rows.find((x) => x.user === 'midway');
  const mbill = oa.billing.find((b) => b.user === 'midway');
  assert.equal(mid.incomplete, 1);
  assert.ok(mid.output_tokens > 0 && mid.output_tokens <= mbill.output_tokens, `${mid.output_tokens} of ${mbill.output_tokens}`);
  assert.ok(mid.cost_usd > 0);
});

test('no route bypasses a budget: chat, messages, embeddings and responses are all refused once it is spent', async () => {
  oa.reset(); an.reset();
  const d = await startAgentd({ env, config: models(`
  - name: emb
    embeddings: true
    provider: openai
    model: text-embedding-3-small
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY`, `
  text-embedding-3-small: {input: ${PIN}, output: 0}`).replace('models:', `models:
  - name: compat
    provider: openai-compatible
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY`) + `
budgets:
  - {scope: workflow, name: broke, tokens: 1, window: total}
  - {scope: workflow, name: rich, usd: 100, window: day}
` });
  try {
    const wf = { 'content-type': 'application/json', 'x-agentd-workflow': 'broke' };
    const calls = [
      ['/v1/chat/completions', { model: 'gpt', messages: [{ role: 'user', content: 'hi' }] }, {}],
      ['/v1/messages', { model: 'claude', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }, { 'anthropic-version': '2023-06-01' }],
      ['/v1/embeddings', { model: 'emb', input: 'hi' }, {}],
      ['/v1/responses', { model: 'gpt', input: 'hi' }, {}],
      ['/v1/responses', { model: 'compat', input: 'hi' }, {}], // translated to chat completions
    ];
    for (const [path, body, h] of calls) {
      const r = await d.fetch(path, { method: 'POST', headers: { ...wf, ...h }, body: JSON.stringify(body) });
      const text = await r.text();
      assert.equal(r.status, 429, `${path}: ${text}`);
      assert.match(text, /budget exceeded: workflow 'broke'/, path);
      // the same request under a budget that covers it goes through (its output cap written into the body in
      // the route's own field: max_tokens, max_output_tokens on /v1/responses)
      const ok = await d.fetch(path, { method: 'POST', headers: { ...wf, 'x-agentd-workflow': 'rich', ...h }, body: JSON.stringify(body) });
      assert.equal(ok.status, 200, `${path} under a budget that covers it: ${await ok.text()}`);
      if (path === '/v1/responses' && body.model === 'gpt') { // relayed as received: the Responses API's own field
        const up = oa.requests.at(-1).json;
        assert.ok(up.max_output_tokens > 0 && !('max_tokens' in up), JSON.stringify(up));
      }
    }
    assert.equal(oa.requests.length + an.requests.length, 5, 'only the covered requests reached a provider');
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
});

test('a locked ledger database: requests keep flowing, /ready and the backlog metric say so, nothing is dropped', async () => {
  oa.reset();
  const dataDir = newDataDir();
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: models() });
  let locker;
  try {
    const chat = () => d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt', user: 'locked', messages: [{ role: 'user', content: 'hi' }] }) });
    let r = await chat(); // the writer creates the database
    assert.equal(r.status, 200);
    await r.text();
    for (;;) { // until that row is written
      const ready = await (await d.opsFetch('/ready')).json();
      if (ready.checks.ledger_backlog === 0 && ledgerRowsSafe(dataDir).length === 1) break;
    }
    // another process holds the database's write lock
    locker = spawn('sqlite3', [join(dataDir, 'ledger.db')], { stdio: ['pipe', 'pipe', 'inherit'] });
    locker.stdin.write('BEGIN EXCLUSIVE;\nSELECT \'locked\';\n');
    await new Promise((res) => locker.stdout.once('data', res));
    for (let i = 0; i < 5; i++) {
      r = await chat();
      assert.equal(r.status, 200, 'requests keep flowing');
      await r.text();
    }
    let ready;
    for (;;) { // the writer tried, failed and says so
      ready = await (await d.opsFetch('/ready')).json();
      if (ready.checks.ledger === false) break;
    }
    assert.equal(ready.status, 'ready', 'a failing ledger is reported, not fatal');
    assert.equal(ready.checks.ledger_backlog, 5);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_ledger_backlog_rows 5\n/);
    assert.match(m, /agentd_ledger_failing 1\n/);
    locker.stdin.end('COMMIT;\n');
    await new Promise((res) => locker.on('exit', res));
    locker = null;
    for (;;) { // the retry writes the backlog
      ready = await (await d.opsFetch('/ready')).json();
      if (ready.checks.ledger && ready.checks.ledger_backlog === 0) break;
    }
  } finally {
    if (locker) locker.kill();
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
  assert.equal(ledgerRows(dataDir).filter((x) => x.user === 'locked').length, 6, 'every row written once');
});

test('a stream that reaches its reservation is ended by the gateway in the caller\'s format, charged exactly the reservation', async () => {
  oa.reset(); an.reset();
  const dataDir = newDataDir();
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: models() + `
budgets:
  - {scope: user, name: "*", usd: 5, window: day}
` });
  const words = Array.from({ length: 40 }, (_, i) => `w${i + 10}`).join(' ');
  // The words relayed, as words: the fake's ids are base62, and an id holding "w" and two digits, repeated in every
  // event, would count as words too.
  const countWords = (t) => (t.match(/(?<![A-Za-z0-9])w\d\d(?![A-Za-z0-9])/g) || []).length;
  const MAX = 5;
  try {
    for (const [route, model, fake, name] of ROUTES) {
      const user = `cap-${name.replace(/[^a-z]+/g, '-')}`;
      // an upstream that ignores the max_tokens it was given: one word an event, 40 of them
      fake().script([{ reply: words, ignoreMaxTokens: true, chunks: 40 }]);
      const r = await stream(d, route, model, user, { max_tokens: MAX });
      assert.equal(r.status, 200, name);
      const text = await r.text();
      const got = countWords(text);
      assert.ok(got >= 1 && got <= MAX + 2, `${name}: ${got} words relayed, the reservation covers ${MAX}`);
      if (route === 'chat') {
        assert.match(text, /"finish_reason":"length"/, name);
        assert.ok(text.trimEnd().endsWith('data: [DONE]'), name);
      } else {
        assert.match(text, /"stop_reason":"max_tokens"/, name);
        // every content block started is stopped: one content_block_stop per content_block_start
        assert.equal((text.match(/event: content_block_stop/g) || []).length,
          (text.match(/event: content_block_start/g) || []).length, name);
        assert.match(text, /event: message_stop\ndata: \{"type":"message_stop"\}\n\n$/, name);
      }
      await d.waitLog((l) => l.msg === 'llm' && l.request_id === r.headers.get('x-request-id'));
    }
    // the official SDKs take the gateway's ending for a normal one (every route, both wire formats)
    const oaSdk = new OpenAI({ baseURL: d.url + '/v1', apiKey: 'none', maxRetries: 0 });
    const anSdk = new Anthropic({ baseURL: d.url, apiKey: 'none', maxRetries: 0 });
    for (const model of ['gpt', 'claude']) {
      (model === 'gpt' ? oa : an).script([{ reply: words, ignoreMaxTokens: true, chunks: 40 }]);
      const s1 = oaSdk.chat.completions.stream({ model, max_tokens: MAX, user: `sdk-oa-${model}`,
        messages: [{ role: 'user', content: 'go' }] });
      const c = await s1.finalChatCompletion();
      assert.equal(c.choices[0].finish_reason, 'length', `OpenAI SDK -> ${model}`);
      assert.match(c.choices[0].message.content, /^w10 w11/);
      (model === 'gpt' ? oa : an).script([{ reply: words, ignoreMaxTokens: true, chunks: 40 }]);
      const s2 = anSdk.messages.stream({ model, max_tokens: MAX, metadata: { user_id: `sdk-an-${model}` },
        messages: [{ role: 'user', content: 'go' }] });
      const m = await s2.finalMessage();
      assert.equal(m.stop_reason, 'max_tokens', `Anthropic SDK -> ${model}`);
      assert.match(m.content[0].text, /^w10 w11/);
    }
    // a conforming upstream that stops at max_tokens (one word an event) is not cut
    oa.script([{ reply: words, chunks: MAX }]);
    const ok = await stream(d, 'chat', 'gpt', 'conforming', { max_tokens: MAX });
    const okText = await ok.text();
    assert.equal(countWords(okText), MAX, okText);
    await d.waitLog((l) => l.msg === 'llm' && l.request_id === ok.headers.get('x-request-id'));
    const metrics = await (await d.opsFetch('/metrics')).text();
    assert.match(metrics, /agentd_budget_stream_cuts_total 8\n/); // 4 routes, and 4 through the SDKs
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
  const rows = ledgerRows(dataDir);
  for (const [, , , name] of ROUTES) {
    const user = `cap-${name.replace(/[^a-z]+/g, '-')}`;
    const r = rows.find((x) => x.user === user);
    assert.ok(r, user);
    assert.equal(r.status, 200, user);
    assert.equal(r.incomplete, 1, user);
    assert.equal(r.output_tokens, MAX, `${user}: charged the output reserved`);
    assert.ok(Math.abs(r.cost_usd - price(r.input_tokens, MAX)) < 1e-12, user);
  }
  const c = rows.find((x) => x.user === 'conforming');
  assert.equal(c.incomplete, 0);
  assert.equal(c.output_tokens, oa.billing.at(-1).output_tokens);
});

test('a deployment rate limit counts only the requests that deployment serves', async () => {
  oa.reset();
  const d = await startAgentd({ env, config: `
server:
  workers: 2
models:
  - name: dual
    deployments:
      - {provider: openai, model: dep-a, base_url: "${oa.urls.openai}", api_key_env: FAKE_OPENAI_KEY}
      - {provider: openai, model: dep-b, base_url: "${oa.urls.openai}", api_key_env: FAKE_OPENAI_KEY}
ratelimits:
  - {scope: deployment, name: "openai:dep-a", rpm: 3}
  - {scope: deployment, name: "openai:dep-b", rpm: 3}
` });
  try {
    const codes = [];
    for (let i = 0; i < 6; i++) {
      const r = await d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'dual', messages: [{ role: 'user', content: 'hi' }] }) });
      codes.push(r.status);
      await r.text();
    }
    assert.deepEqual(codes, [200, 200, 200, 200, 200, 200], 'two deployments of 3 a minute serve 6');
    const served = oa.requests.filter((q) => q.json?.model).map((q) => q.json.model);
    assert.equal(served.filter((m) => m === 'dep-a').length, 3);
    assert.equal(served.filter((m) => m === 'dep-b').length, 3);
    const r = await d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'dual', messages: [{ role: 'user', content: 'hi' }] }) });
    assert.equal(r.status, 429);
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
    const e = (await r.json()).error;
    assert.equal(e.code, 'rate_limit_exceeded');
    assert.match(e.message, /deployment 'openai:dep-[ab]'/);
    assert.equal(oa.requests.length, 6, 'nothing reached the provider');
    const m = await (await d.opsFetch('/metrics')).text();
    // a deployment skipped for another is not a refusal; the request refused is one
    assert.match(m, /agentd_ratelimit_refusals_total\{scope="deployment"\} 1\n/);
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
});

const ADMIN = 'admin-key-0123456789abcdef';

test('GET /v1/me: the key\'s own budgets and rate limits, with what is spent and left', async () => {
  oa.reset();
  const dataDir = newDataDir();
  const k = JSON.parse(execFileSync(BIN, ['keys', 'create', '--name', 'me', '--user', 'alice', '--team', 'blue',
    '--tag', 'workflow=triage', '--budget-usd', '2', '--budget-window', 'day', '--rpm', '10', '--data-dir', dataDir],
  { encoding: 'utf8' }));
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: `auth:\n  mode: keys\n${models()}
budgets:
  - {scope: team, name: blue, tokens: 100000, window: month, mode: soft}
  - {scope: team, name: red, usd: 1}
ratelimits:
  - {scope: user, name: "*", tpm: 600}
` });
  try {
    // no key, a wrong key: 401 in the caller's format
    let r = await d.fetch('/v1/me');
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.code, 'invalid_api_key');
    r = await d.fetch('/v1/me', { headers: { 'anthropic-version': '2023-06-01', 'x-api-key': 'sk-agentd-nope' } });
    assert.equal(r.status, 401);
    assert.equal((await r.json()).type, 'error');
    const me = async () => {
      const x = await d.fetch('/v1/me', { headers: { authorization: `Bearer ${k.key}` } });
      assert.equal(x.status, 200);
      return x.json();
    };
    const before = await me();
    assert.equal(before.id, k.id);
    assert.equal(before.user, 'alice');
    assert.equal(before.team, 'blue');
    assert.equal(before.workflow, 'triage');
    assert.ok(!('hash' in before) && !('key' in before), 'never the secret or its hash');
    const kb = before.budgets.find((b) => b.scope === 'key');
    assert.deepEqual([kb.name, kb.window, kb.limit_usd, kb.spent_usd, kb.remaining_usd], [k.id, 'day', 2, 0, 2]);
    assert.ok(kb.resets_at > Date.now() / 1000 && kb.resets_at <= Date.now() / 1000 + 86400);
    const tb = before.budgets.find((b) => b.scope === 'team');
    assert.deepEqual([tb.name, tb.mode, tb.limit_tokens, tb.limit_usd], ['blue', 'soft', 100000, null]);
    assert.equal(before.budgets.length, 2, 'team red does not apply');
    const kl = before.rate_limits.find((l) => l.scope === 'key');
    assert.deepEqual([kl.rpm, kl.remaining_requests, kl.tpm], [10, 10, null]);
    const ul = before.rate_limits.find((l) => l.scope === 'user');
    assert.deepEqual([ul.name, ul.tpm, ul.remaining_tokens], ["alice", 600, 600]);

    const c = await d.fetch('/v1/chat/completions', { method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${k.key}` },
      body: JSON.stringify({ model: 'gpt', max_tokens: 20, messages: [{ role: 'user', content: 'hello there' }] }) });
    assert.equal(c.status, 200);
    const u = (await c.json()).usage;
    const after = await me();
    const ka = after.budgets.find((b) => b.scope === 'key');
    const spent = price(u.prompt_tokens, u.completion_tokens);
    assert.ok(Math.abs(ka.spent_usd - spent) < 1e-12, `${ka.spent_usd} vs ${spent}`);
    assert.ok(Math.abs(ka.remaining_usd - (2 - spent)) < 1e-12);
    assert.equal(ka.reserved_usd, 0);
    assert.equal(after.budgets.find((b) => b.scope === 'team').spent_tokens, u.prompt_tokens + u.completion_tokens);
    assert.equal(after.rate_limits.find((l) => l.scope === 'key').remaining_requests, 9);
    assert.ok(after.rate_limits.find((l) => l.scope === 'user').remaining_tokens < 600, "the tokens used are taken (600 a minute refills one every 100 ms)");
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
});

test('auth refusals are counted by reason and audited; admin changes are audited', async () => {
  const d = await startAgentd({ env: { ...env, AGENTD_ADMIN_KEY: ADMIN }, config: `auth:\n  mode: keys\n${models()}` });
  const dataDir = join(d.dir, 'data');
  const cli = (args) => {
    const r = spawnSync(BIN, ['keys', ...args, '--data-dir', dataDir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  try {
    const chat = (headers) => d.fetch('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: 'hi' }] }) }).then(async (r) => { await r.text(); return r.status; });
    const limited = JSON.parse(cli(['create', '--name', 'lim', '--models', 'claude']));
    const gone = JSON.parse(cli(['create', '--name', 'gone']));
    cli(['revoke', gone.id]);
    // wait for the running daemon to see the revocation (within a second)
    for (let i = 0; i < 50 && (await chat({ authorization: `Bearer ${gone.key}` })) !== 401; i++);
    assert.equal(await chat({}), 401);
    assert.equal(await chat({ authorization: 'Bearer not-an-agentd-key' }), 401);
    assert.equal(await chat({ authorization: 'Bearer sk-agentd-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }), 401);
    assert.equal(await chat({ authorization: `Bearer ${limited.key}` }), 403);
    const adm = await d.fetch('/admin/keys', { headers: { authorization: 'Bearer wrong-admin-key-000000' } });
    assert.equal(adm.status, 401);
    const created = await d.fetch('/admin/keys', { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'via-admin' }) });
    assert.equal(created.status, 201);
    const cid = (await created.json()).id;
    const m = await (await d.opsFetch('/metrics')).text();
    const count = (reason) => Number((m.match(new RegExp(`agentd_auth_refused_total\\{reason="${reason}"\\} (\\d+)`)) || [])[1] || 0);
    assert.ok(count('revoked') >= 1, m);
    assert.equal(count('no_key'), 1);
    assert.equal(count('malformed'), 1);
    assert.equal(count('unknown'), 1);
    assert.equal(count('model_not_allowed'), 1);
    assert.equal(count('admin_key'), 1);
    const line = await d.waitLog((l) => l.msg === 'auth refused' && l.reason === 'revoked');
    assert.equal(line.key_id, gone.id);
    assert.equal(line.route, '/v1/chat/completions');
    assert.ok(line.request_id);
    await d.waitLog((l) => l.msg === 'auth refused' && l.reason === 'model_not_allowed' && l.key_id === limited.id);
    await d.waitLog((l) => l.msg === 'auth refused' && l.reason === 'admin_key' && l.route === '/admin/keys');
    await d.waitLog((l) => l.msg === 'admin audit' && l.op === 'create' && l.key_id === cid && l.status === 201);
    assert.ok(!d.rawStderr.includes(gone.key) && !d.rawStderr.includes(ADMIN), 'no secret in the log');
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000)); // no leak, no crash
  }
});
