// The fault battery's last clause (issue 9 item 8): agentd's memory is flat after thousands of faulty requests.
// A flaky fake answers every request with the next of a cycle of faults (5xx, 429 with a short Retry-After,
// resets before headers and mid-body, malformed JSON, a 200 that is an error, truncated streams, mid-stream
// errors) interleaved with good answers; a second deployment is healthy. After a warm-up of 500 requests the
// daemon's resident set (VmRSS in /proc/PID/status) is read, then 3000 more requests, and it is read again: the
// growth must stay under 8 MiB (a leak of even one small allocation per faulty request, ~100 bytes x 3000, is
// below that, so this catches what accumulates: tables, buffers or metric series that grow per request; the
// leak checker at exit catches the rest).
//
// Under ASan the allocator's quarantine holds freed memory back (256 MiB by default) and would grow the RSS by
// itself: this daemon runs with ASAN_OPTIONS quarantine_size_mb=0 (use-after-free detection is weaker for this
// run only; the other tests keep it). A Release binary (AGENTD_BIN) needs nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const WARMUP = 500, MEASURED = 3000, CONCURRENCY = 8, BOUND_KIB = 8 * 1024;

let flaky, steady;
before(async () => {
  flaky = await startFake({ provider: 'openai', record: false, quiet: true });
  steady = await startFake({ provider: 'openai', record: false, quiet: true });
});
after(async () => { await flaky.close(); await steady.close(); });

const CYCLE = [
  { status: 500 }, {}, { status: 503 }, { reset: true }, {}, { malformed: true },
  { status: 429, retryAfterMs: 1 }, { resetMidBody: true }, {},
  { body: { error: { message: 'The server had an error', type: 'server_error' } } },
  { status: 502 }, { truncate: true }, { midStreamError: true }, { status: 529 }, {},
];

function rssKiB(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB$/m);
  assert.ok(m, 'VmRSS in /proc/PID/status');
  return Number(m[1]);
}

// n requests, CONCURRENCY at a time, half of them streamed. Every answer must be complete and well-formed: a 200
// completion (or, for a stream that had already started when its upstream failed, the error event and [DONE]),
// or an error object in the OpenAI format.
async function send(d, n) {
  let next = 0;
  const seen = { ok: 0, error: 0 };
  const one = async (i) => {
    const stream = i % 2 === 1;
    const r = await d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream, messages: [{ role: 'user', content: 'one two three' }] }),
    });
    const text = await r.text();
    if (r.status !== 200) {
      const j = JSON.parse(text);
      assert.ok(j.error && typeof j.error.message === 'string', `request ${i}: ${r.status} ${text.slice(0, 200)}`);
      seen.error++;
    } else if (stream) {
      assert.ok(text.trimEnd().endsWith('data: [DONE]'), `request ${i}: unterminated stream ${text.slice(-200)}`);
      seen[text.includes('"error"') ? 'error' : 'ok']++;
    } else {
      assert.equal(JSON.parse(text).choices[0].message.content, 'echo: one two three', `request ${i}`);
      seen.ok++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    for (let i = next++; i < n; i = next++) await one(i);
  }));
  return seen;
}

test('RSS is flat across 3000 faulty requests after a warm-up of 500', { timeout: 240000 }, async () => {
  const script = [];
  for (let i = 0; script.length < 4 * (WARMUP + MEASURED); i++) script.push(CYCLE[i % CYCLE.length]);
  flaky.script(script);
  const asan = process.env.ASAN_OPTIONS ? process.env.ASAN_OPTIONS + ':' : '';
  const d = await startAgentd({
    env: {
      FAKE_OPENAI_KEY: FAKE_KEYS.openai,
      ASAN_OPTIONS: `${asan}detect_leaks=1:abort_on_error=0:exitcode=86:quarantine_size_mb=0`,
    },
    config: `
server:
  workers: 2
log:
  access: false
  llm: false
gateway:
  request_timeout: 10s
  first_byte_timeout: 2s
  stream_idle_timeout: 2s
  retries: { max_attempts: 3, backoff_base: 1ms, backoff_max: 2ms, budget_ratio: 10, budget_min_per_second: 1000 }
  breaker: { enabled: false }
models:
  - name: m
    deployments:
      - { provider: openai, model: gpt-4o-mini, id: flaky, base_url: "${flaky.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 1000000 }
      - { provider: openai, model: gpt-4o-mini, id: steady, base_url: "${steady.urls.openai}", api_key_env: FAKE_OPENAI_KEY, weight: 1 }
`,
  });
  try {
    const pid = d.child.pid;
    const w = await send(d, WARMUP);
    const rss0 = rssKiB(pid);
    const seen0 = flaky.received();
    const m = await send(d, MEASURED);
    const rss1 = rssKiB(pid);
    const faulty = flaky.received() - seen0;
    console.log(`# RSS after warm-up ${rss0} KiB, after ${MEASURED} more ${rss1} KiB (growth ${rss1 - rss0} KiB); ` +
      `flaky saw ${faulty} requests; warm-up ${JSON.stringify(w)}, measured ${JSON.stringify(m)}`);
    assert.ok(faulty >= 0.9 * MEASURED, `nearly every request met the flaky deployment first (${faulty})`);
    assert.ok(m.ok > MEASURED / 2, `most were served: ${JSON.stringify(m)}`);
    assert.ok(rss1 - rss0 < BOUND_KIB, `RSS grew ${rss1 - rss0} KiB over ${MEASURED} faulty requests (bound ${BOUND_KIB})`);
  } finally {
    const r = await d.stop();
    assert.equal(r.code, 0, d.rawStderr.slice(-3000));
  }
});
