// A real Prometheus (Debian `prometheus`, scripts/deps.sh test) scrapes agentd's /metrics (issue 10, item 7): its
// query API returns the seed's metric names with the labels agentd gave them, and `promtool check metrics` accepts
// the exposition; with exemplar storage on, it keeps the trace ids agentd puts on the duration buckets. One Prometheus for the file, in a temporary directory, stopped at the end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const which = (b) => spawnSync('sh', ['-c', `command -v ${b}`], { encoding: 'utf8' }).stdout.trim();
const PROM = which('prometheus');
const PROMTOOL = which('promtool');
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const missing = !PROM || !PROMTOOL ? 'prometheus/promtool not installed (scripts/deps.sh test)' : false;

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

// Polls Prometheus' query API until fn(result) holds; the scrape has no other outward event.
async function waitQuery(base, q, fn, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const r = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`);
      if (r.ok) {
        last = await r.json();
        if (last.status === 'success' && fn(last.data.result)) return last.data.result;
      }
    } catch { /* not listening yet */ }
    if (Date.now() > end) throw new Error(`prometheus: ${q} never satisfied; last ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('Prometheus scrapes /metrics: the seed metrics are queryable; promtool check metrics passes', { skip: missing }, async () => {
  const oa = await startFake({ provider: 'openai' });
  const d = await startAgentd({
    config: `server:\n  workers: 1\nmodels:\n  - name: gpt-test\n    provider: openai\n    model: gpt-4o-mini\n` +
      `    base_url: ${oa.urls.openai}\n    api_key_env: FAKE_OPENAI_KEY\n`,
    env: { FAKE_OPENAI_KEY: FAKE_KEYS.openai, ENVIRONMENT: 'scrape-test' },
  });
  const dir = mkdtempSync(join(tmpdir(), 'agentd-prom-'));
  let prom;
  try {
    const chat = (model, wf, extra = {}) => d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-agentd-workflow': wf, ...extra },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello there' }] }) });
    assert.equal((await chat('gpt-test', 'scraped')).status, 200);
    assert.equal((await chat('nope', 'scraped')).status, 404);
    // a sampled trace, sent last: the latest observation of a bucket is its exemplar, so its ids are the ones shown
    const traced = await chat('gpt-test', 'scraped', { traceparent: `00-${TRACE}-00f067aa0ba902b7-01` });
    assert.equal(traced.status, 200);
    const serverSpan = traced.headers.get('traceparent').split('-')[2];

    const text = await (await d.opsFetch('/metrics')).text();
    const lint = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`);

    const port = await freePort();
    writeFileSync(join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: agentd\n` +
      `    static_configs:\n      - targets: ['${d.opsHost}:${d.opsPort}']\n`);
    prom = spawn(PROM, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
                        `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn',
                        '--enable-feature=exemplar-storage'],
                 { stdio: ['ignore', 'ignore', 'pipe'] });
    let promErr = '';
    prom.stderr.on('data', (c) => { promErr += c; });
    const exited = new Promise((r) => prom.once('exit', r));
    const base = `http://127.0.0.1:${port}`;
    const up = await Promise.race([
      waitQuery(base, 'up{job="agentd"}', (r) => r.length === 1 && r[0].value[1] === '1'),
      exited.then((c) => { throw new Error(`prometheus exited ${c}: ${promErr}`); }),
    ]);
    assert.equal(up[0].metric.instance, `${d.opsHost}:${d.opsPort}`);

    const req = await waitQuery(base, 'agent_requests_total{workflow="scraped"}', (r) => r.length >= 2);
    const byStatus = Object.fromEntries(req.map((s) => [s.metric.status, Number(s.value[1])]));
    assert.equal(byStatus['200'], 2);
    assert.equal(byStatus['404'], 1);
    const errs = await waitQuery(base, 'agent_errors_total{workflow="scraped"}', (r) => r.length >= 1);
    assert.equal(Number(errs[0].value[1]), 1);
    assert.match(errs[0].metric.error_type, /^[a-z_]+$/);
    const dur = await waitQuery(base, 'agent_request_duration_seconds_count{workflow="scraped"}', (r) => r.length >= 1);
    assert.equal(Number(dur[0].value[1]), 3);
    // a histogram Prometheus can compute with: cumulative buckets up to +Inf
    const q = await waitQuery(base, 'histogram_quantile(0.5, sum by (le) (agent_request_duration_seconds_bucket))',
                              (r) => r.length === 1);
    assert.ok(Number(q[0].value[1]) >= 0);
    await waitQuery(base, 'agent_tokens_used_total', (r) => r.length >= 1 && r.some((s) => Number(s.value[1]) > 0));
    await waitQuery(base, 'gen_ai_client_token_usage_count', (r) => r.length >= 1);
    // exemplars: Prometheus asks for OpenMetrics and keeps the trace id agentd put on the bucket
    const om = await d.opsFetch('/metrics', { headers: { accept: 'application/openmetrics-text;version=1.0.0' } });
    assert.match(om.headers.get('content-type'), /^application\/openmetrics-text/);
    const omText = await om.text();
    assert.match(omText, /# EOF\n$/);
    assert.match(omText, /^# TYPE agent_requests counter$/m);
    assert.match(omText, /^# TYPE process_cpu_seconds counter$/m);
    assert.match(omText, new RegExp(`^agent_request_duration_seconds_bucket\\{workflow="scraped",le="[^"]+"\\} \\d+ # \\{trace_id="${TRACE}",span_id="${serverSpan}"\\} [0-9.e-]+ \\d+\\.\\d{3}$`, 'm'));
    const exq = async () => {
      const now = Date.now() / 1000;
      const r = await fetch(`${base}/api/v1/query_exemplars?query=${encodeURIComponent('agent_request_duration_seconds_bucket{workflow="scraped"}')}&start=${now - 600}&end=${now + 60}`);
      return (await r.json()).data || [];
    };
    const deadline = Date.now() + 30000;
    let exs = [];
    while (!(exs = (await exq()).flatMap((x) => x.exemplars)).some((e) => e.labels.trace_id === TRACE)) {
      if (Date.now() > deadline) throw new Error(`no exemplar with ${TRACE}: ${JSON.stringify(exs)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(exs.find((e) => e.labels.trace_id === TRACE).labels.span_id, serverSpan);
    const ti = await waitQuery(base, 'target_info', (r) => r.length === 1);
    assert.equal(ti[0].metric.deployment_environment, 'scrape-test');
  } finally {
    if (prom && prom.exitCode === null) {
      const gone = new Promise((r) => prom.once('exit', r));
      prom.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
    assert.equal((await d.stop()).code, 0);
    await oa.close();
  }
});
