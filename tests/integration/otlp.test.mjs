// OpenTelemetry over OTLP/HTTP (issue 10, items 1-4): spans and metrics decoded by a receiver built on the
// official OTLP protobuf definitions (tests/lib/otlp_receiver.mjs), W3C trace context in and out, the retry and
// drop rules (503, 429, receiver down), configuration errors naming the OTEL_* variable, and the seed's metrics
// on /metrics with exact bucket bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';
import { startReceiver } from '../lib/otlp_receiver.mjs';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

function config(oa) {
  return `server:\n  workers: 2\nmodels:\n  - name: gpt-test\n    provider: openai\n    model: gpt-4o-mini\n` +
    `    base_url: ${oa.urls.openai}\n    api_key_env: FAKE_OPENAI_KEY\n  - name: embed-test\n    embeddings: true\n` +
    `    provider: openai\n    model: text-embedding-3-small\n    base_url: ${oa.urls.openai}\n    api_key_env: FAKE_OPENAI_KEY\n`;
}

async function setup(env, recvOpts = {}) {
  const oa = await startFake({ provider: 'openai' });
  const rx = recvOpts.none ? null : await startReceiver(recvOpts);
  const d = await startAgentd({
    config: config(oa),
    env: {
      FAKE_OPENAI_KEY: FAKE_KEYS.openai,
      OTEL_EXPORTER_OTLP_ENDPOINT: rx ? rx.url : recvOpts.endpoint,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_METRIC_EXPORT_INTERVAL: '200',
      AGENTD_TELEMETRY_LOGS: 'false', // the tests that count requests see traces and metrics only
      ...env,
    },
  });
  return { oa, rx, d, async done() { const r = await d.stop(); await oa.close(); if (rx) await rx.close(); return r; } };
}

const chat = (d, headers = {}, body = {}) => d.fetch('/v1/chat/completions', {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'hello there' }], ...body }),
});

async function metricValue(d, name, labels) {
  const text = await (await d.opsFetch('/metrics')).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (labels && !labels.every((l) => line.includes(l))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

// Polls /metrics until fn(value) holds (the exporter thread's progress has no other outward event).
async function waitMetric(d, name, labels, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await metricValue(d, name, labels);
    if (fn(v)) return v;
    if (Date.now() > end) throw new Error(`${name}${JSON.stringify(labels)} stayed at ${v}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('protobuf: SERVER and CLIENT spans with the GenAI attributes, trace context in and out, resource', async () => {
  const s = await setup({ OTEL_SERVICE_NAME: 'agentd-test', ENVIRONMENT: 'staging', K8S_POD_NAME: 'pod-7',
                          K8S_NAMESPACE_NAME: 'llm', OTEL_RESOURCE_ATTRIBUTES: 'team=ml,service.name=ignored' });
  try {
    const res = await chat(s.d, { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'rojo=00f067aa0ba902b7',
                                  baggage: 'userId=alice,serverNode=DF%2028', 'x-agentd-workflow': 'triage' },
                           { max_tokens: 50, temperature: 0.25 });
    assert.equal(res.status, 200, await res.text());
    const tp = res.headers.get('traceparent');
    assert.match(tp, new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));
    const serverId = tp.split('-')[2];
    // the upstream got the trace, with the attempt span as its parent, and the client's tracestate
    const up = s.oa.requests.at(-1);
    const upTp = up.headers.traceparent;
    assert.match(upTp, new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));
    const attemptId = upTp.split('-')[2];
    assert.notEqual(attemptId, serverId);
    assert.equal(up.headers.tracestate, 'rojo=00f067aa0ba902b7');
    assert.equal(up.headers.baggage, 'userId=alice,serverNode=DF%2028'); // W3C baggage travels with the trace

    const emb = await s.d.fetch('/v1/embeddings', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'embed-test', input: 'hello' }) });
    assert.equal(emb.status, 200);
    const embTrace = emb.headers.get('traceparent').split('-')[1];

    await s.rx.waitFor((r) => r.spans().length >= 4);
    assert.deepEqual(s.rx.problems, []);
    const spans = s.rx.spans();
    const server = spans.find((x) => x.spanId === serverId);
    assert.ok(server, JSON.stringify(spans.map((x) => x.name)));
    assert.equal(server.name, 'POST /v1/chat/completions');
    assert.equal(server.kind, 2);
    assert.equal(server.traceId, TRACE);
    assert.equal(server.parentSpanId, PARENT);
    assert.equal(server.flags, 0x301); // sampled, parent is remote
    assert.equal(server.attrs['http.response.status_code'], 200);
    assert.equal(server.attrs['agent.workflow'], 'triage');
    assert.equal(server.attrs['agent.type'], 'gateway');
    assert.equal(typeof server.attrs['agentd.cost_usd'], 'number');
    const client = spans.find((x) => x.spanId === attemptId);
    assert.ok(client);
    assert.equal(client.name, 'chat gpt-4o-mini');
    assert.equal(client.kind, 3);
    assert.equal(client.parentSpanId, serverId);
    assert.equal(client.traceId, TRACE);
    const a = client.attrs;
    assert.equal(a['gen_ai.operation.name'], 'chat');
    assert.equal(a['gen_ai.provider.name'], 'openai');
    assert.equal(a['gen_ai.request.model'], 'gpt-4o-mini');
    assert.equal(a['gen_ai.request.max_tokens'], 50);
    assert.equal(a['gen_ai.request.temperature'], 0.25);
    if ('gen_ai.response.model' in a) assert.equal(typeof a['gen_ai.response.model'], 'string');
    assert.match(a['gen_ai.response.id'], /^chatcmpl-/);
    assert.deepEqual(a['gen_ai.response.finish_reasons'], ['stop']);
    assert.ok(a['gen_ai.usage.input_tokens'] > 0);
    assert.ok(a['gen_ai.usage.output_tokens'] > 0);
    assert.equal(a['server.address'], '127.0.0.1');
    assert.equal(a['error.type'], undefined);
    assert.equal(a['gen_ai.input.messages'], undefined, 'no content unless capture_content');
    assert.ok(BigInt(client.startTimeUnixNano) >= BigInt(server.startTimeUnixNano));
    assert.ok(BigInt(client.endTimeUnixNano) <= BigInt(server.endTimeUnixNano));
    const e = spans.find((x) => x.traceId === embTrace && x.kind === 3);
    assert.equal(e.name, 'embeddings text-embedding-3-small');
    assert.equal(e.attrs['gen_ai.operation.name'], 'embeddings');
    assert.equal(spans.find((x) => x.traceId === embTrace && x.kind === 2).parentSpanId, undefined, 'a new trace is a root');
    const r = server.resource;
    assert.equal(r['service.name'], 'agentd-test'); // OTEL_SERVICE_NAME beats OTEL_RESOURCE_ATTRIBUTES
    assert.equal(r['team'], 'ml');
    assert.equal(r['deployment.environment.name'], 'staging');
    assert.equal(r['k8s.pod.name'], 'pod-7');
    assert.equal(r['k8s.namespace.name'], 'llm');
    assert.equal(typeof r['service.version'], 'string');
    // the llm log line carries the trace id
    const line = await s.d.waitLog((l) => l.msg === 'llm' && l.trace_id === TRACE);
    assert.equal(line.status, 200);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('logs: every JSON line as an OTLP log record; the llm line with the trace and the SERVER span id', async () => {
  const s = await setup({ AGENTD_TELEMETRY_LOGS: 'true', OTEL_BLRP_SCHEDULE_DELAY: '100',
                          OTEL_METRIC_EXPORT_INTERVAL: '100000' });
  try {
    const res = await chat(s.d, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(res.status, 200);
    const serverId = res.headers.get('traceparent').split('-')[2];
    await s.rx.waitFor((r) => r.logs().some((l) => l.line?.msg === 'llm'));
    assert.deepEqual(s.rx.problems, []);
    const logs = s.rx.logs();
    const llm = logs.find((l) => l.line?.msg === 'llm');
    assert.equal(llm.traceId, TRACE);
    assert.equal(llm.spanId, serverId);
    assert.equal(llm.line.trace_id, TRACE); // the stderr line and the record say the same
    assert.equal(llm.line.span_id, serverId);
    assert.equal(llm.severityNumber, 9);
    assert.equal(llm.severityText, 'INFO');
    assert.ok(BigInt(llm.timeUnixNano) > 0n);
    assert.equal(llm.line.request_id, res.headers.get('x-request-id') ?? llm.line.request_id);
    // the access line of the same request joins the trace too
    await s.rx.waitFor((r) => r.logs().some((l) => l.line?.msg === 'access' && l.line.path === '/v1/chat/completions'));
    const access = s.rx.logs().find((l) => l.line?.msg === 'access' && l.line.path === '/v1/chat/completions');
    assert.equal(access.traceId, TRACE);
    assert.equal(access.spanId, serverId);
    assert.equal(access.line.trace_id, TRACE);
    // a line of no exchange goes out too, without ids
    const plain = logs.find((l) => l.line && l.line.msg !== 'llm' && l.line.msg !== 'access');
    assert.ok(plain, JSON.stringify(logs.map((l) => l.line?.msg)));
    assert.equal(plain.traceId, undefined);
    assert.equal(llm.resource['service.name'], 'agentd');
    // the exporter's own complaints are not fed back to itself
    assert.ok(!logs.some((l) => /OTLP receiver/.test(l.line?.msg ?? '')));
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('http/json logs survive the official schema round trip', async () => {
  const s = await setup({ AGENTD_TELEMETRY_LOGS: 'true', OTEL_BLRP_SCHEDULE_DELAY: '100',
                          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_METRIC_EXPORT_INTERVAL: '100000' });
  try {
    assert.equal((await chat(s.d)).status, 200);
    await s.rx.waitFor((r) => r.logs().some((l) => l.line?.msg === 'llm'));
    assert.deepEqual(s.rx.problems, []);
    assert.match(s.rx.logs().find((l) => l.line?.msg === 'llm').traceId, /^[0-9a-f]{32}$/);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('evaluations: sampled answers scored after the response, as gen_ai.evaluation.result events and a histogram', async () => {
  const s = await setup({ AGENTD_TELEMETRY_LOGS: 'true', OTEL_BLRP_SCHEDULE_DELAY: '100',
                          OTEL_METRIC_EXPORT_INTERVAL: '100000',
                          AGENTD_TELEMETRY_EVALUATIONS: '*=0,workflow:graded=1' });
  try {
    // not sampled: its workflow has no rate and "*" is 0
    assert.equal((await chat(s.d, { 'x-agentd-workflow': 'ungraded' },
      { messages: [{ role: 'user', content: 'ungraded question about tomatoes' }] })).status, 200);
    // sampled: the fake echoes the question, so every score is known in advance
    const res = await chat(s.d, { traceparent: `00-${TRACE}-${PARENT}-01`, 'x-agentd-workflow': 'graded' },
      { messages: [{ role: 'user', content: 'Describe the weather forecast, maybe perhaps' }],
        response_format: { type: 'json_object' } });
    assert.equal(res.status, 200);
    const body = await res.json();
    const attemptId = s.oa.requests.at(-1).headers.traceparent.split('-')[2];
    const evs = () => s.rx.logs().filter((l) => l.eventName === 'gen_ai.evaluation.result');
    await s.rx.waitFor(() => evs().length >= 5);
    assert.deepEqual(s.rx.problems, []);
    const byName = Object.fromEntries(evs().map((e) => [e.attrs['gen_ai.evaluation.name'], e]));
    assert.deepEqual(Object.keys(byName).sort(), ['confidence', 'json_validity', 'length', 'refusal', 'relevance']);
    for (const e of evs()) {
      assert.equal(e.traceId, TRACE); // linked to the chat span that made the answer
      assert.equal(e.spanId, attemptId);
      assert.equal(e.attrs['gen_ai.response.id'], body.id);
      assert.equal(typeof e.attrs['gen_ai.evaluation.explanation'], 'string');
      assert.equal(e.attrs['agent.workflow'], 'graded');
    }
    assert.equal(byName.relevance.attrs['gen_ai.evaluation.score.value'], 1);
    assert.equal(byName.relevance.attrs['gen_ai.evaluation.score.label'], 'relevant');
    assert.equal(byName.confidence.attrs['gen_ai.evaluation.score.value'], 0.5); // two hedges
    assert.equal(byName.confidence.attrs['gen_ai.evaluation.score.label'], 'hedging');
    assert.equal(byName.json_validity.attrs['gen_ai.evaluation.score.label'], 'invalid');
    assert.equal(byName.refusal.attrs['gen_ai.evaluation.score.label'], 'answered');
    assert.equal(byName.length.attrs['gen_ai.evaluation.score.label'], 'appropriate');
    // the events are not also sent as plain lines
    assert.ok(!s.rx.logs().some((l) => l.line?.msg === 'evaluation'));
    // the histogram on /metrics, for the sampled workflow only
    const text = await (await s.d.opsFetch('/metrics')).text();
    assert.match(text, /^agentd_evaluation_score_count\{evaluation="relevance",model="gpt-test",workflow="graded"\} 1$/m);
    assert.doesNotMatch(text, /agentd_evaluation_score_count\{[^}]*workflow="ungraded"/);
    assert.equal(evs().length, 5, 'the unsampled answer was not scored');
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('https endpoint: spans over TLS to a collector whose CA is OTEL_EXPORTER_OTLP_CERTIFICATE; an untrusted one is dropped', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-otlp-tls-'));
  const openssl = (args) => execFileSync('openssl', args, { stdio: 'ignore', cwd: dir });
  try {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-subj', '/CN=otlp-ca', '-keyout', 'ca.key', '-out', 'ca.pem',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    writeFileSync(join(dir, 'leaf.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1',
      '-keyout', 'leaf.key', '-out', 'leaf.csr']);
    openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-days', '2', '-extfile', 'leaf.ext', '-out', 'leaf.pem']);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return t.skip(`openssl command not available: ${e.message}`);
  }
  const tls = { key: readFileSync(join(dir, 'leaf.key')), cert: readFileSync(join(dir, 'leaf.pem')) };
  try {
    const s = await setup({ OTEL_EXPORTER_OTLP_CERTIFICATE: join(dir, 'ca.pem'), OTEL_EXPORTER_OTLP_HEADERS: 'x-token=s3cret',
                            OTEL_METRIC_EXPORT_INTERVAL: '100000' }, { tls });
    try {
      assert.match(s.rx.url, /^https:/);
      assert.equal((await chat(s.d)).status, 200);
      await s.rx.waitFor((r) => r.spans().length >= 2);
      assert.deepEqual(s.rx.problems, []);
      assert.ok(s.rx.spans().some((x) => x.name === 'chat gpt-4o-mini'));
      assert.equal(s.rx.requests[0].headers['x-token'], 's3cret');
      assert.equal(s.rx.requests[0].headers['content-type'], 'application/x-protobuf');
    } finally {
      assert.equal((await s.done()).code, 0);
    }
    // the same collector without its CA: the certificate is refused, nothing is sent, the drop is counted
    const u = await setup({ OTEL_METRIC_EXPORT_INTERVAL: '100000' }, { tls });
    try {
      assert.equal((await chat(u.d)).status, 200);
      await waitMetric(u.d, 'agentd_otel_dropped_total', ['signal="traces"', 'reason="tls"'], (v) => v >= 1);
      assert.equal(u.rx.spans().length, 0);
      await u.d.waitLog((l) => /certificate is not trusted/.test(l.msg));
    } finally {
      assert.equal((await u.done()).code, 0);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a malformed traceparent is ignored: a new trace, never a 400', async () => {
  const s = await setup({});
  try {
    for (const bad of ['00-zzzz', `00-${'0'.repeat(32)}-${PARENT}-01`, `00-${TRACE.toUpperCase()}-${PARENT}-01`,
                       `ff-${TRACE}-${PARENT}-01`, `00-${TRACE}-${'0'.repeat(16)}-01`, `00-${TRACE}-${PARENT}-01-extra`]) {
      const res = await chat(s.d, { traceparent: bad });
      assert.equal(res.status, 200, bad);
      const tp = res.headers.get('traceparent');
      assert.match(tp, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      assert.notEqual(tp.split('-')[1], TRACE, bad);
    }
    await s.rx.waitFor((r) => r.spans().filter((x) => x.kind === 2).length >= 6);
    assert.ok(s.rx.spans().filter((x) => x.kind === 2).every((x) => x.parentSpanId === undefined));
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('metrics over OTLP: GenAI and seed metric names and types from the /metrics registry', async () => {
  const s = await setup({ ENVIRONMENT: 'prod-eu' });
  try {
    const traceIds = [];
    for (let i = 0; i < 3; i++) {
      const res = await chat(s.d, { 'x-agentd-workflow': 'wf1' });
      assert.equal(res.status, 200);
      traceIds.push(res.headers.get('traceparent').split('-')[1]);
    }
    const nf = await chat(s.d, { 'x-agentd-workflow': 'wf1' }, { model: 'nope' });
    assert.equal(nf.status, 404);
    traceIds.push(nf.headers.get('traceparent').split('-')[1]);
    const want = ['gen_ai.client.token.usage', 'gen_ai.client.operation.duration', 'agent.requests.total',
                  'agent.request.duration', 'agent.tokens.used', 'agent.errors.total'];
    await s.rx.waitFor((r) => { const n = r.metrics().map((m) => m.name); return want.every((w) => n.includes(w)); });
    assert.deepEqual(s.rx.problems, []);
    const ms = Object.fromEntries(s.rx.metrics().map((m) => [m.name, m]));
    for (const h of ['gen_ai.client.token.usage', 'gen_ai.client.operation.duration', 'agent.request.duration']) {
      assert.ok(ms[h].histogram, `${h} is a histogram`);
      assert.equal(ms[h].histogram.aggregationTemporality, 2);
      for (const p of ms[h].histogram.dataPoints) {
        assert.equal(p.bucketCounts.length, p.explicitBounds.length + 1);
        assert.equal(p.bucketCounts.reduce((x, y) => x + Number(y), 0), Number(p.count));
      }
    }
    // exemplars: the trace ids of sampled requests on the duration histograms
    const exs = ms['agent.request.duration'].histogram.dataPoints.flatMap((p) => p.exemplars || []);
    assert.ok(exs.length >= 1, 'agent.request.duration has exemplars');
    for (const e of exs) {
      assert.ok(traceIds.includes(e.traceId), `${e.traceId} is one of ${traceIds}`);
      assert.match(e.spanId, /^[0-9a-f]{16}$/);
      assert.ok(e.asDouble > 0);
    }
    assert.ok(ms['gen_ai.client.operation.duration'].histogram.dataPoints.some((p) => (p.exemplars || []).length));
    assert.equal(ms['gen_ai.client.operation.duration'].unit, 's');
    assert.equal(ms['agent.request.duration'].unit, 'ms');
    const tok = ms['gen_ai.client.token.usage'].histogram.dataPoints.map((p) => Object.fromEntries(p.attributes.map((kv) => [kv.key, kv.value.stringValue])));
    assert.ok(tok.some((t) => t['gen_ai.token.type'] === 'input' && t['gen_ai.operation.name'] === 'chat' && t['gen_ai.provider.name'] === 'openai'));
    const req = ms['agent.requests.total'].sum;
    assert.equal(req.isMonotonic, true);
    const ok = req.dataPoints.find((p) => p.attributes.some((kv) => kv.value.stringValue === 'wf1') && p.attributes.some((kv) => kv.value.stringValue === '200'));
    assert.equal(ok.asDouble, 3);
    const err = ms['agent.errors.total'].sum.dataPoints.find((p) => p.attributes.some((kv) => kv.key === 'error.type'));
    assert.ok(err, 'agent.errors.total has error.type');
    // /metrics: the same registry, Prometheus names, exact bucket bounds
    const text = await (await s.d.opsFetch('/metrics')).text();
    assert.match(text, /^agent_requests_total\{workflow="wf1",status="200"\} 3$/m);
    assert.match(text, /^# TYPE agent_request_duration_seconds histogram$/m);
    assert.match(text, /^agent_errors_total\{workflow="wf1",error_type="[a-z_]+"\} 1$/m);
    assert.match(text, /gen_ai_client_token_usage_bucket\{[^}]*le="1048576"\}/);
    assert.match(text, /gen_ai_client_token_usage_bucket\{[^}]*le="4194304"\}/);
    assert.doesNotMatch(text, /le="[0-9.]+e\+/, 'no bound in lossy exponent form');
    // deployment.environment labels /metrics through target_info (OpenTelemetry's Prometheus mapping)
    assert.match(text, /^target_info\{service_name="agentd",service_version="[^"]+",deployment_environment="prod-eu"\} 1$/m);
    assert.equal(ms['agent.requests.total'].resource['deployment.environment.name'], 'prod-eu');
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('http/json: the same spans as OTLP/JSON that survive the official schema round trip', async () => {
  const s = await setup({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_METRIC_EXPORT_INTERVAL: '100000' });
  try {
    assert.equal((await chat(s.d, {}, { max_tokens: 7 })).status, 200);
    await s.rx.waitFor((r) => r.spans().length >= 2);
    assert.deepEqual(s.rx.problems, []);
    assert.equal(s.rx.requests[0].contentType, 'application/json');
    const c = s.rx.spans().find((x) => x.kind === 3);
    assert.equal(c.name, 'chat gpt-4o-mini');
    assert.equal(c.attrs['gen_ai.request.max_tokens'], 7);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('gzip: OTEL_EXPORTER_OTLP_COMPRESSION=gzip sends Content-Encoding: gzip bodies the receiver inflates', async () => {
  const s = await setup({ OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip', OTEL_METRIC_EXPORT_INTERVAL: '100000' });
  try {
    assert.equal((await chat(s.d)).status, 200);
    await s.rx.waitFor((r) => r.spans().length >= 2);
    assert.deepEqual(s.rx.problems, []);
    assert.equal(s.rx.requests[0].headers['content-encoding'], 'gzip');
    assert.ok(s.rx.spans().some((x) => x.name === 'chat gpt-4o-mini'));
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('503 then 200: the batch is retried and delivered; 429 every time: dropped and counted', async () => {
  const s = await setup({ OTEL_METRIC_EXPORT_INTERVAL: '100000' },
                        { script: [{ status: 503, retryAfter: 0 }, { status: 503 }] });
  try {
    assert.equal((await chat(s.d)).status, 200);
    await s.rx.waitFor((r) => r.spans().length >= 2);
    assert.equal(s.rx.requests[0].status, 503);
    assert.equal(s.rx.requests[1].status, 503);
    assert.ok(await metricValue(s.d, 'agentd_otel_export_retries_total', ['signal="traces"']) >= 2);
    // now the receiver throttles forever
    s.rx.defaultStatus = 429;
    const before = s.rx.requests.length;
    assert.equal((await chat(s.d)).status, 200);
    await waitMetric(s.d, 'agentd_otel_dropped_total', ['signal="traces"', 'reason="retry_exhausted"'], (v) => v >= 1);
    assert.ok(s.rx.requests.length - before >= 2, 'retried before giving up');
    assert.ok(s.rx.requests.slice(before).every((q) => q.status === 429));
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('receiver down: requests complete promptly, spans are dropped and counted, shutdown is prompt', async () => {
  const tmp = await startReceiver();
  const deadUrl = tmp.url;
  await tmp.close(); // nothing listens there now
  const s = await setup({ OTEL_BSP_MAX_QUEUE_SIZE: '8', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4' },
                        { none: true, endpoint: deadUrl });
  try {
    const t0 = Date.now();
    for (let i = 0; i < 40; i++) assert.equal((await chat(s.d)).status, 200);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 10000, `40 requests took ${elapsed} ms`);
    await waitMetric(s.d, 'agentd_otel_dropped_total', ['signal="traces"'], (v) => v >= 1);
  } finally {
    const t1 = Date.now();
    assert.equal((await s.done()).code, 0);
    assert.ok(Date.now() - t1 < 12000, 'stop is not held up by the dead receiver');
  }
});

test('sampling: always_off exports no spans but still answers a traceparent; parentbased follows the parent', async () => {
  const s = await setup({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0',
                          OTEL_METRIC_EXPORT_INTERVAL: '100000' });
  try {
    const r1 = await chat(s.d); // a root: ratio 0, not sampled
    assert.match(r1.headers.get('traceparent'), /-00$/);
    assert.match(s.oa.requests.at(-1).headers.traceparent, /-00$/);
    const r2 = await chat(s.d, { traceparent: `00-${TRACE}-${PARENT}-01` }); // a sampled parent: sampled
    assert.match(r2.headers.get('traceparent'), /-01$/);
    await s.rx.waitFor((r) => r.spans().length >= 2);
    assert.ok(s.rx.spans().every((x) => x.traceId === TRACE));
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('an idle exporter sleeps: no busy wait between exports', async () => {
  const s = await setup({ OTEL_BSP_SCHEDULE_DELAY: '5000', OTEL_METRIC_EXPORT_INTERVAL: '60000' });
  try {
    assert.equal((await chat(s.d)).status, 200);
    const ticks = () => { const f = readFileSync(`/proc/${s.d.child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
                          return Number(f[11]) + Number(f[12]); };
    const t0 = ticks();
    await new Promise((r) => setTimeout(r, 1000)); // a measuring window, not a synchronisation
    const used = ticks() - t0;
    assert.ok(used < 30, `${used} clock ticks of CPU in one idle second`);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('bad OTEL_* values are configuration errors naming the variable', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-otel-'));
  const file = join(dir, 'agentd.yaml');
  writeFileSync(file, 'server:\n  workers: 1\n');
  const ok = spawnSync(BIN, ['config', 'print', '--config', file], { encoding: 'utf8', env: { PATH: process.env.PATH, OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1', OTEL_EXPORTER_OTLP_HEADERS: 'api-key=a%20b, x=1' } });
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  for (const [k, v, re] of [['OTEL_TRACES_SAMPLER', 'sometimes', /OTEL_TRACES_SAMPLER/],
                            ['OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc', /OTEL_EXPORTER_OTLP_PROTOCOL/],
                            ['OTEL_EXPORTER_OTLP_HEADERS', 'novalue', /OTEL_EXPORTER_OTLP_HEADERS/],
                            ['OTEL_BSP_SCHEDULE_DELAY', 'soon', /OTEL_BSP_SCHEDULE_DELAY/],
                            ['OTEL_TRACES_SAMPLER_ARG', '2', /OTEL_TRACES_SAMPLER_ARG/],
                            ['OTEL_EXPORTER_OTLP_ENDPOINT', 'ftp://x', /OTEL_EXPORTER_OTLP_ENDPOINT/],
                            ['OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', 'x', /OTEL_EXPORTER_OTLP_LOGS_ENDPOINT/],
                            ['AGENTD_TELEMETRY_EVALUATIONS', '*=2', /evaluations/],
                            ['AGENTD_TELEMETRY_EVALUATIONS', 'gpt-4o', /evaluations/]]) {
    const r = spawnSync(BIN, ['config', 'print', '--config', file], { encoding: 'utf8', env: { PATH: process.env.PATH, [k]: v } });
    assert.equal(r.status, 2, `${k}=${v}: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout + r.stderr, re, `${k}=${v}`);
  }
});
