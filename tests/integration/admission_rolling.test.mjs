// Drain (issue 9 item 7): a rolling restart of two agentd processes behind haproxy (the Debian package, started
// here) under steady load loses no request. haproxy health-checks /ready every 100 ms: SIGTERM makes it fail at
// once, so haproxy stops sending new work during drain_delay; what is in flight finishes; a request that races
// the listener's close is retried by haproxy on the other server (retry-on conn-failure empty-response 503).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { startAgentd } from '../lib/agentd.mjs';

const haproxy = spawnSync('haproxy', ['-v']).status === 0;

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

const CONFIG = 'server:\n  workers: 1\n  timeouts:\n    drain_delay: 600ms\n    drain_grace: 10s\n' +
  'gateway:\n  max_concurrent_requests: 8\n' +
  'models:\n  - name: steady\n    provider: mock\n    mock: {latency: 30ms}\n';

const start = (port) => startAgentd({
  config: CONFIG, noDefaultListen: true,
  args: ['--listen', `127.0.0.1:${port}`, '--ops-listen', '127.0.0.1:0'],
});

async function startHaproxy(fe, pa, pb) {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-haproxy-'));
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(cfg, `global
  maxconn 1024
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
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
  default-server inter 100ms fall 1 rise 1
  server a 127.0.0.1:${pa} check
  server b 127.0.0.1:${pb} check
`);
  const p = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (c) => { err += c; });
  // Ready when the frontend accepts a connection.
  for (let i = 0; i < 200; i++) {
    const okc = await new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: fe });
      s.on('connect', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (okc) return p;
    if (p.exitCode !== null) throw new Error(`haproxy exited: ${err}`);
    await new Promise((r) => setTimeout(r, 25)); // polling the port haproxy binds, not a synchronisation sleep
  }
  throw new Error(`haproxy did not listen: ${err}`);
}

test('rolling restart of two agentd behind haproxy under steady load loses no request', { skip: !haproxy && 'haproxy is not installed (scripts/deps.sh test)' }, async () => {
  const [pa, pb, fe] = [await freePort(), await freePort(), await freePort()];
  let a = await start(pa);
  let b = await start(pb);
  const hp = await startHaproxy(fe, pa, pb);
  const results = new Map();
  let running = true;
  let sent = 0;
  const url = `http://127.0.0.1:${fe}/v1/chat/completions`;
  async function client(id) {
    while (running) {
      const n = ++sent;
      let status;
      try {
        const r = await fetch(url, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'steady', messages: [{ role: 'user', content: `req ${id}-${n}` }] }),
        });
        const j = await r.json();
        status = r.status === 200 && j.choices?.[0]?.message?.content === `echo: req ${id}-${n}` ? 200 : `${r.status} ${JSON.stringify(j)}`;
      } catch (e) {
        status = `error ${e.cause?.code || e.message}`;
      }
      results.set(status, (results.get(status) || 0) + 1);
    }
  }
  const clients = Array.from({ length: 6 }, (_, i) => client(i));
  try {
    // Each process serves load, is drained with SIGTERM, restarts on the same port and serves again.
    for (const which of ['a', 'b']) {
      const cur = which === 'a' ? a : b;
      await cur.waitLog((l) => l.msg === 'llm' && l.status === 200, 15000); // it is taking traffic
      cur.signal('SIGTERM');
      const exit = await cur.exited;
      assert.equal(exit.code, 0);
      await cur.stop();
      const next = await start(which === 'a' ? pa : pb);
      if (which === 'a') a = next; else b = next;
      await next.waitLog((l) => l.msg === 'llm' && l.status === 200, 15000); // haproxy sends to it again
    }
  } finally {
    running = false;
    await Promise.all(clients);
    hp.kill('SIGTERM');
    await a.stop();
    await b.stop();
  }
  const ok = results.get(200) || 0;
  const failed = [...results].filter(([k]) => k !== 200);
  assert.deepEqual(failed, [], `failed requests (of ${sent}): ${JSON.stringify(failed)}`);
  assert.ok(ok > 50, `only ${ok} requests went through`);
});
