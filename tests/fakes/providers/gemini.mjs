// Gemini API (Google AI, generativelanguage): models/{model}:generateContent, :streamGenerateContent (?alt=sse gives
// SSE, without it a streamed JSON array), :embedContent, :batchEmbedContents, :countTokens, GET models.
// Requests are checked like the real proto-JSON front end: unknown field names are rejected (camelCase and
// snake_case spellings are both accepted), errors are google.rpc.Status objects, pretty-printed as Google does.
import { makeReply, splitPieces, uniqueId, malformedJson, inputTokens, embedding, textTokensOf, forceUsage } from '../content.mjs';

export function route(method, path) {
  const m = /^\/(v1beta|v1)\/models\/([^/:]+):(generateContent|streamGenerateContent|embedContent|batchEmbedContents|countTokens)$/.exec(path);
  if (m && method === 'POST') return { provider: 'gemini', op: m[3], params: { version: m[1], model: decodeURIComponent(m[2]) } };
  const l = /^\/(v1beta|v1)\/models$/.exec(path);
  if (l && method === 'GET') return { provider: 'gemini', op: 'models', params: { version: l[1] } };
  const g = /^\/(v1beta|v1)\/models\/([^/:]+)$/.exec(path);
  if (g && method === 'GET') return { provider: 'gemini', op: 'model', params: { version: g[1], model: decodeURIComponent(g[2]) } };
  return null;
}

const TOP = ['model', 'contents', 'tools', 'toolConfig', 'safetySettings', 'systemInstruction', 'generationConfig', 'cachedContent', 'labels'];
const GEN = ['stopSequences', 'responseMimeType', 'responseSchema', 'responseJsonSchema', 'responseModalities', 'candidateCount',
  'maxOutputTokens', 'temperature', 'topP', 'topK', 'seed', 'presencePenalty', 'frequencyPenalty', 'responseLogprobs',
  'logprobs', 'enableEnhancedCivicAnswers', 'speechConfig', 'thinkingConfig', 'imageConfig', 'mediaResolution'];
const CONTENT = ['role', 'parts'];
const PART = ['text', 'inlineData', 'functionCall', 'functionResponse', 'fileData', 'executableCode', 'codeExecutionResult',
  'thought', 'thoughtSignature', 'videoMetadata', 'partMetadata', 'mediaResolution'];
const PART_DATA = ['text', 'inlineData', 'functionCall', 'functionResponse', 'fileData', 'executableCode', 'codeExecutionResult'];

const snake = (s) => s.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
const camel = (s) => s.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const get = (o, k) => (o == null ? undefined : o[k] !== undefined ? o[k] : o[snake(k)]);

class ApiError {
  constructor(code, status, message, details) { Object.assign(this, { code, status, message, details }); }
}
const invalidArg = (message, details) => new ApiError(400, 'INVALID_ARGUMENT', message, details);

function unknownField(name, at) {
  const desc = `Invalid JSON payload received. Unknown name "${name}"${at ? ` at '${at}'` : ''}: Cannot find field.`;
  return invalidArg(desc, [{ '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: at || '', description: desc }] }]);
}

function checkKeys(o, allowed, at) {
  if (!o || typeof o !== 'object' || Array.isArray(o)) return;
  for (const k of Object.keys(o)) if (!allowed.includes(camel(k))) throw unknownField(k, at);
}

const HEADERS = {
  vary: 'Origin, X-Origin, Referer', server: 'scaffolding on HTTPServer2', 'x-xss-protection': '0',
  'x-frame-options': 'SAMEORIGIN', 'x-content-type-options': 'nosniff', 'server-timing': 'gfet4t7; dur=42',
};
const JSON_CT = 'application/json; charset=UTF-8';

function sendError(ctx, e, headers = {}) {
  const err = { code: e.code, message: e.message, status: e.status };
  if (e.details) err.details = e.details;
  const body = JSON.stringify({ error: err }, null, 2) + '\n';
  ctx.send(e.code, { 'content-type': JSON_CT, ...HEADERS, ...headers }, body);
}

function sendJson(ctx, obj) {
  const b = ctx.behavior;
  const s = JSON.stringify(obj, null, 2) + '\n';
  ctx.send(200, { 'content-type': JSON_CT, ...HEADERS }, b.malformed ? malformedJson(s) : s);
}

const STATUS = {
  400: ['INVALID_ARGUMENT', 'Request contains an invalid argument.'],
  401: ['UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.'],
  403: ['PERMISSION_DENIED', 'The caller does not have permission'],
  404: ['NOT_FOUND', 'Requested entity was not found.'],
  409: ['ABORTED', 'The operation was aborted.'],
  429: ['RESOURCE_EXHAUSTED', 'You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.'],
  499: ['CANCELLED', 'The operation was cancelled.'],
  500: ['INTERNAL', 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting'],
  503: ['UNAVAILABLE', 'The model is overloaded. Please try again later.'],
  504: ['DEADLINE_EXCEEDED', 'Deadline expired before operation could complete.'],
};

const GFE_502 = '<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 502 (Server Error)!!1</title>\n  <p><b>502.</b> <ins>That’s an error.</ins>\n  <p>The server encountered a temporary error and could not complete your request.<p>Please try again in 30 seconds.  <ins>That’s all we know.</ins>\n';

function statusError(ctx, code) {
  const b = ctx.behavior;
  const [status, message] = STATUS[code] || (code >= 500 ? ['INTERNAL', STATUS[500][1]] : ['FAILED_PRECONDITION', 'Precondition check failed.']);
  let details;
  if (code === 429) {
    details = [{
      '@type': 'type.googleapis.com/google.rpc.QuotaFailure',
      violations: [{ quotaMetric: 'generativelanguage.googleapis.com/generate_content_free_tier_requests', quotaId: 'GenerateRequestsPerMinutePerProjectPerModel-FreeTier', quotaDimensions: { location: 'global', model: ctx.params.model || 'unknown' }, quotaValue: '10' }],
    }, { '@type': 'type.googleapis.com/google.rpc.Help', links: [{ description: 'Learn more about Gemini API quotas', url: 'https://ai.google.dev/gemini-api/docs/rate-limits' }] }];
    if (b.retryAfter !== undefined) details.push({ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${b.retryAfter}s` });
  }
  return new ApiError(code, status, b.message || message, details);
}

function checkAuth(ctx) {
  if (ctx.skipAuth) return true;
  const want = [].concat(ctx.opts.keys.gemini || []);
  if (!want.length) return true;
  const key = ctx.headers['x-goog-api-key'] ?? ctx.query.key;
  if (key === undefined) {
    sendError(ctx, new ApiError(403, 'PERMISSION_DENIED', "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."));
    return false;
  }
  if (!want.includes(key)) {
    sendError(ctx, invalidArg('API key not valid. Please pass a valid API key.', [
      { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com', metadata: { service: 'generativelanguage.googleapis.com' } },
      { '@type': 'type.googleapis.com/google.rpc.LocalizedMessage', locale: 'en-US', message: 'API key not valid. Please pass a valid API key.' },
    ]));
    return false;
  }
  return true;
}

export async function handle(ctx) {
  if (!checkAuth(ctx)) return;
  const b = ctx.behavior;
  if (b.status && b.status >= 400) {
    if (b.status === 502) return ctx.send(502, { 'content-type': 'text/html; charset=UTF-8' }, GFE_502);
    return sendError(ctx, statusError(ctx, b.status));
  }
  try {
    if (ctx.op === 'generateContent' || ctx.op === 'streamGenerateContent') return await generate(ctx);
    if (ctx.op === 'embedContent') return embed(ctx, false);
    if (ctx.op === 'batchEmbedContents') return embed(ctx, true);
    if (ctx.op === 'countTokens') return countTokens(ctx);
    if (ctx.op === 'models') return models(ctx);
    if (ctx.op === 'model') return model(ctx);
  } catch (e) {
    if (e instanceof ApiError) return sendError(ctx, e);
    throw e;
  }
}

function parseBody(ctx) {
  let j;
  try { j = ctx.json(); } catch { throw invalidArg('Invalid JSON payload received. Unexpected token.'); }
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw invalidArg(`Invalid JSON payload received. Expected an object.`);
  return j;
}

function functionResponseText(resp) {
  if (resp && typeof resp === 'object' && !Array.isArray(resp)) {
    for (const k of ['output', 'result', 'content']) if (typeof resp[k] === 'string') return resp[k];
  }
  return JSON.stringify(resp ?? {});
}

function partsItems(parts, where) {
  if (!Array.isArray(parts) || !parts.length) throw invalidArg(`* GenerateContentRequest.${where}.parts: contents.parts must not be empty.\n`);
  return parts.map((p, k) => {
    checkKeys(p, PART, `${snake(where).replace(/\[/g, '[')}.parts[${k}]`);
    const set = PART_DATA.filter((f) => get(p, f) !== undefined);
    if (set.length !== 1) {
      throw invalidArg(set.length ? `* GenerateContentRequest.${where}.parts[${k}].data: oneof field 'data' is already set. Cannot set '${set[1]}'\n`
        : `* GenerateContentRequest.${where}.parts[${k}].data: required oneof field 'data' must have one initialized field\n`);
    }
    const text = get(p, 'text');
    if (text !== undefined) return get(p, 'thought') ? { kind: 'other' } : { kind: 'text', text: String(text) };
    const inl = get(p, 'inlineData');
    if (inl) return String(get(inl, 'mimeType') || '').startsWith('image/') ? { kind: 'image' } : { kind: 'other' };
    const fd = get(p, 'fileData');
    if (fd) return String(get(fd, 'mimeType') || '').startsWith('image/') ? { kind: 'image' } : { kind: 'other' };
    const fc = get(p, 'functionCall');
    if (fc) {
      if (typeof fc.name !== 'string') throw invalidArg(`* GenerateContentRequest.${where}.parts[${k}].function_call.name: Name cannot be empty.\n`);
      return { kind: 'tool_call', name: fc.name, args: fc.args ?? {} };
    }
    const fr = get(p, 'functionResponse');
    if (fr) {
      if (typeof fr.name !== 'string') throw invalidArg(`* GenerateContentRequest.${where}.parts[${k}].function_response.name: Name cannot be empty.\n`);
      return { kind: 'tool_result', text: functionResponseText(fr.response) };
    }
    return { kind: 'other' };
  });
}

function contentsConversation(j, requireContents = true) {
  const parts = [];
  const si = get(j, 'systemInstruction');
  if (si !== undefined) {
    checkKeys(si, CONTENT, 'system_instruction');
    parts.push({ role: 'system', items: partsItems(get(si, 'parts'), 'system_instruction') });
  }
  const contents = get(j, 'contents');
  if (requireContents && (!Array.isArray(contents) || !contents.length)) {
    throw invalidArg('* GenerateContentRequest.contents: contents is not specified\n');
  }
  (contents || []).forEach((c, i) => {
    checkKeys(c, CONTENT, `contents[${i}]`);
    const role = c.role === undefined || c.role === '' ? 'user' : c.role;
    if (role !== 'user' && role !== 'model' && role !== 'function') throw invalidArg('Please use a valid role: user, model.');
    const items = partsItems(get(c, 'parts'), `contents[${i}]`);
    parts.push({ role: role === 'model' ? 'assistant' : 'user', items });
  });
  return parts;
}

function toConversation(j) {
  checkKeys(j, TOP, '');
  const gc = get(j, 'generationConfig');
  if (gc !== undefined) checkKeys(gc, GEN, 'generation_config');
  const parts = contentsConversation(j);
  const toolNames = new Set();
  const tools = get(j, 'tools');
  if (tools !== undefined) {
    if (!Array.isArray(tools)) throw invalidArg('Invalid JSON payload received. Unknown name "tools": Proto field is not repeating, cannot start list.');
    for (const t of tools) {
      const fds = get(t, 'functionDeclarations');
      if (Array.isArray(fds)) for (const f of fds) if (f && typeof f.name === 'string') toolNames.add(f.name);
    }
  }
  const maxTokens = get(gc, 'maxOutputTokens');
  if (maxTokens !== undefined && (!Number.isInteger(maxTokens) || maxTokens < 0)) {
    throw invalidArg(`Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), ${JSON.stringify(maxTokens)}`);
  }
  const stop = get(gc, 'stopSequences');
  return { parts, toolNames, maxTokens, stop: Array.isArray(stop) ? stop : [] };
}

function checkModel(ctx, method) {
  const list = ctx.opts.models;
  if (list && !list.includes(ctx.params.model)) {
    throw new ApiError(404, 'NOT_FOUND', `models/${ctx.params.model} is not found for API version ${ctx.params.version}, or is not supported for ${method}. Call ListModels to see the list of available models and their supported methods.`);
  }
}

const FINISH = { stop: 'STOP', stop_sequence: 'STOP', length: 'MAX_TOKENS', tool_calls: 'STOP' };

function usageOf(plan, final) {
  const u = { promptTokenCount: plan.inputTokens };
  if (final) u.candidatesTokenCount = plan.outputTokens;
  u.totalTokenCount = plan.inputTokens + (final ? plan.outputTokens + plan.reasoningTokens : 0);
  if (plan.cachedTokens) u.cachedContentTokenCount = plan.cachedTokens;
  u.promptTokensDetails = [{ modality: 'TEXT', tokenCount: plan.inputTokens }];
  if (plan.cachedTokens) u.cacheTokensDetails = [{ modality: 'TEXT', tokenCount: plan.cachedTokens }];
  if (final && plan.reasoningTokens) u.thoughtsTokenCount = plan.reasoningTokens;
  return forceUsage(plan, u, ['promptTokenCount', 'candidatesTokenCount', 'totalTokenCount']);
}

async function generate(ctx) {
  const j = parseBody(ctx);
  const conv = toConversation(j);
  checkModel(ctx, ctx.op);
  const plan = makeReply(conv, ctx.behavior);
  const withUsage = ctx.behavior.usage !== false;
  const responseId = uniqueId(22);
  const modelVersion = ctx.params.model;
  const finishReason = FINISH[plan.finish];
  const fcParts = plan.toolCalls.map((c) => ({ functionCall: { name: c.name, args: c.args } }));
  const response = (parts, final) => {
    const cand = { content: { parts, role: 'model' } };
    if (final) cand.finishReason = finishReason;
    cand.index = 0;
    const o = { candidates: [cand] };
    if (withUsage) o.usageMetadata = usageOf(plan, final);
    o.modelVersion = modelVersion;
    o.responseId = responseId;
    return o;
  };
  if (ctx.op === 'generateContent') {
    return sendJson(ctx, response(fcParts.length ? fcParts : [{ text: plan.text }], true));
  }
  const sse = ctx.query.alt === 'sse';
  const chunks = ctx.behavior.chunks ?? ctx.opts.chunks ?? 4;
  const bodies = [];
  if (fcParts.length) bodies.push(response(fcParts, true));
  else {
    const pieces = splitPieces(plan.text, chunks);
    if (!pieces.length) pieces.push('');
    pieces.forEach((p, i) => bodies.push(response([{ text: p }], i === pieces.length - 1)));
  }
  const errObj = () => {
    const m = typeof ctx.behavior.midStreamError === 'object' ? ctx.behavior.midStreamError : {};
    const code = m.code || 503;
    return { error: { code, message: m.message || ctx.behavior.message || (STATUS[code] || STATUS[500])[1], status: m.status || (STATUS[code] || STATUS[500])[0] } };
  };
  let events;
  let errorEvent;
  let malformedEvent;
  if (sse) {
    events = bodies.map((o) => `data: ${JSON.stringify(o)}\r\n\r\n`);
    errorEvent = () => `data: ${JSON.stringify(errObj())}\r\n\r\n`;
    malformedEvent = () => `data: ${malformedJson(JSON.stringify(bodies.at(-1)))}\r\n\r\n`;
  } else {
    // Without alt=sse the stream is one JSON array whose elements arrive as they are produced.
    events = bodies.map((o, i) => (i === 0 ? '[' : ',\r\n') + JSON.stringify(o, null, 2));
    events.push('\n]');
    errorEvent = () => ',\r\n' + JSON.stringify(errObj(), null, 2) + '\n]';
    malformedEvent = () => ',\r\n' + malformedJson(JSON.stringify(bodies.at(-1), null, 2));
  }
  await ctx.stream({
    status: 200,
    headers: { 'content-type': sse ? 'text/event-stream' : JSON_CT, ...HEADERS },
    events,
    terminalFrom: sse ? events.length - 1 : events.length - 2,
    errorEvent,
    malformedEvent,
  });
}

function embedDims(ctx, req) {
  const d = get(req, 'outputDimensionality');
  if (d !== undefined) {
    if (!Number.isInteger(d) || d < 1) throw invalidArg(`* EmbedContentRequest.output_dimensionality: must be positive\n`);
    return d;
  }
  return /gemini-embedding/.test(ctx.params.model) ? 3072 : 768;
}

const EMBED_KEYS = ['model', 'content', 'taskType', 'title', 'outputDimensionality'];

function embedOne(ctx, req, where) {
  checkKeys(req, EMBED_KEYS, where);
  const content = get(req, 'content');
  if (!content) throw invalidArg(`* ${where ? where + '.' : ''}content: content is not specified\n`);
  const items = partsItems(get(content, 'parts'), 'content');
  const text = items.filter((it) => it.kind === 'text').map((it) => it.text).join(' ');
  return { values: embedding(text, embedDims(ctx, req)), tokens: textTokensOf(text) };
}

function embed(ctx, batch) {
  const j = parseBody(ctx);
  checkModel(ctx, ctx.op);
  if (!batch) {
    const e = embedOne(ctx, j, '');
    return sendJson(ctx, { embedding: { values: e.values } });
  }
  checkKeys(j, ['requests'], '');
  if (!Array.isArray(j.requests) || !j.requests.length) throw invalidArg('* BatchEmbedContentsRequest.requests: requests is not specified\n');
  const want = `models/${ctx.params.model}`;
  const out = j.requests.map((r, i) => {
    if (r && r.model !== undefined && r.model !== want) {
      throw invalidArg(`Model name in the request (${r.model}) does not match the model name in the URL (${want}) for requests[${i}].`);
    }
    return { values: embedOne(ctx, r, `requests[${i}]`).values };
  });
  return sendJson(ctx, { embeddings: out });
}

function countTokens(ctx) {
  const j = parseBody(ctx);
  checkModel(ctx, ctx.op);
  const gcr = get(j, 'generateContentRequest');
  let conv;
  if (gcr) conv = toConversation(gcr);
  else {
    checkKeys(j, ['contents', 'generateContentRequest'], '');
    conv = { parts: contentsConversation(j) };
  }
  const n = inputTokens(conv);
  sendJson(ctx, { totalTokens: n, promptTokensDetails: [{ modality: 'TEXT', tokenCount: n }] });
}

const DEFAULT_MODELS = ['gemini-2.5-flash', 'gemini-2.5-pro', 'gemini-2.0-flash', 'text-embedding-004', 'gemini-embedding-001'];

function modelObj(id) {
  const emb = /embedding/.test(id);
  return {
    name: `models/${id}`, version: '001', displayName: id, description: `Fake ${id}`,
    inputTokenLimit: emb ? 2048 : 1048576, outputTokenLimit: emb ? 1 : 65536,
    supportedGenerationMethods: emb ? ['embedContent', 'countTextTokens', 'countTokens'] : ['generateContent', 'countTokens', 'createCachedContent', 'batchGenerateContent'],
  };
}

function models(ctx) {
  sendJson(ctx, { models: (ctx.opts.models || DEFAULT_MODELS).map(modelObj) });
}

function model(ctx) {
  const list = ctx.opts.models || DEFAULT_MODELS;
  if (!list.includes(ctx.params.model)) throw new ApiError(404, 'NOT_FOUND', `models/${ctx.params.model} is not found for API version ${ctx.params.version}, or is not supported for get. Call ListModels to see the list of available models and their supported methods.`);
  sendJson(ctx, modelObj(ctx.params.model));
}
