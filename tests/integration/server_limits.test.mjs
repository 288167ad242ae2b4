// Every server limit is configurable and enforced, and a bad client never disturbs the others.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startAgentd, withAgentd, parseResponses } from '../lib/agentd.mjs';

let d;
before(async () => {
  d = await startAgentd({
    config: `server:
  workers: 2
  debug_routes: true
  limits:
    header_bytes: 2KiB
    body_bytes: 4KiB
    connections: 6
  timeouts:
    header: 600ms
    body: 600ms
    idle: 700ms
`,
  });
});
after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

test('headers larger than the limit get 431 and the connection closes', async () => {
  const r = await d.raw(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(3000)}\r\n\r\n`);
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 431);
  assert.equal(JSON.parse(res.body).error.code, 'header_too_large');
  assert.equal(r.closed, true);
});

test('413, 431 and 408 on /v1/messages are Anthropic-shaped, on /v1/chat OpenAI-shaped, always with a request id', async () => {
  const cases = [
    // 413 from Content-Length, known before the body
    (p) => [`POST ${p} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n`, 413],
    // 431 in the middle of the headers: the request id header (if any) was never read
    (p) => [`POST ${p} HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(3000)}\r\n\r\n`, 431],
    // 408: the headers never finish
    (p) => [`POST ${p}?beta=true HTTP/1.1\r\nHost: x\r\nX-Slow: y`, 408],
  ];
  for (const mk of cases) {
    for (const path of ['/v1/messages', '/v1/chat/completions']) {
      const [wire, status] = mk(path);
      const r = await d.raw(wire);
      const [res] = parseResponses(r.data);
      assert.equal(res.status, status, r.data.slice(0, 300));
      assert.match(r.data, /^HTTP\/1\.1 /, 'answered in the client\'s HTTP version');
      const id = res.headers['x-request-id'];
      assert.match(id, /^[0-9a-f]{32}$/, `request id on ${status}: ${JSON.stringify(id)}`);
      const j = JSON.parse(res.body);
      if (path === '/v1/messages') {
        assert.equal(j.type, 'error', res.body);
        assert.equal(typeof j.error.type, 'string');
        assert.equal(typeof j.error.message, 'string');
        assert.equal(j.request_id, id);
      } else {
        assert.equal(j.type, undefined, res.body);
        assert.equal(typeof j.error.type, 'string');
        assert.equal(typeof j.error.code, 'string');
        assert.equal(j.error.param, null);
      }
    }
  }
});

test('headers just under the limit are fine', async () => {
  const r = await d.raw(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(1500)}\r\n\r\n`, { until: (s) => parseResponses(s).length === 1 });
  assert.equal(parseResponses(r.data)[0].status, 200);
});

test('a Content-Length over the limit gets 413 before the body is read', async () => {
  const r = await d.raw('POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 413);
  assert.equal(r.closed, true);
});

test('a chunked body growing past the limit gets 413', async () => {
  const chunk = 'z'.repeat(1000);
  let wire = 'POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n';
  for (let i = 0; i < 6; i++) wire += `${chunk.length.toString(16)}\r\n${chunk}\r\n`;
  wire += '0\r\n\r\n';
  const r = await d.raw(wire);
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 413);
});

test('a body at the limit is accepted', async () => {
  const res = await d.fetch('/debug/echo', { method: 'POST', body: 'b'.repeat(4096) });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).bytes, 4096);
});

test('header timeout: a client trickling one byte at a time gets 408', async () => {
  const req = 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'y'.repeat(100) + '\r\n\r\n';
  const t0 = Date.now();
  const r = await d.raw(req.split(''), { gapMs: 20 });
  const elapsed = Date.now() - t0;
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 408);
  assert.equal(r.closed, true);
  assert.ok(elapsed >= 550 && elapsed < 3000, `closed after ${elapsed} ms`);
  const line = await d.waitLog((l) => l.msg === 'access' && l.status === 408);
  assert.equal(line.error, 'header_timeout');
});

test('body timeout: headers sent, body never finished, gets 408', async () => {
  const r = await d.raw('POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc');
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 408);
});

test('an idle keep-alive connection is closed after the idle timeout', async () => {
  const t0 = Date.now();
  const r = await d.raw('GET /health HTTP/1.1\r\nHost: x\r\n\r\n', { timeoutMs: 5000 });
  const elapsed = Date.now() - t0;
  assert.equal(parseResponses(r.data)[0].status, 200);
  assert.equal(r.closed, true);
  assert.ok(elapsed >= 650 && elapsed < 3000, `idle close after ${elapsed} ms`);
});

test('a malformed request line gets 400, closes, and other connections never notice', async () => {
  // A healthy keep-alive connection opened before the bad one...
  const good = net.connect({ host: d.host, port: d.port });
  await new Promise((r) => good.on('connect', r));
  let goodData = '';
  good.on('data', (c) => { goodData += c; });
  const bad = await d.raw('GET /health HTTP/1.1 garbage\r\n\r\n');
  assert.equal(parseResponses(bad.data)[0].status, 400);
  assert.equal(bad.closed, true);
  const bad2 = await d.raw('\x00\x01\x02 nonsense\r\n\r\n');
  assert.equal(parseResponses(bad2.data)[0].status, 400);
  const bad3 = await d.raw('GET /health HTTP/1.1\r\nBad Header Line\r\n\r\n');
  assert.equal(parseResponses(bad3.data)[0].status, 400);
  // ...still works afterwards.
  good.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
  await new Promise((resolve) => { const c = () => { if (parseResponses(goodData).length) { good.off('data', c); resolve(); } }; good.on('data', c); c(); });
  assert.equal(parseResponses(goodData)[0].status, 200);
  good.destroy();
});

test('max connections: past the limit, with every connection mid-request, new connections get 503', async () => {
  // Hold the limit's worth of open connections, each with a request in progress (an idle one would be closed to
  // make room instead; see the ops test below). The header timeout is longer than this test.
  const held = [];
  for (let i = 0; i < 6; i++) {
    const s = net.connect({ host: d.host, port: d.port });
    await new Promise((r) => s.on('connect', r));
    s.on('error', () => {});
    s.write('GET /health HTTP/1.1\r\nHost: x\r\n');
    held.push(s);
  }
  // The server counts a connection when it accepts it; wait until all six are counted.
  await waitFor(async () => (await metric(d, 'http_server_open_connections{listener="api"}')) >= 6);
  const over = await d.raw('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
  const [res] = parseResponses(over.data);
  assert.equal(res.status, 503);
  assert.equal(res.headers['retry-after'], '1');
  assert.equal(over.closed, true);
  // Free one slot: a new connection is served again.
  held.pop().destroy();
  await waitFor(async () => (await metric(d, 'http_server_open_connections{listener="api"}')) <= 5);
  const ok = await d.raw('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal(parseResponses(ok.data)[0].status, 200);
  for (const s of held) s.destroy();
  const rejected = await metric(d, 'http_server_connections_total{listener="api",event="rejected"}');
  assert.ok(rejected >= 1);
});

test('probes get through 300 idle connections to the ops port: the longest idle one is closed to make room', async () => {
  // The ops listener's budget is 256 connections. Idle sockets used to fill it and /health answered 503 until the
  // header timeout reaped them. Its own daemon with long timeouts, so that no connection is reaped by a timeout.
  await withAgentd({ config: 'server:\n  workers: 1\n  timeouts:\n    header: 60s\n    idle: 60s\n' }, async (d) => {
    const held = [];
    const closed = [];
    for (let i = 0; i < 300; i++) {
      const s = net.connect({ host: d.opsHost, port: d.opsPort });
      await new Promise((r) => s.on('connect', r));
      s.on('error', () => {});
      s.on('close', () => closed.push(i));
      held.push(s);
    }
    try {
      for (const path of ['/health', '/metrics']) {
        const res = await d.opsFetch(path);
        assert.equal(res.status, 200, `${path} answered ${res.status}`);
        await res.arrayBuffer();
      }
      // The oldest idle connections were the ones closed, never refused with a 503.
      const evicted = await metric(d, 'http_server_connections_total{listener="ops",event="evicted"}');
      assert.ok(evicted >= 44, `evicted ${evicted}`);
      assert.equal(await metric(d, 'http_server_connections_total{listener="ops",event="rejected"}'), 0);
      await waitFor(async () => closed.length >= 44);
      assert.ok(closed.includes(0), 'the oldest connection goes first');
      assert.ok(closed.every((i) => i < 60), `closed: ${closed}`);
    } finally {
      for (const s of held) s.destroy();
    }
  });
});

test('API listener at its connection limit: the longest-idle connection makes room, a busy one never does', async () => {
  await withAgentd({ config: 'server:\n  workers: 1\n  limits:\n    connections: 3\n  timeouts:\n    header: 60s\n    idle: 60s\n' }, async (d) => {
    const open = async (write) => {
      const s = net.connect({ host: d.host, port: d.port });
      await new Promise((r) => s.on('connect', r));
      s.on('error', () => {});
      s.closedP = new Promise((r) => s.on('close', r));
      if (write) s.write(write);
      return s;
    };
    // Oldest: a request in progress (headers not finished). Then two idle keep-alive connections.
    const busy = await open('GET /health HTTP/1.1\r\nHost: x\r\n');
    const idle1 = await open();
    const idle2 = await open();
    await waitFor(async () => (await metric(d, 'http_server_open_connections{listener="api"}')) >= 3);
    // A fourth connection is served; the idle one that waited longest (idle1) is closed for it, not the busy one.
    const r = await d.raw('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(parseResponses(r.data)[0].status, 200);
    await idle1.closedP;
    assert.equal(busy.destroyed, false, 'a connection with a request in progress is never evicted');
    assert.equal(idle2.destroyed, false);
    busy.write('\r\n'); // finish its request: it is still served
    const got = await new Promise((resolve) => { let b = ''; busy.on('data', (c) => { b += c; if (parseResponses(b).length) resolve(b); }); });
    assert.equal(parseResponses(got)[0].status, 200);
    busy.destroy(); idle2.destroy();
  });
});

async function metric(d, series) {
  const text = await (await d.opsFetch('/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
}

async function waitFor(pred, timeoutMs = 5000) {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > timeoutMs) throw new Error('condition not reached');
    await new Promise((r) => setImmediate(r));
  }
}
