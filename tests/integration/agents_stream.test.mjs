// Tokens as they stream in a run's events (issue 11 item 4): while GET /v1/runs/{id}/events is open, the run's LLM
// steps are streamed internal exchanges; their text arrives as step.delta events ({step, delta}) before the
// step.finished of that step, the deltas of a step add up to its content, and the run's answer, tool calls and
// usage are the same as when nobody watches.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd } from '../lib/agentd.mjs';

let d;
before(async () => {
  d = await startAgentd({
    config: `
server: { workers: 2 }
models:
  - name: slow-mock
    provider: mock
    mock: {chunk_interval: 25ms, chunk_words: 1}
agents:
  - name: talker
    model: slow-mock
    tools: [wait, echo]
`,
  });
});
after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

const WORDS = 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen';

async function start(input) {
  const r = await d.fetch('/v1/agents/talker/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input }),
  });
  assert.equal(r.status, 202);
  return (await r.json()).id;
}

async function events(id) {
  const r = await d.fetch(`/v1/runs/${id}/events`);
  assert.equal(r.status, 200);
  const out = [];
  let buf = '';
  const dec = new TextDecoder();
  for await (const chunk of r.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = /^event: (.*)$/m.exec(block);
      if (ev) out.push({ event: ev[1], data: JSON.parse(/^data: (.*)$/m.exec(block)[1]) });
    }
  }
  return out;
}

async function waitRun(id) {
  for (let i = 0; ; i++) {
    const b = await (await d.fetch(`/v1/runs/${id}`)).json();
    if (!['queued', 'running'].includes(b.status)) return b;
    assert.ok(i < 500, 'the run did not finish');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a watched run streams its steps: step.delta events add up to the answer, before step.finished', async () => {
  // step 1 waits (the events stream opens meanwhile); step 2 calls two tools (streamed tool calls); step 3 answers
  const input = `CALL wait {"ms":300}\n---\nCALL echo {"text":"x"} CALL echo {"text":"y"}\n---\n${WORDS}`;
  const id = await start(input);
  const ev = await events(id);
  const fin = ev.at(-1);
  assert.equal(fin.event, 'run.finished');
  assert.equal(fin.data.status, 'succeeded', JSON.stringify(fin.data));
  assert.equal(fin.data.output, WORDS);

  const deltas = ev.filter((e) => e.event === 'step.delta');
  assert.ok(deltas.length >= 2, `tokens arrive in several events: ${JSON.stringify(deltas)}`);
  assert.ok(deltas.every((e) => e.data.step === 3), JSON.stringify(deltas));
  assert.equal(deltas.map((e) => e.data.delta).join(''), WORDS);
  const lastStep = ev.findLastIndex((e) => e.event === 'step.finished');
  assert.ok(ev.findLastIndex((e) => e.event === 'step.delta') < lastStep, 'deltas come before their step.finished');

  // the streamed step 2's tool calls were read back whole
  const g = await (await d.fetch(`/v1/runs/${id}`)).json();
  const results = g.steps.filter((s) => s.type === 'tool_call' && s.tool === 'echo').map((s) => s.result);
  assert.deepEqual(results, ['x', 'y']);

  // the same run unwatched: the same answer and usage
  const plain = await waitRun(await start(input));
  assert.equal(plain.output, g.output);
  assert.deepEqual(plain.usage, g.usage);
  assert.equal(plain.step_count, g.step_count);
});

test('an unwatched run has no step.delta (its steps are not streamed)', async () => {
  const id = await start(`CALL wait {"ms":1}\n---\n${WORDS}`);
  const b = await waitRun(id);
  assert.equal(b.output, WORDS);
  const ev = await events(id);
  assert.equal(ev.filter((e) => e.event === 'step.delta').length, 0);
  assert.equal(ev.at(-1).data.output, WORDS);
});

test("a run's own time per step (agentd_agent_step_overhead_seconds) leaves out the model and the tools", async () => {
  // 3 LLM steps, a 300 ms tool and streamed model steps of ~350 ms: counted, they would make >= 100 ms a step
  const b = await waitRun(await start('CALL wait {"ms":300}\n---\nCALL echo {"text":"x"}\n---\none two three four five six'));
  assert.equal(b.status, 'succeeded');
  const text = await (await d.opsFetch('/metrics')).text();
  const sum = Number(/^agentd_agent_step_overhead_seconds_sum\{agent="talker"\} (\S+)$/m.exec(text)?.[1]);
  const count = Number(/^agentd_agent_step_overhead_seconds_count\{agent="talker"\} (\S+)$/m.exec(text)?.[1]);
  assert.ok(count >= 1, text.split('\n').filter((l) => l.includes('overhead')).join('\n'));
  assert.ok(sum > 0);
  // counted, the tool and the model would make >= 200 ms a step; the bound leaves room for an ASan build at load 15
  // (store commits queue behind other jobs), not for the 300 ms tool or the streamed model steps
  assert.ok(sum / count < 0.1, `a step's own time is small: ${(sum / count) * 1e6} µs`);
});
