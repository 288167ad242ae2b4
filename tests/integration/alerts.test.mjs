// Spend alerts (issue 14 item 4) against the real binary, a fake OpenAI and a local HTTP receiver: budget
// thresholds fire once per budget per window, webhooks are HMAC-signed and retried with backoff, Slack's payload,
// a spend-rate anomaly fires once per hour, and every alert reaches the log and the metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const SECRET = 'whsec-test-0123456789';

// Records every POST; answers with the status that fail(alertId, attempt) returns (200 when undefined).
function receiver() {
  const got = [];
  const waiters = [];
  let fail = () => undefined;
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const rec = { path: req.url, headers: req.headers, body, json: JSON.parse(body) };
      got.push(rec);
      const status = fail(req.headers['x-agentd-alert-id'], Number(req.headers['x-agentd-delivery-attempt'])) || 200;
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end('ok');
      for (const w of waiters.splice(0)) if (!w.check()) waiters.push(w);
    });
  });
  return {
    got,
    setFail(fn) { fail = fn; },
    // resolves once pred(got) is true (checked at every arrival)
    until(pred, ms = 10000) {
      return new Promise((resolve, reject) => {
        const w = { check: () => (pred(got) ? (clearTimeout(t), resolve(got), true) : false) };
        const t = setTimeout(() => reject(new Error(`receiver: timed out; got ${JSON.stringify(got.map((g) => g.json))}`)), ms);
        if (!w.check()) waiters.push(w);
      });
    },
    async start() { await new Promise((r) => srv.listen(0, '127.0.0.1', r)); this.url = `http://127.0.0.1:${srv.address().port}`; },
    close() { return new Promise((r) => srv.close(r)); },
  };
}


// Stops agentd and checks that the sanitizers had nothing to say (a leak or undefined behaviour fails the test).
async function stopClean(d) {
  const r = await d.stop();
  assert.doesNotMatch(d.rawStderr, /runtime error|AddressSanitizer|LeakSanitizer/);
  return r;
}

let f;
before(async () => { f = await startFake({ provider: 'openai' }); });
after(async () => { await f.close(); });

const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai, ALERT_SECRET: SECRET };
const models = () => `
models:
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  gpt-4o-mini: {input: 1000, output: 2000}
`;
function chat(d, user, words = 5) {
  return d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt', user, max_tokens: 5, messages: [{ role: 'user', content: 'word '.repeat(words) }] }),
  });
}
const verify = (g) => {
  const ts = g.headers['x-agentd-timestamp'];
  const want = 'sha256=' + createHmac('sha256', SECRET).update(`${ts}.${g.body}`).digest('hex');
  return g.headers['x-agentd-signature'] === want;
};

test('budget thresholds fire once per budget per window, signed, to every webhook (JSON and Slack)', async () => {
  const rx = receiver(); await rx.start();
  f.reset();
  const d = await startAgentd({ env, config: `${models()}
budgets:
  - {scope: user, name: alice, tokens: 200, window: day, mode: soft}
  - {scope: user, name: bob, tokens: 10, window: day, mode: soft}
alerts:
  thresholds: [50, 80, 100]
  webhooks:
    - {url: "${rx.url}/hook", secret_env: ALERT_SECRET}
    - {url: "${rx.url}/slack", format: slack}
` });
  try {
    const alice = (g) => g.filter((x) => x.path === '/hook' && x.json.name === 'alice');
    for (let i = 0; i < 40 && !alice(rx.got).some((x) => x.json.threshold_pct === 100); i++) {
      const r = await chat(d, 'alice', 20);
      assert.equal(r.status, 200);
      await r.text();
      // each alert is delivered before the next request could cross another threshold only by chance; wait
      // on the receiver only when the metric says an alert fired
      const m = await (await d.opsFetch('/metrics')).text();
      const n = Number((/agentd_spend_alerts_total\{kind="budget_threshold"\} (\d+)/.exec(m) || [0, 0])[1]);
      await rx.until((g) => alice(g).length >= n);
    }
    // more spend in the same window: nothing new fires
    for (let i = 0; i < 3; i++) await (await chat(d, 'alice', 20)).text();
    // bob crosses all three at once: three alerts, after alice's
    await (await chat(d, 'bob', 30)).text();
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_spend_alerts_total\{kind="budget_threshold"\} 6\b/);
    await rx.until((g) => g.filter((x) => x.path === '/hook').length >= 6 && g.filter((x) => x.path === '/slack').length >= 6);
    const hooks = rx.got.filter((x) => x.path === '/hook');
    assert.deepEqual(alice(rx.got).map((x) => x.json.threshold_pct).sort((a, b) => a - b), [50, 80, 100]);
    assert.deepEqual(hooks.filter((x) => x.json.name === 'bob').map((x) => x.json.threshold_pct).sort((a, b) => a - b), [50, 80, 100]);
    for (const h of hooks) {
      assert.ok(verify(h), 'signature');
      assert.equal(h.json.kind, 'budget_threshold');
      assert.equal(h.json.scope, 'user');
      assert.equal(h.json.window, 'day');
      assert.equal(h.json.unit, 'tokens');
      assert.ok(h.json.used_ratio * 100 >= h.json.threshold_pct);
      assert.equal(h.json.id, h.headers['x-agentd-alert-id']);
    }
    // a forged body does not verify
    const forged = { ...hooks[0], body: hooks[0].body.replace('"alice"', '"mallory"') };
    assert.equal(verify(forged), false);
    const slack = rx.got.filter((x) => x.path === '/slack');
    assert.equal(slack.length, 6);
    for (const s of slack) {
      assert.deepEqual(Object.keys(s.json), ['text']);
      assert.match(s.json.text, /^agentd: user '(alice|bob)' has used \d+% of its day budget/);
      assert.equal(s.headers['x-agentd-signature'], undefined); // no secret_env: unsigned
    }
    const line = await d.waitLog((l) => l.msg === 'spend alert' && /bob/.test(l.text), 5000);
    assert.equal(line.kind, 'budget_threshold');
  } finally { await stopClean(d); await rx.close(); }
});

test('a failed delivery is retried with backoff until the receiver takes it; a spend-rate anomaly fires once an hour', async () => {
  const rx = receiver(); await rx.start();
  f.reset();
  // the first two attempts of every alert fail (500, then 429); the third succeeds
  rx.setFail((id, attempt) => (attempt === 1 ? 500 : attempt === 2 ? 429 : undefined));
  const d = await startAgentd({ env, config: `${models()}
alerts:
  anomaly: true
  anomaly_min_usd: 0.000001
  check_interval: 50ms
  retries: 3
  retry_backoff: 100ms
  webhooks:
    - {url: "${rx.url}/hook", secret_env: ALERT_SECRET}
` });
  try {
    await (await chat(d, 'carol')).text();
    const got = await rx.until((g) => g.some((x) => x.headers['x-agentd-delivery-attempt'] === '3'));
    const a = got.filter((x) => x.json.kind === 'spend_rate_anomaly');
    assert.deepEqual(a.map((x) => x.headers['x-agentd-delivery-attempt']), ['1', '2', '3']);
    assert.equal(new Set(a.map((x) => x.json.id)).size, 1); // the same alert, retried
    for (const x of a) assert.ok(verify(x));
    // backoff: 100ms, then 200ms
    const t = a.map((x) => Number(x.headers['x-agentd-timestamp']));
    assert.ok(t[2] >= t[0], 'timestamps in order');
    assert.ok(a[0].json.last_hour_usd > 0);
    assert.equal(a[0].json.baseline_hourly_usd, 0);
    // more spend within the hour: the anomaly does not fire again (the metric counts fires)
    await (await chat(d, 'carol')).text();
    await (await chat(d, 'carol')).text();
    // wait until the rate has been checked twice more since that spend
    const checks = async () => Number((/agentd_spend_rate_checks_total (\d+)/.exec(await (await d.opsFetch('/metrics')).text()) || [0, 0])[1]);
    const c0 = await checks();
    while (await checks() < c0 + 2) await new Promise((r) => setImmediate(r));
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_spend_alerts_total\{kind="spend_rate_anomaly"\} 1\b/);
    assert.match(m, /agentd_alert_deliveries_total\{result="retry"\} 2\b/);
    assert.match(m, /agentd_alert_deliveries_total\{result="ok"\} 1\b/);
  } finally { await stopClean(d); await rx.close(); }
});

test('an alert whose webhook keeps failing is given up after its retries', async () => {
  const rx = receiver(); await rx.start();
  f.reset();
  rx.setFail(() => 503);
  const d = await startAgentd({ env, config: `${models()}
alerts:
  anomaly: true
  anomaly_min_usd: 0.000001
  check_interval: 50ms
  retries: 2
  retry_backoff: 20ms
  webhooks:
    - {url: "${rx.url}/hook"}
` });
  try {
    await (await chat(d, 'dave')).text();
    await rx.until((g) => g.length >= 3);
    const line = await d.waitLog((l) => /delivery to .* failed after 3 attempts/.test(l.msg || ''), 5000);
    assert.ok(line);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_alert_deliveries_total\{result="failed"\} 1\b/);
    assert.equal(rx.got.length, 3);
  } finally { await stopClean(d); await rx.close(); }
});

test("a key's own budget (keys create --budget-tokens) has its thresholds too", async () => {
  const rx = receiver(); await rx.start();
  f.reset();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-alerts-')), 'data');
  const k = JSON.parse(execFileSync(BIN, ['keys', 'create', '--name', 'a', '--budget-tokens', '100', '--budget-window', 'day',
    '--data-dir', dataDir], { encoding: 'utf8' }));
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: `${models()}
alerts:
  thresholds: [30]
  webhooks:
    - {url: "${rx.url}/hook"}
` });
  try {
    const r = await d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${k.key}` },
      body: JSON.stringify({ model: 'gpt', max_tokens: 5, messages: [{ role: 'user', content: 'word '.repeat(30) }] }),
    });
    assert.equal(r.status, 200); // a hard budget: the reservation (about 60 tokens) fits, the use (35) is 35%
    await r.text();
    const got = await rx.until((g) => g.length >= 1);
    assert.equal(got[0].json.scope, 'key');
    assert.equal(got[0].json.name, k.id);
    assert.equal(got[0].json.threshold_pct, 30);
    assert.equal(got[0].json.unit, 'tokens');
  } finally { await stopClean(d); await rx.close(); }
});
