// What the upstream client does with responses that are not HTTP: a status outside 100-599 is a bad gateway,
// never relayed (issue 15, item 6), whichever client (agentd's own or libcurl) carries the request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startAgentd } from '../lib/agentd.mjs';

// A raw TCP upstream: answers each request with the next scripted status line (an HTTP library would refuse to
// write these), counting what it saw.
async function rawUpstream(statusLines) {
  const s = { requests: 0 };
  let next = 0;
  s.server = net.createServer((sock) => {
    let buf = '';
    sock.on('data', (c) => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, end));
      if (buf.length < end + 4 + (m ? Number(m[1]) : 0)) return;
      buf = '';
      s.requests++;
      const body = '{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[]}';
      sock.end(`${statusLines[next++ % statusLines.length]}\r\ncontent-type: application/json\r\n` +
               `content-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
    });
    sock.on('error', () => {});
  });
  await new Promise((r) => s.server.listen(0, '127.0.0.1', r));
  s.url = `http://127.0.0.1:${s.server.address().port}/v1`;
  return s;
}

for (const client of ['native', 'curl']) {
  test(`upstream_client ${client}: a status outside 100-599 from the upstream is a 502`, async () => {
    const lines = ['HTTP/1.1 999 Whatever', 'HTTP/1.1 600 Nope', 'HTTP/1.1 099 Low'];
    const up = await rawUpstream(lines);
    const d = await startAgentd({
      // one attempt per request: the test is about how each bad status line is reported (retries: resilience*)
      config: `gateway:\n  upstream_client: ${client}\n  retries: {max_attempts: 1}\nmodels:\n  - name: m\n` +
              `    provider: openai-compatible\n    model: x\n    base_url: ${up.url}\n`,
    });
    try {
      for (const line of lines) {
        const res = await d.fetch('/v1/chat/completions', {
          method: 'POST',
          body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
        });
        const text = await res.text();
        assert.equal(res.status, 502, `${line}: ${text}`);
        const err = JSON.parse(text).error;
        assert.equal(typeof err.message, 'string');
        assert.match(err.message, /^upstream .*(status|response) code/i, text);
      }
      assert.equal(up.requests, lines.length);
    } finally {
      assert.equal((await d.stop()).code, 0);
      await new Promise((r) => up.server.close(r));
    }
  });
}
