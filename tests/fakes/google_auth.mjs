// Fake Google credentials endpoints, for agentd's Google token sources (src/gateway/cloud_google.c):
//   - the OAuth 2.0 token endpoint of a service account (the key file's token_uri): POST form
//     grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>; the JWT (RS256) is verified with the
//     service account's public key: header alg/typ/kid, claims iss = client_email, scope, aud = token_uri, iat/exp;
//   - the GCE/GKE metadata server: GET /computeMetadata/v1/instance/service-accounts/default/token with
//     Metadata-Flavor: Google (the host agentd reads from GCE_METADATA_HOST).
// Both answer {"access_token","expires_in","token_type":"Bearer"} with a fresh token each time; `valid(token)` says
// whether a token was issued here and has not expired (hand it to the fake Vertex as keys.vertex).
//
//   const g = await startGoogleAuth({ expiresIn: 3599 });
//   g.serviceAccountJson({ tokenUri })   // a key file (a throwaway RSA key made with node:crypto)
//   g.tokenUri, g.metadataHost, g.tokenRequests (verified JWT requests), g.metadataRequests, g.issued
//   await g.waitForTokens(n)             // resolves once n tokens have been issued
//   g.script([{ status: 400, error: 'invalid_grant' }])  // the next token requests' answers
import http from 'node:http';
import crypto from 'node:crypto';

export const SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

export async function startGoogleAuth(opts = {}) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyId = crypto.randomBytes(20).toString('hex');
  const clientEmail = opts.clientEmail || 'agentd-test@fake-project.iam.gserviceaccount.com';
  const state = {
    expiresIn: opts.expiresIn ?? 3599,
    issued: new Map(), // token -> expiry (ms)
    tokenRequests: [],
    metadataRequests: [],
    rejected: [],
    queue: [],
    waiters: [],
    count: 0,
  };
  const issue = () => {
    const token = `ya29.fake-${++state.count}-${crypto.randomBytes(12).toString('base64url')}`;
    state.issued.set(token, Date.now() + state.expiresIn * 1000);
    state.waiters = state.waiters.filter((w) => !(state.count >= w.n && (w.resolve(), true)));
    return { access_token: token, expires_in: state.expiresIn, token_type: 'Bearer' };
  };
  const send = (res, status, obj, ct = 'application/json; charset=utf-8') => {
    const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
    res.writeHead(status, { 'content-type': ct, 'content-length': Buffer.byteLength(body), 'metadata-flavor': 'Google' });
    res.end(body);
  };
  let tokenUri;
  const verifyJwt = (jwt) => {
    const parts = jwt.split('.');
    if (parts.length !== 3) return 'not a JWT';
    let header, claims;
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url'));
      claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
    } catch { return 'undecodable JWT'; }
    if (header.alg !== 'RS256' || (header.typ !== undefined && header.typ !== 'JWT')) return `bad header ${JSON.stringify(header)}`;
    if (header.kid !== undefined && header.kid !== keyId) return 'unknown kid';
    const ok = crypto.verify('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), publicKey, Buffer.from(parts[2], 'base64url'));
    if (!ok) return 'Invalid JWT Signature.';
    const now = Math.floor(Date.now() / 1000);
    if (claims.iss !== clientEmail) return `iss ${claims.iss}`;
    if (claims.scope !== SCOPE) return `scope ${claims.scope}`;
    if (claims.aud !== tokenUri) return `aud ${claims.aud}`;
    if (!Number.isInteger(claims.iat) || !Number.isInteger(claims.exp)) return 'iat/exp not integers';
    if (Math.abs(claims.iat - now) > 300) return 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.';
    if (claims.exp - claims.iat > 3600 || claims.exp <= now) return 'Invalid JWT: exp';
    return { header, claims };
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url, 'http://x');
      if (req.method === 'POST' && url.pathname === '/token') {
        const scripted = state.queue.shift();
        if (scripted) return send(res, scripted.status || 400, { error: scripted.error || 'invalid_grant', error_description: scripted.description || 'scripted failure' });
        if (!(req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) return send(res, 400, { error: 'invalid_request', error_description: 'Bad Request' });
        const form = new URLSearchParams(body);
        if (form.get('grant_type') !== JWT_BEARER) return send(res, 400, { error: 'unsupported_grant_type', error_description: `Invalid grant_type: ${form.get('grant_type')}` });
        const v = verifyJwt(form.get('assertion') || '');
        if (typeof v === 'string') {
          state.rejected.push(v);
          return send(res, 400, { error: 'invalid_grant', error_description: v });
        }
        state.tokenRequests.push({ time: Date.now(), ...v });
        return send(res, 200, issue());
      }
      if (req.method === 'GET' && url.pathname === '/computeMetadata/v1/instance/service-accounts/default/token') {
        if (req.headers['metadata-flavor'] !== 'Google') {
          return send(res, 403, 'Missing required header "Metadata-Flavor": "Google"\n', 'text/html; charset=UTF-8');
        }
        state.metadataRequests.push({ time: Date.now(), query: url.search });
        const scripted = state.queue.shift();
        if (scripted) return send(res, scripted.status || 500, scripted.error || 'scripted failure', 'text/plain');
        return send(res, 200, issue());
      }
      send(res, 404, 'Not Found', 'text/plain');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  tokenUri = `http://127.0.0.1:${port}/token`;
  return {
    tokenUri,
    metadataHost: `127.0.0.1:${port}`,
    clientEmail,
    publicKey,
    get tokenRequests() { return state.tokenRequests; },
    get metadataRequests() { return state.metadataRequests; },
    get rejected() { return state.rejected; },
    get issuedCount() { return state.count; },
    setExpiresIn(s) { state.expiresIn = s; },
    valid(token) { const exp = state.issued.get(token); return exp !== undefined && exp > Date.now(); },
    script(list) { state.queue.push(...list); },
    waitForTokens(n, timeoutMs = 15000) {
      if (state.count >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = { n, resolve: () => { clearTimeout(t); resolve(); } };
        const t = setTimeout(() => { state.waiters = state.waiters.filter((x) => x !== w); reject(new Error(`timed out waiting for ${n} tokens (issued ${state.count})`)); }, timeoutMs);
        state.waiters.push(w);
      });
    },
    // A service-account key file as the IAM console writes it.
    serviceAccountJson(over = {}) {
      return JSON.stringify({
        type: 'service_account',
        project_id: 'fake-project',
        private_key_id: keyId,
        private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }),
        client_email: clientEmail,
        client_id: '100000000000000000001',
        auth_uri: 'https://accounts.google.com/o/oauth2/auth',
        token_uri: tokenUri,
        auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
        client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(clientEmail)}`,
        universe_domain: 'googleapis.com',
        ...over,
      }, null, 2) + '\n';
    },
    close: () => new Promise((r) => { server.close(() => r()); server.closeAllConnections(); }),
  };
}

export { b64url };
