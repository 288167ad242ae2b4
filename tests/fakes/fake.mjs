// Fake upstream LLM providers that speak the real wire formats and misbehave on command. See README.md.
//
//   import { startFake } from '../fakes/fake.mjs';
//   const f = await startFake({ provider: 'openai' });      // or 'azure' | 'anthropic' | 'gemini' | 'bedrock'
//                                                           //    | 'openai-compatible' | 'all'
//   f.url, f.port, f.provider, f.keys, f.urls.openai ...
//   f.script([{ status: 429, retryAfter: 2 }, { reset: true }]);   // consumed one per API request
//   f.setDefault({ chunkIntervalMs: 5 });                           // used when the queue is empty
//   f.requests                                                      // every API request received
//   f.reset(); await f.close();
//
// Standalone (benchmarks, out-of-process tests):
//   node tests/fakes/fake.mjs --provider openai --port 9101 [--latency-ms 50] [--chunks N] [--chunk-interval-ms M]
//        [--ttft-ms T] [--instant] [--bench] [--host 127.0.0.1]
// prints {"listening":"127.0.0.1:9101"} once ready. Control: POST /__fake/script, POST /__fake/default,
// POST /__fake/reset, GET /__fake/requests.
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import * as openai from './providers/openai.mjs';
import * as anthropic from './providers/anthropic.mjs';
import * as gemini from './providers/gemini.mjs';
import * as bedrock from './providers/bedrock.mjs';
import * as vertex from './providers/vertex.mjs';
import { malformedJson } from './content.mjs';

export { makeReply, countWords, inputTokens, embedding, malformedJson, IMAGE_PLACEHOLDER } from './content.mjs';
export { encodeMessage, decodeMessages, crc32 } from './eventstream.mjs';
export { signSigV4, verifySigV4 } from './sigv4.mjs';

export const PROVIDERS = ['openai', 'azure', 'anthropic', 'gemini', 'bedrock', 'openai-compatible', 'vertex'];

export const FAKE_KEYS = Object.freeze({
  openai: 'sk-fake-openai-0123456789abcdef',
  azure: 'fake-azure-key-0123456789abcdef',
  anthropic: 'sk-ant-fake-0123456789abcdef',
  gemini: 'AIzaFakeGeminiKey0123456789abcdef',
  // Not frozen: the AWS SDK annotates the credentials object it is given.
  bedrock: { accessKeyId: 'AKIAFAKEEXAMPLE00000', secretAccessKey: 'fakeSecretAccessKey/EXAMPLE+0123456789ab' },
  compat: null, // openai-compatible: no key required unless one is configured
  vertex: 'ya29.fake-vertex-access-token', // an OAuth access token; or a function (token) => bool
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Per-request context handed to the provider modules.
class Ctx {
  constructor(fake, req, res, route, body, behavior) {
    this.fake = fake;
    this.opts = fake.opts;
    this.req = req;
    this.res = res;
    this.provider = route.provider;
    this.op = route.op;
    this.params = route.params;
    this.path = route.path;
    this.rawQuery = route.rawQuery;
    this.query = route.query;
    this.body = body;
    this.behavior = behavior;
    this.headers = req.headers;
    this.closed = false;
    res.on('close', () => { this.closed = true; });
    this.skipAuth = false;
    this._json = undefined;
    this._jsonParsed = false;
  }

  // Parsed body, or throws SyntaxError.
  json() {
    if (!this._jsonParsed) {
      this._jsonParsed = true;
      this._json = JSON.parse(this.body.toString('utf8'));
    }
    return this._json;
  }

  send(status, headers, body) {
    if (this.res.headersSent || this.closed) return;
    const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body || Buffer.alloc(0);
    const h = { ...headers, 'content-length': buf.length };
    if (this.behavior.headers) Object.assign(h, this.behavior.headers);
    this.res.writeHead(status, h);
    if (this.behavior.resetMidBody) {
      // the head and half the body (its content-length promises all of it), then the connection drops
      this.res.write(buf.subarray(0, Math.floor(buf.length / 2)));
      setImmediate(() => this.res.socket && this.res.socket.destroy());
      return;
    }
    this.res.end(buf);
  }

  sendJson(status, obj, headers = {}, contentType = 'application/json') {
    const body = this.behavior.malformed && status < 400 ? malformedJson(JSON.stringify(obj)) : JSON.stringify(obj);
    this.send(status, { 'content-type': contentType, ...headers }, body);
  }

  // Writes a streaming response. s = {
  //   status, headers, events: [string|Buffer], terminalFrom: index of the first terminal event,
  //   errorEvent(): string|Buffer (provider's mid-stream error), malformedEvent(): string|Buffer }
  // Behaviours: ttftMs (before the first event), chunkIntervalMs (between events), truncate (true: end cleanly
  // before the terminal events; 'reset': destroy the socket there), midStreamError, malformed.
  async stream(s) {
    const b = this.behavior;
    const res = this.res;
    const headers = { ...s.headers };
    if (b.headers) Object.assign(headers, b.headers);
    res.writeHead(s.status || 200, headers);
    const ttft = b.ttftMs ?? this.opts.ttftMs ?? 0;
    const gap = b.chunkIntervalMs ?? this.opts.chunkIntervalMs ?? 0;
    let events = s.events;
    let tail = null;
    let end = 'end';
    const cut = Math.max(1, Math.min(s.terminalFrom, Math.ceil(s.terminalFrom / 2)));
    if (b.midStreamError) { events = events.slice(0, cut); tail = s.errorEvent(); }
    else if (b.malformed) { events = events.slice(0, cut); tail = s.malformedEvent(); }
    else if (b.truncate) { events = events.slice(0, cut); if (b.truncate === 'reset') end = 'destroy'; }
    else if (b.hangMidStream) { events = events.slice(0, cut); end = 'hang'; }
    if (tail !== null) events = events.concat([tail]);
    if (!ttft && !gap) {
      res.cork();
      for (const e of events) res.write(e);
      res.uncork();
    } else {
      if (res.flushHeaders) res.flushHeaders();
      for (let i = 0; i < events.length; i++) {
        const wait = i === 0 ? ttft : gap;
        if (wait) await sleep(wait);
        if (this.closed) return;
        res.write(events[i]);
      }
    }
    if (end === 'hang') {
      // half the events went out; the connection stays open and silent until the fake closes
      this.fake.hung.add(res);
      res.on('close', () => this.fake.hung.delete(res));
    } else if (end === 'destroy') {
      // Let the written bytes leave before the socket goes.
      res.once('drain', () => {});
      setImmediate(() => res.socket && res.socket.destroy());
    } else {
      res.end();
    }
  }
}


function parseQuery(raw) {
  const q = {};
  if (!raw) return q;
  for (const [k, v] of new URLSearchParams(raw)) {
    if (k in q) q[k] = [].concat(q[k], v);
    else q[k] = v;
  }
  return q;
}

class Fake {
  constructor(opts) {
    this.opts = {
      provider: 'all',
      host: '127.0.0.1',
      port: 0,
      chunks: 4,
      region: 'us-east-1',
      record: true,
      maxRecorded: 10000,
      compatFlavor: 'vllm',
      ...opts,
    };
    const p = this.opts.provider;
    if (p !== 'all' && !PROVIDERS.includes(p)) throw new Error(`unknown provider ${p}`);
    if (this.opts.compatBasePath === undefined) this.opts.compatBasePath = p === 'all' ? '/compat/v1' : '/v1';
    const k = opts.keys || {};
    this.keys = {
      openai: k.openai !== undefined ? k.openai : FAKE_KEYS.openai,
      azure: k.azure !== undefined ? k.azure : FAKE_KEYS.azure,
      anthropic: k.anthropic !== undefined ? k.anthropic : FAKE_KEYS.anthropic,
      gemini: k.gemini !== undefined ? k.gemini : FAKE_KEYS.gemini,
      bedrock: k.bedrock !== undefined ? k.bedrock : { accessKeyId: FAKE_KEYS.bedrock.accessKeyId, secretAccessKey: FAKE_KEYS.bedrock.secretAccessKey },
      bedrockApiKey: k.bedrockApiKey,
      compat: k.compat !== undefined ? k.compat : FAKE_KEYS.compat,
      vertex: k.vertex !== undefined ? k.vertex : FAKE_KEYS.vertex,
    };
    this.opts.keys = this.keys;
    this.requests = [];
    this.billing = []; // what the fake charged, one entry per completion it produced (providers/openai.mjs)
    this.queue = [];
    this.defaultBehavior = {};
    this.hung = new Set();
    this.cannedCache = new Map();
    this.received = 0; // API requests since the last reset (counted even when not recorded)
    this.waiters = [];
    this.server = http.createServer({ keepAlive: true, noDelay: true }, (req, res) => this.onRequest(req, res));
    this.server.keepAliveTimeout = 120_000;
    this.server.headersTimeout = 125_000;
    this.server.requestTimeout = 0;
    this.server.maxRequestsPerSocket = 0;
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        this.port = a.port;
        const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
        this.url = `http://${host}:${a.port}`;
        resolve();
      });
    });
  }

  route(method, path, rawQuery, headers) {
    const p = this.opts.provider;
    const on = (name) => p === 'all' || p === name;
    let r = null;
    if (on('vertex') && path.includes('/projects/')) r = vertex.route(method, path);
    if (!r && on('openai-compatible') && path.startsWith(this.opts.compatBasePath + '/')) {
      r = openai.route(method, path.slice(this.opts.compatBasePath.length), 'openai-compatible');
    }
    if (!r && on('azure') && path.startsWith('/openai/')) r = openai.route(method, path, 'azure');
    if (!r && on('anthropic') && path.startsWith('/v1/')) {
      // In 'all' mode /v1/models is OpenAI's unless the request carries Anthropic's headers.
      const anth = p === 'anthropic' || path.startsWith('/v1/messages') || headers['anthropic-version'] !== undefined || headers['x-api-key'] !== undefined;
      if (anth) r = anthropic.route(method, path);
    }
    if (!r && on('openai') && path.startsWith('/v1/')) r = openai.route(method, path.slice(3), 'openai');
    if (!r && on('gemini') && (path.startsWith('/v1beta/') || path.startsWith('/v1/'))) r = gemini.route(method, path);
    if (!r && on('bedrock') && path.startsWith('/model/')) r = bedrock.route(method, path);
    if (!r) return null;
    r.path = path;
    r.rawQuery = rawQuery;
    r.query = parseQuery(rawQuery);
    return r;
  }

  nextBehavior(route) {
    for (let i = 0; i < this.queue.length; i++) {
      const b = this.queue[i];
      if (b.match && !matches(b.match, route)) continue;
      if (b.times > 1) b.times--;
      else this.queue.splice(i, 1);
      const { match, times, ...rest } = b;
      return { ...this.defaultBehavior, ...rest };
    }
    return this.defaultBehavior;
  }

  onRequest(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      this.handle(req, res, body).catch((e) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`fake internal error: ${e.stack || e}`);
        } else res.destroy();
        if (!this.opts.quiet) console.error('fake: handler error', e);
      });
    });
  }

  async handle(req, res, body) {
    const url = req.url;
    const qi = url.indexOf('?');
    const path = qi < 0 ? url : url.slice(0, qi);
    const rawQuery = qi < 0 ? '' : url.slice(qi + 1);
    if (path.startsWith('/__fake/')) return this.control(req, res, path, body);
    const route = this.route(req.method, path, rawQuery, req.headers);
    if (!route) return notFound(this.opts.provider, req, res, path);
    if (this.opts.record) this.record(req, route, body);
    this.received++;
    if (this.waiters.length) this.waiters = this.waiters.filter((w) => !(this.received >= w.n && (w.resolve(), true)));
    const b = this.nextBehavior(route);
    if (b.reset) { req.socket.destroy(); return; }
    if (b.hang) {
      this.hung.add(res);
      res.on('close', () => this.hung.delete(res));
      return;
    }
    const delay = (b.delayMs || 0) + (this.opts.latencyMs || 0);
    if (delay) await sleep(delay);
    const ctx = new Ctx(this, req, res, route, body, b);
    if (b.body !== undefined) {
      const buf = typeof b.body === 'string' || Buffer.isBuffer(b.body) ? b.body : JSON.stringify(b.body);
      const h = { 'content-type': typeof b.body === 'object' && !Buffer.isBuffer(b.body) ? 'application/json' : 'text/plain', ...(b.headers || {}) };
      ctx.behavior = {};
      ctx.send(b.status || 200, h, buf);
      return;
    }
    if (this.opts.instant && b === this.defaultBehavior && route.op !== 'embeddings' && route.op !== 'embedContent'
      && route.op !== 'batchEmbedContents') {
      const canned = await this.canned(route, body);
      if (canned) {
        res.writeHead(canned.status, canned.headers);
        res.end(canned.body);
        return;
      }
    }
    await MODULES[route.provider].handle(ctx);
  }

  // Instant mode: a fixed small completion per (provider, operation, streaming), computed once by running the real
  // handler on a canned request and replayed byte for byte. No auth, no parsing, no per-request allocation beyond
  // the response write.
  async canned(route, body) {
    let stream = route.op === 'streamGenerateContent' || route.op === 'converseStream';
    if (!stream && (route.op === 'chat' || route.op === 'messages')) stream = STREAM_RE.test(body.toString('latin1', 0, Math.min(body.length, 65536)));
    const key = `${route.provider}|${route.op}|${stream}|${route.query.alt === 'sse'}`;
    let c = this.cannedCache.get(key);
    if (c !== undefined) return c;
    c = await captureCanned(this, route, stream);
    this.cannedCache.set(key, c);
    return c;
  }

  record(req, route, body) {
    const raw = body.toString('utf8');
    let json;
    if (raw.length && (req.headers['content-type'] || '').includes('json')) {
      try { json = JSON.parse(raw); } catch { json = undefined; }
    }
    if (this.requests.length >= this.opts.maxRecorded) this.requests.shift();
    this.requests.push({
      provider: route.provider,
      op: route.op,
      method: req.method,
      url: req.url,
      path: route.path,
      query: route.query,
      headers: { ...req.headers },
      rawHeaders: req.rawHeaders.slice(),
      body: raw,
      rawBody: body,
      json,
      time: Date.now(),
    });
  }

  async control(req, res, path, body) {
    const reply = (status, obj) => {
      const s = JSON.stringify(obj);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
      res.end(s);
    };
    let j;
    if (req.method === 'POST' && body.length) {
      try { j = JSON.parse(body.toString('utf8')); } catch (e) { return reply(400, { error: `bad JSON: ${e.message}` }); }
    }
    if (req.method === 'POST' && path === '/__fake/script') {
      const list = Array.isArray(j) ? j : j && Array.isArray(j.behaviors) ? j.behaviors : null;
      if (!list) return reply(400, { error: 'expected an array of behaviours or {"behaviors":[...]}' });
      this.script(list);
      return reply(200, { queued: this.queue.length });
    }
    if (req.method === 'POST' && path === '/__fake/default') { this.setDefault(j || {}); return reply(200, { ok: true }); }
    if (req.method === 'POST' && path === '/__fake/reset') { this.reset(); return reply(200, { ok: true }); }
    if (req.method === 'GET' && path === '/__fake/requests') {
      return reply(200, this.requests.map(({ rawBody, rawHeaders, ...r }) => r));
    }
    if (req.method === 'GET' && path === '/__fake/health') return reply(200, { ok: true, provider: this.opts.provider });
    return reply(404, { error: `no control endpoint ${req.method} ${path}` });
  }

  script(list) {
    for (const b of list) this.queue.push({ ...b });
  }

  setDefault(b) { this.defaultBehavior = { ...(b || {}) }; }

  // Resolves once `n` API requests have arrived since the last reset.
  waitForRequests(n, timeoutMs = 10000) {
    if (this.received >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { n, resolve: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`timed out waiting for ${n} requests (got ${this.received})`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  reset() {
    this.received = 0;
    this.queue.length = 0;
    this.requests.length = 0;
    this.billing.length = 0;
    this.defaultBehavior = {};
  }

  close() {
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

const MODULES = { openai, azure: openai, 'openai-compatible': openai, anthropic, gemini, bedrock, vertex };
const STREAM_RE = /"stream"\s*:\s*true/;

const CANNED_REQUESTS = {
  chat: (stream) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }], ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}) }),
  messages: (stream) => ({ model: 'claude-haiku-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hello' }], ...(stream ? { stream: true } : {}) }),
  generateContent: () => ({ contents: [{ role: 'user', parts: [{ text: 'hello' }] }] }),
  streamGenerateContent: () => ({ contents: [{ role: 'user', parts: [{ text: 'hello' }] }] }),
  converse: () => ({ messages: [{ role: 'user', content: [{ text: 'hello' }] }] }),
  converseStream: () => ({ messages: [{ role: 'user', content: [{ text: 'hello' }] }] }),
};

// Runs a provider handler against an in-memory response and returns { status, headers, body } (null if the
// operation has no canned form).
async function captureCanned(fake, route, stream) {
  const mk = CANNED_REQUESTS[route.op];
  if (!mk) return null;
  const json = mk(stream);
  const out = { status: 0, headers: {}, parts: [] };
  const res = {
    headersSent: false,
    socket: null,
    on() {}, once() {}, cork() {}, uncork() {}, flushHeaders() {},
    setHeader(k, v) { out.headers[k] = v; },
    writeHead(status, headers) { out.status = status; Object.assign(out.headers, headers); this.headersSent = true; },
    write(b) { out.parts.push(Buffer.from(b)); return true; },
    end(b) { if (b) out.parts.push(Buffer.from(b)); },
  };
  const req = { headers: {}, rawHeaders: [], method: 'POST' };
  const body = Buffer.from(JSON.stringify(json));
  const ctx = new Ctx({ opts: { ...fake.opts, chunkIntervalMs: 0, ttftMs: 0 } }, req, res, route, body, {});
  ctx.skipAuth = true;
  await MODULES[route.provider].handle(ctx);
  const buf = Buffer.concat(out.parts);
  const headers = { ...out.headers };
  delete headers['content-length'];
  if (!stream) headers['content-length'] = buf.length;
  return { status: out.status, headers, body: buf };
}

function matches(m, route) {
  if (m.provider && m.provider !== route.provider) return false;
  if (m.op && m.op !== route.op) return false;
  if (m.path) {
    if (m.path instanceof RegExp ? !m.path.test(route.path) : !route.path.includes(m.path)) return false;
  }
  return true;
}

function notFound(provider, req, res, path) {
  let body;
  let ct = 'application/json';
  switch (provider) {
    case 'anthropic':
      body = JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: 'Not Found' } });
      break;
    case 'gemini':
    case 'vertex':
      body = JSON.stringify({ error: { code: 404, message: `Method not found.`, status: 'NOT_FOUND' } }, null, 2) + '\n';
      ct = 'application/json; charset=UTF-8';
      break;
    case 'bedrock':
      body = JSON.stringify({ message: `Unable to determine service/operation name to be authorized` });
      res.setHeader('x-amzn-ErrorType', 'UnknownOperationException');
      break;
    default:
      body = JSON.stringify({ error: { message: `Invalid URL (${req.method} ${path})`, type: 'invalid_request_error', param: null, code: null } });
  }
  res.writeHead(404, { 'content-type': ct, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function publicApi(f) {
  const u = f.url;
  return {
    url: u,
    port: f.port,
    host: f.opts.host,
    provider: f.opts.provider,
    keys: f.keys,
    region: f.opts.region,
    // Base URLs as each provider's SDK expects them.
    urls: {
      openai: u + '/v1',
      azure: u,
      anthropic: u,
      gemini: u,
      bedrock: u,
      vertex: u,
      'openai-compatible': u + f.opts.compatBasePath,
    },
    requests: f.requests,
    billing: f.billing,
    script: (list) => { f.script(list); },
    setDefault: (b) => { f.setDefault(b); },
    reset: () => { f.reset(); },
    pending: () => f.queue.length,
    received: () => f.received,
    waitForRequests: (n, timeoutMs) => f.waitForRequests(n, timeoutMs),
    close: () => f.close(),
    server: f.server,
  };
}

export async function startFake(opts = {}) {
  const f = new Fake(opts);
  await f.listen();
  return publicApi(f);
}

function parseArgs(argv) {
  const o = {};
  const num = (v, name) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name}: expected a non-negative number, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--provider': o.provider = next(); break;
      case '--port': o.port = num(next(), 'port'); break;
      case '--host': o.host = next(); break;
      case '--latency-ms': o.latencyMs = num(next(), 'latency-ms'); break;
      case '--ttft-ms': o.ttftMs = num(next(), 'ttft-ms'); break;
      case '--chunks': o.chunks = num(next(), 'chunks'); break;
      case '--chunk-interval-ms': o.chunkIntervalMs = num(next(), 'chunk-interval-ms'); break;
      case '--region': o.region = next(); break;
      case '--vertex-project': o.vertexProject = next(); break;
      case '--compat-base-path': o.compatBasePath = next(); break;
      case '--compat-flavor': o.compatFlavor = next(); break;
      case '--instant': o.instant = true; break;
      case '--bench': o.record = false; o.quiet = true; break;
      case '--no-record': o.record = false; break;
      case '-h': case '--help':
        process.stdout.write('usage: node fake.mjs --provider openai|azure|anthropic|gemini|bedrock|openai-compatible|all '
          + '[--port N] [--host H] [--latency-ms N] [--ttft-ms N] [--chunks N] [--chunk-interval-ms N] [--instant] [--bench] '
          + '[--no-record] [--region R] [--compat-base-path P] [--compat-flavor vllm|ollama|llamacpp]\n');
        process.exit(0);
        break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  return o;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let o;
  try { o = parseArgs(process.argv.slice(2)); } catch (e) { console.error(e.message); process.exit(2); }
  const f = await startFake(o);
  process.stdout.write(JSON.stringify({ listening: `${f.host}:${f.port}` }) + '\n');
  const stop = () => { f.close().then(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
