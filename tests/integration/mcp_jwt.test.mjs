// JWT access tokens on /mcp (issue 12 item 4, docs/mcp.md): tokens minted here with node:crypto (RSA and EC keys)
// are accepted when signed by a key of the issuer's JWKS (served by a tiny HTTP server, or read from a file) and
// carry the right iss / aud / exp; the official SDK client lists and calls tools with one. Expired, wrong
// audience, wrong issuer, bad signature, alg none, HMAC keyed with the public key and unknown kid are refused
// with 401 and `WWW-Authenticate: Bearer resource_metadata=..., error="invalid_token"`. A rotated key set is
// picked up (an unknown kid asks for a reload).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { generateKeyPairSync, sign, createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startAgentd } from '../lib/agentd.mjs';

const ISS = 'https://auth.example.test';
const b64u = (b) => Buffer.from(b).toString('base64url');

function keyPair(type, kid) {
  const kp = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...kp, kid, alg: type === 'rsa' ? 'RS256' : 'ES256', jwk: { ...kp.publicKey.export({ format: 'jwk' }), kid, use: 'sig' } };
}
const jwks = (...keys) => JSON.stringify({ keys: keys.map((k) => k.jwk) });

function mint(k, claims, header = {}) {
  const h = { alg: k.alg, typ: 'JWT', kid: k.kid, ...header };
  const input = `${b64u(JSON.stringify(h))}.${b64u(JSON.stringify(claims))}`;
  const sig = k.alg === 'RS256' ? sign('sha256', Buffer.from(input), k.privateKey)
    : sign('sha256', Buffer.from(input), { key: k.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64u(sig)}`;
}

const rsa1 = keyPair('rsa', 'rsa-1');
const ec1 = keyPair('ec', 'ec-1');
const rsa2 = keyPair('rsa', 'rsa-2');
const ec2 = keyPair('ec', 'ec-2');
const stranger = keyPair('rsa', 'rsa-1'); // same kid as rsa1, another key: a bad signature

let jwksBody = jwks(rsa1, ec1);
let jwksHits = 0;
let srv, dUrl, dFile, dir, jwksFile;

before(async () => {
  srv = createServer((req, res) => {
    jwksHits++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(jwksBody);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const jwksUrl = `http://127.0.0.1:${srv.address().port}/jwks.json`;
  dUrl = await startAgentd({ config: `auth:\n  mode: keys\nagents:\n  - name: helper\n    model: mock\n    tools: [echo]\nmcp:\n  jwt:\n    issuer: ${ISS}\n    jwks_url: ${jwksUrl}\n    team_claim: org\n    jwks_min_refresh: 200ms\n` });
  dir = mkdtempSync(join(tmpdir(), 'agentd-jwks-'));
  jwksFile = join(dir, 'jwks.json');
  writeFileSync(jwksFile, jwks(ec1));
  dFile = await startAgentd({ config: `auth:\n  mode: keys\nmcp:\n  jwt:\n    issuer: ${ISS}\n    jwks_file: ${jwksFile}\n    jwks_min_refresh: 200ms\n` });
});

after(async () => {
  for (const d of [dUrl, dFile]) {
    if (!d) continue;
    const r = await d.stop();
    assert.equal(r.code, 0, d.rawStderr.slice(-3000));
  }
  srv?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const now = () => Math.floor(Date.now() / 1000);
const claims = (d, extra = {}) => ({ iss: ISS, aud: `${d.url}/mcp`, sub: 'alice', org: 'blue', iat: now(), exp: now() + 300, ...extra });

async function initialize(d, token) {
  const r = await d.fetch('/mcp', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '0' } } }),
  });
  return { status: r.status, www: r.headers.get('www-authenticate'), sid: r.headers.get('mcp-session-id'), text: await r.text() };
}

async function sdkList(d, token) {
  const client = new Client({ name: 'agentd-jwt-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(d.url + '/mcp'), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  await client.connect(transport);
  const { tools } = await client.listTools();
  const echo = await client.callTool({ name: 'echo', arguments: { text: 'hello jwt' } });
  await client.close();
  return { tools, echo };
}

// Polls until the token is accepted: the first refusal of an unknown kid asks the refresh thread for a reload.
async function acceptedEventually(d, token) {
  const deadline = Date.now() + 15000;
  let r;
  while (Date.now() < deadline) {
    r = await initialize(d, token);
    if (r.status === 200) return r;
    assert.equal(r.status, 401, r.text);
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.fail(`token never accepted: ${r.status} ${r.text}`);
}

test('the protected-resource metadata names the issuer as authorization server', async () => {
  const r = await dUrl.fetch('/.well-known/oauth-protected-resource/mcp');
  const j = await r.json();
  assert.equal(r.status, 200);
  assert.equal(j.resource, `${dUrl.url}/mcp`);
  assert.deepEqual(j.authorization_servers, [ISS]);
});

test('a valid RS256 or ES256 token lists and calls tools through the SDK client', async () => {
  for (const k of [rsa1, ec1]) {
    const { tools, echo } = await sdkList(dUrl, mint(k, claims(dUrl)));
    assert.ok(tools.some((t) => t.name === 'echo'), JSON.stringify(tools.map((t) => t.name)));
    assert.notEqual(echo.isError, true, JSON.stringify(echo));
    assert.match(JSON.stringify(echo.content), /hello jwt/);
  }
  // aud may be an array; nbf in the past is fine
  const r = await initialize(dUrl, mint(rsa1, claims(dUrl, { aud: ['other', `${dUrl.url}/mcp`], nbf: now() - 10 })));
  assert.equal(r.status, 200, r.text);
  // the file-based key set too
  const { tools } = await sdkList(dFile, mint(ec1, claims(dFile)));
  assert.ok(tools.some((t) => t.name === 'echo'));
});

test('a JWT caller runs agents, and its sessions are bound to its subject', async () => {
  const client = new Client({ name: 'agentd-jwt-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(dUrl.url + '/mcp'), { requestInit: { headers: { authorization: `Bearer ${mint(ec1, claims(dUrl))}` } } });
  await client.connect(transport);
  const run = await client.callTool({ name: 'helper', arguments: { input: 'CALL echo {"text":"x"}\n---\nthe final answer' } });
  assert.notEqual(run.isError, true, JSON.stringify(run));
  assert.match(JSON.stringify(run.content), /the final answer/);
  await client.close();

  const alice = await initialize(dUrl, mint(rsa1, claims(dUrl)));
  assert.equal(alice.status, 200, alice.text);
  const list = async (token) => {
    const r = await dUrl.fetch('/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}`, 'mcp-session-id': alice.sid, 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
    });
    await r.arrayBuffer();
    return r.status;
  };
  assert.equal(await list(mint(ec1, claims(dUrl))), 200); // alice again, another key of the issuer
  assert.equal(await list(mint(rsa1, claims(dUrl, { sub: 'bob' }))), 404);
});

test('bad tokens get 401 invalid_token with the resource metadata pointer', async () => {
  const c = claims(dUrl);
  const input = (h, p) => `${b64u(JSON.stringify(h))}.${b64u(JSON.stringify(p))}`;
  const hsInput = input({ alg: 'HS256', typ: 'JWT', kid: 'rsa-1' }, c);
  const pem = rsa1.publicKey.export({ type: 'spki', format: 'pem' });
  const cases = {
    expired: mint(rsa1, { ...c, exp: now() - 3600, iat: now() - 7200 }),
    'no exp': mint(rsa1, { ...c, exp: undefined }),
    'not yet valid': mint(rsa1, { ...c, nbf: now() + 3600 }),
    'wrong aud': mint(rsa1, { ...c, aud: 'http://elsewhere.example/mcp' }),
    'wrong iss': mint(ec1, { ...c, iss: 'https://evil.example' }),
    'bad signature': mint(stranger, c),
    'alg none': `${input({ alg: 'none', typ: 'JWT' }, c)}.`,
    'alg none, kid': `${input({ alg: 'none', kid: 'rsa-1' }, c)}.${b64u('x')}`,
    'HS256 keyed with the public key': `${hsInput}.${b64u(createHmac('sha256', pem).update(hsInput).digest())}`,
    'RS256 header on the EC key': mint({ ...ec1, alg: 'ES256' }, c, { alg: 'RS256' }),
    'unknown kid': mint(rsa2, c),
    'no sub': mint(rsa1, { ...c, sub: undefined }),
    'tampered payload': (() => { const t = mint(rsa1, c).split('.'); t[1] = b64u(JSON.stringify({ ...c, sub: 'mallory' })); return t.join('.'); })(),
  };
  for (const [name, tok] of Object.entries(cases)) {
    const r = await initialize(dUrl, tok);
    assert.equal(r.status, 401, `${name}: ${r.text}`);
    assert.match(r.www, /^Bearer resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp", error="invalid_token"$/, name);
    assert.equal(JSON.parse(r.text).error.code, -32600, name);
  }
  // and with no token at all: 401 without error=
  const r = await dUrl.fetch('/mcp', { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
  assert.equal(r.status, 401);
  assert.doesNotMatch(r.headers.get('www-authenticate'), /invalid_token/);
  await r.arrayBuffer();
});

test('a rotated key set is picked up: from the URL and from the file', async () => {
  jwksBody = jwks(rsa2, ec1); // rsa-1 retired, rsa-2 new
  const hits = jwksHits;
  await acceptedEventually(dUrl, mint(rsa2, claims(dUrl)));
  assert.ok(jwksHits > hits, 'the JWKS was fetched again');
  const { tools } = await sdkList(dUrl, mint(rsa2, claims(dUrl)));
  assert.ok(tools.some((t) => t.name === 'echo'));
  // the retired key's tokens are now refused
  assert.equal((await initialize(dUrl, mint(rsa1, claims(dUrl)))).status, 401);
  // a burst of unknown kids reloads the key set at most once per jwks_min_refresh (200ms here), not once each
  const before = jwksHits, t0 = Date.now();
  const unknown = keyPair('ec', 'nope');
  for (let i = 0; i < 40; i++) assert.equal((await initialize(dUrl, mint(unknown, claims(dUrl)))).status, 401);
  const bound = Math.ceil((Date.now() - t0) / 200) + 2;
  assert.ok(jwksHits - before <= bound, `${jwksHits - before} fetches for 40 unknown kids in ${Date.now() - t0} ms`);

  writeFileSync(jwksFile + '.new', jwks(ec2));
  renameSync(jwksFile + '.new', jwksFile);
  await acceptedEventually(dFile, mint(ec2, claims(dFile)));
  assert.equal((await initialize(dFile, mint(ec1, claims(dFile)))).status, 401);
});
