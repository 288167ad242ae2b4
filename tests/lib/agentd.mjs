// Test harness: start the real agentd binary on free ports with an inline configuration, talk to it, stop it.
//
//   const d = await startAgentd({ config: 'server:\n  workers: 2\n', env: {...}, args: [...] });
//   const r = await d.fetch('/v1/models');          // API listener
//   const m = await d.opsFetch('/metrics');         // ops listener
//   await d.stop();                                  // SIGTERM, waits for exit, returns { code, signal }
//
// Ports: agentd is started with --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 and reports the ports it bound
// in its "listening" log line, so there is no race on picking free ports.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

import { resolve as resolvePath } from 'node:path';
export const BIN = resolvePath(process.env.AGENTD_BIN || new URL('../../build-asan/agentd', import.meta.url).pathname);
export const SRC = process.env.AGENTD_SRC || new URL('../..', import.meta.url).pathname;

export async function startAgentd(opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-test-'));
  const args = ['serve'];
  let configPath = null;
  if (opts.config !== undefined) {
    configPath = join(dir, 'agentd.yaml');
    writeFileSync(configPath, opts.config);
    args.push('--config', configPath);
  }
  if (!opts.noDefaultListen) args.push('--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0');
  if (!opts.noDataDir) args.push('--data-dir', join(dir, 'data'));
  args.push(...(opts.args || []));
  const env = { ...(opts.inheritEnv === false ? {} : process.env), ...(opts.env || {}) };
  // Tests must not pick up a developer's real provider keys.
  for (const k of ['OPENAI_API_KEY', 'ANTHROPIC_API_KEY', 'AZURE_OPENAI_API_KEY', 'AZURE_OPENAI_ENDPOINT',
    'GEMINI_API_KEY', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_REGION',
    // nor a cloud identity of the machine the tests run on (a CI pod on EKS / AKS): auth: auto would use it
    'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN', 'AWS_CONTAINER_CREDENTIALS_FULL_URI',
    'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', 'AZURE_FEDERATED_TOKEN_FILE', 'AZURE_CLIENT_ID', 'AZURE_TENANT_ID']) {
    if (!(opts.env && k in opts.env)) delete env[k];
  }
  // Nor a proxy from the environment: upstream calls to fakes on 127.0.0.1 must go direct unless a test asks.
  for (const k of ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY', 'no_proxy', 'NO_PROXY']) {
    if (!(opts.env && k in opts.env)) delete env[k];
  }
  if (!env.ASAN_OPTIONS) env.ASAN_OPTIONS = 'detect_leaks=1:abort_on_error=0:exitcode=86';
  if (!env.UBSAN_OPTIONS) env.UBSAN_OPTIONS = 'print_stacktrace=1:halt_on_error=1:exitcode=87';
  const child = spawn(opts.bin || BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const d = new Agentd(child, dir, configPath);
  await d._waitListening(opts.startTimeoutMs || 15000);
  return d;
}

class Agentd {
  constructor(child, dir, configPath) {
    this.child = child;
    this.dir = dir;
    this.configPath = configPath;
    this.logs = [];       // parsed JSON log lines
    this.rawStderr = '';
    this.stdout = '';
    this._waiters = [];
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
    });
    let pending = '';
    child.stderr.on('data', (chunk) => {
      const s = chunk.toString();
      this.rawStderr += s;
      pending += s;
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        let obj = null;
        try { obj = JSON.parse(line); } catch { obj = { _raw: line }; }
        this.logs.push(obj);
        this._waiters = this._waiters.filter((w) => !(w.pred(obj) && (w.resolve(obj), true)));
      }
    });
    child.stdout.on('data', (c) => { this.stdout += c.toString(); });
  }

  // Resolves with the first log line (past or future) for which pred is true.
  waitLog(pred, timeoutMs = 10000) {
    const found = this.logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (o) => { clearTimeout(t); resolve(o); } };
      const t = setTimeout(() => {
        this._waiters = this._waiters.filter((x) => x !== w);
        reject(new Error(`timed out waiting for log line; stderr so far:\n${this.rawStderr.slice(-4000)}`));
      }, timeoutMs);
      this._waiters.push(w);
    });
  }

  async _waitListening(timeoutMs) {
    const early = this.exited.then((r) => { throw new Error(`agentd exited before listening (${JSON.stringify(r)}):\n${this.rawStderr}`); });
    const line = await Promise.race([this.waitLog((l) => l.msg === 'listening', timeoutMs), early]);
    this.apiAddr = line.api;
    this.opsAddr = line.ops;
    const [h, p] = splitAddr(line.api);
    const [oh, op] = splitAddr(line.ops);
    this.host = h; this.port = p; this.opsHost = oh; this.opsPort = op;
    this.url = `http://${h}:${p}`;
    this.opsUrl = `http://${oh}:${op}`;
  }

  fetch(path, init) { return fetch(this.url + path, init); }
  opsFetch(path, init) { return fetch(this.opsUrl + path, init); }

  // Sends raw bytes on a new TCP connection to the API port; see rawExchange.
  raw(bytes, opts = {}) { return rawExchange(this.host, opts.ops ? this.opsPort : this.port, bytes, opts); }

  signal(sig) { this.child.kill(sig); }

  async stop(sig = 'SIGTERM', timeoutMs = 15000) {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const r = await this.exited;
    clearTimeout(t);
    rmSync(this.dir, { recursive: true, force: true });
    return r;
  }
}

export function splitAddr(a) {
  const i = a.lastIndexOf(':');
  return [a.slice(0, i).replace(/^\[|\]$/g, ''), Number(a.slice(i + 1))];
}

// Opens a TCP connection, writes `bytes` (a string, Buffer, or array of chunks written with `gapMs` between them),
// and resolves with { data, closed, error } once the peer closes, or after `idleMs` without new data, or when
// `until(data)` returns true.
export function rawExchange(host, port, bytes, opts = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port, noDelay: true });
    let data = Buffer.alloc(0);
    let done = false;
    let idleTimer = null;
    const finish = (closed, error) => {
      if (done) return;
      done = true;
      clearTimeout(idleTimer);
      clearTimeout(hardTimer);
      sock.destroy();
      resolve({ data: data.toString('latin1'), buf: data, closed, error });
    };
    const armIdle = () => {
      clearTimeout(idleTimer);
      if (opts.idleMs) idleTimer = setTimeout(() => finish(false, null), opts.idleMs);
    };
    const hardTimer = setTimeout(() => finish(false, 'timeout'), opts.timeoutMs || 20000);
    sock.on('data', (c) => {
      data = Buffer.concat([data, c]);
      if (opts.until && opts.until(data.toString('latin1'))) finish(false, null);
      else armIdle();
    });
    sock.on('end', () => finish(true, null));
    sock.on('close', () => finish(true, null));
    sock.on('error', (e) => finish(true, e.code || String(e)));
    sock.on('connect', async () => {
      armIdle();
      const chunks = Array.isArray(bytes) ? bytes : [bytes];
      for (const c of chunks) {
        if (done) return;
        sock.write(c);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      if (opts.halfClose) sock.end();
    });
  });
}

// Parses one or more HTTP/1.1 responses out of raw bytes (Content-Length and chunked bodies).
export function parseResponses(raw) {
  const out = [];
  let s = raw;
  while (s.length) {
    const he = s.indexOf('\r\n\r\n');
    if (he < 0) break;
    const head = s.slice(0, he).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
    if (!m) break;
    const headers = {};
    for (const h of head.slice(1)) {
      const c = h.indexOf(':');
      headers[h.slice(0, c).trim().toLowerCase()] = h.slice(c + 1).trim();
    }
    let rest = s.slice(he + 4);
    let body = '';
    const status = Number(m[1]);
    if (status === 100 || status === 101 || status === 204 || status === 304) {
      // no body
    } else if ((headers['transfer-encoding'] || '').toLowerCase() === 'chunked') {
      for (;;) {
        const le = rest.indexOf('\r\n');
        if (le < 0) { rest = ''; break; }
        const size = parseInt(rest.slice(0, le), 16);
        rest = rest.slice(le + 2);
        if (size === 0) { const te = rest.indexOf('\r\n'); rest = rest.slice(te + 2); break; }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = rest.slice(0, n);
      rest = rest.slice(n);
    } else {
      body = rest;
      rest = '';
    }
    out.push({ status, headers, body });
    s = rest;
  }
  return out;
}

export async function withAgentd(opts, fn) {
  const d = await startAgentd(opts);
  try {
    return await fn(d);
  } finally {
    await d.stop();
  }
}
