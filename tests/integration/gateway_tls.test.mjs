// Upstream TLS, through both upstream clients (gateway.upstream_client native and curl; the default, auto, sends
// https to curl, whose HTTP/2 is checked at the end): a CA made with the openssl CLI and trusted through
// gateway.ca_file; a certificate for the right address and name is accepted (keep-alive, streaming, SNI), one for
// another name is refused before any request is sent, and so is one from an untrusted CA. (gateway_env.test.mjs
// checks the self-signed case with no ca_file.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import http2 from 'node:http2';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentd } from '../lib/agentd.mjs';

let dir, haveOpenssl = true;

function openssl(args) {
  execFileSync('openssl', args, { stdio: 'ignore', cwd: dir });
}

// A CA and a leaf certificate for the given subjectAltName, signed by it.
function makeCa(name) {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.pem`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
}
function makeLeaf(ca, name, san) {
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`,
    '-keyout', `${name}.key`, '-out', `${name}.csr`]);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`]);
}

const COMPLETION = JSON.stringify({ id: 'c1', object: 'chat.completion', created: 1, model: 'x',
  choices: [{ index: 0, message: { role: 'assistant', content: 'over tls' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } });

// An https upstream that records connections, SNI and the ALPN protocols the client offered.
async function tlsUpstream(leaf) {
  const st = { connections: 0, requests: 0, servernames: [], alpn: [] };
  const srv = https.createServer({
    key: readFileSync(join(dir, `${leaf}.key`)), cert: readFileSync(join(dir, `${leaf}.pem`)),
    ALPNCallback: ({ servername, protocols }) => { st.alpn.push(protocols.join(',')); return 'http/1.1'; },
  }, (req, res) => {
    st.requests++;
    st.servernames.push(req.socket.servername || '');
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      if (JSON.parse(body).stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const w of ['over ', 'tls']) {
          res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'x',
            choices: [{ index: 0, delta: { content: w }, finish_reason: null }] })}\n\n`);
        }
        res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'x',
          choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
        res.end('data: [DONE]\n\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(COMPLETION);
    });
  });
  srv.on('secureConnection', () => { st.connections++; });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  st.port = srv.address().port;
  st.close = () => new Promise((r) => { srv.closeAllConnections(); srv.close(r); });
  return st;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'agentd-tls-'));
  try {
    makeCa('ca');
    makeCa('otherca');
    makeLeaf('ca', 'good', 'IP:127.0.0.1,DNS:localhost');
    makeLeaf('ca', 'wrongname', 'DNS:other.example');
    makeLeaf('otherca', 'untrusted', 'IP:127.0.0.1,DNS:localhost');
  } catch {
    haveOpenssl = false;
  }
});

after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

const post = (d, body) => d.fetch('/v1/chat/completions', { method: 'POST', body: JSON.stringify(body) });

async function withGateway(client, baseUrl, fn) {
  const d = await startAgentd({
    env: { AGENTD_GATEWAY_UPSTREAM_CLIENT: client },
    config: `server:\n  workers: 1\ngateway:\n  ca_file: ${join(dir, 'ca.pem')}\nmodels:\n  - name: up\n    provider: openai-compatible\n    model: x\n    base_url: ${baseUrl}\n`,
  });
  try {
    await fn(d);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
}

for (const client of ['native', 'curl']) {
  test(`${client}: a certificate from the trusted CA for 127.0.0.1: requests, keep-alive, streaming`, async (t) => {
    if (!haveOpenssl) return t.skip('openssl command not available');
    const up = await tlsUpstream('good');
    try {
      await withGateway(client, `https://127.0.0.1:${up.port}/v1`, async (d) => {
        for (let i = 0; i < 4; i++) {
          const res = await post(d, { model: 'up', messages: [{ role: 'user', content: `n${i}` }] });
          assert.equal(res.status, 200, await res.clone().text());
          assert.equal((await res.json()).choices[0].message.content, 'over tls');
        }
        const res = await post(d, { model: 'up', stream: true, messages: [{ role: 'user', content: 's' }] });
        assert.equal(res.status, 200);
        const text = await res.text();
        const words = text.split('\n\n').filter((b) => b.startsWith('data: {')).map((b) => JSON.parse(b.slice(6)))
          .map((c) => c.choices[0]?.delta?.content).filter(Boolean);
        assert.deepEqual(words, ['over ', 'tls']);
        assert.ok(text.includes('data: [DONE]'));
      });
      assert.equal(up.requests, 5);
      assert.equal(up.connections, 1, `5 sequential requests used ${up.connections} TLS connections`);
      assert.deepEqual(up.servernames, ['', '', '', '', ''], 'no SNI for an IP address');
      // agentd's own client offers only HTTP/1.1; libcurl offers h2 as well
      assert.equal(up.alpn[0], client === 'native' ? 'http/1.1' : 'h2,http/1.1');
    } finally {
      await up.close();
    }
  });

  test(`${client}: by name: the name is resolved, sent as SNI and checked against the certificate`, async (t) => {
    if (!haveOpenssl) return t.skip('openssl command not available');
    const up = await tlsUpstream('good');
    try {
      await withGateway(client, `https://localhost:${up.port}/v1`, async (d) => {
        const res = await post(d, { model: 'up', messages: [{ role: 'user', content: 'x' }] });
        assert.equal(res.status, 200, await res.clone().text());
      });
      assert.deepEqual(up.servernames, ['localhost']);
    } finally {
      await up.close();
    }
  });

  test(`${client}: a trusted CA's certificate for another name is refused before anything is sent`, async (t) => {
    if (!haveOpenssl) return t.skip('openssl command not available');
    const up = await tlsUpstream('wrongname');
    try {
      await withGateway(client, `https://127.0.0.1:${up.port}/v1`, async (d) => {
        const res = await post(d, { model: 'up', messages: [{ role: 'user', content: 'x' }] });
        assert.equal(res.status, 502);
        const msg = (await res.json()).error.message;
        assert.match(msg, client === 'native' ? /certificate/i : /certificate|subject name/i);
      });
      assert.equal(up.requests, 0);
    } finally {
      await up.close();
    }
  });

  test(`${client}: a certificate from a CA nobody trusts is refused`, async (t) => {
    if (!haveOpenssl) return t.skip('openssl command not available');
    const up = await tlsUpstream('untrusted');
    try {
      await withGateway(client, `https://127.0.0.1:${up.port}/v1`, async (d) => {
        const res = await post(d, { model: 'up', messages: [{ role: 'user', content: 'x' }] });
        assert.equal(res.status, 502);
        assert.match((await res.json()).error.message, /certificate/i);
      });
      assert.equal(up.requests, 0);
    } finally {
      await up.close();
    }
  });
}

// The default (auto) sends https to libcurl, which offers h2 by ALPN and uses it when the server agrees:
// concurrent requests then share one connection as HTTP/2 streams.
test('auto: an https upstream that speaks HTTP/2 gets HTTP/2, concurrent requests on one connection', async (t) => {
  if (!haveOpenssl) return t.skip('openssl command not available');
  const st = { sessions: 0, versions: [] };
  const srv = http2.createSecureServer({
    key: readFileSync(join(dir, 'good.key')), cert: readFileSync(join(dir, 'good.pem')), allowHTTP1: true,
  }, (req, res) => {
    st.versions.push(req.httpVersion);
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(COMPLETION);
    });
  });
  srv.on('secureConnection', () => { st.sessions++; });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  try {
    await withGateway('auto', `https://127.0.0.1:${srv.address().port}/v1`, async (d) => {
      const first = await post(d, { model: 'up', messages: [{ role: 'user', content: 'warm' }] });
      assert.equal(first.status, 200, await first.clone().text());
      const all = await Promise.all([0, 1, 2, 3, 4, 5].map((i) =>
        post(d, { model: 'up', messages: [{ role: 'user', content: `c${i}` }] })));
      for (const res of all) {
        assert.equal(res.status, 200);
        assert.equal((await res.json()).choices[0].message.content, 'over tls');
      }
    });
    assert.deepEqual(st.versions, Array(7).fill('2.0'));
    assert.equal(st.sessions, 1, `7 requests used ${st.sessions} connections`);
  } finally {
    await new Promise((r) => srv.close(r));
  }
});

// libcurl is opened only when something needs it (src/net/curl_dl.h): not for the mock model or plain http
// upstreams, at start-up for a configuration with an https deployment, and on first use otherwise.
const mapsCurl = (d) => readFileSync(`/proc/${d.child.pid}/maps`, 'utf8').includes('libcurl');

test('libcurl stays unloaded for the mock model and plain http upstreams', async () => {
  const http = await import('node:http');
  const srv = http.createServer((req, res) => { req.resume(); req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' }); res.end(COMPLETION); }); });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const d = await startAgentd({ config: `models:\n  - name: mock\n    provider: mock\n  - name: up\n    provider: openai-compatible\n    model: x\n    base_url: http://127.0.0.1:${srv.address().port}/v1\n` });
    try {
      for (const model of ['mock', 'up']) {
        const res = await post(d, { model, messages: [{ role: 'user', content: 'hi' }] });
        assert.equal(res.status, 200, await res.clone().text());
      }
      assert.equal(mapsCurl(d), false, 'libcurl was loaded');
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
  } finally {
    await new Promise((r) => srv.close(r));
  }
});

test('libcurl is loaded at start for an https deployment, and for any deployment in curl mode', async (t) => {
  if (!haveOpenssl) return t.skip('openssl command not available');
  const up = await tlsUpstream('good');
  try {
    await withGateway('auto', `https://127.0.0.1:${up.port}/v1`, async (d) => {
      assert.equal(mapsCurl(d), true, 'not loaded at start');
      const res = await post(d, { model: 'up', messages: [{ role: 'user', content: 'x' }] });
      assert.equal(res.status, 200);
      assert.ok(d.logs.every((l) => !/loaded on first use/.test(l.msg)), 'loaded again on first use');
    });
  } finally {
    await up.close();
  }
  const d = await startAgentd({ env: { AGENTD_GATEWAY_UPSTREAM_CLIENT: 'curl' },
    config: 'models:\n  - name: up\n    provider: openai-compatible\n    model: x\n    base_url: http://127.0.0.1:1/v1\n' });
  try {
    assert.equal(mapsCurl(d), true, 'curl mode did not load libcurl at start');
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});
