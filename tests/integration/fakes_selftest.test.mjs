// Fidelity check of the fake upstream providers (tests/fakes/) with the providers' official SDKs: if the real
// clients accept our responses, streams, errors, SigV4 checks and event-stream frames, the gateway is tested
// against something that behaves like the real APIs. Also covers the scriptable misbehaviours and the standalone
// command line. Needs `cd tests && npm install`.
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

import OpenAI, { AzureOpenAI } from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI, ApiError as GenAIApiError } from '@google/genai';
import {
  BedrockRuntimeClient, ConverseCommand, ConverseStreamCommand, ThrottlingException, ValidationException,
} from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';

import { startFake, FAKE_KEYS, signSigV4, decodeMessages, encodeMessage, crc32 } from '../fakes/fake.mjs';
import { crc32Fallback } from '../fakes/eventstream.mjs';
import { embedding, countWords } from '../fakes/content.mjs';

const FAKE_CLI = fileURLToPath(new URL('../fakes/fake.mjs', import.meta.url));

// Expected usage per the README rules.
const inTok = (...texts) => Math.max(1, Math.ceil(texts.reduce((n, t) => n + t.length, 0) / 4));
const outTok = (s) => Math.max(1, countWords(s));

const WEATHER_SCHEMA = { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city'] };
const CALL_ARGS = { city: 'Paris', days: 3, opts: { units: 'metric', tags: ['a', 'b'] } };
const CALL_TEXT = `please CALL get_weather ${JSON.stringify(CALL_ARGS)} now`;

let fake;
before(async () => { fake = await startFake({ provider: 'all', chunks: 4 }); });
after(async () => { await fake.close(); });
beforeEach(() => fake.reset());

describe('OpenAI SDK against the fake OpenAI', () => {
  let client;
  before(() => { client = new OpenAI({ apiKey: FAKE_KEYS.openai, baseURL: fake.urls.openai, maxRetries: 0 }); });

  test('plain completion: echo text, usage per the documented rules, auth header seen', async () => {
    const r = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'hello brave new world' }],
    });
    assert.equal(r.object, 'chat.completion');
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.model, 'gpt-4o-mini');
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].message.content, 'echo: hello brave new world');
    assert.equal(r.choices[0].message.refusal, null);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.usage.prompt_tokens, inTok('You are terse.', 'hello brave new world'));
    assert.equal(r.usage.completion_tokens, 5);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 5);
    assert.equal(r.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 0);
    assert.equal(fake.requests.length, 1);
    assert.equal(fake.requests[0].headers.authorization, `Bearer ${FAKE_KEYS.openai}`);
    assert.equal(fake.requests[0].json.messages[1].content, 'hello brave new world');
  });

  test('multimodal user content: text parts joined by a space, images as [image]', async () => {
    const r = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }, { type: 'text', text: 'here' }] }],
    });
    assert.equal(r.choices[0].message.content, 'echo: look [image] here');
    assert.equal(r.usage.prompt_tokens, inTok('look', '[image]', 'here'));
  });

  test('streaming with include_usage: role first, content deltas, finish chunk, usage chunk, [DONE]', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream me please' }],
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, 'echo: stream me please');
    assert.equal(chunks.filter((c) => c.choices[0]?.delta?.content).length, 4);
    const fin = chunks.find((c) => c.choices[0]?.finish_reason);
    assert.equal(fin.choices[0].finish_reason, 'stop');
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 4);
    assert.equal(last.usage.prompt_tokens, inTok('stream me please'));
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  });

  test('streaming without include_usage sends no usage chunk', async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'x' }] });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.every((c) => c.usage === undefined && c.choices.length === 1));
  });

  test('tool call (non-stream) and tool result round trip', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: WEATHER_SCHEMA } }];
    const r = await client.chat.completions.create({ model: 'gpt-4o', tools, messages: [{ role: 'user', content: CALL_TEXT }] });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.content, null);
    assert.equal(c.message.tool_calls.length, 1);
    const tc = c.message.tool_calls[0];
    assert.match(tc.id, /^call_[A-Za-z0-9]{24}$/);
    assert.equal(tc.type, 'function');
    assert.equal(tc.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(tc.function.arguments), CALL_ARGS);
    assert.equal(r.usage.completion_tokens, 1 + Math.ceil(JSON.stringify(CALL_ARGS).length / 4));

    const r2 = await client.chat.completions.create({
      model: 'gpt-4o', tools,
      messages: [{ role: 'user', content: CALL_TEXT }, c.message, { role: 'tool', tool_call_id: tc.id, content: 'sunny, 21C' }],
    });
    assert.equal(r2.choices[0].message.content, 'echo: tool result: sunny, 21C');
    assert.equal(r2.choices[0].finish_reason, 'stop');
  });

  test('CALL without a matching tool definition is echoed, not called', async () => {
    const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: CALL_TEXT }] });
    assert.equal(r.choices[0].message.content, 'echo: ' + CALL_TEXT);
  });

  test('streamed tool calls (two in parallel) accumulate through the SDK stream helper', async () => {
    const tools = ['get_weather', 'get_time'].map((name) => ({ type: 'function', function: { name, parameters: { type: 'object' } } }));
    const runner = client.chat.completions.stream({
      model: 'gpt-4o', tools,
      messages: [{ role: 'user', content: `CALL get_weather {"city":"Oslo"} and CALL get_time {"tz":"Europe/Oslo"}` }],
    });
    const fragments = [];
    runner.on('chunk', (c) => { for (const t of c.choices[0]?.delta?.tool_calls ?? []) fragments.push(t); });
    const final = await runner.finalChatCompletion();
    const calls = final.choices[0].message.tool_calls;
    assert.equal(final.choices[0].finish_reason, 'tool_calls');
    assert.deepEqual(calls.map((c) => c.function.name), ['get_weather', 'get_time']);
    assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: 'Oslo' });
    assert.deepEqual(JSON.parse(calls[1].function.arguments), { tz: 'Europe/Oslo' });
    assert.ok(fragments.filter((f) => f.index === 0 && f.function?.arguments).length >= 2, 'arguments arrive in several fragments');
  });

  test('max_tokens cuts the reply to N words with finish_reason length; stop sequences cut with stop', async () => {
    const r = await client.chat.completions.create({ model: 'gpt-4o-mini', max_tokens: 3, messages: [{ role: 'user', content: 'one two three four five' }] });
    assert.equal(r.choices[0].message.content, 'echo: one two');
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 3);
    const s = await client.chat.completions.create({ model: 'gpt-4o-mini', stop: ['four'], messages: [{ role: 'user', content: 'one two three four five' }] });
    assert.equal(s.choices[0].message.content, 'echo: one two three ');
    assert.equal(s.choices[0].finish_reason, 'stop');
  });

  test('validation errors come back as the SDK\'s typed errors with OpenAI\'s error object', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o-mini' }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'missing_required_parameter');
      assert.equal(e.param, 'messages');
      assert.equal(e.type, 'invalid_request_error');
      return true;
    });
    await assert.rejects(client.chat.completions.create({ messages: [{ role: 'user', content: 'x' }] }), OpenAI.BadRequestError);
    await assert.rejects(client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }], bogus: 1 }),
      (e) => e.status === 400 && /Unrecognized request argument supplied: bogus/.test(e.message));
    await assert.rejects(client.chat.completions.create({ model: 'm', messages: [{ role: 'tool', tool_call_id: 'x', content: 'r' }] }),
      (e) => e.status === 400 && /must be a response to a preceeding message with 'tool_calls'/.test(e.message));
    await assert.rejects(client.chat.completions.create({ model: 'm', stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'x' }] }),
      (e) => e.status === 400 && e.param === 'stream_options');
  });

  test('wrong key: 401 AuthenticationError with code invalid_api_key', async () => {
    const bad = new OpenAI({ apiKey: 'sk-wrong-key-123456', baseURL: fake.urls.openai, maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError);
      assert.equal(e.code, 'invalid_api_key');
      assert.match(e.message, /Incorrect API key provided: sk-\*+3456/);
      return true;
    });
  });

  test('scripted 429: RateLimitError with retry-after and x-ratelimit headers', async () => {
    fake.script([{ status: 429, retryAfter: 2 }]);
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError);
      assert.equal(e.status, 429);
      assert.equal(e.code, 'rate_limit_exceeded');
      assert.equal(e.headers.get('retry-after'), '2');
      assert.equal(e.headers.get('retry-after-ms'), '2000');
      assert.equal(e.headers.get('x-ratelimit-remaining-requests'), '0');
      return true;
    });
    // The queue is consumed: the next request succeeds.
    const ok = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(ok.choices[0].message.content, 'echo: x');
  });

  test('insufficient_quota 429 and 5xx typed errors', async () => {
    fake.script([{ status: 429, quota: true }, { status: 500 }, { status: 503 }, { status: 502 }]);
    const call = () => client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] });
    await assert.rejects(call(), (e) => e instanceof OpenAI.RateLimitError && e.code === 'insufficient_quota');
    await assert.rejects(call(), (e) => e instanceof OpenAI.InternalServerError && e.status === 500 && e.type === 'server_error');
    await assert.rejects(call(), (e) => e instanceof OpenAI.InternalServerError && e.status === 503);
    await assert.rejects(call(), (e) => e instanceof OpenAI.InternalServerError && e.status === 502);
  });

  test('the SDK\'s own retry honours retry-after-ms from a 503 burst', async () => {
    const retrying = new OpenAI({ apiKey: FAKE_KEYS.openai, baseURL: fake.urls.openai, maxRetries: 2 });
    fake.script([{ status: 503, retryAfterMs: 5, times: 2 }]);
    const r = await retrying.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'again' }] });
    assert.equal(r.choices[0].message.content, 'echo: again');
    assert.equal(fake.requests.length, 3);
  });

  test('mid-stream error: the SDK raises the error carried in the stream', async () => {
    fake.script([{ midStreamError: true }]);
    const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'one two three four five six' }] });
    const got = [];
    await assert.rejects((async () => { for await (const c of stream) got.push(c); })(), (e) => e instanceof OpenAI.APIError && /server had an error/.test(e.message));
    assert.ok(got.length >= 1 && got.length < 6, `some chunks arrived before the error (${got.length})`);
  });

  test('malformed body: the SDK fails to parse it', async () => {
    fake.script([{ malformed: true }]);
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }), (e) => /JSON/i.test(String(e.message)));
  });

  test('embeddings: SDK default (base64) decodes to the documented deterministic vector; floats with dimensions', async () => {
    const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta'] });
    assert.equal(fake.requests[0].json.encoding_format, 'base64');
    assert.equal(r.data.length, 2);
    assert.equal(r.data[0].embedding.length, 1536);
    const want = embedding('alpha', 1536);
    for (let i = 0; i < 16; i++) assert.ok(Math.abs(r.data[0].embedding[i] - want[i]) < 1e-6);
    assert.equal(r.usage.prompt_tokens, inTok('alpha') + inTok('beta'));
    const f = await client.embeddings.create({ model: 'text-embedding-3-large', input: 'gamma', dimensions: 8, encoding_format: 'float' });
    assert.deepEqual(f.data[0].embedding, embedding('gamma', 8));
    const norm = Math.hypot(...f.data[0].embedding);
    assert.ok(Math.abs(norm - 1) < 1e-5);
  });

  test('models list', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes('gpt-4o-mini'));
  });
});

describe('OpenAI SDK (AzureOpenAI) against the fake Azure OpenAI', () => {
  let client;
  before(() => {
    client = new AzureOpenAI({ apiKey: FAKE_KEYS.azure, endpoint: fake.urls.azure, apiVersion: '2024-10-21', deployment: 'prod-gpt4o', maxRetries: 0 });
  });

  test('plain completion through /openai/deployments/{d}/chat/completions with api-key and filter results', async () => {
    const r = await client.chat.completions.create({ model: 'ignored', messages: [{ role: 'user', content: 'hi azure' }] });
    assert.equal(r.choices[0].message.content, 'echo: hi azure');
    assert.equal(r.prompt_filter_results[0].content_filter_results.hate.filtered, false);
    assert.equal(r.choices[0].content_filter_results.violence.severity, 'safe');
    const req = fake.requests[0];
    assert.equal(req.provider, 'azure');
    assert.equal(req.path, '/openai/deployments/prod-gpt4o/chat/completions');
    assert.equal(req.query['api-version'], '2024-10-21');
    assert.equal(req.headers['api-key'], FAKE_KEYS.azure);
  });

  test('streaming: the empty-choices prompt-filter chunk first, then content', async () => {
    const stream = await client.chat.completions.create({ model: 'x', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi azure stream' }] });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.deepEqual(chunks[0].choices, []);
    assert.ok(chunks[0].prompt_filter_results);
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'echo: hi azure stream');
    assert.equal(chunks.at(-1).usage.completion_tokens, 4);
  });

  test('429 with retry-after, wrong key 401, unknown api-version 400, missing api-version 404', async () => {
    fake.script([{ status: 429, retryAfter: 7 }]);
    await assert.rejects(client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError);
      assert.equal(e.headers.get('retry-after'), '7');
      assert.match(e.message, /Please retry after 7 seconds/);
      return true;
    });
    const bad = new AzureOpenAI({ apiKey: 'nope', endpoint: fake.urls.azure, apiVersion: '2024-10-21', deployment: 'd', maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'x' }] }), (e) => e instanceof OpenAI.AuthenticationError && e.code === '401');
    const old = new AzureOpenAI({ apiKey: FAKE_KEYS.azure, endpoint: fake.urls.azure, apiVersion: '2019-01-01', deployment: 'd', maxRetries: 0 });
    await assert.rejects(old.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'x' }] }), (e) => e.status === 400 && /API version not supported/.test(e.message));
    const r = await fetch(`${fake.url}/openai/deployments/d/chat/completions`, { method: 'POST', headers: { 'api-key': FAKE_KEYS.azure, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(r.status, 404);
    assert.deepEqual(await r.json(), { error: { code: '404', message: 'Resource not found' } });
  });

  test('embeddings through the deployment path', async () => {
    const r = await client.embeddings.create({ model: 'x', input: 'azure text', encoding_format: 'float', dimensions: 4 });
    assert.deepEqual(r.data[0].embedding, embedding('azure text', 4));
  });
});

describe('OpenAI SDK against the fake OpenAI-compatible server (vLLM flavour)', () => {
  test('plain and streaming; usage in the stream only when asked', async () => {
    const client = new OpenAI({ apiKey: 'anything', baseURL: fake.urls['openai-compatible'], maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'meta-llama/Llama-3.1-8B-Instruct', messages: [{ role: 'user', content: 'hey' }], top_k: 5 });
    assert.equal(r.choices[0].message.content, 'echo: hey');
    assert.equal(fake.requests[0].provider, 'openai-compatible');
    const s1 = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hey' }] });
    const c1 = [];
    for await (const c of s1) c1.push(c);
    assert.ok(c1.every((c) => !c.usage));
    const s2 = await client.chat.completions.create({ model: 'm', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hey' }] });
    const c2 = [];
    for await (const c of s2) c2.push(c);
    assert.equal(c2.at(-1).usage.completion_tokens, 2);
  });
});

describe('Anthropic SDK against the fake Anthropic', () => {
  let client;
  before(() => { client = new Anthropic({ apiKey: FAKE_KEYS.anthropic, baseURL: fake.urls.anthropic, maxRetries: 0 }); });

  test('plain message: content, stop_reason, usage; headers x-api-key and anthropic-version seen', async () => {
    const r = await client.messages.create({ model: 'claude-haiku-4-5', max_tokens: 100, system: 'Be brief.', messages: [{ role: 'user', content: 'hello anthropic world' }] });
    assert.match(r.id, /^msg_01/);
    assert.equal(r.type, 'message');
    assert.equal(r.role, 'assistant');
    assert.deepEqual(r.content, [{ type: 'text', text: 'echo: hello anthropic world' }]);
    assert.equal(r.stop_reason, 'end_turn');
    assert.equal(r.stop_sequence, null);
    assert.equal(r.usage.input_tokens, inTok('Be brief.', 'hello anthropic world'));
    assert.equal(r.usage.output_tokens, 4);
    assert.equal(r.usage.cache_read_input_tokens, 0);
    // SDK 1.x sends API version 2026-10-21 and the key as a bearer token.
    const h = fake.requests[0].headers;
    assert.equal(h.authorization, `Bearer ${FAKE_KEYS.anthropic}`);
    assert.equal(h['anthropic-version'], '2026-10-21');
  });

  test('API versions: x-api-key with 2023-06-01 accepts temperature; 2026-10-21 rejects sampling parameters', async () => {
    const old = new Anthropic({ apiKey: null, baseURL: fake.urls.anthropic, maxRetries: 0, defaultHeaders: { 'x-api-key': FAKE_KEYS.anthropic, 'anthropic-version': '2023-06-01' } });
    const r = await old.messages.create({ model: 'm', max_tokens: 10, temperature: 0.5, messages: [{ role: 'user', content: 'old' }] });
    assert.equal(r.content[0].text, 'echo: old');
    assert.equal(fake.requests[0].headers['x-api-key'], FAKE_KEYS.anthropic);
    assert.equal(fake.requests[0].headers.authorization, undefined);
    await assert.rejects(client.messages.create({ model: 'm', max_tokens: 10, temperature: 0.5, messages: [{ role: 'user', content: 'new' }] }),
      (e) => e instanceof Anthropic.BadRequestError && /temperature/.test(e.message));
  });

  test('raw SSE: event/data pairs in the documented order, ping after the first content_block_start', async () => {
    const r = await fetch(`${fake.url}/v1/messages`, {
      method: 'POST', headers: { 'x-api-key': FAKE_KEYS.anthropic, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'raw sse' }] }),
    });
    assert.equal(r.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const events = (await r.text()).split('\n\n').filter(Boolean).map((e) => {
      const [ev, data] = e.split('\n');
      assert.ok(ev.startsWith('event: ') && data.startsWith('data: '));
      const j = JSON.parse(data.slice(6));
      assert.equal(j.type, ev.slice(7));
      return j.type;
    });
    assert.deepEqual(events, ['message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_delta', 'content_block_delta',
      'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
  });

  test('streaming: the SDK\'s MessageStream accumulates our SSE sequence', async () => {
    const stream = client.messages.stream({ model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'stream this text' }] });
    const types = [];
    let text = '';
    stream.on('streamEvent', (e) => types.push(e.type));
    stream.on('text', (t) => { text += t; });
    const msg = await stream.finalMessage();
    assert.equal(text, 'echo: stream this text');
    assert.equal(msg.content[0].text, 'echo: stream this text');
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.usage.output_tokens, 4);
    assert.equal(msg.usage.input_tokens, inTok('stream this text'));
    assert.deepEqual(types.slice(0, 3), ['message_start', 'content_block_start', 'content_block_delta']);
    assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
    assert.equal(types.filter((t) => t === 'content_block_delta').length, 4);
  });

  test('tool use (stream, input_json_delta fragments) and tool_result round trip', async () => {
    const tools = [{ name: 'get_weather', description: 'w', input_schema: WEATHER_SCHEMA }];
    const stream = client.messages.stream({ model: 'claude-haiku-4-5', max_tokens: 200, tools, messages: [{ role: 'user', content: CALL_TEXT }] });
    const partials = [];
    stream.on('inputJson', (p) => partials.push(p));
    const msg = await stream.finalMessage();
    assert.equal(msg.stop_reason, 'tool_use');
    assert.equal(msg.content.length, 1);
    const tu = msg.content[0];
    assert.equal(tu.type, 'tool_use');
    assert.match(tu.id, /^toolu_01[A-Za-z0-9]{22}$/);
    assert.equal(tu.name, 'get_weather');
    assert.deepEqual(tu.input, CALL_ARGS);
    assert.ok(partials.length >= 2);

    const r2 = await client.messages.create({
      model: 'claude-haiku-4-5', max_tokens: 200, tools,
      messages: [{ role: 'user', content: CALL_TEXT }, { role: 'assistant', content: msg.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: [{ type: 'text', text: 'rain' }] }] }],
    });
    assert.equal(r2.content[0].text, 'echo: tool result: rain');
  });

  test('stop_sequences and max_tokens', async () => {
    const s = await client.messages.create({ model: 'm', max_tokens: 100, stop_sequences: ['three'], messages: [{ role: 'user', content: 'one two three four' }] });
    assert.equal(s.stop_reason, 'stop_sequence');
    assert.equal(s.stop_sequence, 'three');
    assert.equal(s.content[0].text, 'echo: one two ');
    const m = await client.messages.create({ model: 'm', max_tokens: 2, messages: [{ role: 'user', content: 'one two three four' }] });
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(m.content[0].text, 'echo: one');
    assert.equal(m.usage.output_tokens, 2);
  });

  test('validation: max_tokens required, system messages hold text, extra fields rejected, dangling tool_use', async () => {
    await assert.rejects(client.messages.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof Anthropic.BadRequestError && e.error.error.type === 'invalid_request_error' && /max_tokens: Field required/.test(e.message));
    // mid-conversation system messages are accepted (text only), as the Messages API does today
    await assert.rejects(client.messages.create({ model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'x' }, { role: 'system', content: 5 }] }), (e) => e.status === 400 && /messages\.1\.content/.test(e.message));
    await assert.rejects(client.messages.create({ model: 'm', max_tokens: 5, stream_options: {}, messages: [{ role: 'user', content: 'x' }] }), (e) => e.status === 400 && /stream_options: Extra inputs are not permitted/.test(e.message));
    await assert.rejects(client.messages.create({
      model: 'm', max_tokens: 5,
      messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 't', input: {} }] }, { role: 'user', content: 'y' }],
    }), (e) => e.status === 400 && /tool_use` ids were found without `tool_result` blocks/.test(e.message));
  });

  test('auth: missing/wrong key 401 authentication_error; missing anthropic-version 400', async () => {
    const bad = new Anthropic({ apiKey: 'sk-ant-wrong', baseURL: fake.urls.anthropic, maxRetries: 0 });
    await assert.rejects(bad.messages.create({ model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof Anthropic.AuthenticationError && e.error.error.type === 'authentication_error' && e.requestID?.startsWith('req_'));
    const r = await fetch(`${fake.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': FAKE_KEYS.anthropic, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(r.status, 400);
    const j = await r.json();
    assert.equal(j.type, 'error');
    assert.equal(j.error.message, 'anthropic-version: header is required');
  });

  test('scripted 429 (retry-after, anthropic-ratelimit headers) and 529 overloaded', async () => {
    fake.script([{ status: 429, retryAfter: 3 }, { status: 529 }]);
    const call = () => client.messages.create({ model: 'm', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof Anthropic.RateLimitError);
      assert.equal(e.status, 429);
      assert.equal(e.error.error.type, 'rate_limit_error');
      assert.equal(e.headers.get('retry-after'), '3');
      assert.equal(e.headers.get('anthropic-ratelimit-requests-remaining'), '0');
      return true;
    });
    await assert.rejects(call(), (e) => e instanceof Anthropic.InternalServerError && e.status === 529 && e.error.error.type === 'overloaded_error');
  });

  test('mid-stream error event: the SDK raises overloaded_error', async () => {
    fake.script([{ midStreamError: true }]);
    const stream = client.messages.stream({ model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'a b c d e f g h' }] });
    await assert.rejects(stream.finalMessage(), (e) => e instanceof Anthropic.APIError && /overloaded_error/.test(e.message));
  });

  test('truncated stream: the SDK notices the missing message_stop', async () => {
    fake.script([{ truncate: true }]);
    const stream = client.messages.stream({ model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'a b c d e f g h' }] });
    await assert.rejects(stream.finalMessage());
  });

  test('count_tokens follows the input-token rule', async () => {
    const r = await client.messages.countTokens({ model: 'm', system: 'sys', messages: [{ role: 'user', content: 'count these words' }] });
    assert.equal(r.input_tokens, inTok('sys', 'count these words'));
  });

  test('cachedTokens behaviour maps to cache_read_input_tokens', async () => {
    fake.script([{ cachedTokens: 2, cacheWriteTokens: 1 }]);
    const r = await client.messages.create({ model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'x'.repeat(40) }] });
    assert.equal(r.usage.cache_read_input_tokens, 2);
    assert.equal(r.usage.cache_creation_input_tokens, 1);
    assert.equal(r.usage.input_tokens, 10 - 3);
  });
});

describe('@google/genai against the fake Gemini', () => {
  let ai;
  before(() => { ai = new GoogleGenAI({ apiKey: FAKE_KEYS.gemini, httpOptions: { baseUrl: fake.urls.gemini, retryOptions: { attempts: 1 } } }); });

  test('generateContent: text, finishReason, usageMetadata, key header', async () => {
    const r = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hello gemini', config: { systemInstruction: 'Be nice.' } });
    assert.equal(r.text, 'echo: hello gemini');
    assert.equal(r.candidates[0].finishReason, 'STOP');
    assert.equal(r.candidates[0].content.role, 'model');
    assert.equal(r.usageMetadata.promptTokenCount, inTok('Be nice.', 'hello gemini'));
    assert.equal(r.usageMetadata.candidatesTokenCount, 3);
    assert.equal(r.usageMetadata.totalTokenCount, r.usageMetadata.promptTokenCount + 3);
    assert.equal(r.modelVersion, 'gemini-2.5-flash');
    assert.ok(r.responseId);
    const req = fake.requests[0];
    assert.equal(req.path, '/v1beta/models/gemini-2.5-flash:generateContent');
    assert.equal(req.headers['x-goog-api-key'], FAKE_KEYS.gemini);
  });

  test('generateContentStream (alt=sse): chunks concatenate, last one has finishReason and full usage', async () => {
    const stream = await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'stream gemini now', config: { maxOutputTokens: 50 } });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(fake.requests[0].query.alt, 'sse');
    assert.equal(chunks.length, 4);
    assert.equal(chunks.map((c) => c.text).join(''), 'echo: stream gemini now');
    assert.equal(chunks.at(-1).candidates[0].finishReason, 'STOP');
    assert.equal(chunks.at(-1).usageMetadata.candidatesTokenCount, 4);
  });

  test('function calling and functionResponse round trip', async () => {
    const tools = [{ functionDeclarations: [{ name: 'get_weather', parameters: { type: 'OBJECT', properties: { city: { type: 'STRING' } } } }] }];
    const r = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: CALL_TEXT, config: { tools } });
    assert.equal(r.functionCalls.length, 1);
    assert.equal(r.functionCalls[0].name, 'get_weather');
    assert.deepEqual(r.functionCalls[0].args, CALL_ARGS);
    const r2 = await ai.models.generateContent({
      model: 'gemini-2.5-flash', config: { tools },
      contents: [
        { role: 'user', parts: [{ text: CALL_TEXT }] },
        { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: CALL_ARGS } }] },
        { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { output: 'cloudy' } } }] },
      ],
    });
    assert.equal(r2.text, 'echo: tool result: cloudy');
  });

  test('errors: 429 RESOURCE_EXHAUSTED with RetryInfo, bad key 400 API_KEY_INVALID, unknown field 400', async () => {
    fake.script([{ status: 429, retryAfter: 4 }]);
    await assert.rejects(ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'x' }), (e) => {
      assert.ok(e instanceof GenAIApiError);
      assert.equal(e.status, 429);
      const body = JSON.parse(e.message);
      assert.equal(body.error.status, 'RESOURCE_EXHAUSTED');
      assert.equal(body.error.details.find((d) => d['@type'].endsWith('RetryInfo')).retryDelay, '4s');
      return true;
    });
    const bad = new GoogleGenAI({ apiKey: 'bad', httpOptions: { baseUrl: fake.urls.gemini, retryOptions: { attempts: 1 } } });
    await assert.rejects(bad.models.generateContent({ model: 'gemini-2.5-flash', contents: 'x' }), (e) => e.status === 400 && /API_KEY_INVALID/.test(e.message));
    const r = await fetch(`${fake.url}/v1beta/models/gemini-2.5-flash:generateContent?key=${FAKE_KEYS.gemini}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }], max_tokens: 5 }),
    });
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message, /Unknown name "max_tokens": Cannot find field/);
  });

  test('mid-stream error chunk is raised by the SDK', async () => {
    fake.script([{ midStreamError: true }]);
    const stream = await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'a b c d e f' });
    await assert.rejects((async () => { for await (const c of stream) void c; })(), (e) => e instanceof GenAIApiError && e.status === 503);
  });

  test('streamGenerateContent without alt=sse is one JSON array streamed element by element', async () => {
    const r = await fetch(`${fake.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent`, {
      method: 'POST', headers: { 'x-goog-api-key': FAKE_KEYS.gemini, 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ parts: [{ text: 'array mode' }] }], system_instruction: { parts: [{ text: 'snake_case ok' }] } }),
    });
    assert.equal(r.status, 200);
    const arr = JSON.parse(await r.text());
    assert.equal(arr.length, 4);
    assert.equal(arr.map((x) => x.candidates[0].content.parts[0].text).join(''), 'echo: array mode');
    assert.equal(arr[3].usageMetadata.promptTokenCount, inTok('snake_case ok', 'array mode'));
  });

  test('embedContent', async () => {
    const r = await ai.models.embedContent({ model: 'text-embedding-004', contents: 'embed me', config: { outputDimensionality: 8 } });
    assert.equal(r.embeddings.length, 1);
    const want = embedding('embed me', 8);
    r.embeddings[0].values.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-6));
  });
});

describe('@aws-sdk/client-bedrock-runtime against the fake Bedrock', () => {
  const MODEL = 'anthropic.claude-3-5-sonnet-20240620-v1:0';
  // The client would speak HTTP/2 to an http:// endpoint (h2c); the fake serves HTTP/1.1, as the gateway's upstream
  // client will, so the SDK gets its HTTP/1.1 handler.
  const bedrockClient = (o) => new BedrockRuntimeClient({ region: 'us-east-1', maxAttempts: 1, requestHandler: new NodeHttpHandler(), ...o });
  const mk = (creds = FAKE_KEYS.bedrock) => bedrockClient({ endpoint: fake.urls.bedrock, credentials: creds });
  let client;
  before(() => { client = mk(); });

  test('Converse: SigV4 accepted (model id with ":"), text, stopReason, usage', async () => {
    const r = await client.send(new ConverseCommand({
      modelId: MODEL, system: [{ text: 'sys' }],
      messages: [{ role: 'user', content: [{ text: 'hello bedrock' }] }],
      inferenceConfig: { maxTokens: 100 },
    }));
    assert.equal(r.output.message.role, 'assistant');
    assert.equal(r.output.message.content[0].text, 'echo: hello bedrock');
    assert.equal(r.stopReason, 'end_turn');
    assert.equal(r.usage.inputTokens, inTok('sys', 'hello bedrock'));
    assert.equal(r.usage.outputTokens, 3);
    assert.equal(r.usage.totalTokens, r.usage.inputTokens + 3);
    assert.ok(r.metrics.latencyMs >= 1);
    const req = fake.requests[0];
    assert.equal(req.path, '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse');
    assert.match(req.headers.authorization, /^AWS4-HMAC-SHA256 Credential=AKIAFAKEEXAMPLE00000\/\d{8}\/us-east-1\/bedrock\/aws4_request/);
  });

  test('ConverseStream: binary event stream decoded by the SDK', async () => {
    const r = await client.send(new ConverseStreamCommand({ modelId: MODEL, messages: [{ role: 'user', content: [{ text: 'stream from bedrock' }] }] }));
    const events = [];
    for await (const e of r.stream) events.push(e);
    const kinds = events.map((e) => Object.keys(e)[0]);
    assert.deepEqual(kinds, ['messageStart', 'contentBlockDelta', 'contentBlockDelta', 'contentBlockDelta', 'contentBlockDelta', 'contentBlockStop', 'messageStop', 'metadata']);
    assert.equal(events.filter((e) => e.contentBlockDelta).map((e) => e.contentBlockDelta.delta.text).join(''), 'echo: stream from bedrock');
    assert.equal(events[6].messageStop.stopReason, 'end_turn');
    assert.equal(events[7].metadata.usage.outputTokens, 4);
  });

  test('tool use in the stream (contentBlockStart + input fragments) and toolResult round trip', async () => {
    const toolConfig = { tools: [{ toolSpec: { name: 'get_weather', inputSchema: { json: WEATHER_SCHEMA } } }] };
    const r = await client.send(new ConverseStreamCommand({ modelId: MODEL, toolConfig, messages: [{ role: 'user', content: [{ text: CALL_TEXT }] }] }));
    let start;
    let input = '';
    let frags = 0;
    let stop;
    for await (const e of r.stream) {
      if (e.contentBlockStart) start = e.contentBlockStart.start.toolUse;
      if (e.contentBlockDelta) { input += e.contentBlockDelta.delta.toolUse.input; frags++; }
      if (e.messageStop) stop = e.messageStop.stopReason;
    }
    assert.equal(start.name, 'get_weather');
    assert.match(start.toolUseId, /^tooluse_[A-Za-z0-9]{22}$/);
    assert.deepEqual(JSON.parse(input), CALL_ARGS);
    assert.ok(frags >= 2);
    assert.equal(stop, 'tool_use');
    const r2 = await client.send(new ConverseCommand({
      modelId: MODEL, toolConfig,
      messages: [
        { role: 'user', content: [{ text: CALL_TEXT }] },
        { role: 'assistant', content: [{ toolUse: { toolUseId: start.toolUseId, name: 'get_weather', input: CALL_ARGS } }] },
        { role: 'user', content: [{ toolResult: { toolUseId: start.toolUseId, content: [{ json: { temp: 20 } }, { text: 'ok' }], status: 'success' } }] },
      ],
    }));
    assert.equal(r2.output.message.content[0].text, 'echo: tool result: {"temp":20} ok');
  });

  test('bad secret: InvalidSignatureException 403; unknown key: UnrecognizedClientException', async () => {
    const bad = mk({ accessKeyId: FAKE_KEYS.bedrock.accessKeyId, secretAccessKey: 'wrong-secret' });
    await assert.rejects(bad.send(new ConverseCommand({ modelId: MODEL, messages: [{ role: 'user', content: [{ text: 'x' }] }] })), (e) => {
      assert.equal(e.name, 'InvalidSignatureException');
      assert.equal(e.$metadata.httpStatusCode, 403);
      assert.match(e.message, /signature we calculated does not match/);
      return true;
    });
    const unknown = mk({ accessKeyId: 'AKIAUNKNOWN', secretAccessKey: 'x' });
    await assert.rejects(unknown.send(new ConverseCommand({ modelId: MODEL, messages: [{ role: 'user', content: [{ text: 'x' }] }] })),
      (e) => e.name === 'UnrecognizedClientException' && e.$metadata.httpStatusCode === 403);
  });

  test('session token is required when configured', async () => {
    const f2 = await startFake({ provider: 'bedrock', keys: { bedrock: { accessKeyId: 'AKIATEMP', secretAccessKey: 'tmpsecret', sessionToken: 'tok123' } } });
    try {
      const ok = bedrockClient({ endpoint: f2.url, credentials: { accessKeyId: 'AKIATEMP', secretAccessKey: 'tmpsecret', sessionToken: 'tok123' } });
      const r = await ok.send(new ConverseCommand({ modelId: 'm', messages: [{ role: 'user', content: [{ text: 'x' }] }] }));
      assert.equal(r.output.message.content[0].text, 'echo: x');
      const noTok = bedrockClient({ endpoint: f2.url, credentials: { accessKeyId: 'AKIATEMP', secretAccessKey: 'tmpsecret' } });
      await assert.rejects(noTok.send(new ConverseCommand({ modelId: 'm', messages: [{ role: 'user', content: [{ text: 'x' }] }] })), (e) => e.name === 'UnrecognizedClientException');
    } finally { await f2.close(); }
  });

  test('wrong region in the signature scope is rejected', async () => {
    const eu = bedrockClient({ region: 'eu-west-1', endpoint: fake.urls.bedrock, credentials: FAKE_KEYS.bedrock });
    await assert.rejects(eu.send(new ConverseCommand({ modelId: MODEL, messages: [{ role: 'user', content: [{ text: 'x' }] }] })),
      (e) => e.name === 'InvalidSignatureException' && /valid region/.test(e.message));
  });

  test('scripted errors: ThrottlingException 429, ModelTimeoutException 408, validation of the conversation', async () => {
    fake.script([{ status: 429 }, { status: 408 }]);
    const call = (messages = [{ role: 'user', content: [{ text: 'x' }] }]) => client.send(new ConverseCommand({ modelId: MODEL, messages }));
    await assert.rejects(call(), (e) => e instanceof ThrottlingException && e.$metadata.httpStatusCode === 429);
    await assert.rejects(call(), (e) => e.name === 'ModelTimeoutException' && e.$metadata.httpStatusCode === 408);
    await assert.rejects(call([{ role: 'assistant', content: [{ text: 'x' }] }]), (e) => e instanceof ValidationException && /must start with a user message/.test(e.message));
    await assert.rejects(call([{ role: 'user', content: [{ text: 'a' }] }, { role: 'user', content: [{ text: 'b' }] }]), (e) => e instanceof ValidationException && /alternate/.test(e.message));
  });

  test('mid-stream exception frame: the SDK raises throttlingException', async () => {
    fake.script([{ midStreamError: { type: 'throttlingException' } }]);
    const r = await client.send(new ConverseStreamCommand({ modelId: MODEL, messages: [{ role: 'user', content: [{ text: 'a b c d e f' }] }] }));
    const got = [];
    await assert.rejects((async () => { for await (const e of r.stream) got.push(e); })(), (e) => e instanceof ThrottlingException);
    assert.ok(got.length >= 1);
  });

  test('corrupt frame (malformed): the SDK rejects the checksum', async () => {
    fake.script([{ malformed: true }]);
    const r = await client.send(new ConverseStreamCommand({ modelId: MODEL, messages: [{ role: 'user', content: [{ text: 'a b c d e f' }] }] }));
    await assert.rejects((async () => { for await (const e of r.stream) void e; })(), /checksum|crc/i);
  });

  test('hand-signed raw request (signSigV4) passes; a tampered body fails', async () => {
    const path = '/model/amazon.nova-lite-v1%3A0/converse';
    const body = Buffer.from(JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'raw' }] }] }));
    const host = `127.0.0.1:${fake.port}`;
    const h = signSigV4({ method: 'POST', host, rawPath: path, body, headers: { 'content-type': 'application/json' }, region: 'us-east-1', service: 'bedrock', ...FAKE_KEYS.bedrock, contentSha256Header: true });
    const r = await fetch(fake.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...h }, body });
    assert.equal(r.status, 200);
    assert.equal((await r.json()).output.message.content[0].text, 'echo: raw');
    const r2 = await fetch(fake.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...h }, body: Buffer.concat([body, Buffer.from(' ')]) });
    assert.equal(r2.status, 403);
    assert.match(r2.headers.get('x-amzn-errortype'), /^InvalidSignatureException:/);
    // Single-encoded canonical path (a classic client bug for non-S3 services) must fail.
    const h3 = signSigV4({ method: 'POST', host, rawPath: path, body, headers: { 'content-type': 'application/json' }, region: 'us-east-1', service: 'bedrock', ...FAKE_KEYS.bedrock, doubleEncode: false });
    const r3 = await fetch(fake.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...h3 }, body });
    assert.equal(r3.status, 403);
    assert.match((await r3.json()).message, /%253A0/);
  });
});

describe('OpenAI-compatible flavours', () => {
  for (const [flavor, check] of [
    ['ollama', (j) => { assert.equal(j.error.message, 'model "nope" not found, try pulling it first'); }],
    ['llamacpp', (j) => { assert.equal(j.error.code, 404); }],
    ['vllm', (j) => { assert.equal(j.error.type, 'NotFoundError'); assert.equal(j.error.code, 404); }],
  ]) {
    test(`${flavor}: fingerprint/ids and its own error shape`, async () => {
      const f = await startFake({ provider: 'openai-compatible', compatFlavor: flavor, models: ['llama3'] });
      try {
        const client = new OpenAI({ apiKey: 'x', baseURL: f.urls['openai-compatible'], maxRetries: 0 });
        const r = await client.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'hi' }] });
        assert.equal(r.choices[0].message.content, 'echo: hi');
        await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] }), (e) => {
          assert.ok(e instanceof OpenAI.NotFoundError);
          check(e.error ? { error: e.error } : {});
          return true;
        });
      } finally { await f.close(); }
    });
  }
});

describe('event-stream framing', () => {
  test('CRC32 (zlib or table) and encode/decode round trip', () => {
    const b = Buffer.from('123456789');
    assert.equal(crc32(b), 0xcbf43926);
    assert.equal(crc32Fallback(b), 0xcbf43926);
    const m = encodeMessage([[':event-type', 'messageStop'], [':content-type', 'application/json'], [':message-type', 'event']], { stopReason: 'end_turn' });
    assert.equal(m.readUInt32BE(0), m.length);
    const { messages, rest } = decodeMessages(Buffer.concat([m, m.subarray(0, 5)]));
    assert.equal(messages.length, 1);
    assert.equal(rest.length, 5);
    assert.equal(messages[0].headers[':event-type'], 'messageStop');
    assert.deepEqual(messages[0].json, { stopReason: 'end_turn' });
  });
});

describe('scriptable misbehaviour (raw HTTP)', () => {
  const chat = (body = {}, init = {}) => fetch(`${fake.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${FAKE_KEYS.openai}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'one two three four five six seven' }], ...body }),
    ...init,
  });

  test('reset destroys the connection before any response', async () => {
    fake.script([{ reset: true }]);
    await assert.rejects(chat(), (e) => e instanceof TypeError);
    assert.equal(fake.requests.length, 1);
  });

  test('hang never answers (the request is received, the client times out)', async () => {
    fake.script([{ hang: true }]);
    const ac = new AbortController();
    const p = chat({}, { signal: ac.signal });
    // Wait until the fake has the request, then give up on it ourselves.
    await fake.waitForRequests(1);
    ac.abort();
    await assert.rejects(p, (e) => e.name === 'AbortError');
  });

  test('delayMs holds the headers back', async () => {
    fake.script([{ delayMs: 120 }]);
    const t0 = performance.now();
    const r = await chat();
    assert.equal(r.status, 200);
    assert.ok(performance.now() - t0 >= 115);
  });

  test('ttftMs and chunkIntervalMs pace the stream; chunks sets the number of content deltas', async () => {
    fake.script([{ ttftMs: 60, chunkIntervalMs: 20, chunks: 6 }]);
    const t0 = performance.now();
    const r = await chat({ stream: true });
    const text = await r.text();
    const elapsed = performance.now() - t0;
    const datas = text.split('\n\n').filter(Boolean);
    // role chunk + 6 content + finish + [DONE] = 9 events => 60 + 8 * 20 ms at least
    assert.equal(datas.length, 9);
    assert.ok(elapsed >= 60 + 8 * 20 - 5, `elapsed ${elapsed}`);
  });

  test('truncate ends the stream cleanly without the terminal events; truncate:"reset" breaks the connection', async () => {
    fake.script([{ truncate: true }, { truncate: 'reset' }]);
    const t = await (await chat({ stream: true })).text();
    assert.ok(t.startsWith('data: '));
    assert.ok(!t.includes('[DONE]') && !t.includes('finish_reason":"stop'));
    const r = await chat({ stream: true });
    await assert.rejects(r.text());
  });

  test('malformed stream: an SSE data line that is not JSON', async () => {
    fake.script([{ malformed: true }]);
    const t = await (await chat({ stream: true })).text();
    const datas = t.split('\n\n').filter(Boolean).map((e) => e.slice(6));
    assert.throws(() => JSON.parse(datas.at(-1)));
    assert.ok(!t.includes('[DONE]'));
  });

  test('usage:false omits usage; reasoningTokens and cachedTokens are reported', async () => {
    fake.script([{ usage: false }, { reasoningTokens: 7, cachedTokens: 1 }]);
    const a = await (await chat()).json();
    assert.equal(a.usage, undefined);
    const b = await (await chat()).json();
    assert.equal(b.usage.completion_tokens_details.reasoning_tokens, 7);
    assert.equal(b.usage.completion_tokens, 8 + 7);
    assert.equal(b.usage.prompt_tokens_details.cached_tokens, 1);
  });

  test('custom body/headers/status verbatim, reply override, match filter and times', async () => {
    fake.script([
      { match: { provider: 'anthropic' }, status: 500 },
      { status: 418, headers: { 'x-teapot': 'yes' }, body: 'short and stout' },
      { reply: 'fixed reply text', times: 2 },
    ]);
    const r = await chat();
    assert.equal(r.status, 418);
    assert.equal(r.headers.get('x-teapot'), 'yes');
    assert.equal(await r.text(), 'short and stout');
    assert.equal((await (await chat()).json()).choices[0].message.content, 'fixed reply text');
    assert.equal((await (await chat()).json()).choices[0].message.content, 'fixed reply text');
    assert.equal((await (await chat()).json()).choices[0].message.content, 'echo: one two three four five six seven');
    assert.equal(fake.pending(), 1, 'the anthropic-only behaviour is still queued');
  });

  test('setDefault applies when the queue is empty', async () => {
    fake.setDefault({ status: 503 });
    assert.equal((await chat()).status, 503);
    assert.equal((await chat()).status, 503);
    fake.setDefault({});
    assert.equal((await chat()).status, 200);
  });

  test('HTTP control endpoints: script, requests, reset', async () => {
    let r = await fetch(`${fake.url}/__fake/script`, { method: 'POST', body: JSON.stringify([{ status: 429, retryAfter: 1 }]) });
    assert.equal(r.status, 200);
    r = await chat();
    assert.equal(r.status, 429);
    assert.equal(r.headers.get('retry-after'), '1');
    const reqs = await (await fetch(`${fake.url}/__fake/requests`)).json();
    assert.equal(reqs.length, 1);
    assert.equal(reqs[0].path, '/v1/chat/completions');
    assert.equal(reqs[0].json.model, 'gpt-4o-mini');
    await fetch(`${fake.url}/__fake/reset`, { method: 'POST' });
    assert.equal(fake.requests.length, 0);
  });
});

describe('standalone command line', () => {
  test('prints {"listening":...} and serves; instant mode answers a fixed completion', async () => {
    const child = spawn(process.execPath, [FAKE_CLI, '--provider', 'openai', '--port', '0', '--instant', '--bench', '--chunks', '3'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const line = await new Promise((resolve, reject) => {
        createInterface({ input: child.stdout }).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      const { listening } = JSON.parse(line);
      assert.match(listening, /^127\.0\.0\.1:\d+$/);
      const r = await fetch(`http://${listening}/v1/chat/completions`, { method: 'POST', body: '{"model":"x","messages":[{"role":"user","content":"ignored"}]}' });
      const j = await r.json();
      assert.equal(j.choices[0].message.content, 'echo: hello');
      const s = await (await fetch(`http://${listening}/v1/chat/completions`, { method: 'POST', body: '{"stream": true}' })).text();
      assert.ok(s.endsWith('data: [DONE]\n\n'));
      // keep-alive: two requests over one socket
      const raw = await new Promise((resolve) => {
        const [h, p] = listening.split(':');
        const sock = net.connect(Number(p), h);
        let data = '';
        const req = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}';
        sock.on('data', (d) => { data += d; if ((data.match(/HTTP\/1\.1 200/g) || []).length === 2 && data.endsWith('}')) { sock.end(); resolve(data); } });
        sock.write(req + req);
      });
      assert.equal((raw.match(/HTTP\/1\.1 200/g) || []).length, 2);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
