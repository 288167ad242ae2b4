// The official `openai` npm SDK talking to agentd: the mock model and a fake OpenAI upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let d, oa, client;
before(async () => {
  oa = await startFake({ provider: 'openai' });
  d = await startAgentd({
    env: { FAKE_OPENAI_KEY: FAKE_KEYS.openai },
    config: `models:
  - name: gpt-up
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
    retries: { max_attempts: 1 }   # the SDK tests see the upstream's own errors (retries: resilience*.test.mjs)
  - name: embed-up
    embeddings: true
    provider: openai
    model: text-embedding-3-small
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
`,
  });
  client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client-key', maxRetries: 0 });
});
after(async () => {
  const r = await d.stop();
  await oa.close();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

for (const model of ['mock', 'gpt-up']) {
  test(`${model}: chat.completions.create`, async () => {
    const r = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hello sdk' }] });
    assert.equal(r.choices[0].message.content, 'echo: hello sdk');
    assert.equal(r.usage.completion_tokens, 3);
  });

  test(`${model}: streaming with usage`, async () => {
    const stream = await client.chat.completions.create({
      model, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'stream me please' }],
    });
    let text = '', usage = null, finish = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content || '';
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'echo: stream me please');
    assert.equal(finish, 'stop');
    assert.equal(usage.completion_tokens, 4);
  });

  test(`${model}: tool calls through the SDK's stream helper`, async () => {
    const tools = [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'string' } } } } }];
    const runner = client.chat.completions.stream({ model, tools, messages: [{ role: 'user', content: 'CALL lookup {"q":"agentd"}' }] });
    const final = await runner.finalChatCompletion();
    const call = final.choices[0].message.tool_calls[0];
    assert.equal(call.function.name, 'lookup');
    assert.deepEqual(JSON.parse(call.function.arguments), { q: 'agentd' });
    const next = await client.chat.completions.create({
      model, tools,
      messages: [{ role: 'user', content: 'CALL lookup {"q":"agentd"}' }, final.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'found it' }],
    });
    assert.equal(next.choices[0].message.content, 'echo: tool result: found it');
  });
}

test('embeddings: SDK default base64 decoding, mock and upstream', async () => {
  for (const model of ['mock-embedding', 'embed-up']) {
    const r = await client.embeddings.create({ model, input: ['alpha', 'beta'], dimensions: 8 });
    assert.equal(r.data.length, 2);
    assert.equal(r.data[1].embedding.length, 8);
    assert.ok(r.data[0].embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
  }
});

test('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('gpt-up') && ids.includes('mock'));
});

test('errors surface as the SDK\'s typed errors', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'missing', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(client.chat.completions.create({ model: 'mock', messages: [] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages');
  await assert.rejects(client.chat.completions.create({ model: 'mock', messages: [{ role: 'user', content: 'mock:error=429' }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.headers.get('retry-after') === '1');
  oa.script([{ status: 429, retryAfter: 3 }]);
  await assert.rejects(client.chat.completions.create({ model: 'gpt-up', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.headers.get('retry-after') === '3');
  oa.script([{ status: 503 }]);
  await assert.rejects(client.chat.completions.create({ model: 'gpt-up', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.InternalServerError && e.status === 503);
});

test('the SDK\'s own retry rides on preserved retry hints', async () => {
  const retrying = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'k', maxRetries: 2 });
  oa.reset();
  oa.script([{ status: 429, retryAfterMs: 10 }]);
  const r = await retrying.chat.completions.create({ model: 'gpt-up', messages: [{ role: 'user', content: 'again' }] });
  assert.equal(r.choices[0].message.content, 'echo: again');
  assert.equal(oa.received(), 2);
});

test('models.retrieve: a configured model in OpenAI form, NotFoundError (model_not_found) for an unknown id', async () => {
  const m = await client.models.retrieve('gpt-up');
  assert.equal(m.id, 'gpt-up');
  assert.equal(m.object, 'model');
  assert.equal(m.owned_by, 'openai');
  await assert.rejects(client.models.retrieve('no-such-model'), (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
});
