// Vertex AI (aiplatform.googleapis.com): a Google Cloud project's publisher models.
//   Gemini:    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent,
//              :streamGenerateContent (?alt=sse = SSE), :countTokens, :predict (text-embedding-*, gemini-embedding-*)
//   Anthropic: POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict, :streamRawPredict,
//              POST .../publishers/anthropic/models/count-tokens:rawPredict
// The credential is an OAuth access token (Authorization: Bearer); keys.vertex is the accepted token(s) or a
// function (token) => bool (the fake Google token endpoint's issued tokens: tests/fakes/google_auth.mjs).
// Vertex's own refusals (auth, IAM, quota, unknown model) are google.rpc.Status JSON; a Gemini model's bodies are
// the Gemini API's (providers/gemini.mjs does the work), an Anthropic model's the Messages API's with the model in
// the URL and "anthropic_version": "vertex-2023-10-16" in the body (providers/anthropic.mjs does the work).
import * as gemini from './gemini.mjs';
import * as anthropic from './anthropic.mjs';
import { embedding, textTokensOf } from '../content.mjs';

export const VERTEX_ANTHROPIC_VERSION = 'vertex-2023-10-16';

export function route(method, path) {
  const m = /^\/(v1|v1beta1)\/projects\/([^/]+)\/locations\/([^/]+)\/publishers\/(google|anthropic)\/models\/([^/:]+):([A-Za-z]+)$/.exec(path);
  if (!m || method !== 'POST') return null;
  const params = { version: m[1], project: decodeURIComponent(m[2]), location: decodeURIComponent(m[3]), publisher: m[4], model: decodeURIComponent(m[5]) };
  const op = m[6];
  if (m[4] === 'google' && ['generateContent', 'streamGenerateContent', 'countTokens', 'predict'].includes(op)) return { provider: 'vertex', op, params };
  if (m[4] === 'anthropic' && params.model === 'count-tokens' && op === 'rawPredict') return { provider: 'vertex', op: 'anthropicCountTokens', params };
  if (m[4] === 'anthropic' && (op === 'rawPredict' || op === 'streamRawPredict')) return { provider: 'vertex', op, params };
  return null;
}

const JSON_CT = 'application/json; charset=UTF-8';
const STATUS = {
  400: ['INVALID_ARGUMENT', 'Request contains an invalid argument.'],
  401: ['UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.'],
  403: ['PERMISSION_DENIED', "Permission 'aiplatform.endpoints.predict' denied on resource (or it may not exist)."],
  404: ['NOT_FOUND', 'Publisher Model was not found or your project does not have access to it.'],
  429: ['RESOURCE_EXHAUSTED', 'Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model with base model: gemini. Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.'],
  500: ['INTERNAL', 'Internal error encountered.'],
  503: ['UNAVAILABLE', 'The service is currently unavailable.'],
  504: ['DEADLINE_EXCEEDED', 'Deadline expired before operation could complete.'],
};

export function googleError(ctx, code, message, status, details) {
  const [st, msg] = STATUS[code] || (code >= 500 ? STATUS[500] : ['FAILED_PRECONDITION', 'Precondition check failed.']);
  const error = { code, message: message || msg, status: status || st };
  if (details) error.details = details;
  ctx.send(code, { 'content-type': JSON_CT }, JSON.stringify({ error }, null, 2) + '\n');
}

function tokenOk(ctx, token) {
  const want = ctx.opts.keys.vertex;
  if (want === null || want === undefined) return true;
  if (typeof want === 'function') return want(token);
  return [].concat(want).includes(token);
}

export async function handle(ctx) {
  const b = ctx.behavior;
  const bearer = /^Bearer\s+(\S+)$/i.exec(ctx.headers.authorization || '');
  if (!ctx.skipAuth && (!bearer || !tokenOk(ctx, bearer[1]))) {
    return googleError(ctx, 401, bearer ? undefined : 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
  }
  if (ctx.opts.vertexProject && ctx.params.project !== ctx.opts.vertexProject) {
    return googleError(ctx, 403, `Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/projects/${ctx.params.project}/locations/${ctx.params.location}/publishers/${ctx.params.publisher}/models/${ctx.params.model}' (or it may not exist).`);
  }
  // Vertex's own refusals; { anthropicError: true } leaves a scripted status to the Anthropic model instead
  if (b.status && b.status >= 400 && !b.anthropicError) {
    const details = b.status === 429 && b.retryAfter !== undefined ? [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${b.retryAfter}s` }] : undefined;
    return googleError(ctx, b.status, b.message, undefined, details);
  }
  let j;
  try { j = ctx.json(); } catch { return googleError(ctx, 400, 'Invalid JSON payload received. Unexpected token.'); }
  if (j === null || typeof j !== 'object' || Array.isArray(j)) return googleError(ctx, 400, 'Invalid JSON payload received. Expected an object.');
  ctx.skipAuth = true; // the delegates check API keys; Vertex has checked the token
  if (ctx.params.publisher === 'google' && ctx.op === 'predict') return predict(ctx, j);
  if (ctx.params.publisher === 'google') {
    if (ctx.op === 'countTokens') {
      // Vertex's CountTokensRequest has the GenerateContentRequest's fields at its top level
      const allowed = ['model', 'instances', 'contents', 'systemInstruction', 'tools', 'generationConfig'];
      for (const k of Object.keys(j)) if (!allowed.includes(k)) return googleError(ctx, 400, `Invalid JSON payload received. Unknown name "${k}": Cannot find field.`);
      const { instances, model, ...gcr } = j;
      setBody(ctx, { generateContentRequest: { model: `models/${ctx.params.model}`, ...gcr } });
    }
    return gemini.handle(ctx);
  }
  // Anthropic models
  if (j.anthropic_version !== VERTEX_ANTHROPIC_VERSION) {
    return anthropicInvalid(ctx, j.anthropic_version === undefined ? 'anthropic_version: Field required' : `anthropic_version: Input should be '${VERTEX_ANTHROPIC_VERSION}'`);
  }
  const { anthropic_version, ...rest } = j;
  if (ctx.op === 'anthropicCountTokens') {
    ctx.op = 'count_tokens';
    setBody(ctx, rest);
  } else {
    if (rest.model !== undefined) return anthropicInvalid(ctx, 'model: Extra inputs are not permitted');
    if ((ctx.op === 'streamRawPredict') !== (rest.stream === true)) {
      return anthropicInvalid(ctx, ctx.op === 'streamRawPredict' ? 'streamRawPredict needs "stream": true' : 'rawPredict does not stream: "stream": true needs streamRawPredict');
    }
    ctx.op = 'messages';
    setBody(ctx, { model: ctx.params.model, ...rest });
  }
  ctx.headers = { ...ctx.headers, 'anthropic-version': '2023-06-01' };
  return anthropic.handle(ctx);
}

function setBody(ctx, obj) {
  ctx.body = Buffer.from(JSON.stringify(obj));
  ctx._json = obj;
  ctx._jsonParsed = true;
}

function anthropicInvalid(ctx, message) {
  ctx.sendJson(400, { type: 'error', error: { type: 'invalid_request_error', message } });
}

// Text embeddings: {"instances":[{"content","task_type"?,"title"?}],"parameters":{"outputDimensionality"?,"autoTruncate"?}}
// -> {"predictions":[{"embeddings":{"values","statistics":{"truncated","token_count"}}}],"metadata":{...}}.
// gemini-embedding-001 takes one instance per request, the text-embedding models up to 250.
function predict(ctx, j) {
  for (const k of Object.keys(j)) if (!['instances', 'parameters'].includes(k)) return googleError(ctx, 400, `Invalid JSON payload received. Unknown name "${k}": Cannot find field.`);
  const inst = j.instances;
  if (!Array.isArray(inst) || !inst.length) return googleError(ctx, 400, 'instances must be a non-empty list.');
  const max = /gemini-embedding/.test(ctx.params.model) ? 1 : 250;
  if (inst.length > max) return googleError(ctx, 400, `The model ${ctx.params.model} supports at most ${max} instance(s) per request, got ${inst.length}.`);
  const p = j.parameters || {};
  const dims = p.outputDimensionality ?? (/gemini-embedding/.test(ctx.params.model) ? 3072 : 768);
  if (!Number.isInteger(dims) || dims < 1) return googleError(ctx, 400, 'outputDimensionality must be a positive integer.');
  const predictions = [];
  let chars = 0;
  for (const i of inst) {
    if (!i || typeof i.content !== 'string') return googleError(ctx, 400, 'Each instance needs a "content" string.');
    for (const k of Object.keys(i)) if (!['content', 'task_type', 'title'].includes(k)) return googleError(ctx, 400, `Invalid instance field "${k}".`);
    chars += i.content.length;
    predictions.push({ embeddings: { statistics: { truncated: false, token_count: textTokensOf(i.content) }, values: embedding(i.content, dims) } });
  }
  ctx.send(200, { 'content-type': JSON_CT }, JSON.stringify({ predictions, metadata: { billableCharacterCount: chars } }));
}
