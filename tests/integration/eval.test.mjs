// Evaluations, the parts beyond the heuristics (issue 10, item 6): the LLM judge answering through agentd's own
// gateway (a mock judge whose echo the test controls, and a judge behind a fake OpenAI upstream), its evaluation
// budget in tokens and in USD, the scores in the spend ledger (table ledger_evaluations, keyed by the exchange's
// request id), and streamed answers scored from the text the client received.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';
import { startReceiver } from '../lib/otlp_receiver.mjs';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

function config(oa) {
  return `server:\n  workers: 2\nmodels:\n  - name: gpt-test\n    provider: openai\n    model: gpt-4o-mini\n` +
    `    base_url: ${oa.urls.openai}\n    api_key_env: FAKE_OPENAI_KEY\n` +
    `  - name: judge-oa\n    provider: openai\n    model: gpt-4o\n    base_url: ${oa.urls.openai}\n` +
    `    api_key_env: FAKE_OPENAI_KEY\n  - name: judge-mock\n    provider: mock\n` +
    `  - name: judge-slow\n    provider: mock\n    mock: {latency: 30s}\n` +
    `prices:\n  gpt-4o-mini: {input: 1, output: 2}\n  gpt-4o: {input: 5, output: 15}\n` +
    `ledger:\n  batch_interval: 50ms\n`;
}

async function setup(env) {
  const oa = await startFake({ provider: 'openai' });
  const rx = await startReceiver();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-eval-')), 'data');
  const d = await startAgentd({
    config: config(oa), noDataDir: true, args: ['--data-dir', dataDir],
    env: {
      FAKE_OPENAI_KEY: FAKE_KEYS.openai, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_BLRP_SCHEDULE_DELAY: '100', OTEL_METRIC_EXPORT_INTERVAL: '100000', AGENTD_TELEMETRY_EVALUATIONS: 'gpt-test=1',
      ...env,
    },
  });
  return { oa, rx, d, dataDir, async done() { const r = await d.stop(); await oa.close(); await rx.close(); return r; } };
}

const chat = (d, content, headers = {}, body = {}) => d.fetch('/v1/chat/completions', {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content }], ...body }),
});

async function metricValue(d, name, labels = []) {
  const text = await (await d.opsFetch('/metrics')).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (!labels.every((l) => line.includes(l))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

// The evaluation thread's progress has no other outward event than its metrics.
async function waitMetric(d, name, labels, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await metricValue(d, name, labels);
    if (fn(v)) return v;
    if (Date.now() > end) throw new Error(`${name}${JSON.stringify(labels)} stayed at ${v}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sql = (dataDir, q) => {
  const out = execFileSync('sqlite3', ['-json', join(dataDir, 'ledger.db'), q], { encoding: 'utf8' });
  return out.trim() ? JSON.parse(out) : [];
};

test('mock judge: its score as a gen_ai.evaluation.result event, in the ledger, and its token budget', async () => {
  const s = await setup({ AGENTD_TELEMETRY_EVALUATION_JUDGE: 'judge-mock', AGENTD_TELEMETRY_EVALUATION_BUDGET_TOKENS: '1',
                          AGENTD_TELEMETRY_EVALUATION_RUBRIC: 'Grade strictly.' });
  try {
    // the fake echoes the question; the mock judge echoes its prompt: the score in the question is the judge's
    const res = await chat(s.d, 'Describe tomatoes. score: 0.25', { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(res.status, 200);
    const requestId = res.headers.get('x-request-id');
    assert.ok(requestId);
    await waitMetric(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="ok"'], (v) => v === 1);
    // the judge's budget (1 token) is spent by its first call: the next answer gets the heuristics only
    assert.equal((await chat(s.d, 'Describe potatoes. score: 0.9')).status, 200);
    await waitMetric(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="budget_exhausted"'], (v) => v === 1);
    await waitMetric(s.d, 'agentd_evaluation_score_count', ['evaluation="relevance"'], (v) => v === 2);
    assert.equal(await metricValue(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="ok"']), 1);
    assert.ok(await metricValue(s.d, 'agentd_evaluation_judge_tokens_total') > 1);

    const evs = () => s.rx.logs().filter((l) => l.eventName === 'gen_ai.evaluation.result' &&
                                               l.attrs['gen_ai.evaluation.name'] === 'judge');
    await s.rx.waitFor(() => evs().length >= 1);
    const ev = evs()[0];
    assert.equal(ev.attrs['gen_ai.evaluation.score.value'], 0.25);
    assert.equal(ev.attrs['gen_ai.evaluation.score.label'], 'fail');
    assert.equal(ev.traceId, TRACE); // linked to the evaluated exchange
    assert.equal(evs().length, 1);
    // the judge's own exchange joined the trace, ran as workflow "evaluation", and was not itself evaluated (its
    // span comes in a batch of spans of its own, which may follow the batch of logs with the score: wait for it)
    await s.rx.waitFor(() => s.rx.spans().some((sp) => sp.name === 'chat judge-mock'));
    const judgeSpan = s.rx.spans().find((sp) => sp.name === 'chat judge-mock');
    assert.ok(judgeSpan, 'a chat span for the judge');
    assert.equal(judgeSpan.traceId, TRACE);
    assert.equal(await metricValue(s.d, 'agentd_evaluation_score_count', ['model="judge-mock"']), 0);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
  // the ledger: the score rows for the client's exchange, and the judge's spend under workflow "evaluation"
  const scores = sql(s.dataDir, `SELECT name, score, label FROM ledger_evaluations WHERE request_id = '${requestIdOf(s)}'`);
  assert.deepEqual(scores.map((r) => r.name).sort(), ['confidence', 'judge', 'length', 'refusal', 'relevance']);
  assert.equal(scores.find((r) => r.name === 'judge').score, 0.25);
  const rows = sql(s.dataDir, 'SELECT request_id, workflow, model FROM ledger_exchanges ORDER BY id');
  assert.equal(rows.filter((r) => r.workflow === 'evaluation' && r.model === 'judge-mock').length, 1);
  assert.ok(rows.some((r) => r.request_id === requestIdOf(s)));
});

// the first request's id, kept on the setup object by the test above
function requestIdOf(s) {
  return sql(s.dataDir, "SELECT request_id FROM ledger_exchanges WHERE model = 'gpt-test' ORDER BY id LIMIT 1")[0]
    .request_id;
}

test('judge behind a fake OpenAI upstream: the rubric as its system prompt, its cost held to the USD budget', async () => {
  const s = await setup({ AGENTD_TELEMETRY_EVALUATION_JUDGE: 'judge-oa', AGENTD_TELEMETRY_EVALUATION_BUDGET_USD: '0.000001',
                          AGENTD_TELEMETRY_EVALUATION_RUBRIC: 'Is the answer about vegetables?' });
  try {
    assert.equal((await chat(s.d, 'Tell me about carrots. {"score": 8, "explanation": "fine"}')).status, 200);
    await waitMetric(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="ok"'], (v) => v === 1);
    const jr = s.oa.requests.find((r) => r.json?.model === 'gpt-4o');
    assert.ok(jr, 'the judge was asked through the upstream');
    assert.equal(jr.json.messages[0].role, 'system');
    assert.match(jr.json.messages[0].content, /^Is the answer about vegetables\?/);
    assert.match(jr.json.messages[1].content, /^Question:\nTell me about carrots\./);
    assert.match(jr.json.messages[1].content, /\n\nAnswer:\necho: Tell me about carrots/);
    // 8 is read as out of 10
    await waitMetric(s.d, 'agentd_evaluation_score_bucket', ['evaluation="judge"', 'le="0.8"'], (v) => v === 1);
    assert.equal(await metricValue(s.d, 'agentd_evaluation_score_bucket', ['evaluation="judge"', 'le="0.7"']), 0);
    assert.ok(await metricValue(s.d, 'agentd_evaluation_judge_cost_usd_total') > 0.000001);
    assert.equal((await chat(s.d, 'Tell me about leeks. score: 1')).status, 200);
    await waitMetric(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="budget_exhausted"'], (v) => v === 1);
    assert.equal(s.oa.requests.filter((r) => r.json?.model === 'gpt-4o').length, 1);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

async function readStream(res) {
  assert.equal(res.status, 200);
  return await res.text();
}

test('streamed answers: the text the client received is scored, the judge included; a stream past the cap is not', async () => {
  const s = await setup({ AGENTD_TELEMETRY_EVALUATION_JUDGE: 'judge-mock', AGENTD_TELEMETRY_EVALUATION_STREAM_MAX_BYTES: '4KiB',
                          AGENTD_TELEMETRY_EVALUATION_BUDGET_USD: '0' });
  try {
    const res = await chat(s.d, 'Describe the weather forecast, maybe. score: 0.75', {}, { stream: true });
    const sse = await readStream(res);
    assert.match(sse, /data: \[DONE\]/);
    const id = sse.match(/"id":"([^"]+)"/)[1];
    await waitMetric(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="ok"'], (v) => v === 1);
    const evs = () => s.rx.logs().filter((l) => l.eventName === 'gen_ai.evaluation.result');
    await s.rx.waitFor(() => evs().length >= 5);
    const byName = Object.fromEntries(evs().map((e) => [e.attrs['gen_ai.evaluation.name'], e]));
    assert.deepEqual(Object.keys(byName).sort(), ['confidence', 'judge', 'length', 'refusal', 'relevance']);
    assert.equal(byName.judge.attrs['gen_ai.evaluation.score.value'], 0.75);
    assert.equal(byName.relevance.attrs['gen_ai.evaluation.score.value'], 1); // the fake echoed every keyword
    assert.equal(byName.confidence.attrs['gen_ai.evaluation.score.value'], 0.75); // one hedge
    assert.equal(byName.relevance.attrs['gen_ai.response.id'], id); // the id the client saw in the stream
    // a stream longer than the cap (4 KiB) is relayed whole and not scored
    const long = 'tomato '.repeat(1000);
    const sse2 = await readStream(await chat(s.d, long, {}, { stream: true }));
    assert.ok(sse2.length > 4096 && sse2.includes('[DONE]'));
    // a plain answer after it is: the thread went past the long one without scoring it
    assert.equal((await chat(s.d, 'Describe cucumbers. score: 0.5')).status, 200);
    await waitMetric(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="ok"'], (v) => v === 2);
    assert.equal(await metricValue(s.d, 'agentd_evaluation_score_count', ['evaluation="relevance"']), 2);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('streamed answers are not kept when evaluation_stream_max_bytes is 0', async () => {
  const s = await setup({ AGENTD_TELEMETRY_EVALUATION_STREAM_MAX_BYTES: '0' });
  try {
    await readStream(await chat(s.d, 'Describe onions.', {}, { stream: true }));
    assert.equal((await chat(s.d, 'Describe garlic.')).status, 200);
    await waitMetric(s.d, 'agentd_evaluation_score_count', ['evaluation="relevance"'], (v) => v === 1);
    assert.equal(await metricValue(s.d, 'agentd_evaluations_dropped_total'), 0);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
});

test('shutdown with a judge call in flight: it is cancelled, the daemon exits at once and cleanly', async () => {
  const s = await setup({ AGENTD_TELEMETRY_EVALUATION_JUDGE: 'judge-slow' });
  let t0;
  try {
    assert.equal((await chat(s.d, 'Describe beetroot. score: 1')).status, 200);
    // the heuristics ran; the judge call (30 s) started right after them
    await waitMetric(s.d, 'agentd_evaluation_score_count', ['evaluation="relevance"'], (v) => v === 1);
    assert.equal((await chat(s.d, 'Describe radishes.')).status, 200); // queued behind the judge call
  } finally {
    t0 = Date.now();
    assert.equal((await s.done()).code, 0); // exit 0: no leak (ASan), no hang
  }
  assert.ok(Date.now() - t0 < 10000, `stopped in ${Date.now() - t0} ms`);
});

test('a judge that fails (an unknown model) is counted as an error; one with no score in its reply as unparsed', async () => {
  const s = await setup({ AGENTD_TELEMETRY_EVALUATION_JUDGE: 'no-such-model' });
  try {
    assert.equal((await chat(s.d, 'Describe kale. score: 1')).status, 200);
    await waitMetric(s.d, 'agentd_evaluation_judge_calls_total', ['outcome="error"'], (v) => v === 1);
    assert.equal(await metricValue(s.d, 'agentd_evaluation_score_count', ['evaluation="judge"']), 0);
    assert.equal(await metricValue(s.d, 'agentd_evaluation_score_count', ['evaluation="relevance"']), 1);
  } finally {
    assert.equal((await s.done()).code, 0);
  }
  const m = await setup({ AGENTD_TELEMETRY_EVALUATION_JUDGE: 'judge-mock' });
  try {
    assert.equal((await chat(m.d, 'Describe chard, no grade here.')).status, 200);
    await waitMetric(m.d, 'agentd_evaluation_judge_calls_total', ['outcome="unparsed"'], (v) => v === 1);
    assert.equal(await metricValue(m.d, 'agentd_evaluation_judge_calls_total', ['outcome="ok"']), 0);
  } finally {
    assert.equal((await m.done()).code, 0);
  }
});
