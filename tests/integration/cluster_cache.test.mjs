// The response cache's Redis tier (issue 13 item 5, docs/cache.md "In Redis"): two agentd processes sharing one
// real redis-server. An answer cached by A is a hit on B (the fake upstream is called once), streams too; the TTL
// is Redis's (PX); answers stay per virtual key; Redis stopped: misses, every request still served.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startRedis, haveRedis } from '../lib/redis.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const skip = !haveRedis && 'redis-server is not installed (scripts/deps.sh test)';
let redis, f, dirA, dirB, key1, key2;

before(async () => {
  if (skip) return;
  redis = await startRedis();
  f = await startFake({ provider: 'openai', quiet: true });
  // Two replicas with the same virtual keys: created once, the data dir copied before either starts.
  dirA = join(mkdtempSync(join(tmpdir(), 'agentd-rc-')), 'data');
  const create = (name) => {
    const r = spawnSync(BIN, ['keys', 'create', '--name', name, '--data-dir', dirA], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  key1 = create('one');
  key2 = create('two');
  dirB = join(mkdtempSync(join(tmpdir(), 'agentd-rc-')), 'data');
  cpSync(dirA, dirB, { recursive: true });
});

after(async () => {
  if (f) await f.close();
  if (redis) await redis.stop();
});

const config = (extra = '') => `
models:
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
cache:
  enabled: true
${extra}
`;

async function pair(extra) {
  const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai, REDIS_URL: redis.url };
  const a = await startAgentd({ env, config: config(extra), noDataDir: true, args: ['--data-dir', dirA] });
  let b;
  try {
    b = await startAgentd({ env, config: config(extra), noDataDir: true, args: ['--data-dir', dirB] });
  } catch (e) { await a.stop(); throw e; }
  return [a, b];
}

async function stopClean(...ds) {
  for (const d of ds) {
    await d.stop();
    assert.doesNotMatch(d.rawStderr, /runtime error|AddressSanitizer|LeakSanitizer/);
  }
}

let n = 0;
const unique = () => `hello shared cache ${process.pid} ${++n}`;
function chat(d, key, content, body = {}) {
  return d.fetch('/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key.key}` },
    body: JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content }], ...body }),
  });
}
const upstream = () => f.requests.filter((r) => r.provider === 'openai' && r.op === 'chat').length;

async function metric(d, name) {
  const t = await (await d.opsFetch('/metrics')).text();
  let v = 0;
  for (const line of t.split('\n')) if (line.startsWith(name)) v += Number(line.split(' ').pop());
  return v;
}

// A store is queued by the end of A's exchange and written by A's Redis thread: wait until Redis has it.
async function waitStored(min) {
  const until = Date.now() + 10000;
  while (Number(redis.cli('DBSIZE')) < min) {
    if (Date.now() > until) throw new Error('the answer never reached Redis');
    await new Promise((r) => setTimeout(r, 10)); // polling Redis with a deadline
  }
}

test('an answer cached by A is a hit on B, complete and streamed; per key', { skip }, async () => {
  redis.cli('FLUSHALL');
  f.reset();
  const [a, b] = await pair();
  try {
    const q = unique();
    const r1 = await chat(a, key1, q, { temperature: 0 });
    assert.equal(r1.status, 200);
    assert.equal(r1.headers.get('x-agentd-cache'), 'miss');
    const body1 = await r1.text();
    await waitStored(1);
    const keys = redis.cli('KEYS', 'agentd:c:*').split('\n');
    assert.equal(keys.length, 1);
    assert.match(keys[0], /^agentd:c:[0-9a-f]{64}$/);

    const r2 = await chat(b, key1, q, { temperature: 0 });
    assert.equal(r2.status, 200);
    assert.equal(r2.headers.get('x-agentd-cache'), 'hit');
    assert.equal(await r2.text(), body1);
    assert.equal(upstream(), 1);
    assert.equal(await metric(b, 'agentd_cache_redis_total{op="get",result="hit"}'), 1);

    // another key asks the same: its own namespace, a miss on B
    const r3 = await chat(b, key2, q, { temperature: 0 });
    assert.equal(r3.headers.get('x-agentd-cache'), 'miss');
    await r3.text();
    assert.equal(upstream(), 2);

    // a stream cached by A replays as a stream on B
    const qs = unique();
    const s1 = await chat(a, key1, qs, { stream: true });
    assert.equal(s1.headers.get('x-agentd-cache'), 'miss');
    const sb1 = await s1.text();
    assert.match(sb1, /data: \[DONE\]/);
    await waitStored(3);
    const s2 = await chat(b, key1, qs, { stream: true });
    assert.equal(s2.headers.get('x-agentd-cache'), 'hit');
    assert.match(s2.headers.get('content-type'), /text\/event-stream/);
    assert.equal(await s2.text(), sb1);
    assert.equal(upstream(), 3);
  } finally { await stopClean(a, b); }
});

test('the TTL is Redis\'s: an expired answer is a miss on the other replica', { skip }, async () => {
  redis.cli('FLUSHALL');
  f.reset();
  const [a, b] = await pair('  ttl: 1500ms');
  try {
    const q = unique();
    await (await chat(a, key1, q)).text();
    await waitStored(1);
    const k = redis.cli('KEYS', 'agentd:c:*');
    assert.match(k, /^agentd:c:[0-9a-f]{64}$/);
    const pttl = Number(redis.cli('PTTL', k)); // SET PX 1500: Redis counts it down
    assert.ok(pttl > 0 && pttl <= 1500, `PTTL ${pttl}`);
    const until = Date.now() + 10000;
    while (Number(redis.cli('DBSIZE')) > 0) { // Redis expires it: polled with a deadline
      assert.ok(Date.now() < until, 'never expired');
      await new Promise((r) => setTimeout(r, 20));
    }
    const r = await chat(b, key1, q);
    assert.equal(r.headers.get('x-agentd-cache'), 'miss');
    await r.text();
    assert.equal(upstream(), 2);
  } finally { await stopClean(a, b); }
});

test('Redis stopped: the cache misses, every request is still served, and it is counted', { skip }, async () => {
  redis.cli('FLUSHALL');
  f.reset();
  const [a, b] = await pair('cluster: {on_redis_down: open, redis_timeout: 200ms}');
  try {
    await redis.stop();
    const q = unique();
    for (const d of [a, b, a]) {
      const r = await chat(d, key1, unique());
      assert.equal(r.status, 200);
      await r.text();
    }
    assert.equal(upstream(), 3);
    const errs = await metric(b, 'agentd_cache_redis_total{op="get",result="error"}') +
      await metric(b, 'agentd_cache_redis_total{op="get",result="skipped"}');
    assert.ok(errs >= 1, `errors ${errs}`);
  } finally {
    await stopClean(a, b);
    await redis.restart();
  }
});
