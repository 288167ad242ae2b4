// Fakes of the cloud token endpoints agentd's credential sources call (src/gateway/cloud_aws.c, cloud_azure.c),
// one HTTP server speaking each real wire format:
//   AWS STS         POST /            Action=AssumeRoleWithWebIdentity (query API, form body) -> XML
//                                     <AssumeRoleWithWebIdentityResponse>...<Credentials>, or <ErrorResponse>
//   AWS container   GET  /creds       Authorization: <token> -> {AccessKeyId, SecretAccessKey, Token, Expiration}
//                                     (EKS Pod Identity agent / ECS), errors {Code, Message}
//   Entra ID        POST /{tenant}/oauth2/v2.0/token  client_credentials + jwt-bearer client_assertion ->
//                                     {token_type, expires_in, ext_expires_in, access_token} or {error, ...}
//   Azure IMDS      GET  /metadata/identity/oauth2/token?api-version=2018-02-01&resource=... (Metadata: true)
//                                     -> {access_token, expires_in, expires_on (strings), resource, token_type}
//
//   const c = await startCloudFake({ lifetimeS: 3600 });
//   c.url; c.counts.sts / .container / .entra / .imds  (token requests answered, errors included)
//   c.expect.webIdentityToken = 'wi-1'   the projected token STS accepts (anything else: InvalidIdentityToken)
//   c.expect.containerToken, c.expect.federatedToken, c.expect.tenant, c.expect.clientId, c.expect.roleArn
//   c.fail.sts = n                       the next n requests of that kind fail (the service's own error)
//   c.issued.sts = [{accessKeyId, secretAccessKey, sessionToken, expiration}], c.issued.entra = ['token', ...]
//   c.onIssue = (kind, cred) => {}       e.g. to make a fake Bedrock / Azure accept the credential
//   await c.waitFor('sts', n, timeoutMs) resolves once n requests of that kind were answered
//   await c.close()
import http from 'node:http';
import { randomBytes } from 'node:crypto';

const STS_NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const COG = 'https://cognitiveservices.azure.com';

function xmlEscape(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

function stsError(res, status, code, message) {
  const body = `<ErrorResponse xmlns="${STS_NS}">\n  <Error>\n    <Type>Sender</Type>\n    <Code>${code}</Code>\n` +
    `    <Message>${xmlEscape(message)}</Message>\n  </Error>\n  <RequestId>${randomBytes(16).toString('hex')}</RequestId>\n</ErrorResponse>\n`;
  res.writeHead(status, { 'content-type': 'text/xml', 'x-amzn-requestid': randomBytes(16).toString('hex') });
  res.end(body);
}

function entraError(res, status, error, description, codes) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify({
    error, error_description: `${description}\r\nTrace ID: ${randomBytes(8).toString('hex')}\r\nTimestamp: ${new Date().toISOString()}`,
    error_codes: codes, timestamp: new Date().toISOString().replace('T', ' ').slice(0, 19) + 'Z',
    trace_id: randomBytes(8).toString('hex'), correlation_id: randomBytes(8).toString('hex'),
  }));
}

function json(res, status, obj) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(obj));
}

export async function startCloudFake(opts = {}) {
  const c = {
    lifetimeS: opts.lifetimeS || 3600,
    counts: { sts: 0, container: 0, entra: 0, imds: 0 },
    fail: { sts: 0, container: 0, entra: 0, imds: 0 },
    issued: { sts: [], container: [], entra: [], imds: [] },
    requests: [],
    expect: {
      webIdentityToken: 'wi-token-1', roleArn: 'arn:aws:iam::123456789012:role/agentd',
      containerToken: 'container-auth-1', federatedToken: 'fed-token-1', tenant: 'tenant-0000',
      clientId: '00000000-0000-0000-0000-00000000c1d0',
    },
    onIssue: null,
    _waiters: [],
  };
  let serial = 0;
  const expiry = () => new Date(Date.now() + c.lifetimeS * 1000);
  const answered = (kind) => {
    c.counts[kind]++;
    c._waiters = c._waiters.filter((w) => !(c.counts[w.kind] >= w.n && (w.resolve(), true)));
  };
  const issueAws = (kind) => {
    const n = ++serial;
    const cred = {
      accessKeyId: `ASIAFAKE${kind === 'sts' ? 'STS' : 'CON'}${String(n).padStart(6, '0')}`,
      secretAccessKey: `fakeSecret/${kind}+${n}${randomBytes(6).toString('hex')}`,
      sessionToken: `FwoFAKE${kind}//${n}+${randomBytes(24).toString('base64')}`,
      expiration: expiry(),
    };
    c.issued[kind].push(cred);
    if (c.onIssue) c.onIssue(kind, cred);
    return cred;
  };
  const issueToken = (kind) => {
    const n = ++serial;
    const tok = `eyJ0eXAiOiJKV1QifQ.${kind}-${n}.${randomBytes(12).toString('base64url')}`;
    c.issued[kind].push(tok);
    if (c.onIssue) c.onIssue(kind, tok);
    return tok;
  };

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      const url = new URL(req.url, 'http://x');
      c.requests.push({ method: req.method, path: url.pathname, query: url.search, headers: req.headers, body });
      try {
        route(req, res, url, body);
      } catch (e) {
        res.writeHead(500); res.end(String(e));
      }
    });
  });

  function route(req, res, url, body) {
    // ---- STS (query API over POST) ----
    if (req.method === 'POST' && url.pathname === '/') {
      const f = new URLSearchParams(body);
      if (!/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] || '')) {
        answered('sts');
        return stsError(res, 400, 'InvalidParameterValue', 'Content-Type must be application/x-www-form-urlencoded');
      }
      if (f.get('Action') !== 'AssumeRoleWithWebIdentity' || f.get('Version') !== '2011-06-15') {
        answered('sts');
        return stsError(res, 400, 'InvalidAction', `Could not find operation ${f.get('Action')} for version ${f.get('Version')}`);
      }
      for (const p of ['RoleArn', 'RoleSessionName', 'WebIdentityToken']) {
        if (!f.get(p)) { answered('sts'); return stsError(res, 400, 'MissingParameter', `The request must contain the parameter ${p}`); }
      }
      if (!/^[\w+=,.@-]{2,64}$/.test(f.get('RoleSessionName'))) {
        answered('sts');
        return stsError(res, 400, 'ValidationError', "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint");
      }
      if (c.fail.sts > 0) {
        c.fail.sts--; answered('sts');
        return stsError(res, 403, 'AccessDenied', 'Not authorized to perform sts:AssumeRoleWithWebIdentity');
      }
      if (f.get('WebIdentityToken') !== c.expect.webIdentityToken) {
        answered('sts');
        return stsError(res, 400, 'InvalidIdentityToken', "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements");
      }
      if (f.get('RoleArn') !== c.expect.roleArn) {
        answered('sts');
        return stsError(res, 403, 'AccessDenied', 'Not authorized to perform sts:AssumeRoleWithWebIdentity');
      }
      const cr = issueAws('sts');
      const xml = `<AssumeRoleWithWebIdentityResponse xmlns="${STS_NS}">\n  <AssumeRoleWithWebIdentityResult>\n` +
        `    <SubjectFromWebIdentityToken>system:serviceaccount:agentd:agentd</SubjectFromWebIdentityToken>\n` +
        `    <Audience>sts.amazonaws.com</Audience>\n    <AssumedRoleUser>\n` +
        `      <Arn>arn:aws:sts::123456789012:assumed-role/agentd/${xmlEscape(f.get('RoleSessionName'))}</Arn>\n` +
        `      <AssumedRoleId>AROAFAKE:${xmlEscape(f.get('RoleSessionName'))}</AssumedRoleId>\n    </AssumedRoleUser>\n` +
        `    <Credentials>\n      <AccessKeyId>${cr.accessKeyId}</AccessKeyId>\n` +
        `      <SecretAccessKey>${xmlEscape(cr.secretAccessKey)}</SecretAccessKey>\n` +
        `      <SessionToken>${xmlEscape(cr.sessionToken)}</SessionToken>\n` +
        `      <Expiration>${cr.expiration.toISOString().replace(/\.\d+Z$/, 'Z')}</Expiration>\n    </Credentials>\n` +
        `    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/FAKE</Provider>\n` +
        `  </AssumeRoleWithWebIdentityResult>\n  <ResponseMetadata>\n    <RequestId>${randomBytes(16).toString('hex')}</RequestId>\n` +
        `  </ResponseMetadata>\n</AssumeRoleWithWebIdentityResponse>\n`;
      answered('sts');
      res.writeHead(200, { 'content-type': 'text/xml' });
      return res.end(xml);
    }
    // ---- container credentials (EKS Pod Identity agent / ECS) ----
    if (req.method === 'GET' && url.pathname === '/creds') {
      answered('container');
      if (c.fail.container > 0) {
        c.fail.container--;
        return json(res, 500, { Code: 'InternalError', Message: 'the credentials agent could not reach EKS Auth' });
      }
      if (req.headers.authorization !== c.expect.containerToken) {
        return json(res, 401, { Code: 'AccessDeniedException', Message: 'Service account token cannot be empty or invalid' });
      }
      const cr = issueAws('container');
      return json(res, 200, {
        AccessKeyId: cr.accessKeyId, SecretAccessKey: cr.secretAccessKey, Token: cr.sessionToken,
        AccountId: '123456789012', Expiration: cr.expiration.toISOString(),
      });
    }
    // ---- Entra ID token endpoint ----
    const m = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
    if (req.method === 'POST' && m) {
      answered('entra');
      const f = new URLSearchParams(body);
      if (m[1] !== c.expect.tenant) {
        return entraError(res, 400, 'invalid_request', `AADSTS90002: Tenant '${m[1]}' not found.`, [90002]);
      }
      if (f.get('grant_type') !== 'client_credentials') {
        return entraError(res, 400, 'unsupported_grant_type', 'AADSTS70003: The app requested an unsupported grant type.', [70003]);
      }
      if (f.get('scope') !== `${COG}/.default`) {
        return entraError(res, 400, 'invalid_scope', `AADSTS70011: The provided value for the input parameter 'scope' is not valid.`, [70011]);
      }
      if (f.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
        return entraError(res, 400, 'invalid_request', "AADSTS50027: Invalid client_assertion_type.", [50027]);
      }
      if (f.get('client_id') !== c.expect.clientId) {
        return entraError(res, 400, 'unauthorized_client', `AADSTS700016: Application with identifier '${f.get('client_id')}' was not found in the directory.`, [700016]);
      }
      if (c.fail.entra > 0) {
        c.fail.entra--;
        return entraError(res, 503, 'temporarily_unavailable', 'AADSTS90033: A transient error has occurred. Please try again.', [90033]);
      }
      if (f.get('client_assertion') !== c.expect.federatedToken) {
        return entraError(res, 401, 'invalid_client', 'AADSTS700211: No matching federated identity record found for presented assertion issuer.', [700211]);
      }
      const tok = issueToken('entra');
      return json(res, 200, { token_type: 'Bearer', expires_in: c.lifetimeS, ext_expires_in: c.lifetimeS, access_token: tok });
    }
    // ---- Azure IMDS ----
    if (req.method === 'GET' && url.pathname === '/metadata/identity/oauth2/token') {
      answered('imds');
      if (req.headers.metadata !== 'true') {
        return json(res, 400, { error: 'invalid_request', error_description: 'Required metadata header not specified' });
      }
      if (url.searchParams.get('api-version') !== '2018-02-01') {
        return json(res, 400, { error: 'invalid_request', error_description: 'Invalid or missing api-version' });
      }
      const resource = url.searchParams.get('resource');
      if (resource !== COG) {
        return json(res, 400, { error: 'invalid_resource', error_description: `AADSTS500011: The resource principal named ${resource} was not found in the tenant.` });
      }
      if (c.fail.imds > 0) {
        c.fail.imds--;
        return json(res, 400, { error: 'invalid_request', error_description: 'Identity not found' });
      }
      const tok = issueToken('imds');
      const now = Math.floor(Date.now() / 1000);
      return json(res, 200, {
        access_token: tok, client_id: url.searchParams.get('client_id') || 'system-assigned',
        expires_in: String(c.lifetimeS), expires_on: String(now + c.lifetimeS), ext_expires_in: String(c.lifetimeS),
        not_before: String(now), resource: COG, token_type: 'Bearer',
      });
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  }

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  c.port = server.address().port;
  c.url = `http://127.0.0.1:${c.port}`;
  c.waitFor = (kind, n, timeoutMs = 10000) => {
    if (c.counts[kind] >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { kind, n, resolve: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => {
        c._waiters = c._waiters.filter((x) => x !== w);
        reject(new Error(`timed out waiting for ${n} ${kind} token requests (have ${c.counts[kind]})`));
      }, timeoutMs);
      c._waiters.push(w);
    });
  };
  c.close = () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); });
  return c;
}
