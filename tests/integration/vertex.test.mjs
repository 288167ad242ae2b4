// Gateway: the vertex-ai provider (Gemini and Claude models of a Google Cloud project) against the fake Vertex AI
// (tests/fakes/providers/vertex.mjs), with the Google token sources against fake credential endpoints
// (tests/fakes/google_auth.mjs): a service-account key (a throwaway RSA key; the fake token endpoint verifies the
// JWT with the public key) and the metadata server. Clients: the official `openai` and `@anthropic-ai/sdk` SDKs.
// The fake Vertex accepts only bearer tokens the fake endpoints issued and that have not expired.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import { spawnSync } from 'node:child_process';
import { BIN, startAgentd } from '../lib/agentd.mjs';
import { startFake, embedding } from '../fakes/fake.mjs';
import { startGoogleAuth, SCOPE } from '../fakes/google_auth.mjs';

let d, v, sa, md, fast, dir, oa, an;
const PROJECT = 'proj-1';
const GEMINI = 'gemini-2.5-flash';
const CLAUDE = 'claude-sonnet-4-5@20250929';

before(async () => {
  sa = await startGoogleAuth();                 // the service account's token endpoint
  md = await startGoogleAuth();                 // the metadata server
  fast = await startGoogleAuth({ expiresIn: 2 }); // tokens that expire in 2 s: refreshed before they do
  v = await startFake({ provider: 'vertex', vertexProject: PROJECT, keys: { vertex: (t) => sa.valid(t) || md.valid(t) || fast.valid(t) } });
  dir = mkdtempSync(join(tmpdir(), 'agentd-vertex-'));
  writeFileSync(join(dir, 'sa.json'), sa.serviceAccountJson());
  writeFileSync(join(dir, 'fast.json'), fast.serviceAccountJson());
  // a key whose private key is not the service account's: the token endpoint refuses its JWT
  const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' });
  writeFileSync(join(dir, 'wrong.json'), sa.serviceAccountJson({ private_key: other }));
  const dep = (name, model, extra = '', project = PROJECT) => `
  - name: ${name}
    provider: vertex-ai
    model: ${model}
    project: ${project}
    location: us-central1
    base_url: ${v.url}
    retries: { max_attempts: 1 }${extra}`;
  const file = (f) => `\n    credentials_file: ${join(dir, f)}`;
  d = await startAgentd({
    env: { GOOGLE_APPLICATION_CREDENTIALS: join(dir, 'sa.json'), GCE_METADATA_HOST: md.metadataHost },
    config: 'models:' + dep('vg', GEMINI)
      + dep('vc', CLAUDE, '\n    auth: google_service_account' + file('sa.json'))
      + dep('vmeta', GEMINI, '\n    auth: google_metadata')
      + dep('vfast', GEMINI, file('fast.json'))
      + dep('vwrong', GEMINI, file('wrong.json'))
      + dep('vother', GEMINI, '', 'proj-2')
      + dep('vquota', 'gemini-2.5-pro') // its own upstream (a 429 cool-down is per upstream)
      + dep('vembed', 'text-embedding-005', '\n    embeddings: true') + '\n',
  });
  oa = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: 'sk-client', maxRetries: 0 });
  an = new Anthropic({ baseURL: d.url, apiKey: 'sk-client', maxRetries: 0 });
  // The first fetches run on agentd's credentials thread as it starts: wait until each source has answered
  // (an issued token), then until agentd serves with it (the token is stored just after it is issued).
  await Promise.all([sa.waitForTokens(1), md.waitForTokens(1), fast.waitForTokens(1)]);
  for (const model of ['vg', 'vmeta', 'vfast']) await untilServed(model);
});

after(async () => {
  const r = await d.stop();
  await Promise.all([v.close(), sa.close(), md.close(), fast.close()]);
  rmSync(dir, { recursive: true, force: true });
  assert.equal(r.code, 0, `agentd exit ${JSON.stringify(r)}\n${d.rawStderr.slice(-4000)}`);
});

const post = (body, path = '/v1/chat/completions') =>
  d.fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

// Polls the one state the test cannot be told about: the credentials thread storing a token it has received.
async function untilServed(model) {
  for (let i = 0; i < 200; i++) {
    const r = await post({ model, messages: [{ role: 'user', content: 'warm up' }] });
    const text = await r.text();
    if (r.status === 200) return;
    assert.equal(r.status, 503, text);
    await new Promise((res) => setImmediate(res));
  }
  throw new Error(`${model}: credentials never became available`);
}

const bearerOf = (req) => /^Bearer (.+)$/.exec(req.headers.authorization || '')?.[1];

const WEATHER = {
  type: 'function',
  function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};

test('the fake Vertex speaks what Google\'s own SDK (@google/genai, vertexai mode) sends and reads', async () => {
  const f = await startFake({ provider: 'vertex', vertexProject: 'proj-sdk' });
  try {
    const authClient = { getRequestHeaders: async () => new Headers({ Authorization: `Bearer ${f.keys.vertex}` }) };
    const ai = new GoogleGenAI({ vertexai: true, project: 'proj-sdk', location: 'us-central1', httpOptions: { baseUrl: f.url }, googleAuthOptions: { authClient } });
    const r = await ai.models.generateContent({ model: GEMINI, contents: 'hello from genai', config: { systemInstruction: 'be brief', maxOutputTokens: 20 } });
    assert.equal(r.text, 'echo: hello from genai');
    assert.match(f.requests.at(-1).path, /^\/v1beta1\/projects\/proj-sdk\/locations\/us-central1\/publishers\/google\/models\/gemini-2.5-flash:generateContent$/);
    let t = '';
    for await (const c of await ai.models.generateContentStream({ model: GEMINI, contents: 'stream from genai' })) t += c.text;
    assert.equal(t, 'echo: stream from genai');
    assert.equal(f.requests.at(-1).query.alt, 'sse');
    const n = await ai.models.countTokens({ model: GEMINI, contents: 'count me please' });
    assert.equal(n.totalTokens, Math.ceil('count me please'.length / 4));
    // and refuses a wrong token as Vertex does
    const bad = new GoogleGenAI({ vertexai: true, project: 'proj-sdk', location: 'us-central1', httpOptions: { baseUrl: f.url },
      googleAuthOptions: { authClient: { getRequestHeaders: async () => new Headers({ Authorization: 'Bearer ya29.wrong' }) } } });
    await assert.rejects(bad.models.generateContent({ model: GEMINI, contents: 'x' }), (e) => e.status === 401 && /UNAUTHENTICATED/.test(e.message));
  } finally {
    await f.close();
  }
});

test('service-account key: one JWT exchange per key file, signed RS256 with the right claims, verified by the token endpoint', async () => {
  // the only JWTs refused are the wrong key's (vwrong, the last test)
  assert.ok(sa.rejected.every((why) => why === 'Invalid JWT Signature.'), sa.rejected.join('; '));
  // vg (GOOGLE_APPLICATION_CREDENTIALS, auth auto) and vc (the same file, named) share one source: one token
  assert.equal(sa.tokenRequests.length, 1);
  const { header, claims } = sa.tokenRequests[0];
  assert.equal(header.alg, 'RS256');
  assert.equal(header.typ, 'JWT');
  assert.equal(header.kid, JSON.parse(sa.serviceAccountJson()).private_key_id);
  assert.equal(claims.iss, sa.clientEmail);
  assert.equal(claims.scope, SCOPE);
  assert.equal(claims.aud, sa.tokenUri);
  assert.equal(claims.exp - claims.iat, 3600);
});

test('Gemini on Vertex through the openai SDK: URL, bearer, GenerateContentRequest, answer and usage', async () => {
  v.reset();
  const { data: r, response } = await oa.chat.completions.create({
    model: 'vg', max_tokens: 50, messages: [{ role: 'system', content: 'Be terse.' }, { role: 'user', content: 'hello vertex world' }],
  }).withResponse();
  assert.equal(r.choices[0].message.content, 'echo: hello vertex world');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens, 4);
  assert.equal(response.headers.get('x-agentd-deployment'), `vertex-ai:${GEMINI}`);
  const sent = v.requests[0];
  assert.equal(sent.path, `/v1/projects/${PROJECT}/locations/us-central1/publishers/google/models/${GEMINI}:generateContent`);
  assert.ok(sa.valid(bearerOf(sent)), 'the service account token');
  assert.deepEqual(sent.json, {
    contents: [{ role: 'user', parts: [{ text: 'hello vertex world' }] }],
    systemInstruction: { parts: [{ text: 'Be terse.' }] },
    generationConfig: { maxOutputTokens: 50 },
  });
});

test('Gemini on Vertex streamed (SSE) and with tools through the openai SDK', async () => {
  v.reset();
  const stream = await oa.chat.completions.create({
    model: 'vg', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'stream these five words' }],
  });
  let text = '';
  let usage = null;
  for await (const c of stream) {
    text += c.choices[0]?.delta?.content || '';
    if (c.usage) usage = c.usage;
  }
  assert.equal(text, 'echo: stream these five words');
  assert.equal(usage.completion_tokens, 5);
  assert.equal(v.requests[0].path, `/v1/projects/${PROJECT}/locations/us-central1/publishers/google/models/${GEMINI}:streamGenerateContent`);
  assert.equal(v.requests[0].query.alt, 'sse');

  const r = await oa.chat.completions.create({ model: 'vg', tools: [WEATHER], messages: [{ role: 'user', content: 'CALL get_weather {"city":"Paris"}' }] });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(r.choices[0].message.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(r.choices[0].message.tool_calls[0].function.arguments), { city: 'Paris' });
  assert.equal(v.requests[1].json.tools[0].functionDeclarations[0].name, 'get_weather');
});

test('Claude on Vertex through the anthropic SDK: rawPredict with the client body, no model, anthropic_version', async () => {
  v.reset();
  const m = await an.messages.create({ model: 'vc', max_tokens: 64, system: 'Be brief.', messages: [{ role: 'user', content: 'hello claude on vertex' }] });
  assert.equal(m.type, 'message');
  assert.deepEqual(m.content, [{ type: 'text', text: 'echo: hello claude on vertex' }]);
  assert.equal(m.stop_reason, 'end_turn');
  const sent = v.requests[0];
  assert.equal(sent.path, `/v1/projects/${PROJECT}/locations/us-central1/publishers/anthropic/models/${CLAUDE}:rawPredict`);
  assert.ok(sa.valid(bearerOf(sent)));
  assert.equal(sent.headers['x-api-key'], undefined);
  assert.deepEqual(sent.json, { max_tokens: 64, system: 'Be brief.', messages: [{ role: 'user', content: 'hello claude on vertex' }], anthropic_version: 'vertex-2023-10-16' });
});

test('Claude on Vertex streamed with tools through the anthropic SDK (streamRawPredict)', async () => {
  v.reset();
  const stream = an.messages.stream({
    model: 'vc', max_tokens: 100,
    tools: [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
    messages: [{ role: 'user', content: 'CALL get_weather {"city":"Oslo"}' }],
  });
  const final = await stream.finalMessage();
  assert.equal(final.stop_reason, 'tool_use');
  assert.equal(final.content[0].type, 'tool_use');
  assert.deepEqual(final.content[0].input, { city: 'Oslo' });
  assert.equal(v.requests[0].path, `/v1/projects/${PROJECT}/locations/us-central1/publishers/anthropic/models/${CLAUDE}:streamRawPredict`);
  assert.equal(v.requests[0].json.stream, true);
  assert.equal(v.requests[0].json.model, undefined);
});

test('Claude on Vertex through the openai SDK (translated), plain and streamed', async () => {
  v.reset();
  const r = await oa.chat.completions.create({ model: 'vc', messages: [{ role: 'user', content: 'translated to messages' }] });
  assert.equal(r.choices[0].message.content, 'echo: translated to messages');
  assert.equal(v.requests[0].json.anthropic_version, 'vertex-2023-10-16');
  assert.equal(v.requests[0].json.model, undefined);
  const stream = await oa.chat.completions.create({ model: 'vc', stream: true, tools: [WEATHER], messages: [{ role: 'user', content: 'CALL get_weather {"city":"Rome"}' }] });
  let args = '';
  let finish = null;
  for await (const c of stream) {
    const tc = c.choices[0]?.delta?.tool_calls?.[0];
    if (tc?.function?.arguments) args += tc.function.arguments;
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.deepEqual(JSON.parse(args), { city: 'Rome' });
});

test('Gemini on Vertex through the anthropic SDK, and token counts on both publishers', async () => {
  v.reset();
  const m = await an.messages.create({ model: 'vg', max_tokens: 64, messages: [{ role: 'user', content: 'gemini for anthropic clients' }] });
  assert.deepEqual(m.content, [{ type: 'text', text: 'echo: gemini for anthropic clients' }]);
  const c1 = await an.messages.countTokens({ model: 'vc', messages: [{ role: 'user', content: 'count these words for me' }] });
  const sent1 = v.requests.at(-1);
  assert.equal(sent1.path, `/v1/projects/${PROJECT}/locations/us-central1/publishers/anthropic/models/count-tokens:rawPredict`);
  assert.equal(sent1.json.model, CLAUDE);
  assert.equal(sent1.json.anthropic_version, 'vertex-2023-10-16');
  const c2 = await an.messages.countTokens({ model: 'vg', messages: [{ role: 'user', content: 'count these words for me' }] });
  assert.equal(v.requests.at(-1).path, `/v1/projects/${PROJECT}/locations/us-central1/publishers/google/models/${GEMINI}:countTokens`);
  assert.equal(c1.input_tokens, Math.ceil('count these words for me'.length / 4));
  assert.equal(c2.input_tokens, c1.input_tokens);
});

test('Vertex errors: google.rpc.Status mapped to each client format and status, typed for retries', async () => {
  v.reset();
  v.script([{ status: 429, retryAfter: 7 }]); // vquota then cools down for 7 s: no other test uses it
  let r = await post({ model: 'vquota', messages: [{ role: 'user', content: 'x' }] });
  let j = await r.json();
  assert.equal(r.status, 429);
  assert.equal(j.error.type, 'rate_limit_error');
  assert.equal(j.error.code, 'RESOURCE_EXHAUSTED');
  assert.equal(r.headers.get('retry-after'), '7');
  // the quota refusal of a Claude model is Vertex's (Google JSON), answered in Anthropic's format
  v.script([{ status: 429 }]);
  r = await post({ model: 'vc', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }, '/v1/messages');
  j = await r.json();
  assert.equal(r.status, 429);
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'rate_limit_error');
  // the model's own refusal (Anthropic JSON) through Vertex
  v.script([{ status: 400, anthropicError: true, message: 'messages: roles must alternate' }]);
  r = await post({ model: 'vc', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }, '/v1/messages');
  j = await r.json();
  assert.equal(r.status, 400);
  assert.equal(j.error.type, 'invalid_request_error');
  assert.match(j.error.message, /roles must alternate/);
  // an unknown model / no access: 404 NOT_FOUND
  v.script([{ status: 404 }]);
  r = await post({ model: 'vg', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(r.status, 404);
  // Vertex refuses the project (IAM): agentd's own credentials failure, a 502, never the upstream's 403
  r = await post({ model: 'vother', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(r.status, 502);
});

test('embeddings: :predict instances, the vectors and token counts Vertex reports, base64 as OpenAI encodes it', async () => {
  v.reset();
  const r = await oa.embeddings.create({ model: 'vembed', input: ['first text', 'the second one'], dimensions: 8 });
  assert.equal(r.data.length, 2);
  assert.deepEqual(r.data[1].embedding.map((x) => Math.fround(x)), embedding('the second one', 8).map((x) => Math.fround(x)));
  assert.equal(r.usage.prompt_tokens, Math.ceil('first text'.length / 4) + Math.ceil('the second one'.length / 4));
  const sent = v.requests[0];
  assert.equal(sent.path, `/v1/projects/${PROJECT}/locations/us-central1/publishers/google/models/text-embedding-005:predict`);
  assert.deepEqual(sent.json, { instances: [{ content: 'first text' }, { content: 'the second one' }], parameters: { outputDimensionality: 8 } });
  const b = await oa.embeddings.create({ model: 'vembed', input: 'one', dimensions: 4, encoding_format: 'base64' });
  const f = new Float32Array(Uint8Array.from(Buffer.from(b.data[0].embedding, 'base64')).buffer);
  assert.deepEqual([...f], embedding('one', 4).map((x) => Math.fround(x)));
  // a Claude model has no embeddings: a 400 before any upstream call
  const c = await post({ model: 'vc', input: 'x' }, '/v1/embeddings');
  assert.equal(c.status, 400);
});

test('metadata server: GCE_METADATA_HOST, Metadata-Flavor: Google, its token used', async () => {
  v.reset();
  assert.ok(md.metadataRequests.length >= 1);
  const r = await oa.chat.completions.create({ model: 'vmeta', messages: [{ role: 'user', content: 'from gke' }] });
  assert.equal(r.choices[0].message.content, 'echo: from gke');
  assert.ok(md.valid(bearerOf(v.requests[0])), 'the metadata server token');
  assert.equal(md.tokenRequests.length, 0, 'no JWT exchange on the metadata path');
});

test('tokens are refreshed before they expire (by the token-request count, no waiting on the clock)', async () => {
  // fast's tokens last 2 s: the source fetches again at 80% of the lifetime
  await fast.waitForTokens(3);
  const t = fast.tokenRequests.map((x) => x.time);
  for (let i = 1; i < t.length; i++) assert.ok(t[i] - t[i - 1] < 2000, `refresh ${i} came ${t[i] - t[i - 1]} ms after the previous token (lifetime 2000 ms)`);
  v.reset();
  const r = await oa.chat.completions.create({ model: 'vfast', messages: [{ role: 'user', content: 'fresh token' }] });
  assert.equal(r.choices[0].message.content, 'echo: fresh token');
  assert.ok(fast.valid(bearerOf(v.requests[0])), 'an unexpired token');
});

test('a key the token endpoint refuses: a 503 that names the endpoint and its answer, nothing sent to Vertex', async () => {
  v.reset();
  let r, j;
  for (let i = 0; i < 200; i++) { // the first fetch may still be on its way
    r = await post({ model: 'vwrong', messages: [{ role: 'user', content: 'x' }] });
    j = await r.json();
    if (/Invalid JWT Signature/.test(j.error?.message || '')) break;
    await new Promise((res) => setImmediate(res));
  }
  assert.equal(r.status, 503);
  assert.match(j.error.message, /Invalid JWT Signature/);
  assert.ok(sa.rejected.includes('Invalid JWT Signature.'));
  assert.equal(v.requests.length, 0);
});

test('agentd config import-litellm carries vertex_ai models over (project, location, a key file), and says what not', () => {
  const f = join(dir, 'litellm.yaml');
  writeFileSync(f, `model_list:
  - model_name: gem
    litellm_params:
      model: vertex_ai/gemini-2.5-flash
      vertex_project: my-proj
      vertex_location: us-central1
      vertex_credentials: /secrets/key.json
  - model_name: claude
    litellm_params:
      model: vertex_ai/claude-sonnet-4-5@20250929
      vertex_project: my-proj
      vertex_credentials: os.environ/VERTEX_CREDS
`);
  const r = spawnSync(BIN, ['config', 'import-litellm', f], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /- provider: vertex-ai\n {8}model: "gemini-2.5-flash"\n {8}project: "my-proj"\n {8}location: "us-central1"\n {8}credentials_file: "\/secrets\/key.json"\n/);
  assert.match(r.stdout, /model: "claude-sonnet-4-5@20250929"\n {8}project: "my-proj"\n/);
  assert.match(r.stderr, /model_list\[1\]: vertex_credentials inline or from the environment/);
  writeFileSync(join(dir, 'imported.yaml'), r.stdout);
  const c = spawnSync(BIN, ['config', 'check', join(dir, 'imported.yaml')], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr + c.stdout);
});
