// Probes, metrics, drain on SIGTERM, reload on SIGHUP, liveness on a stalled loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { startAgentd, parseResponses } from '../lib/agentd.mjs';

test('probes answer on both listeners; /metrics only on ops and passes promtool', async () => {
  const d = await startAgentd({ config: 'server:\n  workers: 2\n' });
  try {
    for (const f of [d.fetch.bind(d), d.opsFetch.bind(d)]) {
      const h = await f('/health');
      assert.equal(h.status, 200);
      const hj = await h.json();
      assert.equal(hj.status, 'ok');
      assert.equal(hj.workers.length, 2);
      const r = await f('/ready');
      assert.equal(r.status, 200);
      const rj = await r.json();
      assert.deepEqual(rj.checks, { config: true, data_dir: true, draining: false, ledger: true, ledger_backlog: 0, admission_queue: true, admission_queue_depth: 0 });
    }
    assert.equal((await d.fetch('/metrics')).status, 404);
    await d.fetch('/nope');
    const res = await d.opsFetch('/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of ['http_server_requests_total', 'http_server_request_duration_seconds_bucket',
      'process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_open_fds', 'process_start_time_seconds']) {
      assert.ok(text.includes(name), `missing ${name}`);
    }
    // Per-thread counters are summed: 3 API requests above (health, ready, metrics 404) + /nope per listener pass.
    const line = text.split('\n').find((l) => l.startsWith('http_server_requests_total{listener="api",method="GET",route="/health",code="200"}'));
    assert.equal(Number(line.split(' ')[1]), 1);
    const p = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(p.status, 0, `promtool: ${p.stdout}${p.stderr}`);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('SIGTERM drains: ready turns 503 at once, in-flight requests finish, new connections are refused, exit 0', async () => {
  const d = await startAgentd({ config: 'server:\n  workers: 2\n  debug_routes: true\n  timeouts:\n    drain_delay: 300ms\n    drain_grace: 10s\n' });
  // A request in flight (answers after 1200 ms)...
  const inflight = d.raw('GET /debug/sleep?ms=1200 HTTP/1.1\r\nHost: x\r\n\r\n', { until: (s) => parseResponses(s).length === 1 });
  await d.waitLog((l) => l.msg === 'debug_sleep started'); // the request is in its handler
  d.signal('SIGTERM');
  await d.waitLog((l) => /draining/.test(l.msg || ''));
  // ...readiness flips immediately (during drain_delay the ops listener is still up and answers 503).
  const ready = await d.opsFetch('/ready');
  assert.equal(ready.status, 503);
  assert.equal((await ready.json()).checks.draining, true);
  // After the delay the API listener closes: new connections are refused.
  await d.waitLog((l) => /API listeners closed/.test(l.msg || ''));
  const refused = await new Promise((resolve) => {
    const s = net.connect({ host: d.host, port: d.port });
    s.on('connect', () => { s.destroy(); resolve(false); });
    s.on('error', (e) => resolve(e.code));
  });
  assert.equal(refused, 'ECONNREFUSED');
  const r = await inflight;
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 200, 'in-flight request completes during drain');
  assert.equal(res.headers.connection, 'close');
  const exit = await d.exited;
  assert.equal(exit.code, 0);
  await d.stop();
});

test('drain grace expiry closes what is left and still exits 0', async () => {
  const d = await startAgentd({ config: 'server:\n  debug_routes: true\n  timeouts:\n    drain_grace: 300ms\n' });
  const inflight = d.raw('GET /debug/sleep?ms=30000 HTTP/1.1\r\nHost: x\r\n\r\n');
  await d.waitLog((l) => l.msg === 'debug_sleep started');
  const t0 = Date.now();
  d.signal('SIGTERM');
  const r = await inflight;
  assert.equal(r.closed, true);
  assert.equal(r.data, '', 'no response for a request cut at the end of the grace period');
  const exit = await d.exited;
  assert.equal(exit.code, 0);
  assert.ok(Date.now() - t0 < 5000);
  const line = await d.waitLog((l) => l.msg === 'access' && l.path === '/debug/sleep');
  assert.equal(line.status, 499);
  await d.stop();
});

test('SIGHUP reloads the configuration; an invalid file keeps the old one and says why', async () => {
  const d = await startAgentd({ config: 'server:\n  debug_routes: true\n  limits:\n    body_bytes: 8KiB\n' });
  try {
    let res = await d.fetch('/debug/echo', { method: 'POST', body: 'a'.repeat(6000) });
    assert.equal(res.status, 200);
    writeFileSync(d.configPath, 'server:\n  debug_routes: true\n  limits:\n    body_bytes: 4KiB\n');
    d.signal('SIGHUP');
    await d.waitLog((l) => /configuration reloaded/.test(l.msg || ''));
    res = await d.fetch('/debug/echo', { method: 'POST', body: 'a'.repeat(6000) });
    assert.equal(res.status, 413, 'the new, lower body limit applies');
    writeFileSync(d.configPath, 'server:\n  limits:\n    body_bytes: lots\n');
    d.signal('SIGHUP');
    const refused = await d.waitLog((l) => /reload refused/.test(l.msg || ''));
    assert.match(refused.errors, /agentd\.yaml:3:17: server\.limits\.body_bytes: 'lots' is not a size/);
    res = await d.fetch('/debug/echo', { method: 'POST', body: 'a'.repeat(3000) });
    assert.equal(res.status, 200, 'still running on the last good configuration');
    res = await d.fetch('/debug/echo', { method: 'POST', body: 'a'.repeat(6000) });
    assert.equal(res.status, 413);
    // A setting that needs a restart is reported and left as it is.
    writeFileSync(d.configPath, 'server:\n  debug_routes: true\n  workers: 7\n  limits:\n    body_bytes: 4KiB\n');
    d.signal('SIGHUP');
    const warn = await d.waitLog((l) => /change only on restart/.test(l.msg || ''));
    assert.match(warn.msg, /server\.workers/);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('/health fails when a worker loop stops turning', async () => {
  const d = await startAgentd({ config: 'server:\n  workers: 1\n  debug_routes: true\n  timeouts:\n    health_stall: 300ms\n' });
  try {
    assert.equal((await d.opsFetch('/health')).status, 200);
    let stallDone = false;
    const stall = d.fetch('/debug/stall?ms=1500').then((r) => { stallDone = true; return r; });
    // Poll the ops listener (main thread) for as long as the worker is blocked.
    let seen = null;
    while (!stallDone) {
      const h = await d.opsFetch('/health');
      if (h.status === 503) { seen = await h.json(); break; }
      await h.arrayBuffer(); // each probe is its own round trip: no timer between them
    }
    assert.ok(seen, 'health never failed during the stall');
    assert.equal(seen.status, 'stalled');
    assert.equal(seen.workers[0].ok, false);
    assert.equal((await stall).status, 200);
    // Recovers once the loop turns again: the heartbeat is stamped before the loop next waits, which can be just
    // after the client has the stalled response (the worker may be preempted in between), so poll for it.
    let status = 0;
    for (const t0 = Date.now(); status !== 200 && Date.now() - t0 < 5000;) {
      const h = await d.opsFetch('/health');
      status = h.status;
      await h.arrayBuffer();
    }
    assert.equal(status, 200, 'health did not recover after the stall');
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('a second SIGTERM during the drain closes everything at once', async () => {
  const d = await startAgentd({ config: 'server:\n  debug_routes: true\n  timeouts:\n    drain_grace: 60s\n' });
  const inflight = d.raw('GET /debug/sleep?ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n');
  await d.waitLog((l) => l.msg === 'debug_sleep started');
  d.signal('SIGTERM');
  await d.waitLog((l) => /API listeners closed/.test(l.msg || ''));
  d.signal('SIGINT');
  const r = await inflight;
  assert.equal(r.closed, true);
  assert.equal((await d.exited).code, 0);
  await d.stop();
});
