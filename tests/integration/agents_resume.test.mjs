// Resuming a run's event stream (issue 11 item 4, docs/agents.md "Resuming"): every event of GET /v1/runs/{id}/events
// but run.status and step.delta carries an `id:` from the run's durable event log; a client that reconnects with
// Last-Event-ID (or ?after=) gets exactly the events after it, replayed from the store and then live, also after
// the run ended and after a kill -9 and restart. A bad Last-Event-ID is a 400 in OpenAI's error format.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentd } from '../lib/agentd.mjs';

const CONFIG = `
server: { workers: 2 }
models:
  - name: slow-mock
    provider: mock
    mock: {chunk_interval: 25ms, chunk_words: 1}
agents:
  - name: talker
    model: slow-mock
    tools: [wait, echo]
`;
const WORDS = 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen';

let d;
before(async () => { d = await startAgentd({ config: CONFIG }); });
after(async () => {
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

async function start(input, dd = d) {
  const r = await dd.fetch('/v1/agents/talker/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input }),
  });
  assert.equal(r.status, 202);
  return (await r.json()).id;
}

// Reads an event stream until it ends, stopAt(event) says so (the connection is then dropped), or the server
// goes away. Each event: {id (a number, or null when it has none), event, data}; `raw` is the text as received.
async function stream(id, { lastEventId, query = '', stopAt = () => false, dd = d } = {}) {
  const headers = lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) };
  const r = await dd.fetch(`/v1/runs/${id}/events${query}`, { headers });
  if (r.status !== 200) assert.fail(`${r.status}: ${await r.text()}`);
  const out = { events: [], done: false, raw: '' };
  const dec = new TextDecoder();
  let buf = '';
  const reader = r.body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const text = dec.decode(value, { stream: true });
      out.raw += text;
      buf += text;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (data === '[DONE]') { out.done = true; continue; }
        const ev = /^event: (.*)$/m.exec(block);
        if (!ev) continue;
        const idm = /^id: (.*)$/m.exec(block);
        const e = { id: idm ? Number(idm[1]) : null, event: ev[1], data: JSON.parse(data) };
        out.events.push(e);
        if (stopAt(e)) { await reader.cancel(); return out; }
      }
    }
  } catch (err) {
    out.error = err; // the server died under us (kill -9)
  }
  return out;
}

const durable = (s) => s.events.filter((e) => e.id !== null);
const shape = (evs) => evs.map((e) => ({ id: e.id, event: e.event, seq: e.data.seq ?? null, status: e.data.status }));

// The text of an LLM step put together from its step.delta events by their offsets.
function deltaText(evs, step) {
  let t = '';
  for (const e of evs.filter((x) => x.event === 'step.delta' && x.data.step === step)) {
    assert.ok(e.data.offset <= t.length, `a delta starts inside or at the end of what came: ${JSON.stringify(e.data)}`);
    t = t.slice(0, e.data.offset) + e.data.delta;
  }
  return t;
}

function assertLog(evs) {
  assert.ok(evs.length > 0);
  evs.forEach((e, i) => assert.equal(e.id, i + 1, `ids count from 1 with no gap: ${JSON.stringify(shape(evs))}`));
  assert.equal(evs.at(-1).event, 'run.finished');
}

const SCRIPT = `CALL echo {"text":"a"} CALL wait {"ms":150}\n---\nCALL wait {"ms":300}\n---\n${WORDS}`;

test('disconnect mid-run, reconnect with Last-Event-ID: the two parts make the uninterrupted stream', async () => {
  const id = await start(SCRIPT);
  // an uninterrupted stream of the same run, alongside
  const whole = stream(id);
  // the interrupted one: dropped once the second step's wait has started
  const first = await stream(id, { stopAt: (e) => e.event === 'tool.started' && e.data.arguments.ms === 300 });
  assert.match(first.raw, /^retry: \d+\n\n/, 'a reconnection delay is suggested first');
  const part1 = durable(first);
  const last = part1.at(-1).id;
  const second = await stream(id, { lastEventId: last });
  assert.equal(second.events[0].event, 'run.status', 'a resumed stream starts with the run as it is');
  assert.equal(second.events[0].id, null, 'run.status has no id (the client keeps its Last-Event-ID)');
  assert.ok(second.done);
  const full = await whole;
  assert.ok(full.done);
  assertLog(durable(full));
  assert.deepEqual(shape([...part1, ...durable(second)]), shape(durable(full)));
  // every tool call shows call, started and result once each, even those that lived less than a poll
  const calls = durable(full).filter((e) => e.event.startsWith('tool.'));
  assert.equal(calls.length, 3 * 3, JSON.stringify(shape(calls)));
  assert.equal(calls.filter((e) => e.event === 'tool.call' && e.data.status === 'pending' && !('result' in e.data)).length, 3);
  // the answer's tokens: live in both streams, and they add up by their offsets
  const dl = (s) => JSON.stringify(s.events.filter((e) => e.event === 'step.delta').map((e) => e.data));
  assert.equal(deltaText(full.events, 3), WORDS, dl(full));
  assert.equal(deltaText(second.events, 3), WORDS, dl(second));
  assert.equal(full.events.findLast((e) => e.event === 'step.finished').data.message.content, WORDS);
  // the same log read back from the store after the end
  const replay = await stream(id);
  assert.deepEqual(shape(durable(replay)), shape(durable(full)));
  assert.deepEqual(durable(replay).map((e) => e.data), durable(full).map((e) => e.data));
});

test('disconnect during the streamed answer: the step in progress comes again from offset 0, nothing is lost', async () => {
  const id = await start(`CALL wait {"ms":200}\n---\n${WORDS}`);
  const first = await stream(id, { stopAt: (e) => e.event === 'step.delta' && e.data.step === 2 });
  const got = deltaText(first.events, 2);
  assert.ok(got.length > 0 && WORDS.startsWith(got));
  const second = await stream(id, { lastEventId: durable(first).at(-1).id });
  const more = second.events.filter((e) => e.event === 'step.delta');
  if (more.length) assert.equal(more[0].data.offset, 0, 'the step in progress is sent from its start');
  const fin = second.events.find((e) => e.event === 'step.finished');
  assert.equal(fin.data.message.content, WORDS, 'step.finished carries the whole text');
  if (more.length) assert.equal(deltaText(second.events, 2), WORDS);
  assert.equal(second.events.at(-1).event, 'run.finished');
});

test('reconnect after the run ended: the events after Last-Event-ID, or only the end; ?after= is the same', async () => {
  const id = await start('CALL echo {"text":"x"}\n---\ndone');
  const full = durable(await stream(id));
  assertLog(full);
  const n = full.length;
  const k = 2;
  const tail = await stream(id, { lastEventId: k });
  assert.deepEqual(shape(durable(tail)), shape(full.slice(k)));
  assert.ok(tail.done);
  const q = await stream(id, { query: `?after=${k}` });
  assert.deepEqual(shape(durable(q)), shape(full.slice(k)));
  // the header wins over ?after= (an EventSource reconnects to the same URL with the header)
  const both = await stream(id, { query: '?after=0', lastEventId: n - 1 });
  assert.deepEqual(shape(durable(both)), shape(full.slice(n - 1)));
  // after the last event: the run as it is and the end, nothing replayed
  const none = await stream(id, { lastEventId: n });
  assert.deepEqual(durable(none), []);
  assert.equal(none.events[0].event, 'run.status');
  assert.ok(none.done);
  // 0 is the start
  assert.deepEqual(shape(durable(await stream(id, { lastEventId: 0 }))), shape(full));
});

test('a bad Last-Event-ID (not a number, from the future) is a 400 in OpenAI error format', async () => {
  const id = await start('done');
  const n = durable(await stream(id)).length;
  for (const [h, q, param] of [['abc', '', 'Last-Event-ID'], ['-1', '', 'Last-Event-ID'], ['1.5', '', 'Last-Event-ID'],
    ['99999999999999999999', '', 'Last-Event-ID'], [String(n + 1), '', 'Last-Event-ID'], [undefined, '?after=x', 'after'],
    [undefined, `?after=${n + 7}`, 'after']]) {
    const r = await d.fetch(`/v1/runs/${id}/events${q}`, { headers: h === undefined ? {} : { 'last-event-id': h } });
    assert.equal(r.status, 400, `${h} ${q}`);
    const b = await r.json();
    assert.equal(b.error.type, 'invalid_request_error');
    assert.equal(b.error.code, 'invalid_last_event_id');
    assert.equal(b.error.param, param);
    assert.ok(b.error.message.length > 10);
  }
});

test('kill -9 mid-run, restart, reconnect with Last-Event-ID: the events are those of an uninterrupted log', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agentd-resume-data-'));
  const opts = { config: CONFIG, noDataDir: true, args: ['--data-dir', dataDir] };
  const a = await startAgentd(opts);
  let b;
  try {
    const id = await start('CALL echo {"text":"first"}\n---\nCALL wait {"ms":30000}\n---\nthe end', a);
    const first = await stream(id, { dd: a, stopAt: (e) => e.event === 'tool.started' && e.data.tool === 'wait' });
    a.signal('SIGKILL');
    await a.exited;
    b = await startAgentd(opts);
    const part1 = durable(first);
    const second = await stream(id, { dd: b, lastEventId: part1.at(-1).id });
    assert.ok(second.done);
    const fin = second.events.at(-1);
    assert.equal(fin.event, 'run.finished');
    assert.equal(fin.data.status, 'succeeded');
    assert.equal(fin.data.output, 'the end');
    const resumed = durable(second);
    assert.ok(resumed.some((e) => e.event === 'tool.result' && e.data.status === 'interrupted'), JSON.stringify(shape(resumed)));
    const full = durable(await stream(id, { dd: b }));
    assertLog(full);
    assert.deepEqual(shape([...part1, ...resumed]), shape(full));
  } finally {
    if (b) {
      const r = await b.stop();
      assert.equal(r.code, 0, b.rawStderr.slice(-3000));
    } else {
      a.signal('SIGKILL');
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
});
