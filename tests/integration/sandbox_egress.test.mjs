// Network "egress" (docs/sandbox-service.md): a run with its own network namespace whose only way out is the
// daemon's HTTP proxy on the run's loopback (HTTP_PROXY), under sandbox.egress's policy. An HTTP server on the
// host's loopback stands for the outside (allow_private_networks lets the first daemon reach it; the second keeps
// the public-address rule and must refuse it). The program uses Python's standard library, as model-written code
// would: urllib through the proxy for plain HTTP, a raw CONNECT tunnel for anything else.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { BIN, startAgentd } from '../lib/agentd.mjs';
import { sandboxCheck } from '../lib/sandbox.mjs';

const UID_BASE = 1660000000;
const SAN_ENV = { ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0:exitcode=86' };
const { skip } = sandboxCheck(BIN, UID_BASE, 64);

let upstream, port, open, strict;
const seen = []; // request heads the upstream received
before(async () => {
  if (skip) return;
  upstream = createServer((req, res) => {
    let n = 0; // a request body is read to its end before the answer, which counts it
    req.on('data', (c) => { n += c.length; });
    req.on('end', () => {
      seen.push({ url: req.url, headers: req.headers });
      const body = `hello ${req.url}${n ? ' ' + n : ''}\n`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  port = upstream.address().port;
  const cfg = (uid, allowPrivate) => `
server: { workers: 1 }
sandbox:
  uid_base: ${uid}
  uid_count: 32
  service: { warm: 1, prewarm: true, max_running: 2, max_timeout: 20s }
  egress:
    enabled: true
    allow_hosts: [127.0.0.1, localhost, "*.example.test"]
    ports: [${port}]
    allow_private_networks: ${allowPrivate}
    max_bytes: 64KiB
agents:
  - name: online
    model: mock
    tools: [code_exec]
    code_network: egress
    limits: {tool_timeout: 15s}
  - name: offline
    model: mock
    tools: [code_exec]
    limits: {tool_timeout: 15s}
`;
  open = await startAgentd({ config: cfg(UID_BASE, true) });
  strict = await startAgentd({ config: cfg(UID_BASE + 32, false) });
});
after(async () => {
  for (const d of [open, strict]) {
    if (!d) continue;
    const r = await d.stop();
    assert.equal(r.code, 0, d.rawStderr.slice(-3000));
  }
  if (upstream) upstream.close();
});

async function runOn(d, code, extra = {}) {
  const r = await d.fetch('/v1/sandbox/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ language: 'python', code, network: 'egress', ...extra }),
  });
  const j = await r.json();
  assert.equal(r.status, 200, JSON.stringify(j));
  assert.equal(j.reason, 'exit', JSON.stringify(j));
  return j;
}

// Python run inside: prints one line per attempt. tunnel(host, port, payload) does a CONNECT by hand.
const PRELUDE = `
import os, socket, urllib.request, urllib.error
PROXY = os.environ.get("HTTP_PROXY", "")
NO_PROXY = os.environ.get("NO_PROXY", "")
# The outside stands on the host's 127.0.0.1, which NO_PROXY keeps direct (inside, that is the run's own loopback).
os.environ.pop("NO_PROXY", None); os.environ.pop("no_proxy", None)
def via_proxy(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": PROXY}))
    try:
        with opener.open(url, timeout=10) as r:
            return "%d %s" % (r.status, r.read().decode().strip())
    except urllib.error.HTTPError as e:
        return "%d %s" % (e.code, e.read().decode().strip())
def tunnel(host, port, payload=b""):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(("CONNECT %s:%d HTTP/1.1\\r\\nHost: %s:%d\\r\\n\\r\\n" % (host, port, host, port)).encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        c = s.recv(4096)
        if not c: break
        head += c
    status = head.split(b"\\r\\n")[0].decode()
    if " 200 " not in status + " ":
        return status + " | " + head.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip()
    s.sendall(payload)
    out = head.split(b"\\r\\n\\r\\n", 1)[1]
    while True:
        c = s.recv(65536)
        if not c: break
        out += c
    return status + " | " + out.decode(errors="replace")
def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=3); return "connected"
    except OSError as e:
        return "refused errno %d" % e.errno
`;

test('plain HTTP through the proxy reaches an allowed host, the head rewritten for the origin', { skip }, async () => {
  seen.length = 0;
  const j = await runOn(open, PRELUDE + `
print(PROXY, NO_PROXY)
print(via_proxy("http://127.0.0.1:${port}/plain?q=1"))`);
  assert.equal(j.stdout, `http://127.0.0.1:3128 localhost,127.0.0.1,::1\n200 hello /plain?q=1\n`, j.stderr);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].url, '/plain?q=1'); // origin form, not the absolute URL
  assert.equal(seen[0].headers.connection, 'close');
  assert.ok(!('proxy-connection' in seen[0].headers));
  assert.deepEqual(j.egress && j.egress.connections, 1, JSON.stringify(j.egress));
  assert.ok(j.egress.bytes_out > 0 && j.egress.bytes_in > 0, JSON.stringify(j.egress));
});

test('a CONNECT tunnel carries bytes both ways', { skip }, async () => {
  const j = await runOn(open, PRELUDE + `
print(tunnel("127.0.0.1", ${port}, b"GET /tunnel HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n"))`);
  assert.match(j.stdout, /^HTTP\/1\.1 200 [^|]*\| HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nhello \/tunnel\n\n$/, j.stdout + j.stderr);
});

test('the policy refuses other ports and hosts, before anything goes out', { skip }, async () => {
  const j = await runOn(open, PRELUDE + `
print(tunnel("127.0.0.1", ${port === 65535 ? port - 1 : port + 1}))
print(tunnel("example.com", ${port}))
print(via_proxy("http://evil.test:${port}/"))
print(tunnel("a.example.test", 22))`);
  const lines = j.stdout.trim().split('\n');
  assert.equal(lines.length, 4, j.stdout + j.stderr);
  for (const l of lines) assert.match(l, /^HTTP\/1\.1 403 |^403 /, l);
  assert.match(lines[0], /port/);
  assert.match(lines[1], /host/);
  assert.equal(j.egress.connections, 0);
  assert.equal(j.egress.refused, 4);
});

test('the program has no other way out: direct connections fail, names do not resolve', { skip }, async () => {
  const j = await runOn(open, PRELUDE + `
print(direct("127.0.0.1", ${port}))
print(direct("10.255.255.1", 80))
try:
    socket.getaddrinfo("localhost.example.test", 80); print("resolved")
except OSError as e:
    print("no dns")
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); print("netlink")
except OSError as e:
    print("netlink refused", e.errno)`);
  const lines = j.stdout.trim().split('\n');
  assert.match(lines[0], /^refused errno 111$/); // ECONNREFUSED: its own loopback has no such port
  assert.match(lines[1], /^refused errno (101|113)$/); // ENETUNREACH / EHOSTUNREACH: no route
  assert.equal(lines[2], 'no dns');
  assert.equal(lines[3], 'netlink refused 1'); // EPERM, seccomp
});

test('without allow_private_networks, loopback is refused, by address and after DNS', { skip }, async () => {
  const j = await runOn(strict, PRELUDE + `
print(tunnel("127.0.0.1", ${port}))
print(tunnel("localhost", ${port}))`);
  const lines = j.stdout.trim().split('\n');
  assert.equal(lines.length, 2, j.stdout + j.stderr);
  for (const l of lines) assert.match(l, /^HTTP\/1\.1 403 .*private/, l);
});

test('bytes past max_bytes cut the connection', { skip }, async () => {
  // A POST of 512 KiB through a tunnel: the upstream answers only once it has read all of it, so an answer means the
  // cap (64 KiB) did not hold, and a cut connection that it did.
  const body = (size) => PRELUDE + `
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT 127.0.0.1:${port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
assert b" 200 " in s.recv(4096)
s.sendall(b"POST /big HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\nContent-Length: ${size}\\r\\n\\r\\n")
sent = 0
try:
    while sent < ${size}:
        s.sendall(b"x" * 8192); sent += 8192
    answer = b""
    while True:
        c = s.recv(65536)
        if not c: break
        answer += c
    print("answered after", sent, answer.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip() or "nothing")
except OSError as e:
    print("cut after", sent)`;
  let j = await runOn(open, body(32768));
  assert.equal(j.stdout, 'answered after 32768 hello /big 32768\n', j.stdout + j.stderr); // under the cap: through
  j = await runOn(open, body(524288));
  assert.match(j.stdout, /^(cut after \d+|answered after \d+ nothing)$/m, j.stdout + j.stderr);
  assert.ok(j.egress.bytes_out <= 64 * 1024 + 65536, JSON.stringify(j.egress));
});

test('egress is counted in metrics', { skip }, async () => {
  const text = await (await open.opsFetch('/metrics')).text();
  const v = (name) => Number((text.split('\n').find((l) => l.startsWith(name + ' ')) || ' 0').split(' ').pop());
  assert.ok(v('agentd_sandbox_egress_connections_total{outcome="allowed"}') >= 2, text);
  assert.ok(v('agentd_sandbox_egress_connections_total{outcome="refused"}') >= 4, text);
  assert.ok(v('agentd_sandbox_egress_bytes_total{direction="in"}') > 0, text);
});

// One run of agent whose model asks for code_exec with the code (and, from the model, a "network" it may not set).
async function agentCode(d, agent, code) {
  const args = { language: 'python', code, network: 'egress' };
  const r = await d.fetch(`/v1/agents/${agent}/runs`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input: `CALL code_exec ${JSON.stringify(args)}\n---\ndone`, wait: true }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  const calls = body.steps.filter((s) => s.type === 'tool_call');
  assert.equal(calls.length, 1, JSON.stringify(body.steps));
  return JSON.parse(calls[0].result);
}

test('an agent with code_network: egress reaches the outside from code_exec; the model cannot ask for it', { skip }, async () => {
  const code = PRELUDE + `print(PROXY or "no proxy")\nprint(via_proxy("http://127.0.0.1:${port}/agent") if PROXY else direct("127.0.0.1", ${port}))`;
  const on = await agentCode(open, 'online', code);
  assert.equal(on.stdout, `http://127.0.0.1:3128\n200 hello /agent\n`, JSON.stringify(on));
  const off = await agentCode(open, 'offline', code);
  assert.match(off.stdout, /^no proxy\nrefused errno 1\n$/, JSON.stringify(off)); // AF_INET denied (EPERM)
});

test('network "egress" on the command line: agentd sandbox run --net egress, the default policy', { skip }, async () => {
  const r = spawnSync(BIN, ['sandbox', 'run', '--uid-base', String(UID_BASE + 64), '--uid-count', '4', '--net', 'egress',
    '--lang', 'python'], { input: PRELUDE + `print(tunnel("127.0.0.1", 443))`, encoding: 'utf8',
    env: { ...process.env, ...SAN_ENV }, timeout: 60000 });
  const j = JSON.parse(r.stdout);
  assert.equal(j.reason, 'exit', r.stdout + r.stderr);
  assert.match(j.stdout, /^HTTP\/1\.1 403 .*private/, j.stdout); // public addresses only
  assert.equal(j.egress.refused, 1);
});

test('agentd sandbox run --daemon URL --net egress asks the daemon for it, under the daemon\'s policy', { skip }, async () => {
  // Not spawnSync: the outside (the upstream) is served by this process's own loop.
  const cli = (d) => new Promise((resolve) => {
    const c = spawn(BIN, ['sandbox', 'run', '--daemon', d.url, '--net', 'egress', '--lang', 'python'],
      { env: { ...process.env, ...SAN_ENV } });
    let stdout = '', stderr = '';
    c.stdout.on('data', (b) => { stdout += b; });
    c.stderr.on('data', (b) => { stderr += b; });
    c.on('close', (status) => resolve({ status, stdout, stderr }));
    c.stdin.end(PRELUDE + `print(tunnel("127.0.0.1", ${port}, b"GET /cli HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n").split("\\r\\n")[0])`);
  });
  let r = await cli(open);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).stdout, 'HTTP/1.1 200 Connection established | HTTP/1.1 200 OK\n', r.stdout);
  r = await cli(strict); // the same request, refused by the other daemon's policy (public addresses only)
  assert.equal(r.status, 0, r.stderr);
  assert.match(JSON.parse(r.stdout).stdout, /^HTTP\/1\.1 403 /);
});
