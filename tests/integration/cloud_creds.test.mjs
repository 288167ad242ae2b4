// Cloud credentials (issue 13 item 4; src/gateway/cloud_creds.c, cloud_aws.c, cloud_azure.c) against fakes of the
// token endpoints (tests/fakes/cloud.mjs: STS, the container credentials endpoint, Entra ID, Azure IMDS):
// - Bedrock through AWS web identity (IRSA) and container credentials (EKS Pod Identity): the fake Bedrock checks
//   the SigV4 signature with the issued key and the x-amz-security-token;
// - Azure OpenAI through workload identity and managed identity (IMDS): the fake checks the bearer token;
// - short-lived credentials are refreshed before they expire (the fakes count token requests; requests keep
//   succeeding and move to the new credentials), and the projected token file is read again at each refresh;
// - a token endpoint error reaches the caller as a 503 in its own wire format naming the cause, and the source
//   recovers once the endpoint does.
// No sleeps as synchronisation: every wait polls an observable (fake counters, responses) against a deadline.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgentd } from '../lib/agentd.mjs';
import { startFake } from '../fakes/fake.mjs';
import { startCloudFake } from '../fakes/cloud.mjs';

const CLAUDE = 'anthropic.claude-3-5-haiku-20241022-v1:0';
const NEVER = { accessKeyId: 'AKIANOBODYHASTHIS000', secretAccessKey: 'none' }; // a non-empty list: auth checked

async function until(what, fn, timeoutMs = 15000, everyMs = 50) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function chat(d, model, content = 'hello') {
  return d.fetch('/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-client' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }] }),
  });
}

// The access key id a SigV4 Authorization header names.
function keyIdOf(req) {
  const m = /Credential=([^/]+)\//.exec(req.headers.authorization || '');
  return m && m[1];
}

function bearerOf(req) {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization || '');
  return m && m[1];
}

function setup(dir, cloud, extraEnv = {}) {
  const wiFile = join(dir, 'aws-token');
  const ctFile = join(dir, 'eks-pod-identity-token');
  const fedFile = join(dir, 'azure-token');
  writeFileSync(wiFile, `${cloud.expect.webIdentityToken}\n`);
  writeFileSync(ctFile, cloud.expect.containerToken);
  writeFileSync(fedFile, cloud.expect.federatedToken);
  return {
    files: { wiFile, ctFile, fedFile },
    env: {
      AWS_WEB_IDENTITY_TOKEN_FILE: wiFile,
      AWS_ROLE_ARN: cloud.expect.roleArn,
      AWS_ROLE_SESSION_NAME: 'agentd-test',
      AWS_ENDPOINT_URL_STS: cloud.url,
      AWS_CONTAINER_CREDENTIALS_FULL_URI: `${cloud.url}/creds`,
      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: ctFile,
      AZURE_FEDERATED_TOKEN_FILE: fedFile,
      AZURE_CLIENT_ID: cloud.expect.clientId,
      AZURE_TENANT_ID: cloud.expect.tenant,
      AZURE_AUTHORITY_HOST: `${cloud.url}/`,
      AZURE_POD_IDENTITY_AUTHORITY_HOST: cloud.url,
      ...extraEnv,
    },
  };
}

function models(br, az) {
  return `
gateway:
  breaker: { enabled: false }
models:
  - name: br-wi
    provider: bedrock
    model: ${CLAUDE}
    base_url: ${br.url}
    region: us-east-1
    retries: { max_attempts: 1 }
    # auth: auto finds the web identity first (the SDKs' chain), no need to say it
  - name: br-container
    provider: bedrock
    model: ${CLAUDE}
    base_url: ${br.url}
    region: us-east-1
    auth: aws_container
    retries: { max_attempts: 1 }
  - name: az-wi
    provider: azure-openai
    model: gpt4o-prod
    base_url: ${az.url}
    auth: azure_workload_identity
    retries: { max_attempts: 1 }
  - name: az-mi
    provider: azure-openai
    model: gpt4o-prod
    base_url: ${az.url}
    auth: azure_managed_identity
    retries: { max_attempts: 1 }
`;
}

describe('cloud credentials, short-lived, refreshed', () => {
  let dir, cloud, br, az, d;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agentd-cloud-'));
    cloud = await startCloudFake({ lifetimeS: 3 }); // refreshed at ~80% of 2-3 s
    br = await startFake({ provider: 'bedrock', keys: { bedrock: [NEVER] } });
    az = await startFake({ provider: 'azure', keys: { azure: ['not-a-token-anyone-has'] } });
    // each issued credential becomes acceptable to the fake upstreams (as IAM / Entra would make it)
    cloud.onIssue = (kind, cred) => {
      if (kind === 'sts' || kind === 'container') br.keys.bedrock.push({ ...cred });
      else az.keys.azure.push(cred);
    };
    const s = setup(dir, cloud);
    d = await startAgentd({ env: s.env, config: models(br, az) });
    d.files = s.files;
  });
  after(async () => {
    const r = await d.stop();
    await Promise.all([cloud.close(), br.close(), az.close()]);
    rmSync(dir, { recursive: true, force: true });
    assert.equal(r.code, 0, `agentd exit ${JSON.stringify(r)}\n${d.rawStderr.slice(-4000)}`);
  });

  // A model's request succeeds with the newest credential of `kind`; returns what the upstream saw.
  async function served(model, upstream, kind) {
    const res = await chat(d, model);
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    const req = upstream.requests.at(-1);
    return { req, used: kind === 'sts' || kind === 'container' ? keyIdOf(req) : bearerOf(req) };
  }

  const cases = [
    { model: 'br-wi', kind: 'sts', up: () => br },
    { model: 'br-container', kind: 'container', up: () => br },
    { model: 'az-wi', kind: 'entra', up: () => az },
    { model: 'az-mi', kind: 'imds', up: () => az },
  ];

  for (const c of cases) {
    test(`${c.model}: ${c.kind} credentials reach the upstream, and are refreshed before they expire`, async () => {
      await cloud.waitFor(c.kind, 1);
      const issuedId = (x) => (typeof x === 'string' ? x : x.accessKeyId);
      const first = await until('a first successful request', async () => {
        const res = await chat(d, c.model);
        await res.arrayBuffer();
        return res.status === 200;
      });
      assert.ok(first);
      const { req, used } = await served(c.model, c.up(), c.kind);
      const issued = cloud.issued[c.kind].map(issuedId);
      assert.ok(issued.includes(used), `${used} is one of the issued ${c.kind} credentials`);
      if (c.kind === 'sts' || c.kind === 'container') {
        const cred = cloud.issued[c.kind].find((x) => x.accessKeyId === used);
        assert.equal(req.headers['x-amz-security-token'], cred.sessionToken);
      } else {
        assert.equal(req.headers['api-key'], undefined, 'no api-key header beside the bearer');
      }
      // the source keeps refreshing: two more token requests within two lifetimes, and a request afterwards uses a
      // credential issued after the one above, without a single failure on the way
      const n = cloud.counts[c.kind];
      const t0 = Date.now();
      await cloud.waitFor(c.kind, n + 2, 10000);
      const elapsed = Date.now() - t0;
      const later = await until('a request with a newer credential', async () => {
        const r = await served(c.model, c.up(), c.kind);
        const now = cloud.issued[c.kind].map(issuedId);
        return now.indexOf(r.used) > now.indexOf(used) ? r : null;
      }, 10000);
      assert.notEqual(later.used, used);
      // and not in a hot loop: refreshes come at most about once per second (CC_MIN_REFRESH_MS)
      assert.ok(elapsed >= 1000, `two refreshes took ${elapsed} ms`);
    });
  }

  test('the Entra ID request is a client-credentials grant with the federated token as jwt-bearer assertion', () => {
    const r = cloud.requests.find((x) => x.path === `/${cloud.expect.tenant}/oauth2/v2.0/token`);
    const f = new URLSearchParams(r.body);
    assert.equal(f.get('grant_type'), 'client_credentials');
    assert.equal(f.get('scope'), 'https://cognitiveservices.azure.com/.default');
    assert.equal(f.get('client_assertion'), cloud.expect.federatedToken);
    assert.equal(r.headers['content-type'], 'application/x-www-form-urlencoded');
    const m = cloud.requests.find((x) => x.path === '/metadata/identity/oauth2/token');
    assert.equal(m.headers.metadata, 'true');
    assert.equal(new URLSearchParams(m.query).get('client_id'), cloud.expect.clientId);
    const c = cloud.requests.find((x) => x.path === '/creds');
    assert.equal(c.headers.authorization, cloud.expect.containerToken);
    const s = cloud.requests.find((x) => x.path === '/' && x.method === 'POST');
    assert.equal(new URLSearchParams(s.body).get('RoleSessionName'), 'agentd-test');
  });

  test('the projected token file is read again at each refresh (the kubelet rotates it)', async () => {
    cloud.expect.webIdentityToken = 'wi-token-2';
    writeFileSync(d.files.wiFile, 'wi-token-2\n');
    await until('an STS request with the rotated token that succeeded', () => {
      const sts = cloud.requests.filter((x) => x.path === '/' && x.method === 'POST');
      return sts.some((x) => new URLSearchParams(x.body).get('WebIdentityToken') === 'wi-token-2');
    }, 10000);
    const { used } = await served('br-wi', br, 'sts');
    assert.ok(used);
  });
});

describe('cloud credentials: token endpoint errors, then recovery', () => {
  let dir, cloud, br, az, d, files;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agentd-cloud-'));
    cloud = await startCloudFake({ lifetimeS: 3600 });
    br = await startFake({ provider: 'bedrock', keys: { bedrock: [NEVER] } });
    az = await startFake({ provider: 'azure', keys: { azure: ['not-a-token-anyone-has'] } });
    cloud.onIssue = (kind, cred) => {
      if (kind === 'sts' || kind === 'container') br.keys.bedrock.push({ ...cred });
      else az.keys.azure.push(cred);
    };
    const s = setup(dir, cloud);
    files = s.files;
    // every endpoint refuses at first: a stale projected token, a stale federated token, failing agents
    writeFileSync(files.wiFile, 'stale-token');
    writeFileSync(files.fedFile, 'stale-federated-token');
    cloud.fail.container = 1e9;
    cloud.fail.imds = 1e9;
    d = await startAgentd({ env: s.env, config: models(br, az) });
  });
  after(async () => {
    const r = await d.stop();
    await Promise.all([cloud.close(), br.close(), az.close()]);
    rmSync(dir, { recursive: true, force: true });
    assert.equal(r.code, 0, `agentd exit ${JSON.stringify(r)}\n${d.rawStderr.slice(-4000)}`);
  });

  const cases = [
    { model: 'br-wi', kind: 'sts', says: /aws_web_identity credentials are not available: STS AssumeRoleWithWebIdentity failed: InvalidIdentityToken: Couldn't retrieve verification key/,
      fix: () => writeFileSync(files.wiFile, cloud.expect.webIdentityToken) },
    { model: 'br-container', kind: 'container', says: /aws_container credentials are not available: container credentials endpoint .* answered HTTP 500: .*InternalError: the credentials agent could not reach EKS Auth/,
      fix: () => { cloud.fail.container = 0; } },
    { model: 'az-wi', kind: 'entra', says: /azure_workload_identity credentials are not available: Entra ID token endpoint .* answered HTTP 401: invalid_client: AADSTS700211/,
      fix: () => writeFileSync(files.fedFile, cloud.expect.federatedToken) },
    { model: 'az-mi', kind: 'imds', says: /azure_managed_identity credentials are not available: IMDS token endpoint .* answered HTTP 400: invalid_request: Identity not found/,
      fix: () => { cloud.fail.imds = 0; } },
  ];

  test('/ready says which deployment has no valid token and why, and stays ready', async () => {
    const ready = await until('every source has failed once', async () => {
      const r = await d.opsFetch('/ready');
      const j = await r.json();
      const vals = j.checks?.credentials || [];
      return vals.length === 4 && vals.every((v) => v.ok === false && !/first fetch has not completed/.test(v.error))
        ? { r, j } : null;
    });
    assert.equal(ready.r.status, 200); // other deployments (or fallbacks) may serve: reported, not fatal
    assert.equal(ready.j.status, 'ready');
    const byKind = Object.fromEntries(ready.j.checks.credentials.map((v) => [v.source, v.error]));
    assert.match(byKind.aws_web_identity, /STS AssumeRoleWithWebIdentity failed: InvalidIdentityToken/);
    assert.match(byKind.aws_container, /answered HTTP 500/);
    assert.match(byKind.azure_workload_identity, /AADSTS700211/);
    assert.match(byKind.azure_managed_identity, /Identity not found/);
    assert.doesNotMatch(JSON.stringify(ready.j), /stale-token|stale-federated-token/);
  });

  for (const c of cases) {
    test(`${c.model}: a ${c.kind} failure is a clear 503 in the caller's format, and the source recovers`, async () => {
      await cloud.waitFor(c.kind, 1);
      const upstreamBefore = (c.kind === 'sts' || c.kind === 'container' ? br : az).received();
      // OpenAI wire format
      const res = await until('the first fetch has failed', async () => {
        const r = await chat(d, c.model);
        const body = await r.json();
        return /credentials are not available: /.test(body.error?.message || '') && !/ yet:/.test(body.error.message) ? { r, body } : null;
      });
      assert.equal(res.r.status, 503);
      assert.match(res.body.error.message, c.says);
      assert.equal(res.body.error.code, 'upstream_credentials_unavailable');
      assert.equal(res.body.error.type, 'server_error');
      // Anthropic wire format
      const ar = await d.fetch('/v1/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': 'sk-client', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: c.model, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      });
      const ab = await ar.json();
      assert.equal(ar.status, 503);
      assert.equal(ab.type, 'error');
      assert.equal(ab.error.type, 'overloaded_error');
      assert.match(ab.error.message, c.says);
      // nothing was sent upstream unsigned / unauthenticated
      assert.equal((c.kind === 'sts' || c.kind === 'container' ? br : az).received(), upstreamBefore);
      // no secret in the message
      assert.doesNotMatch(res.body.error.message, /stale-token|stale-federated-token|container-auth-1/);
      // the endpoint recovers: requests bring the retry forward (at most one per 2 s), then succeed
      c.fix();
      await until('a successful request after recovery', async () => {
        const r = await chat(d, c.model);
        await r.arrayBuffer();
        return r.status === 200;
      }, 20000, 200);
      assert.ok(cloud.issued[c.kind].length >= 1);
    });
  }

  test('/ready: every source recovered reports ok', async () => {
    const r = await d.opsFetch('/ready');
    const j = await r.json();
    assert.equal(r.status, 200);
    const vals = j.checks.credentials;
    assert.equal(vals.length, 4);
    for (const v of vals) assert.deepEqual(Object.keys(v).sort(), ['deployment', 'ok', 'source'], JSON.stringify(v));
    assert.ok(vals.every((v) => v.ok === true));
  });

  test('a fetched token quoted back in an upstream error is scrubbed, as a static key is', async () => {
    const token = cloud.issued.entra.at(-1);
    assert.ok(token && token.length > 8);
    az.script([{ status: 400, body: { error: { code: 'BadRequest', message: `the token ${token} is not allowed here` } } }]);
    const r = await chat(d, 'az-wi');
    const body = await r.json();
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(body.error.message, /the token .* is not allowed here/);
    assert.ok(!body.error.message.includes(token), body.error.message);
    assert.ok(!JSON.stringify(d.logs).includes(token), 'the token is in the log');
  });
});

test('config check: auth is validated against the provider, and fetches nothing', async () => {
  const { spawnSync } = await import('node:child_process');
  const { BIN } = await import('../lib/agentd.mjs');
  const dir = mkdtempSync(join(tmpdir(), 'agentd-cloud-'));
  try {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `models:\n  - name: x\n    provider: bedrock\n    model: m\n    auth: azure_managed_identity\n` +
      `  - name: y\n    provider: azure-openai\n    model: d\n    base_url: https://x.openai.azure.com\n    auth: nonsense\n` +
      `  - name: z\n    provider: azure-openai\n    model: d\n    base_url: https://x.openai.azure.com\n` +
      `    auth: azure_workload_identity\n    api_key_env: MY_KEY\n`);
    const r = spawnSync(BIN, ['config', 'check', bad], { encoding: 'utf8', env: { PATH: process.env.PATH } });
    assert.notEqual(r.status, 0);
    const out = r.stdout + r.stderr;
    assert.match(out, /auth: azure_managed_identity does not apply to provider bedrock/);
    assert.match(out, /auth.*nonsense/);
    assert.match(out, /give either a key \(api_key \/ api_key_env\) or auth: azure_workload_identity/);
    const good = join(dir, 'good.yaml');
    writeFileSync(good, `models:\n  - name: x\n    provider: bedrock\n    model: m\n    auth: aws_web_identity\n` +
      `  - name: y\n    provider: azure-openai\n    model: d\n    base_url: https://x.openai.azure.com\n    auth: azure_managed_identity\n`);
    const cloud = await startCloudFake();
    try {
      const s = setup(dir, cloud);
      const g = spawnSync(BIN, ['config', 'check', good], { encoding: 'utf8', env: { PATH: process.env.PATH, ...s.env } });
      assert.equal(g.status, 0, g.stdout + g.stderr);
      assert.deepEqual(cloud.counts, { sts: 0, container: 0, entra: 0, imds: 0 });
    } finally {
      await cloud.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
