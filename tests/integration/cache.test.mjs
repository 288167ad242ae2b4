// The exact-match response cache (issue 14 item 1) against the real binary, a fake OpenAI and a fake Anthropic,
// through the official SDKs where they fit: off by default, hit/miss/bypass, streams replayed as streams in the
// caller's format with the original usage, Cache-Control, only complete answers stored, coalesced misses, a hit
// at $0 in the ledger, TTL, and configuration errors with file:line:column.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';


// Stops agentd and checks that the sanitizers had nothing to say (a leak or undefined behaviour fails the test).
async function stopClean(d) {
  const r = await d.stop();
  assert.doesNotMatch(d.rawStderr, /runtime error|AddressSanitizer|LeakSanitizer/);
  return r;
}

let f;
before(async () => { f = await startFake({ provider: 'all' }); });
after(async () => { await f.close(); });

const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai, FAKE_ANTHROPIC_KEY: FAKE_KEYS.anthropic };
const models = () => `
models:
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: claude
    provider: anthropic
    model: claude-sonnet-4-5
    base_url: ${f.urls.anthropic}
    api_key_env: FAKE_ANTHROPIC_KEY
prices:
  gpt-4o-mini: {input: 1000, output: 2000}
ledger:
  batch_interval: 20ms
`;

function chat(d, body, headers = {}) {
  return d.fetch('/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt', messages: [{ role: 'user', content: 'hello cache' }], ...body }),
  });
}

const upstreamChats = () => f.requests.filter((r) => r.provider === 'openai' && r.op === 'chat').length;
const upstreamMessages = () => f.requests.filter((r) => r.provider === 'anthropic').length;

test('off by default: two identical requests both reach the provider, no x-agentd-cache header', async () => {
  f.reset();
  const d = await startAgentd({ env, config: models() });
  try {
    for (let i = 0; i < 2; i++) {
      const r = await chat(d, {});
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-agentd-cache'), null);
      await r.json();
    }
    assert.equal(upstreamChats(), 2);
  } finally { await stopClean(d); }
});

test('a hit replays the first answer byte for byte at $0; the key is the canonical request', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `cache: {enabled: true}\n${models()}` });
  try {
    const r1 = await chat(d, { temperature: 0, max_tokens: 50 });
    assert.equal(r1.status, 200);
    assert.equal(r1.headers.get('x-agentd-cache'), 'miss');
    const b1 = await r1.text();
    assert.ok(Number(r1.headers.get('x-agentd-cost-usd')) > 0);
    // the same request with its keys in another order, another spelling of 0, and fields that do not change
    // the answer (user, stream: false, metadata): the same entry
    const r2 = await d.fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: '{"user":"someone","max_tokens":50,"stream":false,"temperature":0.0,"messages":[{"content":"hello cache","role":"user"}],"model":"gpt"}',
    });
    assert.equal(r2.status, 200);
    assert.equal(r2.headers.get('x-agentd-cache'), 'hit');
    assert.equal(r2.headers.get('x-agentd-cost-usd'), '0.00000000');
    assert.equal(await r2.text(), b1);
    assert.equal(upstreamChats(), 1);
    // a different sampling parameter is a different answer
    const r3 = await chat(d, { temperature: 0.5, max_tokens: 50 });
    assert.equal(r3.headers.get('x-agentd-cache'), 'miss');
    await r3.text();
    assert.equal(upstreamChats(), 2);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, /agentd_cache_requests_total\{result="hit"\} 1\b/);
    assert.match(m, /agentd_cache_saved_usd_total\{model="gpt"\} [0-9.]+/);
    assert.match(m, /agentd_cache_entries 2\b/);
  } finally { await stopClean(d); }
});

test('streams are replayed as streams with the original usage (OpenAI SDK)', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `cache: {enabled: true}\n${models()}` });
  try {
    const client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client', maxRetries: 0 });
    const run = async () => {
      const { data: stream, response } = await client.chat.completions.create({
        model: 'gpt', stream: true, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'stream me please' }],
      }).withResponse();
      let text = ''; let usage = null;
      for await (const c of stream) {
        text += c.choices[0]?.delta?.content || '';
        if (c.usage) usage = c.usage;
      }
      return { text, usage, cache: response.headers.get('x-agentd-cache'), ct: response.headers.get('content-type') };
    };
    const a = await run();
    const b = await run();
    assert.equal(a.cache, 'miss');
    assert.equal(b.cache, 'hit');
    assert.match(b.ct, /text\/event-stream/);
    assert.ok(a.text.length > 0);
    assert.equal(b.text, a.text);
    assert.ok(a.usage && a.usage.completion_tokens > 0);
    assert.deepEqual(b.usage, a.usage);
    assert.equal(upstreamChats(), 1);
    // the same request not streamed is another entry (the shape differs)
    const c = await client.chat.completions.create({ model: 'gpt', stream_options: undefined,
      messages: [{ role: 'user', content: 'stream me please' }] }).withResponse();
    assert.equal(c.response.headers.get('x-agentd-cache'), 'miss');
    assert.equal(c.data.choices[0].message.content, a.text);
  } finally { await stopClean(d); }
});

test('Anthropic callers get Anthropic streams and bodies from the cache (Anthropic SDK)', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `cache: {enabled: true}\n${models()}` });
  try {
    const anth = new Anthropic({ baseURL: d.url, apiKey: 'sk-client', maxRetries: 0 });
    const params = { model: 'claude', max_tokens: 64, messages: [{ role: 'user', content: 'hello from anthropic' }] };
    const s1 = anth.messages.stream(params);
    const m1 = await s1.finalMessage();
    const s2 = anth.messages.stream(params);
    const m2 = await s2.finalMessage();
    assert.equal(upstreamMessages(), 1);
    assert.deepEqual(m2.content, m1.content);
    assert.deepEqual(m2.usage, m1.usage);
    const { data: n1, response: h1 } = await anth.messages.create(params).withResponse();
    const { data: n2, response: h2 } = await anth.messages.create(params).withResponse();
    assert.equal(h1.headers.get('x-agentd-cache'), 'miss');
    assert.equal(h2.headers.get('x-agentd-cache'), 'hit');
    assert.deepEqual(n2, n1);
    assert.equal(upstreamMessages(), 2);
  } finally { await stopClean(d); }
});

test('Cache-Control no-cache refreshes, no-store neither reads nor writes; temperature policy', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `cache: {enabled: true}\n${models()}` });
  try {
    await (await chat(d, {})).text(); // miss, stored
    const nc = await chat(d, {}, { 'cache-control': 'max-age=0, no-cache' });
    assert.equal(nc.headers.get('x-agentd-cache'), 'bypass');
    await nc.text();
    assert.equal(upstreamChats(), 2);
    const hit = await chat(d, {});
    assert.equal(hit.headers.get('x-agentd-cache'), 'hit');
    await hit.text();
    const ns = await chat(d, { max_tokens: 7 }, { 'Cache-Control': 'no-store' });
    assert.equal(ns.headers.get('x-agentd-cache'), 'bypass');
    await ns.text();
    const after = await chat(d, { max_tokens: 7 });
    assert.equal(after.headers.get('x-agentd-cache'), 'miss'); // no-store kept nothing
    await after.text();
    assert.equal(upstreamChats(), 4);
  } finally { await stopClean(d); }

  f.reset();
  const d2 = await startAgentd({ env, config: `cache: {enabled: true, only_temperature_zero: true}\n${models()}` });
  try {
    const warm = await chat(d2, { temperature: 0.7 });
    assert.equal(warm.headers.get('x-agentd-cache'), 'bypass');
    await warm.text();
    const z1 = await chat(d2, { temperature: 0 });
    assert.equal(z1.headers.get('x-agentd-cache'), 'miss');
    await z1.text();
    const z2 = await chat(d2, { temperature: 0 });
    assert.equal(z2.headers.get('x-agentd-cache'), 'hit');
    await z2.text();
  } finally { await stopClean(d2); }
});

test('only complete, successful answers are stored (an error, a cut stream)', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `cache: {enabled: true}\n${models()}` });
  try {
    f.script([{ status: 400 }]); // an error that is not retried (a 5xx would be: docs/resilience.md)
    const e = await chat(d, { max_tokens: 11 });
    assert.equal(e.status, 400);
    await e.text();
    const ok = await chat(d, { max_tokens: 11 });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('x-agentd-cache'), 'miss');
    await ok.text();
    f.script([{ truncate: true }]);
    const cut = await chat(d, { max_tokens: 12, stream: true });
    await cut.text();
    const again = await chat(d, { max_tokens: 12, stream: true });
    assert.equal(again.headers.get('x-agentd-cache'), 'miss');
    await again.text();
    const hit = await chat(d, { max_tokens: 12, stream: true });
    assert.equal(hit.headers.get('x-agentd-cache'), 'hit');
    assert.match(await hit.text(), /\[DONE\]/);
    assert.equal(upstreamChats(), 4);
  } finally { await stopClean(d); }
});

test('concurrent identical misses are coalesced into one upstream call, across workers', async () => {
  f.reset();
  const d = await startAgentd({ env, config: `server:\n  workers: 2\ncache: {enabled: true}\n${models()}` });
  try {
    // the leader's answer takes 2 s: every other request arrives while it is in flight, even on a loaded machine
    f.script([{ delayMs: 2000 }]);
    const N = 8;
    const pending = Array.from({ length: N }, () => chat(d, { max_tokens: 21 }));
    const coalesced = async () => Number((/agentd_cache_coalesced_total (\d+)/.exec(await (await d.opsFetch('/metrics')).text()) || [0, 0])[1]);
    const t0 = Date.now(); // all but the leader wait (bounded, so that a broken coalescing fails instead of hanging)
    while (await coalesced() < N - 1 && Date.now() - t0 < 10000) await new Promise((r) => setImmediate(r));
    const rs = await Promise.all(pending);
    const bodies = await Promise.all(rs.map((r) => r.text()));
    for (const r of rs) assert.equal(r.status, 200);
    assert.equal(upstreamChats(), 1);
    const kinds = rs.map((r) => r.headers.get('x-agentd-cache')).sort();
    assert.equal(kinds.filter((k) => k === 'miss').length, 1);
    assert.equal(kinds.filter((k) => k === 'hit').length, N - 1);
    for (const b of bodies) assert.equal(b, bodies[0]);
    const m = await (await d.opsFetch('/metrics')).text();
    assert.match(m, new RegExp(`agentd_cache_coalesced_total ${N - 1}\\b`));
  } finally { await stopClean(d); }
});

test('a hit is a $0 row in the ledger (provider "cache") that records the saving; TTL expires answers', async () => {
  f.reset();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-cache-')), 'data');
  const ADMIN = 'admin-key-cache-0123456789abcdef';
  const d = await startAgentd({ env: { ...env, AGENTD_ADMIN_KEY: ADMIN }, noDataDir: true, args: ['--data-dir', dataDir],
    config: `cache: {enabled: true, models: {gpt: {ttl: 300ms}}}\n${models()}` });
  try {
    const stored = Date.now(); // the answer is stored after this
    const r1 = await chat(d, { max_tokens: 31 });
    const id1 = r1.headers.get('x-request-id');
    await r1.text();
    const r2 = await chat(d, { max_tokens: 31 });
    assert.equal(r2.headers.get('x-agentd-cache'), 'hit');
    await r2.text();
    const hitLine = await d.waitLog((l) => l.msg === 'llm' && l.cache === 'hit', 5000);
    assert.ok(hitLine.cache_saved_usd > 0); // the saving: what the first answer cost
    await d.waitLog((l) => l.msg === 'llm' && l.status === 200 && l.request_id !== id1, 5000).catch(() => {});
    let rows = [];
    for (let i = 0; i < 100 && rows.length < 2; i++) {
      await new Promise((res) => setTimeout(res, 20)); // the ledger writer's batch interval (20ms): polled
      const out = execFileSync('sqlite3', ['-json', join(dataDir, 'ledger.db'),
        'SELECT provider, cost_nusd, priced, input_tokens, output_tokens, saved_nusd FROM ledger_exchanges ORDER BY id'],
      { encoding: 'utf8' });
      rows = out.trim() ? JSON.parse(out) : [];
    }
    assert.equal(rows.length, 2);
    assert.equal(rows[0].provider, 'openai');
    assert.ok(rows[0].cost_nusd > 0);
    assert.equal(rows[0].saved_nusd, null); // not a hit: nothing saved (NULL)
    // the hit: $0 charged, and the saving is what the stored answer cost
    assert.deepEqual(rows[1], { provider: 'cache', cost_nusd: 0, priced: 1, input_tokens: 0, output_tokens: 0, saved_nusd: rows[0].cost_nusd });
    assert.ok(Math.abs(hitLine.cache_saved_usd - rows[0].cost_nusd / 1e9) < 1e-9);
    // /admin/spend and `agentd spend report` show it
    const adm = await d.fetch('/admin/spend?by=model&since=1d', { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(adm.status, 200);
    const gpt = (await adm.json()).find((x) => x.model === 'gpt');
    assert.equal(gpt.requests, 2);
    assert.ok(Math.abs(gpt.cost_usd - rows[0].cost_nusd / 1e9) < 1e-12);
    assert.ok(Math.abs(gpt.saved_usd - rows[0].cost_nusd / 1e9) < 1e-12);
    const rep = JSON.parse(execFileSync(BIN, ['spend', 'report', '--by', 'model', '--since', '1d', '--format', 'json',
      '--data-dir', dataDir], { encoding: 'utf8' }));
    assert.ok(Math.abs(rep.find((x) => x.model === 'gpt').saved_usd - rows[0].cost_nusd / 1e9) < 1e-12);
    const table = execFileSync(BIN, ['spend', 'report', '--by', 'model', '--since', '1d', '--data-dir', dataDir], { encoding: 'utf8' });
    assert.match(table.split('\n')[0], /cost_usd\s+incomplete\s+saved_usd$/);
    // the model's TTL (300ms): after it the answer is asked again
    const t0 = Date.now();
    let kind = 'hit';
    while (kind === 'hit' && Date.now() - t0 < 5000) {
      await new Promise((res) => setTimeout(res, 100));
      const r = await chat(d, { max_tokens: 31 });
      kind = r.headers.get('x-agentd-cache');
      await r.text();
    }
    assert.equal(kind, 'miss');
    assert.ok(Date.now() - stored >= 290); // not before its TTL
  } finally { await stopClean(d); }
});

test('cache.persist: answers saved at shutdown (mode 0600) are served after a restart', async () => {
  f.reset();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'agentd-cachep-')), 'data');
  const cfg = `cache: {enabled: true, persist: true}\n${models()}`;
  let d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: cfg });
  let first;
  try {
    const r = await chat(d, { max_tokens: 41 });
    assert.equal(r.headers.get('x-agentd-cache'), 'miss');
    first = await r.text();
  } finally { await stopClean(d); }
  assert.equal(statSync(join(dataDir, 'cache.bin')).mode & 0o777, 0o600);
  d = await startAgentd({ env, noDataDir: true, args: ['--data-dir', dataDir], config: cfg });
  try {
    await d.waitLog((l) => /cache: loaded 1 answers/.test(l.msg || ''), 5000);
    const r = await chat(d, { max_tokens: 41 });
    assert.equal(r.headers.get('x-agentd-cache'), 'hit');
    assert.equal(await r.text(), first);
    assert.equal(upstreamChats(), 1);
  } finally { await stopClean(d); }
});

test('a cache configuration that cannot work is an error naming file:line:column', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-cachecfg-'));
  const p = join(dir, 'bad.yaml');
  writeFileSync(p, `models:\n  - name: gpt\n    provider: mock\ncache:\n  enabled: true\n  models:\n    nosuch: {ttl: 5s}\n`);
  let r = spawnSync(BIN, ['config', 'check', p], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /bad\.yaml:7:\d+: cache\.models: 'nosuch' is not a model/);
  writeFileSync(p, `models:\n  - name: gpt\n    provider: mock\ncache:\n  ttl: -5s\n`);
  r = spawnSync(BIN, ['config', 'check', p], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /bad\.yaml:5:\d+: cache\.ttl/);
});
