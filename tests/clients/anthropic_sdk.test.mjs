// The official `@anthropic-ai/sdk` talking to agentd's /v1/messages: the mock model, a fake Anthropic upstream
// (passthrough) and a fake OpenAI upstream (translation). The SDK (1.14) sends anthropic-version 2026-10-21 and its
// key as Authorization: Bearer; agentd accepts both and speaks its own configured version upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic, { NotFoundError, BadRequestError, RateLimitError, OverloadedError, InternalServerError } from '@anthropic-ai/sdk';
import { jsonSchemaOutputFormat } from '@anthropic-ai/sdk/helpers/json-schema';
import { betaTool } from '@anthropic-ai/sdk/helpers/beta/json-schema';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let d, anth, oa, client;
before(async () => {
  anth = await startFake({ provider: 'anthropic' });
  oa = await startFake({ provider: 'openai' });
  d = await startAgentd({
    env: { FAKE_ANTHROPIC_KEY: FAKE_KEYS.anthropic, FAKE_OPENAI_KEY: FAKE_KEYS.openai, WRONG_KEY: 'sk-ant-nope' },
    config: `models:
  - name: claude-up
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${anth.url}
    api_key_env: FAKE_ANTHROPIC_KEY
    retries: { max_attempts: 1 }   # the SDK tests see the upstream's own errors (retries: resilience*.test.mjs)
  - name: claude-badkey
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${anth.url}
    api_key_env: WRONG_KEY
    retries: { max_attempts: 1 }   # the SDK tests see the upstream's own errors (retries: resilience*.test.mjs)
  - name: gpt-up
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
    retries: { max_attempts: 1 }   # the SDK tests see the upstream's own errors (retries: resilience*.test.mjs)
`,
  });
  client = new Anthropic({ baseURL: d.url, apiKey: 'sk-client-key', maxRetries: 0 });
});
after(async () => {
  const r = await d.stop();
  await Promise.all([anth.close(), oa.close()]);
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

const WEATHER = { name: 'get_weather', description: 'Weather for a city', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };

for (const model of ['mock', 'claude-up', 'gpt-up']) {
  test(`${model}: messages.create`, async () => {
    const m = await client.messages.create({ model, max_tokens: 100, system: 'Be brief.', messages: [{ role: 'user', content: 'hello sdk' }] });
    assert.equal(m.type, 'message');
    assert.equal(m.role, 'assistant');
    assert.match(m.id, /^msg_/);
    assert.deepEqual(m.content, [{ type: 'text', text: 'echo: hello sdk' }]);
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.usage.output_tokens, 3);
    assert.ok(m.usage.input_tokens >= 1);
  });

  test(`${model}: messages.stream -> text events and finalMessage`, async () => {
    const stream = client.messages.stream({ model, max_tokens: 100, messages: [{ role: 'user', content: 'stream me please' }] });
    let text = '';
    stream.on('text', (t) => { text += t; });
    const m = await stream.finalMessage();
    assert.equal(text, 'echo: stream me please');
    assert.equal(m.content[0].text, 'echo: stream me please');
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.usage.output_tokens, 4);
    assert.ok(m.usage.input_tokens >= 1);
  });

  test(`${model}: raw stream events (create with stream: true)`, async () => {
    const s = await client.messages.create({ model, max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'a b' }] });
    const types = [];
    for await (const ev of s) types.push(ev.type);
    assert.equal(types[0], 'message_start');
    assert.deepEqual(types.slice(-2), ['message_delta', 'message_stop']);
    assert.ok(types.includes('content_block_delta'));
  });

  test(`${model}: tool use round trip, plain and streamed`, async () => {
    const ask = { role: 'user', content: 'CALL get_weather {"city":"Oslo"}' };
    const m = await client.messages.create({ model, max_tokens: 100, tools: [WEATHER], messages: [ask] });
    assert.equal(m.stop_reason, 'tool_use');
    const use = m.content.find((b) => b.type === 'tool_use');
    assert.equal(use.name, 'get_weather');
    assert.deepEqual(use.input, { city: 'Oslo' });

    const streamed = await client.messages.stream({ model, max_tokens: 100, tools: [WEATHER], messages: [ask] }).finalMessage();
    const suse = streamed.content.find((b) => b.type === 'tool_use');
    assert.deepEqual(suse.input, { city: 'Oslo' });
    assert.equal(streamed.stop_reason, 'tool_use');

    const answer = await client.messages.create({
      model, max_tokens: 100, tools: [WEATHER],
      messages: [ask, { role: 'assistant', content: m.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'cold' }] }],
    });
    assert.equal(answer.content[0].text, 'echo: tool result: cold');
  });
}

test('claude-up: the SDK version and Bearer key stay at agentd; the deployment key and version go upstream', async () => {
  anth.reset();
  await client.messages.create({ model: 'claude-up', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
  const up = anth.requests[0];
  assert.equal(up.headers['x-api-key'], FAKE_KEYS.anthropic);
  assert.equal(up.headers.authorization, undefined);
  assert.equal(up.headers['anthropic-version'], '2023-06-01');
});

// messages.countTokens: exact from an Anthropic deployment (its own /v1/messages/count_tokens), else an estimate
// (bytes of text / 4), marked as such and never sent upstream
for (const model of ['mock', 'gpt-up']) {
  test(`${model}: messages.countTokens answers a marked estimate without calling the upstream`, async () => {
    anth.reset();
    oa.reset();
    const { data, response } = await client.messages.countTokens({ model, system: 'Be brief.', messages: [{ role: 'user', content: 'hello sdk' }] }).withResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-agentd-token-count'), 'estimate');
    assert.equal(data.estimated, true);
    // 'Be brief.' + 'hello sdk' = 18 bytes of text -> ceil(18 / 4)
    assert.equal(data.input_tokens, 5);
    const big = await client.messages.countTokens({ model, tools: [WEATHER], messages: [{ role: 'user', content: 'word '.repeat(400) }] });
    assert.ok(big.input_tokens >= 500, String(big.input_tokens));
    // client.beta.messages.countTokens (POST ...?beta=true) is the same door
    const beta = await client.beta.messages.countTokens({ model, system: 'Be brief.', messages: [{ role: 'user', content: 'hello sdk' }] });
    assert.equal(beta.input_tokens, 5);
    assert.equal(anth.requests.length + oa.requests.length, 0);
  });
}

test('claude-up: messages.countTokens is the deployment\'s exact count (its own endpoint, its model and key)', async () => {
  anth.reset();
  const { data, response } = await client.messages.countTokens({ model: 'claude-up', system: 'Be brief.', messages: [{ role: 'user', content: 'hello sdk, count me' }] }).withResponse();
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('x-agentd-token-count'), 'exact');
  assert.equal(data.estimated, undefined);
  assert.equal(anth.requests.length, 1);
  const up = anth.requests[0];
  assert.equal(up.path, '/v1/messages/count_tokens');
  assert.equal(up.json.model, 'claude-haiku-4-5');
  assert.equal(up.headers['x-api-key'], FAKE_KEYS.anthropic);
  // the fake counts 'Be brief.' + 'hello sdk, count me' = 28 characters / 4
  assert.equal(data.input_tokens, 7);
  // the client's betas go with it
  anth.reset();
  await client.beta.messages.countTokens({ model: 'claude-up', messages: [{ role: 'user', content: 'x' }], betas: ['token-efficient-tools-2025-02-19'] });
  assert.match(anth.requests[0].headers['anthropic-beta'], /token-efficient-tools-2025-02-19/);
  // the provider's refusal reaches the client in Anthropic's shape; agentd's key refused is a 502
  anth.reset();
  anth.script([{ status: 429, retryAfter: 2 }]);
  await assert.rejects(client.messages.countTokens({ model: 'claude-up', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof RateLimitError && e.type === 'rate_limit_error');
  await assert.rejects(client.messages.countTokens({ model: 'claude-badkey', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof InternalServerError && e.status === 502 && e.type === 'api_error');
});

test('messages.countTokens: unknown model -> NotFoundError, bad JSON -> 400 in Anthropic shape', async () => {
  await assert.rejects(client.messages.countTokens({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof NotFoundError && e.status === 404 && e.type === 'not_found_error' && /no-such-model/.test(e.apiMessage));
  for (const body of ['{"model":', '[]', '{"messages":[]}', '{"model":"mock"}']) {
    const r = await fetch(`${d.url}/v1/messages/count_tokens`, { method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }, body });
    assert.equal(r.status, 400, body);
    const j = await r.json();
    assert.equal(j.type, 'error', body);
    assert.equal(j.error.type, 'invalid_request_error', body);
    assert.ok(j.error.message.length > 0);
  }
});

test('models.list shows the configured models in Anthropic form', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('claude-up') && ids.includes('gpt-up') && ids.includes('mock'), ids.join(','));
});

test('error classes: NotFoundError, BadRequestError, RateLimitError, OverloadedError, InternalServerError', async () => {
  await assert.rejects(client.messages.create({ model: 'no-such-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof NotFoundError && e.status === 404 && e.type === 'not_found_error');
  await assert.rejects(client.messages.create({ model: 'mock', max_tokens: 0, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof BadRequestError && e.type === 'invalid_request_error' && /max_tokens/.test(e.apiMessage));
  await assert.rejects(client.messages.create({ model: 'mock', max_tokens: 10, messages: [] }),
    (e) => e instanceof BadRequestError);
  anth.reset();
  anth.script([{ status: 429, retryAfter: 3 }, { status: 529 }]);
  await assert.rejects(client.messages.create({ model: 'claude-up', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof RateLimitError && e.type === 'rate_limit_error' && e.headers.get('retry-after') === '3');
  await assert.rejects(client.messages.create({ model: 'claude-up', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OverloadedError && e.status === 529 && e.type === 'overloaded_error');
  // the upstream refusing agentd's key is agentd's failure: a 502, not an AuthenticationError about the client's key
  await assert.rejects(client.messages.create({ model: 'claude-badkey', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof InternalServerError && e.status === 502 && e.type === 'api_error');
  // the mock's error directive, translated to the Anthropic shape
  await assert.rejects(client.messages.create({ model: 'mock', max_tokens: 10, messages: [{ role: 'user', content: 'mock:error=429' }] }),
    (e) => e instanceof RateLimitError && e.headers.get('retry-after') === '1');
});

test('an upstream error in mid-stream reaches the SDK as an error', async () => {
  anth.reset();
  anth.script([{ midStreamError: true, chunks: 6 }]);
  const stream = client.messages.stream({ model: 'claude-up', max_tokens: 100, messages: [{ role: 'user', content: 'one two three four five six' }] });
  await assert.rejects(stream.finalMessage(), (e) => /Overloaded|overloaded/.test(String(e.message)));
});

// ---- today's client shapes (issue 16 item 5) ----

test('models.retrieve: a configured model in Anthropic form, NotFoundError for an unknown id', async () => {
  const m = await client.models.retrieve('claude-up');
  assert.equal(m.type, 'model');
  assert.equal(m.id, 'claude-up');
  assert.equal(typeof m.created_at, 'string');
  await assert.rejects(client.models.retrieve('no-such-model'), (e) => e instanceof NotFoundError && e.type === 'not_found_error');
});

test('messages.parse with output_config.format (structured output) through translation to OpenAI', async () => {
  const schema = { type: 'object', properties: { city: { type: 'string' }, temp: { type: 'number' } }, required: ['city', 'temp'], additionalProperties: false };
  oa.reset();
  oa.script([{ reply: '{"city":"Oslo","temp":3}' }]);
  const m = await client.messages.parse({
    model: 'gpt-up', max_tokens: 100, messages: [{ role: 'user', content: 'weather in Oslo?' }],
    output_config: { format: jsonSchemaOutputFormat(schema) },
  });
  assert.deepEqual(m.parsed_output, { city: 'Oslo', temp: 3 });
  assert.deepEqual(oa.requests[0].json.response_format, { type: 'json_schema', json_schema: { name: 'response', schema } });
});

test('beta toolRunner (message threads by default) runs its loop on mock and through translation', async () => {
  for (const model of ['mock', 'gpt-up']) {
    const seen = [];
    const weather = betaTool({
      name: 'get_weather', description: 'Weather for a city',
      inputSchema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      run: async ({ city }) => { seen.push(city); return `cold in ${city}`; },
    });
    const runner = client.beta.messages.toolRunner({
      model, max_tokens: 100, tools: [weather], messages: [{ role: 'user', content: 'CALL get_weather {"city":"Oslo"}' }],
    });
    const final = await runner.runUntilDone();
    assert.deepEqual(seen, ['Oslo'], model);
    assert.equal(final.content[0].text, 'echo: tool result: cold in Oslo', model);
  }
});

test('beta.messages.thread: each turn sends only its new messages, agentd holds the rest (mock, translation)', async () => {
  for (const model of ['mock', 'gpt-up']) {
    oa.reset();
    const thread = client.beta.messages.thread({ model, max_tokens: 100, system: 'Be brief.', tools: [WEATHER] });
    const first = await thread.send({ role: 'user', content: 'CALL get_weather {"city":"Oslo"}' });
    assert.equal(first.stop_reason, 'tool_use', model);
    const use = first.content.find((b) => b.type === 'tool_use');
    assert.equal(thread.previousMessageId, first.id, model);
    const second = await thread.send({ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'cold' }] });
    assert.equal(second.content[0].text, 'echo: tool result: cold', model);
    const third = await thread.send({ role: 'user', content: 'thanks' });
    assert.equal(third.content[0].text, 'echo: thanks', model);
    if (model === 'gpt-up') {
      // the SDK sent only the new turn each time; the upstream saw the whole conversation
      assert.deepEqual(oa.requests[2].json.messages.map((m) => m.role), ['system', 'user', 'assistant', 'tool', 'assistant', 'user']);
    }
  }
});

test('an unknown thread is the SDK\'s ThreadNotFoundError (the error it replays on), on mock and translation', async () => {
  for (const model of ['mock', 'gpt-up']) {
    await assert.rejects(
      client.beta.messages.create({ model, max_tokens: 10, thread: { type: 'continue', previous_message_id: 'msg_lost' }, messages: [{ role: 'user', content: 'x' }], betas: ['message-threads-2026-08-12'] }),
      (e) => e instanceof NotFoundError && e.constructor.name === 'ThreadNotFoundError' && e.error.error.details.error_code === 'thread_not_found', model);
  }
});

test('mid-conversation system messages and thinking blocks passed back are accepted on every route', async () => {
  for (const model of ['mock', 'claude-up', 'gpt-up']) {
    const m = await client.messages.create({
      model, max_tokens: 100,
      messages: [
        { role: 'user', content: 'first' },
        { role: 'assistant', content: [{ type: 'thinking', thinking: 'hm', signature: 'c2ln' }, { type: 'text', text: 'one' }] },
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'second' },
      ],
    });
    assert.equal(m.content[0].text, 'echo: second', model);
  }
});
