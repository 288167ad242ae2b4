// Cluster mode, the PostgreSQL half (issue 13 item 5): DATABASE_URL puts keys, the spend ledger, stored responses
// and agent runs in PostgreSQL, shared by every replica. A real PostgreSQL (tests/lib/pg.mjs) is started once for
// this file; each test that needs a fresh schema gets its own database on it.
//
// Skips only when the PostgreSQL binaries are missing (scripts/deps.sh test installs them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startAgentd, BIN } from '../lib/agentd.mjs';
import { pgBinDir, startPostgres } from '../lib/pg.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const skip = pgBinDir() ? false : 'PostgreSQL binaries are not installed (scripts/deps.sh test installs postgresql-15)';

let pg, oa;
let dbs = 0;
before(async () => {
  if (skip) return;
  pg = await startPostgres();
  oa = await startFake({ provider: 'openai' });
});
after(async () => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
  if (oa) await oa.close();
  if (pg) await pg.destroy();
});

// A fresh, empty database on the shared server: [url, psql(sql)].
async function freshDb() {
  const name = `t${++dbs}_${process.pid}`;
  const url = await pg.createDatabase(name);
  const psql = (sql) => new Promise((resolve, reject) => {
    const c = spawn(join(pgBinDir(), 'psql'), [url, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]);
    let out = '', err = '';
    c.stdout.on('data', (b) => { out += b; });
    c.stderr.on('data', (b) => { err += b; });
    c.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(err))));
  });
  return [url, psql];
}

const temps = [];
const tmp = (p) => { const d = mkdtempSync(join(tmpdir(), `agentd-pg-${p}-`)); temps.push(d); return d; };

const PIN = 1000, POUT = 2000; // USD per million tokens
const models = () => `
models:
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  gpt-4o-mini: {input: ${PIN}, output: ${POUT}}
ledger:
  batch_interval: 50ms
`;

function cli(args, url, dataDir) {
  return spawnSync(BIN, [...args, '--data-dir', dataDir], {
    encoding: 'utf8', env: { ...process.env, DATABASE_URL: url },
  });
}

// Resolves when pred(value of fn()) is true, polling every `every` ms; rejects after `ms`.
async function until(fn, pred, ms = 10000, every = 20) {
  const end = Date.now() + ms;
  let v;
  for (;;) {
    v = await fn();
    if (pred(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last value: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

const ready = async (d) => {
  const r = await d.opsFetch('/ready');
  return { status: r.status, body: await r.json() };
};

test('keys made with `agentd keys` against DATABASE_URL take effect in a running daemon within 1 s', { skip }, async () => {
  const [url, psql] = await freshDb();
  const d = await startAgentd({ env: { DATABASE_URL: url }, config: 'auth:\n  mode: keys\n' });
  const cliDir = tmp('cli'); // another data dir: the key and its pepper come from the database, not the files
  try {
    assert.equal((await ready(d)).status, 200);
    const call = (key) => d.fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: 'mock', messages: [{ role: 'user', content: 'hi' }] }),
    }).then(async (r) => { await r.arrayBuffer(); return r.status; });

    const c = cli(['keys', 'create', '--name', 'cluster', '--user', 'alice'], url, cliDir);
    assert.equal(c.status, 0, c.stderr);
    const t0 = Date.now();
    const k = JSON.parse(c.stdout);
    assert.equal(await psql(`SELECT name FROM keys_records WHERE id = '${k.id}'`), 'cluster');
    await until(() => call(k.key), (s) => s === 200, 3000);
    const took = Date.now() - t0;
    assert.ok(took < 1000, `the daemon accepted the new key after ${took} ms`);

    const r = cli(['keys', 'revoke', k.id], url, cliDir);
    assert.equal(r.status, 0, r.stderr);
    const t1 = Date.now();
    await until(() => call(k.key), (s) => s === 401, 3000);
    const took2 = Date.now() - t1;
    assert.ok(took2 < 1000, `the daemon refused the revoked key after ${took2} ms`);

    // `agentd keys list` reads the same database
    const l = cli(['keys', 'list', '--json'], url, tmp('cli2'));
    assert.equal(l.status, 0, l.stderr);
    assert.match(l.stdout, new RegExp(k.id));
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000));
    rmSync(cliDir, { recursive: true, force: true });
  }
});

test('the ledger in PostgreSQL equals what the provider billed, and `agentd spend` reads it', { skip }, async () => {
  const [url, psql] = await freshDb();
  oa.reset();
  const d = await startAgentd({ env: { DATABASE_URL: url, FAKE_OPENAI_KEY: FAKE_KEYS.openai }, config: models() });
  const bills = {};
  try {
    for (let i = 0; i < 5; i++) {
      const user = `u${i}`;
      const r = await d.fetch('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt', user, messages: [{ role: 'user', content: 'word '.repeat(10 + i * 7) }] }),
      });
      assert.equal(r.status, 200);
      await r.arrayBuffer();
      bills[user] = oa.billing.at(-1);
    }
    await until(() => psql('SELECT count(*) FROM ledger_exchanges'), (n) => n === '5');
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000));
  }
  const rows = JSON.parse(await psql(
    "SELECT json_agg(json_build_object('user', \"user\", 'in', input_tokens, 'out', output_tokens, 'nusd', cost_nusd," +
    " 'usd', cost_usd, 'status', status)) FROM ledger_exchanges"));
  assert.equal(rows.length, 5);
  for (const [user, bill] of Object.entries(bills)) {
    const r = rows.find((x) => x.user === user);
    assert.ok(r, `a row for ${user}`);
    assert.equal(r.status, 200);
    assert.equal(r.in, bill.input_tokens, `${user} input`);
    assert.equal(r.out, bill.output_tokens, `${user} output`);
    const nusd = Math.ceil((bill.input_tokens * PIN + bill.output_tokens * POUT) * 1000);
    assert.equal(Number(r.nusd), nusd, `${user} cost`);
  }
  const s = cli(['spend', 'report', '--by', 'user', '--format', 'json', '--since', '1d'], url, tmp('spend'));
  assert.equal(s.status, 0, s.stderr);
  const rep = JSON.parse(s.stdout);
  const list = Array.isArray(rep) ? rep : rep.rows || rep.data || rep.groups;
  assert.ok(Array.isArray(list), s.stdout);
  assert.equal(list.length, 5, s.stdout);
  const total = list.reduce((a, x) => a + (x.cost_usd ?? 0), 0);
  const billed = Object.values(bills).reduce((a, b) => a + Math.ceil((b.input_tokens * PIN + b.output_tokens * POUT) * 1000), 0) / 1e9;
  assert.ok(Math.abs(total - billed) < 1e-9, `spend report ${total} = billed ${billed}`);
});

test('stored responses and previous_response_id work across a restart on another data dir', { skip }, async () => {
  const [url, psql] = await freshDb();
  const ask = (d, body) => d.fetch('/v1/responses', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'mock', ...body }),
  });
  const a = await startAgentd({ env: { DATABASE_URL: url } });
  let r1;
  try {
    const r = await ask(a, { input: 'remember me' });
    assert.equal(r.status, 200);
    r1 = await r.json();
    await until(() => psql('SELECT count(*) FROM store_records'), (n) => Number(n) >= 1);
  } finally {
    assert.equal((await a.stop()).code, 0, a.rawStderr.slice(-3000));
  }
  // a new data dir, and the URL from the configuration file this time (store.database_url): only the database carries it
  const b = await startAgentd({ config: `store:\n  database_url: "${url}"\n` });
  try {
    const g = await b.fetch(`/v1/responses/${r1.id}`);
    assert.equal(g.status, 200);
    assert.equal((await g.json()).id, r1.id);
    const r = await ask(b, { input: 'and again', previous_response_id: r1.id });
    assert.equal(r.status, 200);
    const r2 = await r.json();
    assert.equal(r2.previous_response_id, r1.id);
    const items = await (await b.fetch(`/v1/responses/${r2.id}/input_items?order=asc`)).json();
    assert.deepEqual(items.data.map((i) => i.content[0]?.text ?? i.content), ['remember me', 'echo: remember me', 'and again']);
    // delete goes to the database too
    assert.equal((await b.fetch(`/v1/responses/${r1.id}`, { method: 'DELETE' })).status, 200);
    assert.equal((await b.fetch(`/v1/responses/${r1.id}`)).status, 404);
    assert.equal(await psql(`SELECT count(*) FROM store_records WHERE id = '${r1.id}'`), '0');
  } finally {
    assert.equal((await b.stop()).code, 0, b.rawStderr.slice(-3000));
  }
});

test('an agent run resumes after kill -9, from PostgreSQL, on a replica with another data dir', { skip }, async () => {
  const [url, psql] = await freshDb();
  const cfg = 'agents:\n  - name: calc\n    model: mock\n    tools: [echo, wait]\n';
  const a = await startAgentd({ env: { DATABASE_URL: url }, config: cfg });
  const r = await a.fetch('/v1/agents/calc/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input: 'CALL echo {"text":"first"}\n---\nCALL wait {"ms":30000}\n---\nthe end', wait: false }),
  });
  assert.equal(r.status, 202, await r.clone().text());
  const { id } = await r.json();
  // the wait is in flight, committed as started
  await until(() => psql(`SELECT count(*) FROM agent_steps WHERE run_id = '${id}' AND name = 'wait'`), (n) => n === '1');
  a.signal('SIGKILL');
  await a.exited;
  assert.equal(await psql(`SELECT status FROM agent_runs WHERE id = '${id}'`), 'running');
  const b = await startAgentd({ env: { DATABASE_URL: url }, config: cfg });
  try {
    await b.waitLog((l) => l.msg && l.msg.includes(`agent run ${id} (calc): resumed`));
    const fin = await until(async () => (await b.fetch(`/v1/runs/${id}`)).json(), (x) => x.status === 'succeeded');
    assert.equal(fin.output, 'the end');
    assert.equal(await psql(`SELECT status FROM agent_runs WHERE id = '${id}'`), 'succeeded');
  } finally {
    assert.equal((await b.stop()).code, 0, b.rawStderr.slice(-3000));
  }
});

test('two daemons started at once on an empty database migrate it exactly once', { skip }, async () => {
  const [url, psql] = await freshDb();
  const starts = await Promise.all([0, 1, 2].map(() => startAgentd({ env: { DATABASE_URL: url } })));
  try {
    const applied = starts.flatMap((d) => d.logs.filter((l) => /^database: applied migration/.test(l.msg || '')));
    const versions = await psql('SELECT string_agg(version::text, \',\' ORDER BY version) FROM schema_migrations');
    assert.equal(applied.length, versions.split(',').length, `applied: ${JSON.stringify(applied)}`);
    for (const d of starts) assert.equal((await ready(d)).status, 200);
  } finally {
    for (const d of starts) assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000));
  }
  // a restart applies nothing
  const again = await startAgentd({ env: { DATABASE_URL: url } });
  try {
    assert.equal(again.logs.filter((l) => /^database: applied migration/.test(l.msg || '')).length, 0);
  } finally {
    assert.equal((await again.stop()).code, 0);
  }
});

test('a malformed DATABASE_URL, or one the server refuses, is a configuration error at start', { skip }, async () => {
  const cases = [
    ['postgresql://agentd@127.0.0.1:notaport/agentd', /not a valid PostgreSQL URL/],
    ['postgresql://x:y@127.0.0.1:5432/db?bogus_option=1', /not a valid PostgreSQL URL/],
    [pg.url.replace(`:${pg.password}@`, ':wrong-password@'), /refused the connection: .*password authentication failed/],
    [pg.url.replace(/\/agentd$/, '/no_such_db'), /refused the connection: .*does not exist/],
  ];
  for (const [url, re] of cases) {
    const r = spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0', '--data-dir', tmp('bad')],
      { encoding: 'utf8', env: { ...process.env, DATABASE_URL: url }, timeout: 20000 });
    assert.equal(r.status, 2, `${url}: ${r.stderr}`);
    assert.match(r.stderr, re, url);
    assert.ok(!r.stderr.includes(pg.password), 'the password is not printed');
    const k = cli(['keys', 'list'], url, tmp('bad'));
    assert.equal(k.status, 2, k.stderr);
    assert.match(k.stderr, re);
  }
});

test('the server goes away: /ready says why, rows wait, and nothing is lost when it is back', { skip }, async () => {
  const [url, psql] = await freshDb();
  oa.reset();
  const d = await startAgentd({ env: { DATABASE_URL: url, FAKE_OPENAI_KEY: FAKE_KEYS.openai }, config: models() });
  const send = async (user) => {
    const r = await d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt', user, messages: [{ role: 'user', content: 'hello there' }] }),
    });
    await r.arrayBuffer();
    return r.status;
  };
  try {
    assert.equal(await send('before'), 200);
    await until(() => psql('SELECT count(*) FROM ledger_exchanges'), (n) => n === '1');
    await pg.stop();
    const down = await until(() => ready(d), (x) => x.status === 503);
    assert.equal(down.body.checks.database, false);
    assert.match(down.body.reason, /^database unreachable: /);
    // served while the database is away: their rows are kept and retried
    for (let i = 0; i < 4; i++) assert.equal(await send(`during${i}`), 200);
    await d.waitLog((l) => /spend ledger write refused/.test(l.msg || ''));
    await pg.start();
    await until(() => ready(d), (x) => x.status === 200, 20000);
    await until(() => psql('SELECT count(*) FROM ledger_exchanges'), (n) => n === '5', 20000);
    const users = (await psql('SELECT string_agg("user", \',\' ORDER BY "user") FROM ledger_exchanges')).split(',');
    assert.deepEqual(users, ['before', 'during0', 'during1', 'during2', 'during3']);
  } finally {
    if (!pg.running) await pg.start();
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000));
  }
});

test('the backends below the interfaces (unit test_store_pg against a fresh database)', { skip }, async () => {
  const [url] = await freshDb();
  const bin = join(process.env.AGENTD_BUILD || new URL('../../build-asan', import.meta.url).pathname, 'tests', 'test_store_pg');
  const r = spawnSync(bin, [], { encoding: 'utf8', env: { ...process.env, AGENTD_TEST_DATABASE_URL: url }, timeout: 60000 });
  assert.equal(r.status, 0, `${r.stdout.split('\n').filter((l) => /^not ok|#/.test(l)).join('\n')}\n${r.stderr}`);
  assert.match(r.stdout, /^1\.\.\d+/m);
  assert.ok(!/^not ok/m.test(r.stdout));
  assert.ok(Number(r.stdout.match(/^1\.\.(\d+)/m)[1]) > 30, 'the database parts ran');
});

test('a database that is down at start: the daemon starts, /ready says why, and it migrates and writes once back', { skip }, async () => {
  const [url, psql] = await freshDb();
  oa.reset();
  await pg.stop();
  let d;
  try {
    d = await startAgentd({ env: { DATABASE_URL: url, FAKE_OPENAI_KEY: FAKE_KEYS.openai }, config: models() });
    const r = await ready(d);
    assert.equal(r.status, 503);
    assert.match(r.body.reason, /^database unreachable: .*127\.0\.0\.1/);
    assert.ok(!r.body.reason.includes(pg.password));
    for (const user of ['early0', 'early1']) {
      const x = await d.fetch('/v1/chat/completions', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt', user, messages: [{ role: 'user', content: 'hello' }] }),
      });
      assert.equal(x.status, 200);
      await x.arrayBuffer();
    }
  } finally {
    await pg.start();
  }
  try {
    await until(() => ready(d), (x) => x.status === 200, 20000);
    await until(() => psql('SELECT count(*) FROM ledger_exchanges'), (n) => n === '2', 20000);
    assert.ok(Number(await psql('SELECT count(*) FROM schema_migrations')) >= 2);
  } finally {
    assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000));
  }
});

test('replicas resume only the runs of processes that died, never a run a live replica is running', { skip }, async () => {
  const [url] = await freshDb();
  const cfg = 'agents:\n  - name: calc\n    model: mock\n    tools: [echo, wait]\n';
  const opts = { env: { DATABASE_URL: url }, config: cfg };
  const start = async (d) => {
    const r = await d.fetch('/v1/agents/calc/runs', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input: 'CALL wait {"ms":30000}\n---\nthe end', wait: false }),
    });
    assert.equal(r.status, 202);
    const { id } = await r.json();
    await until(async () => (await (await d.fetch(`/v1/runs/${id}`)).json()).steps || [], (st) => st.some((x) => x.tool === 'wait'));
    return id;
  };
  const resumed = (d, id) => d.logs.some((l) => (l.msg || '').includes(`agent run ${id} (calc): resumed`));
  const live = await startAgentd(opts);
  const others = [];
  try {
    const mine = await start(live); // running on a live replica
    const z = await startAgentd(opts);
    const orphan = await start(z);
    z.signal('SIGKILL');
    await z.exited;
    const b = await startAgentd(opts);
    others.push(b);
    await b.waitLog((l) => (l.msg || '').includes(`agent run ${orphan} (calc): resumed`));
    // the older run was listed first: had b taken it, its line would be there already
    assert.ok(!resumed(b, mine), 'a replica took over the run of a live one');
    live.signal('SIGKILL');
    await live.exited;
    const c = await startAgentd(opts);
    others.push(c);
    await c.waitLog((l) => (l.msg || '').includes(`agent run ${mine} (calc): resumed`));
  } finally {
    if (live.child.exitCode === null && live.child.signalCode === null) await live.stop();
    for (const d of others) assert.equal((await d.stop()).code, 0, d.rawStderr.slice(-3000));
  }
});
