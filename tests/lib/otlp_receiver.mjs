// An OTLP/HTTP receiver for tests: decodes what it is sent with the protobufjs code generated from the official
// opentelemetry-proto definitions (shipped in @opentelemetry/otlp-transformer 0.212.0), for protobuf and for JSON
// (hex ids turned to base64, then fromObject; unknown or misspelt fields fail the round trip). Independent of
// agentd's encoder. Scriptable answers (503 / 429 with Retry-After) for the retry tests.
import http from 'node:http';
import https from 'node:https';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js');
const P = root.opentelemetry.proto;
const TYPES = {
  '/v1/traces': P.collector.trace.v1.ExportTraceServiceRequest,
  '/v1/metrics': P.collector.metrics.v1.ExportMetricsServiceRequest,
  '/v1/logs': P.collector.logs.v1.ExportLogsServiceRequest,
};
const ID_KEYS = new Set(['traceId', 'spanId', 'parentSpanId']);
const hexToB64 = (h) => Buffer.from(h, 'hex').toString('base64');
const b64ToHex = (b) => Buffer.from(b, 'base64').toString('hex');

function mapIds(v, f) {
  if (Array.isArray(v)) return v.map((x) => mapIds(x, f));
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = ID_KEYS.has(k) && typeof x === 'string' ? f(x) : mapIds(x, f);
    return o;
  }
  return v;
}

// Checks OTLP/JSON rules the generic proto3 JSON reader lets through, then that the document survives a round
// trip through the official schema unchanged. Returns a list of problems.
function checkJson(Type, doc) {
  const problems = [];
  (function walk(v, path) {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${path}[${i}]`));
    if (!v || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v)) {
      if (k.includes('_')) problems.push(`${path}.${k}: snake_case key`);
      if (ID_KEYS.has(k) && !/^[0-9a-f]+$/.test(x)) problems.push(`${path}.${k}: not lowercase hex`);
      if (/UnixNano$|^intValue$|^count$/.test(k) && typeof x !== 'string') problems.push(`${path}.${k}: 64-bit not a string`);
      if ((k === 'kind' || k === 'code' || k === 'aggregationTemporality') && typeof x !== 'number') problems.push(`${path}.${k}: enum not a number`);
      walk(x, `${path}.${k}`);
    }
  })(doc, '$');
  const msg = Type.fromObject(mapIds(doc, hexToB64));
  const err = Type.verify(msg);
  if (err) problems.push(err);
  const back = mapIds(Type.toObject(msg, { longs: String, enums: Number, bytes: String }), b64ToHex);
  const norm = (v) => JSON.stringify(v, (k, x) => (typeof x === 'number' ? x : x));
  (function cmp(a, b, path) {
    if (a && typeof a === 'object') {
      for (const k of Object.keys(a)) {
        if (b === undefined || b === null || !(k in b)) { problems.push(`${path}.${k}: dropped by the schema`); continue; }
        cmp(a[k], b[k], `${path}.${k}`);
      }
    } else if (norm(a) !== norm(b) && String(a) !== String(b)) {
      problems.push(`${path}: ${JSON.stringify(a)} read back as ${JSON.stringify(b)}`);
    }
  })(doc, back, '$');
  return problems;
}

export async function startReceiver(opts = {}) {
  const r = {
    requests: [],        // { path, contentType, status, decoded (plain object, ids hex) }
    script: [...(opts.script || [])], // answers for the next requests: { status, retryAfter }
    defaultStatus: opts.status || 200,
    problems: [],
    _waiters: [],
  };
  // opts.tls = { key, cert }: an https receiver
  const handler = (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
      const Type = TYPES[req.url];
      const ct = req.headers['content-type'] || '';
      const step = r.script.length ? r.script.shift() : { status: r.defaultStatus };
      let decoded = null;
      if (Type) {
        try {
          if (ct === 'application/x-protobuf') {
            decoded = mapIds(Type.toObject(Type.decode(body), { longs: String, enums: Number, bytes: String }), b64ToHex);
          } else if (ct === 'application/json') {
            const doc = JSON.parse(body.toString('utf8'));
            const p = checkJson(Type, doc);
            if (p.length) r.problems.push(...p.map((x) => `${req.url}: ${x}`));
            decoded = doc;
          } else {
            r.problems.push(`${req.url}: content-type ${ct}`);
          }
        } catch (e) {
          r.problems.push(`${req.url}: ${e.message}`);
        }
      } else {
        r.problems.push(`unknown path ${req.url}`);
      }
      const entry = { path: req.url, contentType: ct, headers: req.headers, status: step.status, decoded };
      r.requests.push(entry);
      const headers = { 'content-type': ct || 'application/json' };
      if (step.retryAfter !== undefined) headers['retry-after'] = String(step.retryAfter);
      res.writeHead(step.status, headers);
      res.end(step.status === 200 && ct === 'application/json' ? '{}' : '');
      r._waiters = r._waiters.filter((w) => !(w.pred(r) && (w.resolve(), true)));
    });
  };
  r.server = opts.tls ? https.createServer(opts.tls, handler) : http.createServer(handler);
  await new Promise((ok) => r.server.listen(opts.port || 0, '127.0.0.1', ok));
  r.port = r.server.address().port;
  r.url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${r.port}`;
  // Every span accepted so far (status 200 answers only), with resource attributes flattened.
  r.spans = () => r.requests.filter((q) => q.path === '/v1/traces' && q.status === 200 && q.decoded)
    .flatMap((q) => (q.decoded.resourceSpans || []).flatMap((rs) => (rs.scopeSpans || []).flatMap((ss) =>
      (ss.spans || []).map((s) => ({ ...s, attrs: attrs(s.attributes), resource: attrs(rs.resource?.attributes) })))));
  r.metrics = () => {
    const last = r.requests.filter((q) => q.path === '/v1/metrics' && q.status === 200 && q.decoded).at(-1);
    if (!last) return [];
    return last.decoded.resourceMetrics.flatMap((rm) => (rm.scopeMetrics || []).flatMap((sm) => (sm.metrics || []).map((m) => ({ ...m, resource: attrs(rm.resource?.attributes) }))));
  };
  // Every log record accepted so far, with its attributes flattened and a JSON body parsed when it is one.
  r.logs = () => r.requests.filter((q) => q.path === '/v1/logs' && q.status === 200 && q.decoded)
    .flatMap((q) => (q.decoded.resourceLogs || []).flatMap((rl) => (rl.scopeLogs || []).flatMap((sl) =>
      (sl.logRecords || []).map((l) => {
        let line = null;
        try { line = JSON.parse(l.body?.stringValue); } catch { /* not a JSON line */ }
        return { ...l, attrs: attrs(l.attributes), line, resource: attrs(rl.resource?.attributes) };
      }))));
  r.waitFor = (pred, timeoutMs = 15000) => {
    if (pred(r)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => { r._waiters = r._waiters.filter((x) => x !== w); reject(new Error(`receiver: timed out; ${r.requests.length} requests, problems: ${r.problems.join('; ')}`)); }, timeoutMs);
      r._waiters.push(w);
    });
  };
  r.close = () => new Promise((ok) => { r.server.closeAllConnections?.(); r.server.close(ok); });
  return r;
}

// [{key, value:{stringValue|intValue|...}}] -> { key: plain value }
export function attrs(list) {
  const o = {};
  for (const kv of list || []) {
    const v = kv.value || {};
    if ('stringValue' in v) o[kv.key] = v.stringValue;
    else if ('intValue' in v) o[kv.key] = Number(v.intValue);
    else if ('doubleValue' in v) o[kv.key] = v.doubleValue;
    else if ('boolValue' in v) o[kv.key] = v.boolValue;
    else if ('arrayValue' in v) o[kv.key] = (v.arrayValue.values || []).map((x) => x.stringValue);
  }
  return o;
}
