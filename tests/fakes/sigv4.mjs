// AWS Signature Version 4 (header form) for the fake Bedrock runtime: verification as AWS does it, and a signer
// for tests that hand-craft requests.
//
// Canonical request (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html):
//   METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n \n SignedHeaders \n HexSHA256(payload)
// For every service except S3 the canonical URI is the normalised path URI-encoded *again*: the path as sent on the
// wire (already percent-encoded, e.g. `/model/a%3Ab/converse`) has each segment encoded once more (`a%253Ab`).
// Query parameters are decoded, re-encoded strictly (RFC 3986 unreserved set kept) and sorted by name then value.
// Header values are trimmed with inner runs of spaces collapsed; repeated headers are joined with ','.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export function escapeUri(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

function safeDecode(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

export function canonicalUri(rawPath, { doubleEncode = true } = {}) {
  if (!doubleEncode) return rawPath || '/';
  const segs = [];
  for (const seg of rawPath.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segs.pop();
    else segs.push(seg);
  }
  const norm = (rawPath.startsWith('/') ? '/' : '') + segs.join('/') + (segs.length && rawPath.endsWith('/') ? '/' : '');
  return escapeUri(norm).replace(/%2F/g, '/') || '/';
}

export function canonicalQuery(rawQuery) {
  if (!rawQuery) return '';
  const pairs = [];
  for (const part of rawQuery.split('&')) {
    if (!part) continue;
    const i = part.indexOf('=');
    const k = i < 0 ? part : part.slice(0, i);
    const v = i < 0 ? '' : part.slice(i + 1);
    const dk = safeDecode(k);
    if (dk === 'X-Amz-Signature') continue;
    pairs.push([escapeUri(dk), escapeUri(safeDecode(v))]);
  }
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

function headerMap(headerPairs) {
  const m = new Map();
  for (const [name, value] of headerPairs) {
    const k = name.toLowerCase();
    const v = String(value).replace(/[\r\n]/g, ' ').trim().replace(/[ \t]+/g, ' ');
    m.set(k, m.has(k) ? m.get(k) + ',' + v : v);
  }
  return m;
}

export function sha256Hex(data) {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key, data) {
  return createHmac('sha256', key).update(data).digest();
}

export function signingKey(secret, date, region, service) {
  return hmac(hmac(hmac(hmac('AWS4' + secret, date), region), service), 'aws4_request');
}

function parseAuthorization(v) {
  const m = /^AWS4-HMAC-SHA256\s+(.*)$/s.exec(v || '');
  if (!m) return null;
  const out = {};
  for (const kv of m[1].split(',')) {
    const i = kv.indexOf('=');
    if (i < 0) continue;
    out[kv.slice(0, i).trim()] = kv.slice(i + 1).trim();
  }
  return out;
}

function amzDateToMs(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return NaN;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

function fmtAmzDate(ms) {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

// Verifies a request. opts:
//   method, rawPath, rawQuery, headerPairs ([[name, value]] as received), body (Buffer),
//   credentials: [{ accessKeyId, secretAccessKey, sessionToken? }], service, region, now (ms), maxSkewMs
// Returns { ok: true, accessKeyId } or { ok: false, status: 403, type, message, canonicalRequest?, stringToSign? }.
export function verifySigV4(o) {
  const h = headerMap(o.headerPairs);
  const fail = (type, message, extra = {}) => ({ ok: false, status: 403, type, message, ...extra });
  const auth = h.get('authorization');
  if (!auth) return fail('MissingAuthenticationTokenException', 'Missing Authentication Token');
  const a = parseAuthorization(auth);
  if (!a) return fail('IncompleteSignatureException', `Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization=${auth.split(' ')[0]}`);
  const missing = ['Credential', 'Signature', 'SignedHeaders'].filter((k) => !a[k]);
  if (missing.length) return fail('IncompleteSignatureException', missing.map((k) => `Authorization header requires '${k}' parameter.`).join(' '));
  const cred = a.Credential.split('/');
  if (cred.length !== 5 || cred[4] !== 'aws4_request') {
    return fail('IncompleteSignatureException', `Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '${a.Credential}'`);
  }
  const [akid, scopeDate, scopeRegion, scopeService] = cred;
  const amzDate = h.get('x-amz-date');
  if (!amzDate && !h.get('date')) return fail('IncompleteSignatureException', "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
  const dateStr = amzDate || fmtAmzDate(Date.parse(h.get('date')));
  const reqMs = amzDateToMs(dateStr);
  if (Number.isNaN(reqMs)) return fail('IncompleteSignatureException', `Date must be in ISO-8601 'basic format'. Got '${dateStr}'.`);
  const keyRec = (o.credentials || []).find((c) => c.accessKeyId === akid);
  if (!keyRec) return fail('UnrecognizedClientException', 'The security token included in the request is invalid.');
  if (keyRec.sessionToken && h.get('x-amz-security-token') !== keyRec.sessionToken) {
    return fail('UnrecognizedClientException', 'The security token included in the request is invalid.');
  }
  if (scopeDate !== dateStr.slice(0, 8)) {
    return fail('InvalidSignatureException', `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${scopeDate}' != '${dateStr.slice(0, 8)}', from '${dateStr}'.`);
  }
  if (scopeService !== o.service) return fail('InvalidSignatureException', `Credential should be scoped to correct service: '${o.service}'. `);
  if (scopeRegion !== o.region) return fail('InvalidSignatureException', `Credential should be scoped to a valid region. `);
  const now = o.now ?? Date.now();
  const skew = o.maxSkewMs ?? 15 * 60 * 1000;
  if (skew > 0 && reqMs < now - skew) {
    return fail('InvalidSignatureException', `Signature expired: ${dateStr} is now earlier than ${fmtAmzDate(now - skew)} (${fmtAmzDate(now)} - 15 min.)`);
  }
  if (skew > 0 && reqMs > now + skew) {
    return fail('InvalidSignatureException', `Signature not yet current: ${dateStr} is still later than ${fmtAmzDate(now + skew)} (${fmtAmzDate(now)} + 15 min.)`);
  }
  const signed = a.SignedHeaders.split(';');
  if (!signed.includes('host')) return fail('InvalidSignatureException', "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  const bodyHash = sha256Hex(o.body || Buffer.alloc(0));
  const declared = h.get('x-amz-content-sha256');
  if (declared !== undefined && declared !== bodyHash) {
    return fail('InvalidSignatureException', `The provided 'x-amz-content-sha256' header does not match what was computed.`);
  }
  const canonicalRequest = [
    o.method,
    canonicalUri(o.rawPath),
    canonicalQuery(o.rawQuery),
    signed.map((n) => `${n}:${h.get(n) ?? ''}`).join('\n') + '\n',
    a.SignedHeaders,
    bodyHash,
  ].join('\n');
  const scope = `${scopeDate}/${scopeRegion}/${scopeService}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', dateStr, scope, sha256Hex(canonicalRequest)].join('\n');
  const expected = hmac(signingKey(keyRec.secretAccessKey, scopeDate, scopeRegion, scopeService), stringToSign).toString('hex');
  const got = Buffer.from(a.Signature, 'utf8');
  const exp = Buffer.from(expected, 'utf8');
  if (got.length !== exp.length || !timingSafeEqual(got, exp)) {
    return fail('InvalidSignatureException',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n'
      + `The Canonical String for this request should have been\n'${canonicalRequest}'\n\nThe String-to-Sign should have been\n'${stringToSign}'\n`,
      { canonicalRequest, stringToSign });
  }
  return { ok: true, accessKeyId: akid };
}

// Signs a request the way an AWS SDK does (headers form). Returns the headers to add:
// { host?, 'x-amz-date', 'x-amz-content-sha256'?, 'x-amz-security-token'?, authorization }.
// opts: method, host, rawPath, rawQuery, headers ({name: value}, signed as given plus host and x-amz-*), body,
//       accessKeyId, secretAccessKey, sessionToken, region, service, date (Date), contentSha256Header (bool)
export function signSigV4(o) {
  const date = fmtAmzDate((o.date || new Date()).getTime());
  const body = o.body || Buffer.alloc(0);
  const bodyHash = sha256Hex(body);
  const add = { 'x-amz-date': date };
  if (o.contentSha256Header) add['x-amz-content-sha256'] = bodyHash;
  if (o.sessionToken) add['x-amz-security-token'] = o.sessionToken;
  const all = { host: o.host, ...(o.headers || {}), ...add };
  const pairs = Object.entries(all).filter(([, v]) => v !== undefined).map(([k, v]) => [k.toLowerCase(), v]);
  const hm = headerMap(pairs);
  const names = [...hm.keys()].sort();
  const canonicalRequest = [
    o.method,
    canonicalUri(o.rawPath, { doubleEncode: o.doubleEncode !== false }),
    canonicalQuery(o.rawQuery || ''),
    names.map((n) => `${n}:${hm.get(n)}`).join('\n') + '\n',
    names.join(';'),
    bodyHash,
  ].join('\n');
  const scope = `${date.slice(0, 8)}/${o.region}/${o.service}/aws4_request`;
  const sts = ['AWS4-HMAC-SHA256', date, scope, sha256Hex(canonicalRequest)].join('\n');
  const sig = hmac(signingKey(o.secretAccessKey, date.slice(0, 8), o.region, o.service), sts).toString('hex');
  add.authorization = `AWS4-HMAC-SHA256 Credential=${o.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${sig}`;
  return add;
}
