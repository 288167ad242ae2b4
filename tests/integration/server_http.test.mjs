// HTTP/1.1 server core: keep-alive, pipelining, bodies, 100-continue, routing errors, request ids, access log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startAgentd, parseResponses } from '../lib/agentd.mjs';

let d;
before(async () => {
  d = await startAgentd({ config: 'server:\n  debug_routes: true\n  workers: 2\n' });
});
after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, `agentd exit ${JSON.stringify(r)}\n${d.rawStderr.slice(-3000)}`);
});

test('keep-alive: two requests on one connection', async () => {
  const req = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n';
  const r = await d.raw([req, req], { gapMs: 50, until: (s) => parseResponses(s).length >= 2 });
  const rs = parseResponses(r.data);
  assert.equal(rs.length, 2);
  assert.equal(rs[0].status, 200);
  assert.equal(rs[1].status, 200);
  assert.equal(r.closed, false, 'connection must stay open between keep-alive requests');
  assert.equal(JSON.parse(rs[0].body).status, 'ok');
});

test('pipelining: responses come back in request order', async () => {
  const reqs = [];
  for (let i = 0; i < 5; i++) {
    // Alternate a slow (async) handler and fast ones: order must hold even when the first finishes last.
    const path = i === 0 ? '/debug/sleep?ms=150' : i % 2 ? '/health' : '/nope';
    reqs.push(`GET ${path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-${i}\r\n\r\n`);
  }
  const r = await d.raw(reqs.join(''), { until: (s) => parseResponses(s).length >= 5 });
  const rs = parseResponses(r.data);
  assert.deepEqual(rs.map((x) => x.headers['x-request-id']), ['pipe-0', 'pipe-1', 'pipe-2', 'pipe-3', 'pipe-4']);
  assert.deepEqual(rs.map((x) => x.status), [200, 200, 404, 200, 404]);
});

test('Content-Length body is received whole', async () => {
  const body = 'x'.repeat(200000);
  const res = await d.fetch('/debug/echo', { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
  assert.equal(res.status, 200);
  const j = await res.json();
  assert.equal(j.bytes, 200000);
  assert.equal(j.content_type, 'text/plain');
});

test('chunked request body is decoded', async () => {
  const chunks = ['hello ', 'chunked ', 'world'];
  let wire = 'POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n';
  for (const c of chunks) wire += `${c.length.toString(16)}\r\n${c}\r\n`;
  wire += '0\r\n\r\n';
  const r = await d.raw(wire, { until: (s) => parseResponses(s).length >= 1 });
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 200);
  const j = JSON.parse(res.body);
  assert.equal(j.bytes, 'hello chunked world'.length);
  // Same bytes as a Content-Length request: identical hash.
  const ref = await (await d.fetch('/debug/echo', { method: 'POST', body: 'hello chunked world' })).json();
  assert.equal(j.fnv1a, ref.fnv1a);
});

test('trailers after a chunked body are ignored; the request and its headers stay intact', async () => {
  // Found by fuzz_http_request: trailer fields used to be appended to the buffer the URL and headers point into.
  let wire = 'POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n';
  wire += '3\r\nabc\r\n0\r\n';
  wire += `X-Trailer-${'a'.repeat(3000)}: ${'b'.repeat(3000)}\r\nX-Another: y\r\n\r\n`;
  wire += 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
  const r = await d.raw(wire, { until: (s) => parseResponses(s).length >= 2 });
  const [first, second] = parseResponses(r.data);
  assert.equal(first.status, 200);
  const j = JSON.parse(first.body);
  assert.equal(j.bytes, 3);
  assert.equal(j.content_type, 'text/plain');
  assert.equal(second.status, 200);
});

test('Expect: 100-continue gets an interim 100 before the final response', async () => {
  const sock = net.connect({ host: d.host, port: d.port });
  await new Promise((r) => sock.on('connect', r));
  let data = '';
  sock.on('data', (c) => { data += c.toString('latin1'); });
  sock.write('POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
  // The client sends the body only after the 100 arrives.
  const until = (pred, what) => new Promise((resolve, reject) => {
    const check = () => { if (pred()) { sock.off('data', check); sock.off('close', gone); resolve(); } };
    const gone = () => reject(new Error(`connection closed before ${what}: ${data}`));
    sock.on('data', check);
    sock.on('close', gone);
    check();
  });
  await until(() => data.includes('HTTP/1.1 100 Continue\r\n\r\n'), '100 Continue');
  sock.write('abcde');
  await until(() => data.includes('"bytes":5'), 'the response');
  sock.destroy();
  assert.match(data, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/);
});

test('unsupported Expect gets 417', async () => {
  const r = await d.raw('POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: magic\r\n\r\nx');
  const [res] = parseResponses(r.data);
  assert.equal(res.status, 417);
});

test('unknown path is 404 and wrong method is 405 with Allow, both JSON', async () => {
  let res = await d.fetch('/no/such/path');
  assert.equal(res.status, 404);
  let j = await res.json();
  // OpenAI's shape: message, type, param, code (a string, never the status number).
  assert.deepEqual(Object.keys(j.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(j.error.type, 'invalid_request_error');
  assert.equal(j.error.code, 'unknown_url');
  assert.equal(j.error.param, null);
  assert.match(j.error.message, /\/no\/such\/path/);
  res = await d.fetch('/health', { method: 'DELETE' });
  assert.equal(res.status, 405);
  assert.equal(res.headers.get('allow'), 'GET, HEAD');
  j = await res.json();
  assert.equal(j.error.code, 'method_not_allowed');
  assert.equal(j.error.type, 'invalid_request_error');
});

test('404 and 405 under /v1/messages are in Anthropic\'s error shape', async () => {
  for (const [path, method, status, type] of [
    ['/v1/messages', 'GET', 405, 'invalid_request_error'],
    ['/v1/messages/no/such', 'POST', 404, 'not_found_error'],
  ]) {
    const res = await d.fetch(path, { method, body: method === 'POST' ? '{}' : undefined });
    assert.equal(res.status, status);
    const j = await res.json();
    assert.equal(j.type, 'error', JSON.stringify(j));
    assert.equal(j.error.type, type);
    assert.equal(typeof j.error.message, 'string');
    assert.equal(j.request_id, res.headers.get('x-request-id'));
  }
  // A sibling that only shares the prefix stays OpenAI-shaped.
  const j = await (await d.fetch('/v1/messagesx')).json();
  assert.equal(j.error.code, 'unknown_url');
});

test('HEAD on a GET route: headers and length, no body', async () => {
  const r = await d.raw('HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n',
    { until: (s) => (s.match(/HTTP\/1\.1 /g) || []).length >= 2 && s.endsWith('}') });
  // The HEAD response declares a length but carries no bytes: the next response follows its blank line directly.
  assert.match(r.data, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: \d+\r\n[\s\S]*?\r\n\r\nHTTP\/1\.1 404/);
});

test('request id: echoed when given and valid, generated otherwise', async () => {
  let res = await d.fetch('/health', { headers: { 'x-request-id': 'abc-123' } });
  assert.equal(res.headers.get('x-request-id'), 'abc-123');
  res = await d.fetch('/health', { headers: { 'x-request-id': 'bad id with spaces' } });
  assert.match(res.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
  res = await d.fetch('/health');
  const id = res.headers.get('x-request-id');
  assert.match(id, /^[0-9a-f]{32}$/);
  const line = await d.waitLog((l) => l.msg === 'access' && l.request_id === id);
  assert.equal(line.status, 200);
  assert.equal(line.method, 'GET');
  assert.equal(line.path, '/health');
  assert.equal(line.listener, 'api');
  assert.ok(Number.isInteger(line.duration_us) && line.duration_us >= 0);
  assert.ok(line.bytes_out > 0);
  assert.ok(line.bytes_in > 0);
  assert.match(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
});

test('HTTP/1.0 without keep-alive closes after the response; with keep-alive stays open', async () => {
  let r = await d.raw('GET /health HTTP/1.0\r\n\r\n');
  assert.equal(r.closed, true);
  assert.equal(parseResponses(r.data)[0].status, 200);
  r = await d.raw('GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', { idleMs: 300 });
  assert.equal(r.closed, false);
  const [res] = parseResponses(r.data);
  assert.equal(res.headers.connection, 'keep-alive');
});

test('Connection: close is honoured and later pipelined bytes are ignored', async () => {
  const r = await d.raw('GET /health HTTP/1.1\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n');
  assert.equal(r.closed, true);
  assert.equal(parseResponses(r.data).length, 1);
});

test('RFC 9112 strictness: space before the colon and non-token header names are 400', async () => {
  // "Transfer-Encoding : chunked" used to be honoured as chunked: a smuggling vector behind a proxy that reads it
  // as an unknown header and the body by Content-Length.
  for (const [wire, why] of [
    ['POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n', 'space_in_header_name'],
    ['GET /health HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n', 'space_in_header_name'],
    // http-parser itself refuses most other non-token bytes; either way it is a 400.
    ['GET /health HTTP/1.1\r\nHost: x\r\nX\u0001A: b\r\n\r\n', 'invalid_header_name|INVALID_HEADER_TOKEN'],
    ['GET /health HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n', 'invalid_header_name|INVALID_HEADER_TOKEN'],
  ]) {
    const r = await d.raw(wire); // waits for the close
    const [res] = parseResponses(r.data);
    assert.equal(res.status, 400, `${JSON.stringify(wire)} -> ${r.data.slice(0, 200)}`);
    assert.match(JSON.parse(res.body).error.message, new RegExp(why));
    assert.equal(r.closed, true);
  }
  // Every tchar is still a valid name character.
  const r = await d.raw("GET /health HTTP/1.1\r\nHost: x\r\nX-!#$%&'*+.^_`|~09az: b\r\nConnection: close\r\n\r\n");
  assert.equal(parseResponses(r.data)[0].status, 200);
});

test('RFC 9112 strictness: a Transfer-Encoding other than exactly chunked is 501', async () => {
  for (const te of ['gzip, chunked', 'gzip', 'chunked, chunked', 'identity']) {
    const wire = `POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n`;
    const r = await d.raw(wire); // waits for the close
    const [res] = parseResponses(r.data);
    assert.equal(res.status, 501, `${te} -> ${r.data.slice(0, 200)}`);
    assert.equal(r.closed, true);
  }
  // Two Transfer-Encoding lines are refused too; one "chunked" line (any case) is fine.
  let r = await d.raw('POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    { until: (s) => parseResponses(s).length >= 1 });
  assert.equal(parseResponses(r.data)[0].status, 501);
  r = await d.raw('POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
  assert.equal(parseResponses(r.data)[0].status, 200);
  assert.equal(JSON.parse(parseResponses(r.data)[0].body).bytes, 3);
});
