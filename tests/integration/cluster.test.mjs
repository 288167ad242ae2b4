// Cluster mode (issue 13 items 5-6, docs/cluster.md "Redis leases"): three agentd processes on loopback behind a
// real haproxy share budgets and rate limits through a real redis-server by leases. A fake OpenAI bills every
// completion it produces (f.billing); what it billed is the truth the caps are checked against.
//
// The stated bound (docs/cluster.md): with no replica lost, spend never passes the limit; each replica that is
// lost (killed, or cut off from Redis past its lease's TTL) may add at most the slice it held, max(lease_slice ×
// limit, one request's reservation). A rate limit of N a minute admits at most what one embedded GCRA cell would
// (N at once, then N a minute) plus replicas × max(ceil(lease_slice × N), 1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';
import { startRedis, haveRedis, freePort } from '../lib/redis.mjs';
import { pgBinDir, startPostgres } from '../lib/pg.mjs';

const haveHaproxy = spawnSync('haproxy', ['-v']).status === 0;
const skip = !haveRedis ? 'redis-server is not installed (scripts/deps.sh test)'
  : !haveHaproxy ? 'haproxy is not installed (scripts/deps.sh test)' : false;

const SLICE = 0.05;       // cluster.lease_slice
const LIMIT_NUSD = 1e9;   // $1.00
const PER_REQ_NUSD = 1e6; // 4 output tokens at $250/M, input free: $0.001 a request
// With PostgreSQL installed the replicas also share keys and the ledger through DATABASE_URL (the pg helper's
// backends): the $1.00 budget is then a key's own budget, and the ledger in PostgreSQL must equal the bills.
const withPg = !!pgBinDir();
let DATABASE_URL = '';
let keyBudget = null, keyOther = null; // {id, key}: the $1.00 key, and a key that lets the caller name its user

let redis, f, pg;
before(async () => {
  if (skip) return;
  redis = await startRedis();
  f = await startFake({ provider: 'openai', quiet: true });
  if (withPg) {
    pg = await startPostgres();
    DATABASE_URL = pg.url;
    const cli = (args) => {
      const r = spawnSync(BIN, ['keys', 'create', ...args, '--data-dir', newDataDir()],
        { encoding: 'utf8', env: { ...process.env, DATABASE_URL } });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    keyBudget = cli(['--name', 'spender', '--budget-usd', '1', '--budget-window', 'total']);
    keyOther = cli(['--name', 'others', '--caller-attribution']);
  }
});
after(async () => {
  if (redis) await redis.close();
  if (f) await f.close();
  if (pg) await pg.destroy();
});

const config = (extra = '') => `
server:
  workers: 2
cluster:
  lease_slice: ${SLICE}
  lease_ttl: 1500ms
  sync_interval: 50ms
  lease_idle: 300ms
models:
  - name: gpt
    provider: openai
    model: exact
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  exact: {input: 0, output: 250}
budgets:
  - {scope: user, name: spender, usd: 1.00, window: total}
  - {scope: user, name: survivor, usd: 1.00, window: total}
  - {scope: user, name: downtest, usd: 1000, window: total}
ratelimits:
  - {scope: user, name: limited, rpm: 60}
ledger:
  batch_interval: 50ms
${withPg ? 'auth:\n  mode: keys\n' : ''}${extra}`;

function newDataDir() { return join(mkdtempSync(join(tmpdir(), 'agentd-cluster-')), 'data'); }

async function startReplica(dataDir, extra = '', env = {}) {
  return startAgentd({
    env: { FAKE_OPENAI_KEY: FAKE_KEYS.openai, REDIS_URL: redis.url, ...(DATABASE_URL ? { DATABASE_URL } : {}), ...env },
    noDataDir: true, args: ['--data-dir', dataDir], config: config(extra),
  });
}

function replicaId(d) {
  const l = d.logs.find((x) => typeof x.msg === 'string' && x.msg.startsWith('cluster: budgets and rate limits'));
  return l && /replica (\S+),/.exec(l.msg)[1];
}

async function startHaproxy(replicas) {
  const fe = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'agentd-haproxy-'));
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(cfg, `global
  maxconn 8192
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch 1
  option http-buffer-request
  retry-on conn-failure empty-response
frontend fe
  bind 127.0.0.1:${fe}
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /ready
  http-check expect status 200
  timeout check 5s
  default-server inter 100ms fall 3 rise 1
${replicas.map((d, i) => `  server r${i} 127.0.0.1:${d.port} check port ${d.opsPort}`).join('\n')}
`);
  const p = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (c) => { err += c; });
  const until = Date.now() + 10000;
  for (;;) { // ready when the frontend accepts a connection
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: fe });
      s.on('connect', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) break;
    if (p.exitCode !== null || Date.now() > until) throw new Error(`haproxy did not listen: ${err}`);
    await new Promise((r) => setTimeout(r, 25)); // polling the port, with a deadline
  }
  return {
    url: `http://127.0.0.1:${fe}`,
    async stop() { p.kill('SIGKILL'); await new Promise((r) => (p.exitCode !== null ? r() : p.on('exit', r))); rmSync(dir, { recursive: true, force: true }); },
  };
}

async function poll(what, fn, deadlineMs = 15000) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25)); // polling a condition, with a deadline
  }
}

function chat(base, user, extra = {}) {
  const key = !withPg ? null : user === 'spender' ? keyBudget.key : keyOther.key;
  return fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ model: 'gpt', user, max_tokens: 4, messages: [{ role: 'user', content: 'a b c' }], ...extra }),
  }).then(async (r) => ({ status: r.status, body: await r.json().catch(() => null) }),
    (e) => ({ status: 0, error: String(e.cause?.code || e.message) }));
}

const billed = (user) => f.billing.filter((b) => b.user === user).reduce((s, b) => s + b.output_tokens * 250 * 1000, 0);

async function ledgerSum(dataDirs, user) {
  if (withPg) {
    // the $1.00 key does not let the caller name a user: its rows carry the key id
    const who = user === 'spender' ? `key_id = '${keyBudget.id}'` : `"user" = '${user}'`;
    const out = await pg.psql(`SELECT coalesce(sum(cost_nusd),0) || '|' || count(*) FROM ledger_exchanges WHERE ${who} AND status = 200`);
    const [s, n] = out.trim().split('|').map(Number);
    return { nusd: s, rows: n };
  }
  let nusd = 0, rows = 0;
  for (const dir of dataDirs) {
    const out = execFileSync('sqlite3', ['-json', join(dir, 'ledger.db'),
      `SELECT cost_nusd FROM ledger_exchanges WHERE user = '${user}' AND status = 200`], { encoding: 'utf8' });
    for (const r of out.trim() ? JSON.parse(out) : []) { nusd += r.cost_nusd; rows++; }
  }
  return { nusd, rows };
}

test('a malformed REDIS_URL is a start error that names it', { skip }, async () => {
  const serve = (url) => spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0',
    '--data-dir', newDataDir()], { env: { ...process.env, REDIS_URL: url }, encoding: 'utf8', timeout: 20000 });
  const r = serve('http://127.0.0.1:6379');
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /REDIS_URL\) is not a valid Redis URL: must start with redis:\/\//);
  const r2 = serve('redis://127.0.0.1:99999');
  assert.equal(r2.status, 2, r2.stderr);
  assert.match(r2.stderr, /port out of range/);
  assert.doesNotMatch(serve('redis://:s3cret@127.0.0.1:x').stderr, /s3cret/); // the password is never echoed
});

test('three replicas behind haproxy: 3,000 concurrent requests never spend more than $1.00, a rate limit holds cluster-wide, a killed replica\'s lease is recovered', { skip, timeout: 240000 }, async () => {
  f.reset();
  f.setDefault({});
  const dirs = [newDataDir(), newDataDir(), newDataDir()];
  const reps = [], exits = [];
  let hp;
  try {
    for (const d of dirs) reps.push(await startReplica(d));
    for (const d of reps) // each has reached Redis
      await poll('/ready', async () => (await (await d.opsFetch('/ready')).json()).checks.redis === true);
    hp = await startHaproxy(reps);
    const before = redis.commandstats();

    // 1. 3,000 concurrent requests against one $1.00 budget (a request costs $0.001)
    const tb = Date.now();
    const rs = await Promise.all(Array.from({ length: 3000 }, () => chat(hp.url, 'spender')));
    console.log(`3,000 requests in ${Date.now() - tb} ms`);
    const ok = rs.filter((r) => r.status === 200).length;
    const refused = rs.filter((r) => r.status === 429 && r.body?.error?.code === 'budget_exceeded').length;
    const other = rs.filter((r) => r.status !== 200 && !(r.status === 429 && r.body?.error?.code === 'budget_exceeded'));
    assert.deepEqual(other.slice(0, 3), [], `${other.length} unexpected answers`);
    assert.equal(ok + refused, 3000);
    const spent = billed('spender');
    assert.equal(spent, ok * PER_REQ_NUSD, 'each admitted request billed once');
    assert.ok(spent <= LIMIT_NUSD, `billed ${spent / 1e9} USD > $1.00 (no replica was lost: the slack is 0)`);
    // what the leases may strand in the other replicas (slices not yet returned) bounds how much was refused early
    assert.ok(spent >= LIMIT_NUSD - 3 * SLICE * LIMIT_NUSD, `only ${spent / 1e9} USD of $1.00 could be used`);
    const cs = redis.commandstats();
    const evals = (cs.evalsha || 0) - (before.evalsha || 0);
    console.log(`Redis EVALSHA for 3,000 requests: ${evals}`);
    assert.ok(evals > 0 && evals < 1000, `Redis commands for 3,000 requests: ${evals}`);

    // 2. a rate limit of 60 a minute holds across the three (alone, each would let 60 through: 180)
    const t0 = Date.now();
    const rl = await Promise.all(Array.from({ length: 300 }, () => chat(hp.url, 'limited')));
    const secs = (Date.now() - t0) / 1000;
    const rok = rl.filter((r) => r.status === 200).length;
    const rlim = rl.filter((r) => r.status === 429 && r.body?.error?.code === 'rate_limit_exceeded').length;
    assert.equal(rok + rlim, 300, JSON.stringify(rl.find((r) => r.status !== 200 && r.status !== 429)));
    const slack = 3 * Math.max(Math.ceil(SLICE * 60), 1);
    assert.ok(rok <= 60 + Math.ceil(secs) + slack, `${rok} admitted of 60/min in ${secs}s (slack ${slack})`);
    assert.ok(rok >= 30, `only ${rok} admitted`);

    // 3. kill -9 one replica mid-load: only requests in flight on it fail; its lease comes back after the TTL
    f.setDefault({ delayMs: 40 });
    let running = true, sent = 0;
    const res = [];
    const CLIENTS = 24;
    const client = async () => {
      while (running) { sent++; res.push(await chat(hp.url, 'survivor')); }
    };
    const clients = Array.from({ length: CLIENTS }, client);
    const victim = reps[2];
    const vid = replicaId(victim);
    assert.ok(vid, 'the replica names itself in its start-up line');
    const rkey = await poll('the survivor budget in Redis', () => redis.cli('KEYS', 'agentd:b:user:total:*:usd:survivor') || null);
    await poll('a lease held by the victim', () => redis.cli('HGET', rkey, `l:${vid}`) !== '');
    victim.signal('SIGKILL');
    await victim.exited;
    const killedAt = res.length;
    // its lease expires in Redis (lease_ttl 1.5s) and the others go on spending until the budget is used up
    await poll('the victim\'s lease recovered', () => redis.cli('HGET', rkey, `l:${vid}`) === '', 10000);
    await poll('the survivor budget used up', () => res.slice(killedAt).some((r) => r.status === 429), 60000);
    running = false;
    await Promise.all(clients);
    const failed = res.filter((r) => r.status !== 200 && r.status !== 429);
    assert.ok(failed.length <= CLIENTS, `${failed.length} requests lost; at most the ${CLIENTS} in flight may be`);
    const sspent = billed('survivor');
    const maxLease = SLICE * LIMIT_NUSD; // one request ($0.001) is below the slice
    assert.ok(sspent <= LIMIT_NUSD + maxLease, `billed ${sspent / 1e9} > $1.00 + one lost lease (${maxLease / 1e9})`);
    // the victim's slice was not stranded: the others used the budget up to what their own slices may strand
    assert.ok(sspent >= LIMIT_NUSD - 2 * maxLease - maxLease, `only ${sspent / 1e9} of $1.00 used after the kill`);
    const spentRedis = Number(redis.cli('HGET', rkey, 'spent'));
    assert.ok(spentRedis <= sspent && spentRedis >= sspent - maxLease, `Redis spent ${spentRedis} vs billed ${sspent}`);
  } finally {
    if (hp) await hp.stop();
    for (const d of reps) exits.push(await d.stop());
  }
  // the two that lived shut down cleanly (no leak, no sanitizer report: exit 0); the victim was killed
  assert.deepEqual(exits.slice(0, 2).map((e) => e.code), [0, 0]);
  // the ledger (of the replicas that lived: the victim's last batch may be lost) agrees with the bills
  const lall = await ledgerSum(dirs, 'spender');
  assert.equal(lall.nusd, billed('spender'), `ledger (${withPg ? 'PostgreSQL' : 'SQLite, summed'}) = billing for the budget run`);
  assert.equal(lall.rows, f.billing.filter((b) => b.user === 'spender').length);
  if (withPg) { // the key's own budget was the one in force: its refusals are in the ledger too
    const st = await pg.psql(`SELECT count(*) FROM ledger_exchanges WHERE key_id = '${keyBudget.id}' AND status = 429`);
    assert.equal(Number(st), 3000 - lall.rows);
  }
});

test('Redis stopped: /ready says why; closed refuses past the leases, open serves on; back when Redis is', { skip, timeout: 60000 }, async () => {
  f.reset();
  f.setDefault({});
  const exits = [];
  const closed = await startReplica(newDataDir());
  const open = await startReplica(newDataDir(), '', { AGENTD_CLUSTER_ON_REDIS_DOWN: 'open' });
  try {
    for (const d of [closed, open])
      await poll('/ready', async () => (await (await d.opsFetch('/ready')).json()).checks.redis === true);
    assert.equal((await chat(closed.url, 'downtest')).status, 200);
    await redis.stop();
    const rc = await poll('/ready 503 with the reason', async () => {
      const r = await closed.opsFetch('/ready');
      const j = await r.json();
      return r.status === 503 && j.checks.redis === false ? j : null;
    });
    assert.match(rc.checks.redis_error, /Connection refused|connect|lost|reset/i);
    // the closed replica: once its lease is no longer valid (3/4 of lease_ttl), a request is refused with why
    const refusal = await poll('a 503 from the closed replica', async () => {
      const r = await chat(closed.url, 'downtest');
      return r.status === 503 ? r : null;
    });
    assert.match(refusal.body.error.message, /Redis is unreachable/);
    // the open one is still ready (and says Redis is down), and serves by its own counters
    const jo = await poll('the open replica sees Redis down', async () => {
      const r = await open.opsFetch('/ready');
      const j = await r.json();
      assert.equal(r.status, 200, 'on_redis_down: open stays ready');
      return j.checks.redis === false ? j : null;
    });
    assert.match(jo.checks.redis_error, /Connection refused|connect|lost|reset/i);
    const served = await poll('served while Redis is down (open)', async () => {
      const r = await chat(open.url, 'downtest');
      return r.status === 200 ? r : null;
    });
    assert.equal(served.status, 200);
    await redis.restart();
    await poll('/ready again', async () => (await closed.opsFetch('/ready')).status === 200);
    assert.equal((await chat(closed.url, 'downtest')).status, 200);
  } finally {
    if (!redis.running()) await redis.restart();
    exits.push(await closed.stop(), await open.stop());
  }
  assert.deepEqual(exits.map((e) => e.code), [0, 0]);
});
