// Provider prompt caching kept intact (issue 14 item 2). A fake Anthropic defined here implements prompt caching
// the way the API bills it: the prefix up to the last block marked cache_control (tools, then system, then
// messages) is written to its cache on the first call (cache_creation_input_tokens) and read on the next
// (cache_read_input_tokens); a prefix under the model's minimum (1024 tokens) is not cached. agentd must relay
// the client's cache_control bytes unchanged and charge the cache read at the cache-read price, and pass OpenAI's
// prompt_cache_key through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

const KEY = 'sk-ant-prompt-cache-test';
const MIN_CACHEABLE = 1024;
const tokens = (s) => s.split(/\s+/).filter(Boolean).length; // one token a word: the fake's own measure


// Stops agentd and checks that the sanitizers had nothing to say (a leak or undefined behaviour fails the test).
async function stopClean(d) {
  const r = await d.stop();
  assert.doesNotMatch(d.rawStderr, /runtime error|AddressSanitizer|LeakSanitizer/);
  return r;
}

let fake; let fakeUrl; let openaiFake;
const seen = []; // raw request bodies
const promptCache = new Map(); // sha256(prefix) -> tokens

function blocksOf(content) { return typeof content === 'string' ? [{ type: 'text', text: content }] : content || []; }

// The prefix up to and including the last block with cache_control, in the order the API caches: tools,
// system, messages. Returns { prefix, prefixTokens, restTokens }.
function split(req) {
  const seq = [];
  for (const t of req.tools || []) seq.push({ text: JSON.stringify(t), cc: t.cache_control });
  for (const b of blocksOf(req.system)) seq.push({ text: b.text || '', cc: b.cache_control });
  for (const m of req.messages || []) for (const b of blocksOf(m.content)) seq.push({ text: `${m.role}: ${b.text || ''}`, cc: b.cache_control });
  let last = -1;
  seq.forEach((s, i) => { if (s.cc) last = i; });
  const pre = seq.slice(0, last + 1).map((s) => s.text).join('\n');
  const rest = seq.slice(last + 1).map((s) => s.text).join('\n');
  return { prefix: pre, prefixTokens: last >= 0 ? tokens(pre) : 0, restTokens: tokens(rest) };
}

before(async () => {
  fake = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      if (req.headers['x-api-key'] !== KEY && req.headers.authorization !== `Bearer ${KEY}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ type: 'error', error: { type: 'authentication_error', message: 'bad key' } }));
        return;
      }
      seen.push(body);
      const r = JSON.parse(body);
      const { prefix, prefixTokens, restTokens } = split(r);
      let read = 0; let write = 0; let input = restTokens;
      if (prefixTokens >= MIN_CACHEABLE) {
        const h = createHash('sha256').update(r.model + '\n' + prefix).digest('hex');
        if (promptCache.has(h)) read = prefixTokens; else { write = prefixTokens; promptCache.set(h, prefixTokens); }
      } else {
        input += prefixTokens;
      }
      const usage = { input_tokens: input, cache_creation_input_tokens: write, cache_read_input_tokens: read, output_tokens: 3 };
      const msg = { id: `msg_${seen.length}`, type: 'message', role: 'assistant', model: r.model,
        content: [{ type: 'text', text: 'ok got it' }], stop_reason: 'end_turn', stop_sequence: null, usage };
      if (!r.stream) {
        res.writeHead(200, { 'content-type': 'application/json', 'request-id': `req_${seen.length}` });
        res.end(JSON.stringify(msg));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'request-id': `req_${seen.length}` });
      const ev = (name, data) => res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
      ev('message_start', { type: 'message_start', message: { ...msg, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } } });
      ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
      ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'ok got it' } });
      ev('content_block_stop', { type: 'content_block_stop', index: 0 });
      ev('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 } });
      ev('message_stop', { type: 'message_stop' });
      res.end();
    });
  });
  await new Promise((r) => fake.listen(0, '127.0.0.1', r));
  fakeUrl = `http://127.0.0.1:${fake.address().port}`;
  openaiFake = await startFake({ provider: 'openai' });
});
after(async () => { await new Promise((r) => fake.close(r)); await openaiFake.close(); });

// USD per million tokens: cache reads at a tenth of input, writes at 1.25x (Anthropic's billing)
const P = { input: 3, output: 15, cached_input: 0.3, cache_write: 3.75 };
const config = () => `
models:
  - name: claude
    provider: anthropic
    model: claude-sonnet-4-5
    base_url: ${fakeUrl}
    api_key_env: PC_ANTHROPIC_KEY
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${openaiFake.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
prices:
  claude-sonnet-4-5: {input: ${P.input}, output: ${P.output}, cached_input: ${P.cached_input}, cache_write: ${P.cache_write}}
`;
const env = { PC_ANTHROPIC_KEY: KEY, FAKE_OPENAI_KEY: FAKE_KEYS.openai };

const longDoc = Array.from({ length: 1500 }, (_, i) => `word${i % 97}`).join(' ');
const usd = (u) => (u.input_tokens * P.input + u.cache_creation_input_tokens * P.cache_write +
  u.cache_read_input_tokens * P.cached_input + u.output_tokens * P.output) / 1e6;

test('the same long prompt twice: the second call reads the provider cache and is charged as a cache read', async () => {
  seen.length = 0; promptCache.clear();
  const d = await startAgentd({ env, config: config() });
  try {
    const anth = new Anthropic({ baseURL: d.url, apiKey: 'sk-client', maxRetries: 0 });
    const params = {
      model: 'claude', max_tokens: 100,
      system: [{ type: 'text', text: longDoc, cache_control: { type: 'ephemeral' } }],
      messages: [{ role: 'user', content: 'summarise the document' }],
    };
    const first = await anth.messages.create(params).withResponse();
    const second = await anth.messages.create({ ...params, messages: [{ role: 'user', content: 'now in one line' }] }).withResponse();
    assert.equal(first.data.usage.cache_creation_input_tokens, 1500);
    assert.equal(first.data.usage.cache_read_input_tokens, 0);
    assert.equal(second.data.usage.cache_read_input_tokens, 1500);
    assert.equal(second.data.usage.cache_creation_input_tokens, 0);
    const c1 = Number(first.response.headers.get('x-agentd-cost-usd'));
    const c2 = Number(second.response.headers.get('x-agentd-cost-usd'));
    assert.ok(Math.abs(c1 - usd(first.data.usage)) < 1e-8, `${c1} vs ${usd(first.data.usage)}`);
    assert.ok(Math.abs(c2 - usd(second.data.usage)) < 1e-8, `${c2} vs ${usd(second.data.usage)}`);
    assert.ok(c2 < c1 / 5); // a cache read is a tenth of the input price
    // the whole prompt is counted as input, of which 1500 read from the cache
    assert.equal(Number(second.response.headers.get('x-agentd-input-tokens')), 1500 + second.data.usage.input_tokens);

    // streamed: the cache counters arrive in message_start and are charged the same way
    const s = anth.messages.stream({ ...params, messages: [{ role: 'user', content: 'a third question' }] });
    const m = await s.finalMessage();
    assert.equal(m.usage.cache_read_input_tokens, 1500);
    const line = await d.waitLog((l) => l.msg === 'llm' && l.stream === true, 5000);
    assert.equal(line.cached_tokens, 1500); // the log line carries the cache read count
  } finally { await stopClean(d); }
});

test('cache_control reaches the provider byte for byte (the client\'s own spelling, a 1h TTL, tools and messages)', async () => {
  seen.length = 0; promptCache.clear();
  const d = await startAgentd({ env, config: config() });
  try {
    const raw = '{"model":"claude","max_tokens":50,\n "tools":[{"name":"t","description":"d","input_schema":{"type":"object"},"cache_control":{ "type" : "ephemeral","ttl":"1h" }}],' +
      '"system":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}],' +
      '"messages":[{"role":"user","content":[{"type":"text","text":"hello","cache_control" :{"type":"ephemeral","ttl":"5m"}}]}]}';
    const r = await d.fetch('/v1/messages', {
      method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': 'sk-client' },
      body: raw,
    });
    assert.equal(r.status, 200);
    await r.json();
    assert.equal(seen.length, 1);
    // only the model is replaced
    assert.equal(seen[0], raw.replace('"model":"claude"', '"model":"claude-sonnet-4-5"'));
  } finally { await stopClean(d); }
});

test('OpenAI prompt_cache_key reaches the provider (OpenAI SDK)', async () => {
  openaiFake.reset();
  const d = await startAgentd({ env, config: config() });
  try {
    const client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client', maxRetries: 0 });
    await client.chat.completions.create({ model: 'gpt', prompt_cache_key: 'tenant-42-docs',
      messages: [{ role: 'user', content: 'hi' }] });
    const req = openaiFake.requests.find((x) => x.op === 'chat');
    assert.equal(req.json.prompt_cache_key, 'tenant-42-docs');
  } finally { await stopClean(d); }
});

// Bedrock: the Anthropic client's cache_control becomes a Converse cachePoint block at the same place (the fake
// Bedrock caches the prefix up to the last cachePoint, as Bedrock bills it), and the cache read / write tokens come
// back into the client's usage and are charged at the cache prices.
const BR_MODEL = 'anthropic.claude-3-5-haiku-20241022-v1:0';
const BP = { input: 0.8, output: 4, cached_input: 0.08, cache_write: 1 };
const usdBr = (u) => (u.input_tokens * BP.input + u.cache_creation_input_tokens * BP.cache_write +
  u.cache_read_input_tokens * BP.cached_input + u.output_tokens * BP.output) / 1e6;

test('Bedrock: cache_control is sent as cachePoint blocks, and the cache read is charged as a cache read', async () => {
  const br = await startFake({ provider: 'bedrock' });
  const d = await startAgentd({
    env: { AWS_ACCESS_KEY_ID: FAKE_KEYS.bedrock.accessKeyId, AWS_SECRET_ACCESS_KEY: FAKE_KEYS.bedrock.secretAccessKey },
    config: `
models:
  - name: claude-br
    provider: bedrock
    model: ${BR_MODEL}
    base_url: ${br.url}
    region: us-east-1
prices:
  "${BR_MODEL}": {input: ${BP.input}, output: ${BP.output}, cached_input: ${BP.cached_input}, cache_write: ${BP.cache_write}}
`,
  });
  try {
    const anth = new Anthropic({ baseURL: d.url, apiKey: 'sk-client', maxRetries: 0 });
    const doc = `bedrock ${longDoc}`;
    const params = {
      model: 'claude-br', max_tokens: 100,
      tools: [{ name: 'lookup', description: 'd', input_schema: { type: 'object' }, cache_control: { type: 'ephemeral' } }],
      system: [{ type: 'text', text: doc, cache_control: { type: 'ephemeral', ttl: '1h' } }, { type: 'text', text: 'be brief' }],
      messages: [{ role: 'user', content: 'summarise the document' }],
    };
    const first = await anth.messages.create(params).withResponse();
    assert.equal(first.response.headers.get('x-agentd-dropped-fields'), null, 'translated, not dropped');
    const up = br.requests.find((r) => r.op === 'converse').json;
    assert.deepEqual(up.system, [{ text: doc }, { cachePoint: { type: 'default', ttl: '1h' } }, { text: 'be brief' }]);
    assert.deepEqual(up.toolConfig.tools.map((t) => Object.keys(t)[0]), ['toolSpec', 'cachePoint']);
    const written = first.data.usage.cache_creation_input_tokens;
    assert.ok(written >= 1024, `the fake wrote ${written} tokens`);
    assert.equal(first.data.usage.cache_read_input_tokens, 0);

    const second = await anth.messages.create({ ...params, messages: [{ role: 'user', content: 'now in one line' }] }).withResponse();
    assert.equal(second.data.usage.cache_read_input_tokens, written);
    assert.equal(second.data.usage.cache_creation_input_tokens, 0);
    const c1 = Number(first.response.headers.get('x-agentd-cost-usd'));
    const c2 = Number(second.response.headers.get('x-agentd-cost-usd'));
    assert.ok(Math.abs(c1 - usdBr(first.data.usage)) < 1e-8, `${c1} vs ${usdBr(first.data.usage)}`);
    assert.ok(Math.abs(c2 - usdBr(second.data.usage)) < 1e-8, `${c2} vs ${usdBr(second.data.usage)}`);
    assert.ok(c2 < c1 / 5, `${c2} vs ${c1}`);

    // streamed (ConverseStream): the counters arrive in the metadata event and are charged the same way
    const s = anth.messages.stream({ ...params, messages: [{ role: 'user', content: 'a third question' }] });
    const m = await s.finalMessage();
    assert.equal(m.usage.cache_read_input_tokens, written);
    const line = await d.waitLog((l) => l.msg === 'llm' && l.stream === true, 5000);
    assert.equal(line.cached_tokens, written);
  } finally { await stopClean(d); await br.close(); }
});
