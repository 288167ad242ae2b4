// The fault battery (issue 9 item 8): a fake provider misbehaves once in each way it knows, a second deployment is
// healthy. The client always gets a well-formed answer within the deadline: a success where a retry or a fallback
// can serve it, else (a stream that already reached the client) its format's error event. Every attempt is counted
// once: the fakes' request counts, x-agentd-attempts and agentd_gateway_upstream_attempts_total agree. Then: a
// retried or failed-over request is billed once, at the price of the deployment that served it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let oa, oa2, dead;
before(async () => {
  oa = await startFake({ provider: 'openai' });
  oa2 = await startFake({ provider: 'openai' });
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  dead = `http://127.0.0.1:${s.address().port}/v1`;
  await new Promise((r) => s.close(r));
});
after(async () => { await oa.close(); await oa2.close(); });

const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai };
const ADMIN = 'admin-key-0123456789abcdef';

// Resolves once no deployment is in a 429's cool-down (GET /admin/deployments), so that the next fault meets the
// flaky deployment and not the healthy one.
async function cooledDown(d) {
  for (let i = 0; i < 400; i++) {
    const r = await d.fetch('/admin/deployments', { headers: { authorization: `Bearer ${ADMIN}` } });
    const j = await r.json();
    if (j.data.every((x) => x.throttle_remaining_ms === 0)) return j;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error('a cool-down never ended');
}
const PROMPT = 'one two three four five six seven eight';
const REPLY = `echo: ${PROMPT}`;

function sse(text) {
  return text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
}

function metricSum(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name + '{')) sum += Number(line.split(' ').pop());
  return sum;
}

// [behaviour, what a streaming client gets: 'ok' or 'error' (bytes had reached it)]
const FAULTS = [
  [{ status: 429, retryAfterMs: 50 }, 'ok'],
  [{ status: 429, retryAfter: 1 }, 'ok'],
  [{ status: 429, headers: { 'x-ratelimit-reset-requests': '100ms' } }, 'ok'],
  [{ status: 500 }, 'ok'],
  [{ status: 502 }, 'ok'], // Cloudflare's HTML page
  [{ status: 503 }, 'ok'],
  [{ status: 529 }, 'ok'],
  [{ status: 500, times: 3 }, 'ok'], // a burst: the first deployment is spent, the second serves
  [{ reset: true }, 'ok'], // reset before the response headers
  [{ hang: true }, 'ok'], // no headers: first_byte_timeout
  [{ body: '<html><body>502 Bad Gateway</body></html>', status: 200, headers: { 'content-type': 'text/html' } }, 'ok'],
  [{ body: { error: { message: 'The server had an error', type: 'server_error' } } }, 'ok'], // a 200 that is an error
  [{ chunkIntervalMs: 30 }, 'ok'], // a trickle is not a fault
  [{ ttftMs: 3000 }, 'ok'], // stream: headers, then silence before the first event (idle timeout)
  [{ malformed: true }, 'error'], // non-stream: half a JSON body; stream: a bad event after half of them
  [{ resetMidBody: true }, 'ok'], // non-stream: the connection drops mid-body
  [{ truncate: true }, 'error'], // stream: ends cleanly without its terminal events
  [{ truncate: 'reset' }, 'error'], // stream: reset mid-stream
  [{ hangMidStream: true }, 'error'], // stream: silent mid-stream (idle timeout)
  [{ midStreamError: true }, 'error'],
];

test('the fault battery: well-formed answers within the deadline, each attempt counted once', async () => {
  oa.reset(); oa2.reset();
  const d = await startAgentd({ env: { ...env, AGENTD_ADMIN_KEY: ADMIN }, config: `
server:
  workers: 2
gateway:
  request_timeout: 6s
  first_byte_timeout: 400ms
  stream_idle_timeout: 400ms
  retries: { max_attempts: 3, backoff_base: 2ms, backoff_max: 10ms }
  breaker: { enabled: false }
models:
  - name: m
    deployments:
      - { provider: openai, model: gpt-4o-mini, id: flaky, base_url: "${oa.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 1000000 }
      - { provider: openai, model: gpt-4o-mini, id: steady, base_url: "${oa2.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 0 }
  - name: refused-first
    deployments:
      - { provider: openai, model: gpt-4o-mini, id: nobody, base_url: "${dead}", api_key_env: FAKE_OPENAI_KEY, weight: 1000000 }
      - { provider: openai, model: gpt-4o-mini, id: steady2, base_url: "${oa2.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 0 }
` });
  let attempts = 0, refusedAttempts = 0, extra = 0;
  try {
    for (const stream of [false, true]) {
      for (const [b, streamWant] of FAULTS) {
        const want = stream ? streamWant : 'ok';
        const what = `${JSON.stringify(b)} stream=${stream}`;
        await cooledDown(d);
        const seen0 = oa.received() + oa2.received();
        oa.script([b]);
        const t0 = Date.now();
        const res = await d.fetch('/v1/chat/completions', {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'm', stream, messages: [{ role: 'user', content: PROMPT }] }),
        });
        const text = await res.text();
        assert.ok(Date.now() - t0 < 6000, `${what}: within the deadline`);
        assert.equal(res.status, 200, `${what}: ${text.slice(0, 300)}`);
        const n = Number(res.headers.get('x-agentd-attempts'));
        attempts += n;
        // the fakes saw each attempt once; a reset of a pooled keep-alive connection before any answer is sent
        // again once on a fresh connection by the HTTP client (a stale connection, inside one attempt)
        const seen = oa.received() + oa2.received() - seen0;
        if (b.reset) assert.ok(seen === n || seen === n + 1, `${what}: ${seen} requests, ${n} attempts`);
        else assert.equal(seen, n, `${what}: requests seen upstream = attempts`);
        extra += seen - n;
        if (!stream) {
          const j = JSON.parse(text);
          assert.equal(j.choices[0].message.content, REPLY, what);
          assert.ok(n >= 2 || b.chunkIntervalMs || b.truncate || b.hangMidStream || b.midStreamError || b.ttftMs || b.reset,
            `${what}: retried (${n})`);
        } else {
          const evs = sse(text);
          assert.equal(evs.at(-1), '[DONE]', `${what}: the stream is terminated`);
          // In passthrough too a malformed event never reaches the client: each relayed event's payload is checked
          // to be JSON (docs/resilience.md), and the stream ends with the error event instead.
          const chunks = evs.slice(0, -1).map((e) => {
            try { return JSON.parse(e); } catch { assert.fail(`${what}: the client got an event that is not JSON: ${e}`); }
          });
          if (want === 'ok') {
            assert.equal(chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join(''), REPLY, what);
            assert.ok(!chunks.some((c) => c.error), what);
          } else {
            assert.ok(chunks.at(-1).error, `${what}: ends with the format's error event`);
            assert.equal(typeof chunks.at(-1).error.message, 'string');
            assert.equal(n, 1, `${what}: no retry once bytes reached the client`);
          }
        }
        if (!b.times) assert.equal(oa.pending(), 0, `${what}: the fault was used`);
        oa.reset();
      }
    }
    // connection refused on the first deployment
    for (const stream of [false, true]) {
      const res = await d.fetch('/v1/chat/completions', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'refused-first', stream, messages: [{ role: 'user', content: PROMPT }] }),
      });
      assert.equal(res.status, 200);
      await res.text();
      assert.equal(res.headers.get('x-agentd-attempts'), '2');
      attempts += 2;
      refusedAttempts += 1;
    }
    // each attempt once: what the fakes saw, what the headers said, what the metrics counted
    assert.ok(refusedAttempts === 2 && extra <= 2);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metricSum(m, 'agentd_gateway_upstream_attempts_total'), attempts);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

function ledgerRows(dataDir) {
  const out = execFileSync('sqlite3', ['-json', join(dataDir, 'ledger.db'),
    'SELECT * FROM ledger_exchanges ORDER BY id'], { encoding: 'utf8' });
  return out.trim() ? JSON.parse(out) : [];
}

test('a retried or failed-over request is billed once, at the price of the deployment that served it', async () => {
  oa.reset(); oa2.reset();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-resil-')), 'data');
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: `
gateway:
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms }
  stream_idle_timeout: 300ms
  breaker: { enabled: false }
models:
  - name: m
    deployments:
      - { provider: openai, model: cheap-model, id: cheap, base_url: "${oa.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 1000000 }
      - { provider: openai, model: dear-model, id: dear, base_url: "${oa2.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 0 }
prices:
  cheap-model: {input: 1000, output: 1000}
  dear-model: {input: 100000, output: 200000}
budgets:
  - {scope: user, name: payer, usd: 1000, window: day}
ledger:
  batch_interval: 20ms
` });
  const want = [];
  try {
    // a 503 on the cheap one: the dear one serves
    oa.script([{ status: 503 }]);
    let res = await d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', user: 'payer', messages: [{ role: 'user', content: PROMPT }] }),
    });
    let j = await res.json();
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-agentd-deployment'), 'dear');
    assert.equal(res.headers.get('x-agentd-attempts'), '2');
    const cost = (j.usage.prompt_tokens * 100000 + j.usage.completion_tokens * 200000) / 1e6;
    assert.equal(Number(res.headers.get('x-agentd-cost-usd')), Number(cost.toFixed(8)));
    want.push({ rid: res.headers.get('x-request-id'), dep: 'dear', cost });

    // a stream whose first attempt (cheap) falls silent: the dear one serves it, billed once at its price
    oa.script([{ ttftMs: 3000 }]);
    res = await d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', user: 'payer', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: PROMPT }] }),
    });
    const evs = sse(await res.text());
    const usage = JSON.parse(evs.at(-2)).usage;
    assert.equal(res.headers.get('x-agentd-attempts'), '2');
    assert.equal(res.headers.get('x-agentd-deployment'), 'dear');
    want.push({ rid: res.headers.get('x-request-id'), dep: 'dear', cost: (usage.prompt_tokens * 100000 + usage.completion_tokens * 200000) / 1e6 });
    await d.waitLog((l) => l.msg === 'llm' && l.request_id === want[1].rid);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
  const rows = ledgerRows(dataDir);
  assert.equal(rows.length, 2, 'one ledger row per request, whatever its attempts');
  for (const w of want) {
    const r = rows.find((x) => x.request_id === w.rid);
    assert.ok(r, `a row for ${w.rid}`);
    assert.equal(r.deployment, w.dep);
    assert.equal(r.cost_nusd, Math.round(w.cost * 1e9));
  }
});

test('pass-through streams refuse a malformed event mid-stream: the client gets its format\'s error event, the row is incomplete', async () => {
  const an = await startFake({ provider: 'anthropic' });
  oa.reset();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-malformed-')), 'data');
  const d = await startAgentd({ env: { ...env, FAKE_ANTHROPIC_KEY: FAKE_KEYS.anthropic }, noDataDir: true,
    args: ['--data-dir', dataDir], config: `
gateway:
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms }
  breaker: { enabled: false }
models:
  - { name: o, provider: openai, model: gpt-4o-mini, base_url: "${oa.urls.openai}", api_key_env: FAKE_OPENAI_KEY }
  - { name: a, provider: anthropic, model: claude-x, base_url: "${an.urls.anthropic}", api_key_env: FAKE_ANTHROPIC_KEY }
ledger:
  batch_interval: 20ms
` });
  try {
    // OpenAI chat -> an OpenAI deployment: relayed as received
    oa.script([{ malformed: true }]);
    let res = await d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'malformed-openai' },
      body: JSON.stringify({ model: 'o', stream: true, messages: [{ role: 'user', content: PROMPT }] }),
    });
    assert.equal(res.status, 200);
    let evs = sse(await res.text());
    assert.equal(evs.at(-1), '[DONE]');
    const chunks = evs.slice(0, -1).map((e) => {
      try { return JSON.parse(e); } catch { return assert.fail(`not JSON reached the client: ${e}`); }
    });
    assert.ok(chunks.length >= 2, 'some content came before the bad event');
    assert.match(chunks.at(-1).error.message, /malformed stream event/);
    assert.equal(res.headers.get('x-agentd-attempts'), '1');

    // Anthropic messages -> an Anthropic deployment: relayed as received
    an.script([{ malformed: true }]);
    res = await d.fetch('/v1/messages', {
      method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-request-id': 'malformed-anthropic' },
      body: JSON.stringify({ model: 'a', max_tokens: 50, stream: true, messages: [{ role: 'user', content: PROMPT }] }),
    });
    assert.equal(res.status, 200);
    const blocks = (await res.text()).split('\n\n').filter((b) => b.trim());
    const parsed = blocks.map((b) => {
      const ev = /^event: (.*)$/m.exec(b)?.[1];
      const data = /^data: (.*)$/m.exec(b)?.[1];
      try { return { ev, data: JSON.parse(data) }; } catch { return assert.fail(`not JSON reached the client: ${b}`); }
    });
    assert.ok(parsed.some((p) => p.ev === 'content_block_delta'), 'some content came before the bad event');
    assert.equal(parsed.at(-1).ev, 'error');
    assert.equal(parsed.at(-1).data.type, 'error');
    assert.match(parsed.at(-1).data.error.message, /malformed stream event/);

    // both settled as incomplete
    for (let i = 0; ; i++) {
      const rows = ledgerRows(dataDir).filter((r) => r.request_id.startsWith('malformed-'));
      if (rows.length === 2) {
        for (const r of rows) assert.equal(r.incomplete, 1, JSON.stringify(r));
        break;
      }
      if (i > 400) assert.fail(`ledger rows: ${rows.length}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    assert.equal((await d.stop()).code, 0);
    await an.close();
  }
});

test('a dearer fallback model tops up the budget reservation first, or is skipped when the budget cannot cover it', async () => {
  oa.reset(); oa2.reset();
  const d = await startAgentd({ env, config: `
gateway:
  retries: { max_attempts: 2, backoff_base: 1ms, backoff_max: 2ms }
  breaker: { enabled: false }
models:
  - name: m
    provider: openai
    model: cheap-model
    id: cheap
    base_url: "${oa.urls.openai}"
    api_key_env: FAKE_OPENAI_KEY
    fallbacks: [dear]
  - name: dear
    provider: openai
    model: dear-model
    id: dear
    base_url: "${oa2.urls.openai}"
    api_key_env: FAKE_OPENAI_KEY
prices:
  cheap-model: {input: 1, output: 1}
  dear-model: {input: 1000, output: 1000}
budgets:
  - {scope: user, name: tight, usd: 0.01, window: day}
  - {scope: user, name: loose, usd: 10, window: day}
` });
  const ask = (user) => d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', user, max_tokens: 100, messages: [{ role: 'user', content: PROMPT }] }),
  });
  try {
    // The cheap model's reservation (~$0.0002) fits $0.01; the dear fallback's worst case (~$0.15) does not: it is
    // skipped, not served and settled above what the budget allowed.
    oa.script([{ status: 503, times: 2 }]);
    let res = await ask('tight');
    let j = await res.json();
    assert.equal(res.status, 429, JSON.stringify(j));
    assert.equal(j.error.code, 'budget_exceeded');
    assert.match(j.error.message, /fallback deployment 'dear'/);
    assert.equal(res.headers.get('x-agentd-attempts'), '2');
    assert.equal(oa2.received(), 0, 'the dear fallback was never called');

    // With room for it the reservation is topped up and the fallback serves, charged at its own price.
    oa.reset();
    oa.script([{ status: 503, times: 2 }]);
    res = await ask('loose');
    j = await res.json();
    assert.equal(res.status, 200, JSON.stringify(j));
    assert.equal(res.headers.get('x-agentd-deployment'), 'dear');
    const cost = (j.usage.prompt_tokens * 1000 + j.usage.completion_tokens * 1000) / 1e6;
    assert.equal(Number(res.headers.get('x-agentd-cost-usd')), Number(cost.toFixed(8)));
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});
