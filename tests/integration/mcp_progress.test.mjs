// Progress from agent runs during tools/call (issue 12 item 2): a client that sends a progressToken and takes
// an SSE answer gets notifications/progress as the run's steps begin and its model streams text, then the
// result on the same stream; progress only increases. Without a progressToken the answer is one JSON body.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startAgentd } from '../lib/agentd.mjs';

let d;
before(async () => {
  d = await startAgentd({
    config: `
auth: {mode: none}
server: { workers: 1 }
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

const WORDS = 'one two three four five six seven eight nine ten eleven twelve';
const INPUT = `CALL wait {"ms":300}\n---\n${WORDS}`;

test('an agent run reports its steps and streamed text as progress, then its answer', async () => {
  const c = new Client({ name: 'progress-test', version: '1.0.0' });
  await c.connect(new StreamableHTTPClientTransport(new URL(d.url + '/mcp')));
  const seen = [];
  const r = await c.callTool({ name: 'talker', arguments: { input: INPUT } }, undefined,
    { onprogress: (p) => seen.push(p) });
  assert.equal(r.isError, false, JSON.stringify(r));
  assert.equal(r.content[0].text, WORDS);
  assert.ok(seen.length >= 2, `progress notifications: ${JSON.stringify(seen)}`);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].progress > seen[i - 1].progress, JSON.stringify(seen));
  assert.match(seen[0].message, /^step 1/);
  assert.ok(seen.some((p) => /^step 2: /.test(p.message)), `the last step's text: ${JSON.stringify(seen)}`);
  await c.close();
});

test('without a progressToken the answer is one JSON body', async () => {
  const init = await d.fetch('/mcp', { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '0' } } }) });
  await init.text();
  const sid = init.headers.get('mcp-session-id');
  const r = await d.fetch('/mcp', { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'talker', arguments: { input: INPUT } } }) });
  assert.match(r.headers.get('content-type'), /application\/json/);
  const j = await r.json();
  assert.equal(j.result.content[0].text, WORDS);
});
