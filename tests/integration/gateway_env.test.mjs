// Zero-configuration providers from the environment, proxies, TLS verification, and secrets that never leak.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const post = (d, body) => d.fetch('/v1/chat/completions', { method: 'POST', body: JSON.stringify(body) });

test('a provider key in the environment is enough: well-known models appear and work with no configuration', async () => {
  const oa = await startFake({ provider: 'openai' });
  const d = await startAgentd({ env: { OPENAI_API_KEY: FAKE_KEYS.openai, OPENAI_BASE_URL: oa.urls.openai } });
  try {
    const ids = (await (await d.fetch('/v1/models')).json()).data.map((m) => m.id);
    for (const id of ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small', 'mock']) assert.ok(ids.includes(id), id);
    assert.ok(!ids.includes('claude-sonnet-4-5'), 'no Anthropic models without an Anthropic key');
    const res = await post(d, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'zero config' }] });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).choices[0].message.content, 'echo: zero config');
    assert.equal(oa.requests[0].headers.authorization, `Bearer ${FAKE_KEYS.openai}`);
    // gpt-4o-mini is in the built-in price table
    assert.notEqual(res.headers.get('x-agentd-cost-usd'), 'unknown');
    // The key never reaches a log line.
    assert.ok(!d.rawStderr.includes(FAKE_KEYS.openai), 'API key leaked into the logs');
  } finally {
    assert.equal((await d.stop()).code, 0);
    await oa.close();
  }
});

test('keys: config print masks inline secrets; upstream auth errors never echo them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-sec-'));
  const cfg = join(dir, 'c.yaml');
  const secret = 'sk-very-secret-inline-key-0000';
  const fs = await import('node:fs');
  fs.writeFileSync(cfg, `models:\n  - name: m\n    provider: openai\n    model: gpt-4o\n    api_key: ${secret}\n`);
  const r = spawnSync(BIN, ['config', 'print', '--config', cfg], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(!r.stdout.includes(secret));
  assert.match(r.stdout, /api_key: "\*\*\*"/);
  const oa = await startFake({ provider: 'openai' });
  fs.writeFileSync(cfg, `models:\n  - name: m\n    provider: openai\n    model: gpt-4o\n    base_url: ${oa.urls.openai}\n    api_key: ${secret}\n`);
  const d = await startAgentd({ args: ['--config', cfg] });
  try {
    const res = await post(d, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(res.status, 502); // the fake does not know this key: agentd's failure, not the client's
    const text = await res.text();
    assert.ok(!text.includes(secret), 'the key came back in the error body');
    assert.ok(!d.rawStderr.includes(secret), 'the key reached the logs');
  } finally {
    assert.equal((await d.stop()).code, 0);
    await oa.close();
  }
});

test('the standard proxy variables are honoured for upstream calls', async () => {
  const seen = [];
  const proxy = http.createServer((req, res) => {
    seen.push({ url: req.url, host: req.headers.host });
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'p', object: 'chat.completion', created: 1, model: 'x', choices: [{ index: 0, message: { role: 'assistant', content: 'via proxy' }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } }));
    });
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  const d = await startAgentd({
    env: { http_proxy: `http://127.0.0.1:${proxy.address().port}` },
    config: 'models:\n  - name: far\n    provider: openai-compatible\n    model: x\n    base_url: http://llm.internal.example:8000/v1\n',
  });
  try {
    const res = await post(d, { model: 'far', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).choices[0].message.content, 'via proxy');
    assert.equal(seen.length, 1);
    assert.equal(seen[0].url, 'http://llm.internal.example:8000/v1/chat/completions'); // absolute-form: a proxy request
  } finally {
    assert.equal((await d.stop()).code, 0);
    proxy.close();
  }
});

test('TLS certificates are verified: a self-signed upstream is refused with a clear error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-days', '1',
      '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')], { stdio: 'ignore' });
  } catch {
    t.skip('openssl command not available');
    return;
  }
  let hits = 0;
  const srv = https.createServer({ key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) }, (req, res) => {
    hits++;
    res.end('{}');
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const d = await startAgentd({
    config: `models:\n  - name: selfsigned\n    provider: openai-compatible\n    model: x\n    base_url: https://127.0.0.1:${srv.address().port}/v1\n`,
  });
  try {
    const res = await post(d, { model: 'selfsigned', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(res.status, 502);
    assert.match((await res.json()).error.message, /certificate/i);
    assert.equal(hits, 0, 'no request may be sent over an unverified connection');
  } finally {
    assert.equal((await d.stop()).code, 0);
    srv.close();
  }
});

test('mock timing settings shape the stream (lower bounds only: the machine may be slow, never fast)', async () => {
  const d = await startAgentd({
    config: 'models:\n  - name: slowmock\n    provider: mock\n    mock: {latency: 100ms, ttft: 100ms, chunk_interval: 50ms, chunk_words: 2}\n',
  });
  try {
    const t0 = Date.now();
    const res = await post(d, { model: 'slowmock', stream: true, messages: [{ role: 'user', content: 'mock:words=6' }] });
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let text = '', firstContent = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
      if (!firstContent && text.includes('"content":"w1 w2"')) firstContent = Date.now() - t0;
    }
    const total = Date.now() - t0;
    assert.ok(firstContent >= 200, `first content after ${firstContent} ms, expected >= latency + ttft`);
    assert.ok(total >= 300, `stream took ${total} ms, expected >= 200 + 2 intervals`);
    const contents = text.split('\n\n').filter((b) => b.startsWith('data: {')).map((b) => JSON.parse(b.slice(6)))
      .map((c) => c.choices[0]?.delta?.content).filter(Boolean);
    assert.deepEqual(contents, ['w1 w2', ' w3 w4', ' w5 w6']);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('upstream connections are kept alive and reused across requests', async () => {
  let connections = 0, requests = 0;
  const up = http.createServer((req, res) => {
    requests++;
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'r', object: 'chat.completion', created: 1, model: 'x', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
    });
  });
  up.on('connection', () => { connections++; });
  await new Promise((r) => up.listen(0, '127.0.0.1', r));
  const d = await startAgentd({
    config: `server:\n  workers: 1\nmodels:\n  - name: ka\n    provider: openai-compatible\n    model: x\n    base_url: http://127.0.0.1:${up.address().port}/v1\n`,
  });
  try {
    for (let i = 0; i < 10; i++) {
      const res = await post(d, { model: 'ka', messages: [{ role: 'user', content: `n${i}` }] });
      assert.equal(res.status, 200);
      await res.text();
    }
    assert.equal(requests, 10);
    assert.equal(connections, 1, `10 sequential requests used ${connections} upstream connections`);
  } finally {
    assert.equal((await d.stop()).code, 0);
    up.close();
  }
});
