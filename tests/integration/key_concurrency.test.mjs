// Per-key concurrency limits (issue 9 item 6): a virtual key's max_concurrent is a slot count with its own FIFO
// queue, the same mechanism as MAX_CONCURRENT_REQUESTS. Requests over it wait (never more than max_concurrent
// reach the provider at once, counted by the upstream itself) and are all served; a wait past max_wait gets 429
// with Retry-After in the caller's format.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startAgentd } from '../lib/agentd.mjs';

const ADMIN = 'adm-' + 'k'.repeat(20);
const UPKEY = 'sk-up-0123456789';

// A minimal OpenAI upstream that counts the requests it is answering at once. hold: ms before answering, or
// 'manual' (answered by release()).
let up, holdMs = 300;
const held = [];
const stats = { inflight: 0, max: 0, served: 0 };
before(async () => {
  up = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      stats.inflight++;
      stats.max = Math.max(stats.max, stats.inflight);
      const answer = () => {
        stats.inflight--;
        stats.served++;
        const j = JSON.parse(body);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({
          id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: j.model,
          choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        }));
      };
      if (holdMs === 'manual') held.push(answer);
      else setTimeout(answer, holdMs);
    });
  });
  await new Promise((r) => up.listen(0, '127.0.0.1', r));
});
after(async () => { await new Promise((r) => up.close(r)); });

function config(maxWait) {
  return `server:\n  workers: 2\nauth:\n  mode: keys\n` +
    `gateway:\n  request_timeout: 60s\n  max_concurrent_requests: 0\n  admission:\n    queue_size: 100\n` +
    `    max_wait: ${maxWait}\n    retry_after: 3s\n` +
    `models:\n  - name: m\n    deployments:\n      - { provider: openai, model: gpt-4o-mini, ` +
    `base_url: "http://127.0.0.1:${up.address().port}/v1", api_key_env: UPKEY }\n`;
}

async function withKey(d, fields) {
  const r = await d.fetch('/admin/keys', {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify({ name: 'conc', ...fields }),
  });
  assert.equal(r.status, 201);
  const k = await r.json();
  assert.equal(k.max_concurrent, fields.max_concurrent);
  // the keyring refreshes within a second: poll (bounded) until the key is known
  for (let i = 0; ; i++) {
    const m = await d.fetch('/v1/models', { headers: { authorization: `Bearer ${k.key}` } });
    await m.arrayBuffer();
    if (m.status === 200) break;
    if (i > 300) assert.fail(`key never became valid (${m.status})`);
    await new Promise((res) => setTimeout(res, 10));
  }
  return k.key;
}

const chat = (d, key) => d.fetch('/v1/chat/completions', {
  method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
  body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
});
const messages = (d, key) => d.fetch('/v1/messages', {
  method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': key },
  body: JSON.stringify({ model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
});

test('max_concurrent 2: five concurrent requests, never more than two at the provider, all served', async () => {
  const d = await startAgentd({ env: { AGENTD_ADMIN_KEY: ADMIN, UPKEY }, config: config('30s') });
  try {
    const key = await withKey(d, { max_concurrent: 2 });
    Object.assign(stats, { inflight: 0, max: 0, served: 0 });
    holdMs = 300;
    const res = await Promise.all(Array.from({ length: 5 }, () => chat(d, key)));
    for (const r of res) assert.equal(r.status, 200, await r.text());
    assert.equal(stats.served, 5);
    assert.equal(stats.max, 2, `at most two at once (and the limit was used): max ${stats.max}`);

    // Another key without a limit is not held back by this one's.
    const free = await withKey(d, { max_concurrent: 0 });
    Object.assign(stats, { inflight: 0, max: 0, served: 0 });
    const res2 = await Promise.all(Array.from({ length: 4 }, () => chat(d, free)));
    for (const r of res2) assert.equal(r.status, 200, await r.text());
    assert.equal(stats.max, 4);
  } finally {
    holdMs = 300;
    const r = await d.stop();
    assert.equal(r.code, 0, d.rawStderr.slice(-2000));
  }
});

test('a wait past max_wait for the key\'s slot: 429 with Retry-After in the caller\'s format', async () => {
  const d = await startAgentd({ env: { AGENTD_ADMIN_KEY: ADMIN, UPKEY }, config: config('200ms') });
  try {
    const key = await withKey(d, { max_concurrent: 1 });
    Object.assign(stats, { inflight: 0, max: 0, served: 0 });
    holdMs = 'manual';
    const first = chat(d, key);
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5)); // the first holds the key's slot
    let r = await chat(d, key);
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), '3');
    let j = await r.json();
    assert.equal(j.error.code, 'concurrency_limit_exceeded');
    assert.equal(j.error.type, 'rate_limit_error');
    assert.match(j.error.message, /max_concurrent/);
    r = await messages(d, key);
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), '3');
    j = await r.json();
    assert.equal(j.type, 'error');
    assert.equal(j.error.type, 'rate_limit_error');
    assert.equal(stats.max, 1); // the refused never reached the provider
    held.shift()();
    assert.equal((await first).status, 200);
    holdMs = 300;
    r = await chat(d, key); // the slot was given back
    assert.equal(r.status, 200, await r.text());
  } finally {
    holdMs = 300;
    while (held.length) held.shift()();
    const r = await d.stop();
    assert.equal(r.code, 0, d.rawStderr.slice(-2000));
  }
});

async function keyQueueDepth(d, n) {
  for (let i = 0; ; i++) {
    const m = (await (await d.opsFetch('/metrics')).text()).match(/^agentd_admission_key_queue_depth (\S+)$/m);
    if (m && Number(m[1]) === n) return;
    if (i > 2000) assert.fail(`key queue depth ${m && m[1]}, wanted ${n}`);
    await new Promise((r) => setImmediate(r));
  }
}

test('a client that leaves while waiting for its key\'s slot leaves the queue; the slot still passes on', async () => {
  const d = await startAgentd({ env: { AGENTD_ADMIN_KEY: ADMIN, UPKEY }, config: config('30s') });
  try {
    const key = await withKey(d, { max_concurrent: 1 });
    Object.assign(stats, { inflight: 0, max: 0, served: 0 });
    holdMs = 'manual';
    const first = chat(d, key);
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5));
    const ac = new AbortController();
    const gone = d.fetch('/v1/chat/completions', {
      method: 'POST', signal: ac.signal,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
    }).catch((e) => e);
    await keyQueueDepth(d, 1); // it waits for the key's slot
    const third = chat(d, key);
    await keyQueueDepth(d, 2);
    ac.abort();
    await gone;
    await keyQueueDepth(d, 1); // the one that left is out of the queue at once
    held.shift()(); // the first ends: its slot goes to the third, not to the one that left
    assert.equal((await first).status, 200);
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5));
    await keyQueueDepth(d, 0);
    held.shift()();
    const r = await third;
    assert.equal(r.status, 200, await r.text());
    assert.equal(stats.served, 2);
    assert.equal(stats.max, 1);
  } finally {
    holdMs = 300;
    while (held.length) held.shift()();
    const r = await d.stop();
    assert.equal(r.code, 0, d.rawStderr.slice(-2000));
  }
});

test('SIGTERM: requests waiting for their key\'s slot get 503 with Retry-After at once, in the caller\'s format', async () => {
  const d = await startAgentd({
    env: { AGENTD_ADMIN_KEY: ADMIN, UPKEY },
    config: config('30s').replace('server:\n', 'server:\n  timeouts:\n    drain_delay: 2s\n    drain_grace: 20s\n'),
  });
  try {
    const key = await withKey(d, { max_concurrent: 1 });
    Object.assign(stats, { inflight: 0, max: 0, served: 0 });
    holdMs = 'manual';
    const first = chat(d, key);
    while (held.length < 1) await new Promise((r) => setTimeout(r, 5)); // the first holds the key's slot
    const q1 = chat(d, key);
    const q2 = messages(d, key);
    await keyQueueDepth(d, 2);
    d.signal('SIGTERM');
    const t0 = Date.now();
    const [r1, r2] = await Promise.all([q1, q2]);
    assert.ok(Date.now() - t0 < 1500, 'refused at once, not at max_wait or the end of the grace');
    assert.equal(r1.status, 503);
    assert.equal(r1.headers.get('retry-after'), '3');
    const j1 = await r1.json();
    assert.match(j1.error.message, /shutting down/);
    assert.equal(r2.status, 503);
    assert.equal(r2.headers.get('retry-after'), '3');
    const j2 = await r2.json();
    assert.equal(j2.type, 'error', 'Anthropic-shaped');
    assert.equal(j2.error.type, 'overloaded_error');
    await keyQueueDepth(d, 0);
    // During drain_delay a request that would wait for the key's slot is refused rather than queued.
    const late = await chat(d, key);
    assert.equal(late.status, 503);
    await late.arrayBuffer();
    held.shift()(); // the one in flight finishes normally
    assert.equal((await first).status, 200);
    assert.equal(stats.served, 1);
    assert.equal((await d.exited).code, 0);
  } finally {
    holdMs = 300;
    while (held.length) held.shift()();
    await d.stop();
  }
});
