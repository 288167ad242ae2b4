// Routing to cheaper models (issue 14 item 3) against the real binary and a fake OpenAI: rules per public model,
// first match wins, by prompt size, tools, images, the x-agentd-tier header, a team's remaining budget share and
// the UTC hour; the decision in the response headers and the llm log line; with the response cache, the key holds
// the model after routing; `agentd spend whatif` over the ledger; configuration errors with file:line:column.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';

import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';
import { startReceiver } from '../lib/otlp_receiver.mjs';


// Stops agentd and checks that the sanitizers had nothing to say (a leak or undefined behaviour fails the test).
async function stopClean(d) {
  const r = await d.stop();
  assert.doesNotMatch(d.rawStderr, /runtime error|AddressSanitizer|LeakSanitizer/);
  return r;
}

let f;
before(async () => { f = await startFake({ provider: 'openai' }); });
after(async () => { await f.close(); });

const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai };
const PRICES = { big: { input: 10, output: 30 }, small: { input: 1, output: 2 } };
const models = () => `
models:
  - name: big
    provider: openai
    model: gpt-4o
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: small
    provider: openai
    model: gpt-4o-mini
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  gpt-4o-mini: {input: ${PRICES.small.input}, output: ${PRICES.small.output}}
  gpt-4o: {input: ${PRICES.big.input}, output: ${PRICES.big.output}}
ledger:
  batch_interval: 20ms
`;
const hour = new Date().getUTCHours();
const rules = `
routing:
  - name: economy-tier
    model: big
    to: small
    when: {tier: economy}
  - name: tools-stay
    model: big
    to: big
    when: {tools: true}
  - name: no-images-short
    model: big
    to: small
    when: {images: false, max_prompt_tokens: 60}
  - name: this-hour
    model: small
    to: big
    when: {hour_from: ${hour}, hour_to: ${(hour + 1) % 24}, min_prompt_tokens: 200}
`;

function chat(d, body, headers = {}) {
  return d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'big', messages: [{ role: 'user', content: 'hello' }], ...body }),
  });
}
const lastUpstreamModel = () => f.requests.filter((r) => r.op === 'chat').at(-1).json.model;

test('rules per model, first match wins; the decision is in the headers and the llm log line', async () => {
  f.reset();
  const d = await startAgentd({ env, config: models() + rules });
  try {
    // short, no images: routed to small
    let r = await chat(d, {});
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-agentd-route'), 'no-images-short');
    assert.equal(r.headers.get('x-agentd-routed-from'), 'big');
    assert.equal(r.headers.get('x-agentd-model'), 'small');
    assert.equal(lastUpstreamModel(), 'gpt-4o-mini');
    const id = r.headers.get('x-request-id');
    await r.text();
    const line = await d.waitLog((l) => l.msg === 'llm' && l.request_id === id, 5000);
    assert.equal(line.route, 'no-images-short');
    assert.equal(line.routed_from, 'big');
    // an image: no rule matches but tools-stay would not either; stays on big, no route headers
    r = await chat(d, { messages: [{ role: 'user', content: [{ type: 'text', text: 'what is it' },
      { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }] });
    assert.equal(r.headers.get('x-agentd-route'), null);
    assert.equal(lastUpstreamModel(), 'gpt-4o');
    await r.text();
    // a long prompt: stays
    r = await chat(d, { messages: [{ role: 'user', content: 'word '.repeat(200) }] });
    assert.equal(r.headers.get('x-agentd-route'), null);
    await r.text();
    // tools: the earlier "tools-stay" rule wins over the later short-prompt one (first match)
    r = await chat(d, { tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] });
    assert.equal(r.headers.get('x-agentd-route'), 'tools-stay');
    assert.equal(lastUpstreamModel(), 'gpt-4o');
    await r.text();
    // the tier header, through the OpenAI SDK: the first rule, whatever the prompt
    const client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client', maxRetries: 0,
      defaultHeaders: { 'x-agentd-tier': 'economy' } });
    const { data, response } = await client.chat.completions.create({ model: 'big',
      messages: [{ role: 'user', content: 'word '.repeat(300) }] }).withResponse();
    assert.equal(response.headers.get('x-agentd-route'), 'economy-tier');
    assert.equal(lastUpstreamModel(), 'gpt-4o-mini');
    assert.ok(data.choices[0].message.content.length > 0);
    // the hour window on the other model (this UTC hour), with a prompt size floor
    r = await chat(d, { model: 'small', messages: [{ role: 'user', content: 'word '.repeat(300) }] });
    assert.equal(r.headers.get('x-agentd-route'), 'this-hour');
    assert.equal(lastUpstreamModel(), 'gpt-4o');
    await r.text();
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_routing_decisions_total\{model="big",rule="no-images-short",to="small"\} 1\b/);
  } finally { await stopClean(d); }
});

test('the decision is on the server span (agentd.route.rule, agentd.route.from), with the cache result', async () => {
  f.reset();
  const rx = await startReceiver();
  const d = await startAgentd({ env: { ...env, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '100' },
    config: `cache: {enabled: true}\n${models()}${rules}` });
  try {
    const r = await chat(d, {});
    assert.equal(r.headers.get('x-agentd-route'), 'no-images-short');
    const trace = r.headers.get('traceparent').split('-')[1];
    await r.text();
    await rx.waitFor((x) => x.spans().some((sp) => sp.kind === 2 && sp.traceId === trace));
    const server = rx.spans().find((sp) => sp.kind === 2 && sp.traceId === trace);
    assert.equal(server.attrs['agentd.route.rule'], 'no-images-short');
    assert.equal(server.attrs['agentd.route.from'], 'big');
    assert.equal(server.attrs['agentd.cache'], 'miss');
  } finally { await stopClean(d); await rx.close(); }
});

test('a team whose budget share falls below the threshold is routed to the cheaper model', async () => {
  f.reset();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-routing-')), 'data');
  const k = JSON.parse(execFileSync(BIN, ['keys', 'create', '--name', 'r', '--team', 'tk', '--data-dir', dataDir],
    { encoding: 'utf8' }));
  const cfg = `${models()}
budgets:
  - {scope: team, name: tk, tokens: 1000, window: day, mode: soft}
routing:
  - name: low-budget
    model: big
    to: small
    when: {budget_below: 0.2, budget_scope: team}
`;
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: cfg });
  try {
    const auth = { authorization: `Bearer ${k.key}` };
    let r = await chat(d, { max_tokens: 5 }, auth);
    assert.equal(r.headers.get('x-agentd-route'), null); // nearly all of the budget left
    await r.text();
    // one long request spends past the budget (soft: it is served and counted)
    r = await chat(d, { max_tokens: 5, messages: [{ role: 'user', content: 'word '.repeat(1100) }] }, auth);
    assert.equal(r.status, 200);
    await r.text();
    r = await chat(d, { max_tokens: 5 }, auth);
    assert.equal(r.headers.get('x-agentd-route'), 'low-budget');
    assert.equal(lastUpstreamModel(), 'gpt-4o-mini');
    await r.text();
  } finally { await stopClean(d); }
});

test('with the response cache, the key holds the model after routing', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `cache: {enabled: true}\n${models()}${rules}` });
  try {
    const a = await chat(d, {});                    // big -> small (short prompt), miss
    assert.equal(a.headers.get('x-agentd-cache'), 'miss');
    await a.text();
    const b = await chat(d, { model: 'small' });    // asked for small directly: the same answer
    assert.equal(b.headers.get('x-agentd-cache'), 'hit');
    await b.text();
    assert.equal(f.requests.filter((r) => r.op === 'chat').length, 1);
  } finally { await stopClean(d); }
});

test('agentd spend whatif reports what the rules would have saved over the ledger', async () => {
  f.reset();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-whatif-')), 'data');
  const d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: models() });
  try {
    for (const n of [1, 2, 300]) {
      const r = await chat(d, { messages: [{ role: 'user', content: 'word '.repeat(n) }] });
      assert.equal(r.status, 200);
      await r.text();
    }
  } finally { await stopClean(d); } // the ledger writer flushes at shutdown
  const rows = JSON.parse(execFileSync('sqlite3', ['-json', join(dataDir, 'ledger.db'),
    'SELECT model, input_tokens, output_tokens, cost_nusd FROM ledger_exchanges ORDER BY id'], { encoding: 'utf8' }));
  assert.equal(rows.length, 3);
  // the rule: prompts up to 60 tokens go to small; the 300-word one stays
  const routed = rows.filter((r) => r.input_tokens <= 60);
  assert.equal(routed.length, 2);
  const expected = routed.reduce((s, r) => s + r.cost_nusd -
    Math.round((r.input_tokens * PRICES.small.input + r.output_tokens * PRICES.small.output) * 1000), 0) / 1e9;
  const dir = mkdtempSync(join(tmpdir(), 'agentd-whatif-rules-'));
  const file = join(dir, 'rules.yaml');
  writeFileSync(file, `${models()}
routing:
  - name: short
    model: big
    to: small
    when: {max_prompt_tokens: 60}
  - name: needs-tools
    model: big
    to: small
    when: {tools: true}
`);
  const out = execFileSync(BIN, ['spend', 'whatif', '--rules', file, '--days', '1', '--data-dir', dataDir], { encoding: 'utf8' });
  const m = /would have saved \$([0-9.]+)/.exec(out);
  assert.ok(m, out);
  assert.ok(Math.abs(Number(m[1]) - expected) < 2e-6, `${out}\nexpected ${expected}`);
  assert.match(out, /^short\s+big\s+small\s+2\s/m);
  assert.match(out, /^needs-tools\s+big\s+small\s+0\s/m); // the ledger does not keep tools: no match
});

test('a rule that cannot work is a configuration error naming file:line:column', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-routecfg-'));
  const p = join(dir, 'bad.yaml');
  writeFileSync(p, `models:\n  - name: a\n    provider: mock\nrouting:\n  - name: r1\n    model: a\n    to: nosuch\n`);
  let r = spawnSync(BIN, ['config', 'check', p], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /bad\.yaml:5:\d+: routing: rule 'r1': to 'nosuch' is not a model/);
  writeFileSync(p, `models:\n  - name: a\n    provider: mock\nrouting:\n  - name: r1\n    model: a\n    to: a\n    when: {budget_below: -0.5}\n`);
  r = spawnSync(BIN, ['config', 'check', p], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /bad\.yaml:8:\d+: .*budget_below/);
});
