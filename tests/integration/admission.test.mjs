// Admission (issue 9 items 6 and 7): MAX_CONCURRENT_REQUESTS slots shared by every worker, a bounded FIFO queue
// with a maximum wait, 503 + Retry-After in the caller's format past either, queue depth in /metrics and /ready,
// and the drain: SIGTERM refuses what waits, lets what runs finish, and ends what outlives the grace with the
// caller's error event.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd } from '../lib/agentd.mjs';

function config({ slots = 1, queue = 10, maxWait = '30s', high = 0, workers = 2, latency = '1500ms', extra = '', timeout = '300s' } = {}) {
  return `server:\n  workers: ${workers}\n${extra}` +
    `gateway:\n  request_timeout: ${timeout}\n  max_concurrent_requests: ${slots}\n  admission:\n    queue_size: ${queue}\n    max_wait: ${maxWait}\n` +
    `    ready_high_water: ${high}\n    retry_after: 2s\n` +
    `models:\n  - name: slow\n    provider: mock\n    mock: {latency: ${latency}}\n` +
    `  - name: slowstream\n    provider: mock\n    mock: {latency: 100ms, chunk_interval: 100ms}\n`;
}

const chat = (d, extra = {}) => d.fetch('/v1/chat/completions', {
  method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: 'slow', messages: [{ role: 'user', content: 'hi' }], ...extra }),
});
const messages = (d) => d.fetch('/v1/messages', {
  method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
  body: JSON.stringify({ model: 'slow', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
});

async function ready(d) {
  const r = await d.opsFetch('/ready');
  return { status: r.status, body: await r.json() };
}

// Waits (polling the probe, bounded) until the admission queue holds n requests.
async function queueDepth(d, n, timeoutMs = 10000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await ready(d);
    if (body.checks.admission_queue_depth === n) return;
    if (Date.now() > until) throw new Error(`queue depth ${body.checks.admission_queue_depth}, wanted ${n}`);
    await new Promise((r) => setImmediate(r));
  }
}

// Waits until n slots are held.
async function slotsInUse(d, n, timeoutMs = 10000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = metric(await (await d.opsFetch('/metrics')).text(), 'agentd_admission_slots_in_use');
    if (v === n) return;
    if (Date.now() > until) throw new Error(`slots in use ${v}, wanted ${n}`);
    await new Promise((r) => setImmediate(r));
  }
}

function metric(text, name, labels = '') {
  const re = new RegExp(`^${name}${labels ? `\\{${labels}\\}` : ''} ([0-9.e+-]+)$`, 'm');
  const m = text.match(re);
  return m ? Number(m[1]) : undefined;
}

test('over the slots requests wait in the queue and all succeed; the queue depth is a metric', async () => {
  const d = await startAgentd({ config: config({ slots: 2, queue: 10, latency: '800ms' }) });
  try {
    const all = Array.from({ length: 6 }, () => chat(d));
    await queueDepth(d, 4); // two run, four wait, across both workers
    const m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_admission_queue_depth'), 4);
    assert.equal(metric(m, 'agentd_admission_slots_in_use'), 2);
    const res = await Promise.all(all);
    for (const r of res) assert.equal(r.status, 200, await r.text());
    const m2 = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m2, 'agentd_admission_queue_depth'), 0);
    assert.equal(metric(m2, 'agentd_admission_slots_in_use'), 0);
    assert.equal(metric(m2, 'agentd_admission_wait_seconds_count', 'outcome="admitted"'), 4);
  } finally {
    await d.stop();
  }
});

test('a full queue is refused at once with 503 and Retry-After, in the caller\'s format', async () => {
  const d = await startAgentd({ config: config({ slots: 1, queue: 1, latency: '3s' }) });
  try {
    const running = chat(d);
    const waiting = chat(d);
    await queueDepth(d, 1);
    const t0 = Date.now();
    const r = await chat(d);
    assert.ok(Date.now() - t0 < 1000, 'refused at once');
    assert.equal(r.status, 503);
    assert.equal(r.headers.get('retry-after'), '2');
    const e = await r.json();
    assert.equal(e.error.type, 'server_error'); // OpenAI's name for an overloaded server
    assert.equal(e.error.code, 'overloaded');
    assert.match(e.error.message, /queue is full/);
    const a = await messages(d);
    assert.equal(a.status, 503);
    assert.equal(a.headers.get('retry-after'), '2');
    const ae = await a.json();
    assert.equal(ae.type, 'error');
    assert.equal(ae.error.type, 'overloaded_error');
    assert.equal((await running).status, 200);
    assert.equal((await waiting).status, 200);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_admission_refused_total', 'reason="queue_full"'), 2);
  } finally {
    await d.stop();
  }
});

test('a request that waits longer than max_wait gets 503 with Retry-After; the slot holder is unaffected', async () => {
  const d = await startAgentd({ config: config({ slots: 1, queue: 5, maxWait: '300ms', latency: '3s' }) });
  try {
    const running = chat(d);
    await slotsInUse(d, 1);
    const t0 = Date.now();
    const r = await chat(d);
    const waited = Date.now() - t0;
    assert.equal(r.status, 503);
    assert.equal(r.headers.get('retry-after'), '2');
    assert.match((await r.json()).error.message, /no slot of 1 .* freed within/);
    assert.ok(waited >= 250 && waited < 2500, `waited ${waited} ms`);
    assert.equal((await running).status, 200);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_admission_refused_total', 'reason="timeout"'), 1);
    assert.equal(metric(m, 'agentd_admission_wait_seconds_count', 'outcome="timeout"'), 1);
  } finally {
    await d.stop();
  }
});

test('the wait for a slot is inside the request deadline: never past it, and what is left after it is all the request gets', async () => {
  const d = await startAgentd({ config: config({ slots: 1, queue: 5, maxWait: '30s', latency: '1200ms', timeout: '2s' }) });
  try {
    // The deadline (2 s) ends the wait before max_wait (30 s) does.
    const holder = chat(d);
    await slotsInUse(d, 1);
    const waiter = chat(d);
    await queueDepth(d, 1);
    const t3 = Date.now();
    const third = chat(d).then((r) => ({ r, ms: Date.now() - t3 }));
    const r1 = await holder;
    assert.equal(r1.status, 200);
    // The waiter got the slot after ~1.2 s; 0.8 s of its 2 s remain for a 1.2 s answer: 504, not 200.
    const r2 = await waiter;
    assert.equal(r2.status, 504, await r2.clone().text());
    assert.match((await r2.json()).error.message, /did not complete within 2000 ms/);
    // The third waits behind both: whether it is refused in the queue (503) or gets the slot a moment before its
    // deadline (504), it is answered at its deadline, never after it.
    const { r: r3, ms } = await third;
    assert.ok(r3.status === 503 || r3.status === 504, `${r3.status}`);
    assert.ok(ms >= 1900 && ms < 2600, `answered after ${ms} ms`);
  } finally {
    await d.stop();
  }
});

test('a client that goes away while queued leaves the queue; the slot goes to the next in line', async () => {
  const d = await startAgentd({ config: config({ slots: 1, queue: 5, latency: '1s' }) });
  try {
    const running = chat(d);
    await slotsInUse(d, 1);
    const ac = new AbortController();
    // queued one after the other, so that the slot goes to `gone` even if agentd is slow to see the abort
    const gone = chat(d, {}).catch(() => null);
    await queueDepth(d, 1);
    const impatient = d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
      body: JSON.stringify({ model: 'slow', messages: [{ role: 'user', content: 'bye' }] }),
    }).catch((e) => e.name);
    await queueDepth(d, 2);
    ac.abort();
    assert.equal(await impatient, 'AbortError');
    await queueDepth(d, 1);
    assert.equal((await running).status, 200);
    const g = await gone;
    assert.equal(g.status, 200);
    await g.text();
    // counted when agentd sees the client go (bounded wait: under load that may come after `gone` got the slot)
    let cancelled;
    for (const until = Date.now() + 10000; Date.now() < until;) {
      cancelled = metric(await (await d.opsFetch('/metrics')).text(), 'agentd_admission_wait_seconds_count', 'outcome="cancelled"');
      if (cancelled !== undefined) break;
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(cancelled, 1);
    await slotsInUse(d, 0); // released when the exchange ends, just after the last byte the client read
  } finally {
    await d.stop();
  }
});

test('many requests across two workers through three slots, some abandoned while waiting: every other one succeeds, nothing leaks', async () => {
  const d = await startAgentd({ config: config({ slots: 3, queue: 1000, latency: '5ms' }) });
  let code;
  try {
    const jobs = [];
    const aborts = [];
    for (let i = 0; i < 300; i++) {
      const ac = new AbortController();
      const abandon = i % 5 === 0;
      jobs.push(d.fetch('/v1/chat/completions', {
        method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
        body: JSON.stringify({ model: 'slow', messages: [{ role: 'user', content: `n${i}` }] }),
      }).then(async (r) => ({ abandon, status: r.status, text: await r.text(), i }), (e) => ({ abandon, error: e.name })));
      if (abandon) aborts.push(ac);
    }
    // Once many wait, their clients give up (the rest are still queued or running).
    for (const until = Date.now() + 10000; ;) {
      const { body } = await ready(d);
      if (body.checks.admission_queue_depth >= 100 || Date.now() > until) break;
      await new Promise((r) => setImmediate(r));
    }
    for (const ac of aborts) ac.abort();
    const res = await Promise.all(jobs);
    for (const r of res.filter((x) => !x.abandon)) {
      assert.equal(r.status, 200, r.text);
      assert.match(r.text, new RegExp(`echo: n${r.i}"`));
    }
    await slotsInUse(d, 0);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.equal(metric(m, 'agentd_admission_queue_depth'), 0);
    assert.equal(metric(m, 'agentd_admission_refused_total', 'reason="queue_full"'), undefined);
    assert.ok(metric(m, 'agentd_admission_wait_seconds_count', 'outcome="admitted"') > 100, 'most requests waited');
    assert.ok(metric(m, 'agentd_admission_wait_seconds_count', 'outcome="cancelled"') > 10, 'clients left the queue');
  } finally {
    code = (await d.stop()).code;
  }
  assert.equal(code, 0, 'clean exit (no leak reported)');
});

test('/ready is 503 while the queue is over its high-water mark, 200 again once it shrinks', async () => {
  const d = await startAgentd({ config: config({ slots: 1, queue: 10, high: 1, latency: '700ms' }) });
  try {
    assert.equal((await ready(d)).status, 200);
    const all = [chat(d), chat(d), chat(d)];
    await queueDepth(d, 2);
    const r = await ready(d);
    assert.equal(r.status, 503);
    assert.equal(r.body.checks.admission_queue, false);
    for (const x of await Promise.all(all)) assert.equal(x.status, 200);
    const r2 = await ready(d);
    assert.equal(r2.status, 200);
    assert.equal(r2.body.checks.admission_queue, true);
  } finally {
    await d.stop();
  }
});

async function readStream(res) {
  const dec = new TextDecoder();
  let s = '';
  for await (const chunk of res.body) s += dec.decode(chunk, { stream: true });
  return s;
}

test('SIGTERM: ready fails at once, queued requests get 503 at once, the stream in flight finishes, exit 0', async () => {
  const d = await startAgentd({ config: config({ slots: 1, queue: 10, extra: '  timeouts:\n    drain_delay: 500ms\n    drain_grace: 20s\n' }) });
  const stream = await d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'slowstream', stream: true, messages: [{ role: 'user', content: 'mock:words=15' }] }),
  });
  assert.equal(stream.status, 200);
  const body = readStream(stream);
  const q1 = chat(d);
  const q2 = messages(d);
  await queueDepth(d, 2);
  d.signal('SIGTERM');
  const t0 = Date.now();
  const [r1, r2] = await Promise.all([q1, q2]);
  assert.ok(Date.now() - t0 < 1500, 'queued requests are refused at once, not at the end of the grace');
  assert.equal(r1.status, 503);
  assert.equal(r1.headers.get('retry-after'), '2');
  assert.match((await r1.json()).error.message, /shutting down/);
  assert.equal(r2.status, 503);
  assert.equal((await r2.json()).type, 'error', 'Anthropic-shaped');
  assert.equal((await ready(d)).status, 503);
  // During drain_delay a request that would have to wait is refused rather than queued.
  const late = await chat(d);
  assert.equal(late.status, 503);
  const text = await body;
  assert.match(text, /w15/);
  assert.match(text, /data: \[DONE\]/, 'the stream in flight finished normally');
  assert.equal((await d.exited).code, 0);
  await d.stop();
});

test('drain grace over: a stream still running ends with the caller\'s error event and is settled', async () => {
  const d = await startAgentd({ config: config({ slots: 4, extra: '  timeouts:\n    drain_delay: 0ms\n    drain_grace: 400ms\n' }) });
  const stream = await d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'slowstream', stream: true, messages: [{ role: 'user', content: 'mock:words=400' }] }),
  });
  const body = readStream(stream).catch((e) => `ERR ${e}`);
  const anth = await d.fetch('/v1/messages', {
    method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'slowstream', stream: true, max_tokens: 1000, messages: [{ role: 'user', content: 'mock:words=400' }] }),
  });
  const abody = readStream(anth).catch((e) => `ERR ${e}`);
  await slotsInUse(d, 2);
  d.signal('SIGTERM');
  const text = await body;
  assert.match(text, /"error":\{"message":"agentd is shutting down[^"]*","type":"server_error"/);
  assert.doesNotMatch(text, /w400|"finish_reason":"stop"/, "cut, not finished");
  const atext = await abody;
  assert.match(atext, /event: error\ndata: \{"type":"error","error":\{"type":"overloaded_error","message":"agentd is shutting down/);
  const line = await d.waitLog((l) => l.msg === 'llm' && l.model === 'slowstream');
  assert.equal(line.status, 503);
  assert.equal((await d.exited).code, 0);
  await d.stop();
});
