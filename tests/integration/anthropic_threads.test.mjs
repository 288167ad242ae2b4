// Anthropic message threads (thread: {type: "create" | "continue", previous_message_id}) on every deployment:
// agentd holds threads for the mock and translated deployments in its store, Anthropic deployments keep their own.
// What the upstream received proves the conversation was rebuilt; a restart in between keeps the thread.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startAgentd, BIN } from '../lib/agentd.mjs';
import { startFake, FAKE_KEYS } from '../fakes/fake.mjs';

let d, anth, oa;
const ENV = { FAKE_ANTHROPIC_KEY: FAKE_KEYS.anthropic, FAKE_OPENAI_KEY: FAKE_KEYS.openai };
const config = () => `
server:
  workers: 2
models:
  - name: claude-up
    provider: anthropic
    model: claude-haiku-4-5
    base_url: ${anth.url}
    api_key_env: FAKE_ANTHROPIC_KEY
  - name: gpt-up
    provider: openai
    model: gpt-4o-mini
    base_url: ${oa.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
  - name: mixed
    deployments:
      - provider: openai
        model: gpt-4o-mini
        base_url: ${oa.urls.openai}
        api_key_env: FAKE_OPENAI_KEY
        weight: 1
      - provider: anthropic
        model: claude-haiku-4-5
        base_url: ${anth.url}
        api_key_env: FAKE_ANTHROPIC_KEY
        weight: 0
`;

before(async () => {
  anth = await startFake({ provider: 'anthropic' });
  oa = await startFake({ provider: 'openai' });
  d = await startAgentd({ env: ENV, config: config() });
});
after(async () => {
  const r = await d.stop();
  await Promise.all([anth.close(), oa.close()]);
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

const HDR = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'anthropic-beta': 'message-threads-2026-08-12' };
const TOOLS = [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }];

async function post(server, body) {
  const r = await server.fetch('/v1/messages', { method: 'POST', headers: HDR, body: JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* a stream */ }
  return { status: r.status, json, text };
}

// A streamed reply's text and message id, from the SSE events.
function sseMessage(text) {
  let id = null, out = '';
  for (const block of text.split('\n\n')) {
    const data = block.split('\n').find((l) => l.startsWith('data: '));
    if (!data) continue;
    const ev = JSON.parse(data.slice(6));
    if (ev.type === 'message_start') id = ev.message.id;
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') out += ev.delta.text;
  }
  return { id, text: out };
}

async function createToolTurn(server, model) {
  const r = await post(server, {
    model, max_tokens: 100, system: 'Be brief.', tools: TOOLS, thread: { type: 'create' },
    messages: [{ role: 'user', content: 'CALL get_weather {"city":"Oslo"}' }],
  });
  assert.equal(r.status, 200, r.text);
  const use = r.json.content.find((b) => b.type === 'tool_use');
  assert.ok(use, r.text);
  assert.match(r.json.id, /^msg_/);
  return { id: r.json.id, toolUseId: use.id };
}

test('mock: create, then continue with only a tool_result (plain and streamed)', async () => {
  const first = await createToolTurn(d, 'mock');
  const cont = (stream, content) => post(d, {
    model: 'mock', max_tokens: 100, stream, thread: { type: 'continue', previous_message_id: first.id },
    messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: first.toolUseId, content }] }],
  });
  const r = await cont(false, 'cold in Oslo');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.content[0].text, 'echo: tool result: cold in Oslo');
  // the continued turn carried the whole conversation: more input than the same message on its own
  const alone = await post(d, { model: 'mock', max_tokens: 100, messages: [{ role: 'user', content: 'cold in Oslo' }] });
  assert.ok(r.json.usage.input_tokens > alone.json.usage.input_tokens + 5, `${r.json.usage.input_tokens} vs ${alone.json.usage.input_tokens}`);
  const s = await cont(true, 'warm in Oslo');
  assert.equal(s.status, 200, s.text);
  const m = sseMessage(s.text);
  assert.equal(m.text, 'echo: tool result: warm in Oslo');
  // a streamed reply is held too: the thread goes on from it
  const r3 = await post(d, { model: 'mock', max_tokens: 100, thread: { type: 'continue', previous_message_id: m.id }, messages: [{ role: 'user', content: 'and now?' }] });
  assert.equal(r3.status, 200, r3.text);
  assert.equal(r3.json.content[0].text, 'echo: and now?');
  assert.ok(r3.json.usage.input_tokens > r.json.usage.input_tokens, 'the third turn holds the two before it');
});

test('translated (OpenAI upstream): the continued turn reaches the upstream as the full conversation', async () => {
  oa.reset();
  const first = await createToolTurn(d, 'gpt-up');
  const r = await post(d, {
    model: 'gpt-up', max_tokens: 100, thread: { type: 'continue', previous_message_id: first.id },
    messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: first.toolUseId, content: 'cold' }] }],
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.content[0].text, 'echo: tool result: cold');
  assert.equal(oa.requests.length, 2);
  const sent = oa.requests[1].json;
  assert.deepEqual(sent.messages.map((m) => m.role), ['system', 'user', 'assistant', 'tool']);
  assert.equal(sent.messages[0].content, 'Be brief.');
  assert.equal(sent.messages[2].tool_calls[0].id, first.toolUseId);
  assert.equal(sent.messages[3].tool_call_id, first.toolUseId);
  assert.equal(sent.tools[0].function.name, 'get_weather', 'the thread keeps the tools it was created with');
  // streamed, then continued from the streamed reply
  oa.reset();
  const contBody = { model: 'gpt-up', max_tokens: 100, stream: true, thread: { type: 'continue', previous_message_id: r.json.id }, messages: [{ role: 'user', content: 'next one' }] };
  const s = await post(d, contBody);
  const m = sseMessage(s.text);
  // message_start's input estimate (LangChain reads it there) counts the held conversation, not only this turn
  const start = JSON.parse(s.text.split('\n').find((l) => l.startsWith('data: ') && l.includes('message_start')).slice(6));
  assert.ok(start.message.usage.input_tokens > Math.ceil(JSON.stringify(contBody).length / 4) + 20, JSON.stringify(start.message.usage));
  assert.equal(m.text, 'echo: next one');
  const r2 = await post(d, { model: 'gpt-up', max_tokens: 100, thread: { type: 'continue', previous_message_id: m.id }, messages: [{ role: 'user', content: 'last' }] });
  assert.equal(r2.status, 200, r2.text);
  assert.deepEqual(oa.requests[1].json.messages.map((m) => m.role), ['system', 'user', 'assistant', 'tool', 'assistant', 'user', 'assistant', 'user']);
  assert.equal(oa.requests[1].json.messages[6].content, 'echo: next one');
});

test('a streamed tool call is held as the tool_use block the client saw (mock, translation)', async () => {
  for (const model of ['mock', 'gpt-up']) {
    oa.reset();
    const s = await post(d, {
      model, max_tokens: 100, stream: true, tools: TOOLS, thread: { type: 'create' },
      messages: [{ role: 'user', content: 'CALL get_weather {"city":"Bergen"}' }],
    });
    assert.equal(s.status, 200, s.text);
    let id = null, use = null, args = '';
    for (const block of s.text.split('\n\n')) {
      const data = block.split('\n').find((l) => l.startsWith('data: '));
      if (!data) continue;
      const ev = JSON.parse(data.slice(6));
      if (ev.type === 'message_start') id = ev.message.id;
      if (ev.type === 'content_block_start' && ev.content_block.type === 'tool_use') use = ev.content_block;
      if (ev.type === 'content_block_delta' && ev.delta.type === 'input_json_delta') args += ev.delta.partial_json;
    }
    assert.ok(use, s.text);
    assert.deepEqual(JSON.parse(args), { city: 'Bergen' });
    const r = await post(d, {
      model, max_tokens: 100, thread: { type: 'continue', previous_message_id: id },
      messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'rain' }] }],
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.content[0].text, 'echo: tool result: rain', model);
    if (model === 'gpt-up') {
      const held = oa.requests.at(-1).json.messages.find((m) => m.role === 'assistant');
      assert.equal(held.tool_calls[0].id, use.id);
      assert.equal(held.tool_calls[0].function.name, 'get_weather');
      assert.deepEqual(JSON.parse(held.tool_calls[0].function.arguments), { city: 'Bergen' });
    }
  }
});

test('an unknown thread is a 404 thread_not_found in Anthropic\'s shape, before any upstream call', async () => {
  for (const model of ['mock', 'gpt-up']) {
    oa.reset();
    const r = await post(d, { model, max_tokens: 10, thread: { type: 'continue', previous_message_id: 'msg_nothere' }, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r.status, 404, r.text);
    assert.equal(r.json.type, 'error');
    assert.equal(r.json.error.type, 'not_found_error');
    assert.equal(r.json.error.details.error_code, 'thread_not_found');
    assert.equal(oa.requests.length, 0);
  }
});

test('bad thread requests are 400s in Anthropic\'s shape', async () => {
  const first = await createToolTurn(d, 'mock');
  const cases = [
    { thread: { type: 'fork' }, messages: [{ role: 'user', content: 'x' }], re: /thread/ },
    { thread: 'create', messages: [{ role: 'user', content: 'x' }], re: /thread/ },
    { thread: { type: 'continue' }, messages: [{ role: 'user', content: 'x' }], re: /previous_message_id/ },
    { thread: { type: 'continue', previous_message_id: 'x'.repeat(200) }, messages: [{ role: 'user', content: 'x' }], re: /previous_message_id/ },
    // a continue turn cannot change what the thread was created with
    { thread: { type: 'continue', previous_message_id: first.id }, system: 'other', messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: first.toolUseId, content: 'x' }] }], re: /system/ },
    // without a thread, a tool_result must answer a tool_use in the request itself
    { messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: first.toolUseId, content: 'x' }] }], re: /tool_use_id/ },
  ];
  for (const c of cases) {
    const { re, ...body } = c;
    const r = await post(d, { model: 'mock', max_tokens: 10, ...body });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.match(r.json.error.message, re);
  }
});

test('Anthropic deployments keep their own threads: the body and the beta pass through', async () => {
  anth.reset();
  const body = { model: 'claude-up', max_tokens: 50, thread: { type: 'continue', previous_message_id: 'msg_01Anthropic' }, messages: [{ role: 'user', content: 'hi' }] };
  const r = await post(d, body);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(anth.requests[0].json.thread, body.thread);
  assert.match(anth.requests[0].headers['anthropic-beta'], /message-threads-2026-08-12/);
});

test('a model with both kinds: a thread agentd holds, continued on the Anthropic deployment, goes there in full under a new create', async () => {
  oa.reset();
  anth.reset();
  const first = await createToolTurn(d, 'mixed'); // the OpenAI deployment (weight 1) answers, agentd holds the thread
  assert.equal(oa.requests.length, 1);
  oa.script([{ status: 500 }]); // the next turn fails over to the Anthropic deployment (weight 0: fallback only)
  const r = await post(d, {
    model: 'mixed', max_tokens: 100, thread: { type: 'continue', previous_message_id: first.id },
    messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: first.toolUseId, content: 'cold' }] }],
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(anth.requests.length, 1);
  const sent = anth.requests[0].json;
  assert.deepEqual(sent.thread, { type: 'create' }, 'Anthropic holds it from now on');
  assert.deepEqual(sent.messages.map((m) => m.role), ['user', 'assistant', 'user']);
  assert.equal(sent.system, 'Be brief.');
  assert.equal(sent.tools[0].name, 'get_weather');
  assert.equal(sent.model, 'claude-haiku-4-5');
  // an id agentd does not hold: the translated deployment (first in the plan) defers, Anthropic gets it as it is
  anth.reset();
  oa.reset();
  const body = { model: 'mixed', max_tokens: 20, thread: { type: 'continue', previous_message_id: 'msg_01OnlyAnthropic' }, messages: [{ role: 'user', content: 'hi' }] };
  const r2 = await post(d, body);
  assert.equal(r2.status, 200, r2.text);
  assert.equal(oa.requests.length, 0);
  assert.deepEqual(anth.requests[0].json.thread, body.thread);
  assert.deepEqual(anth.requests[0].json.messages, body.messages);
});

test('a thread continues across a restart (the store is on disk)', async () => {
  const first = await createToolTurn(d, 'mock');
  const d2 = await startAgentd({ env: ENV, config: config(), noDataDir: true, args: ['--data-dir', `${d.dir}/data`] });
  try {
    const r = await post(d2, {
      model: 'mock', max_tokens: 100, thread: { type: 'continue', previous_message_id: first.id },
      messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: first.toolUseId, content: 'after restart' }] }],
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.content[0].text, 'echo: tool result: after restart');
    const alone = await post(d2, { model: 'mock', max_tokens: 100, messages: [{ role: 'user', content: 'after restart' }] });
    assert.ok(r.json.usage.input_tokens > alone.json.usage.input_tokens + 5, 'the restarted daemon rebuilt the conversation');
  } finally {
    const r = await d2.stop();
    assert.equal(r.code, 0, d2.rawStderr.slice(-3000));
  }
});

test('with the store disabled a thread on a non-Anthropic model is thread_unsupported_request', async () => {
  const d3 = await startAgentd({ env: ENV, config: config() + 'store:\n  enabled: false\n' });
  try {
    const r = await post(d3, { model: 'mock', max_tokens: 10, thread: { type: 'create' }, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.details.error_code, 'thread_unsupported_request');
    const plain = await post(d3, { model: 'mock', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(plain.status, 200);
  } finally {
    const r = await d3.stop();
    assert.equal(r.code, 0, d3.rawStderr.slice(-3000));
  }
});

test('under auth.mode keys a thread continues under the key that created it only', async () => {
  const d4 = await startAgentd({ env: ENV, config: config() + 'auth:\n  mode: keys\n' });
  try {
    const key = (name) => {
      const r = spawnSync(BIN, ['keys', 'create', '--name', name, '--data-dir', `${d4.dir}/data`], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout).key;
    };
    const [a, b] = [key('thread-owner'), key('someone-else')];
    const as = (k, body) => d4.fetch('/v1/messages', { method: 'POST', headers: { ...HDR, 'x-api-key': k }, body: JSON.stringify(body) });
    let created;
    for (const t0 = Date.now(); ;) { // keys take effect within a second
      created = await as(a, { model: 'mock', max_tokens: 20, thread: { type: 'create' }, messages: [{ role: 'user', content: 'mine' }] });
      if (created.status === 200 || Date.now() - t0 > 5000) break;
      await created.arrayBuffer();
    }
    assert.equal(created.status, 200);
    const id = (await created.json()).id;
    const cont = { model: 'mock', max_tokens: 20, thread: { type: 'continue', previous_message_id: id }, messages: [{ role: 'user', content: 'more' }] };
    let other;
    for (const t0 = Date.now(); ;) {
      other = await as(b, cont);
      if (other.status !== 401 || Date.now() - t0 > 5000) break;
      await other.arrayBuffer();
    }
    assert.equal(other.status, 404);
    assert.equal((await other.json()).error.details.error_code, 'thread_not_found');
    const mine = await as(a, cont);
    assert.equal(mine.status, 200);
    assert.equal((await mine.json()).content[0].text, 'echo: more');
  } finally {
    const r = await d4.stop();
    assert.equal(r.code, 0, d4.rawStderr.slice(-3000));
  }
});
