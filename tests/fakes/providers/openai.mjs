// OpenAI Chat Completions / Embeddings / Models, and the two dialects built on it:
//   azure              /openai/deployments/{deployment}/{chat/completions|embeddings}?api-version=..., api-key header,
//                      content-filter annotations, Azure's own auth / version / deployment errors.
//   openai-compatible  vLLM (default), Ollama or llama.cpp servers: optional auth, extra parameters ignored,
//                      their own error shapes (opts.compatFlavor).
import { responses, responseInputTokens, responseGet, responseDelete, responseInputItems } from './openai_responses.mjs';
import { makeReply, splitPieces, stableId, uniqueId, hexId, embedding, embeddingBase64, textTokensOf, malformedJson, forceUsage } from '../content.mjs';

export function route(method, path, provider) {
  if (provider === 'azure') {
    const m = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|embeddings)$/.exec(path);
    if (m && method === 'POST') return { provider, op: m[2] === 'embeddings' ? 'embeddings' : 'chat', params: { deployment: decodeURIComponent(m[1]) } };
    if (path === '/openai/models' && method === 'GET') return { provider, op: 'models', params: {} };
    if (method === 'POST' && path === '/openai/v1/responses') return { provider, op: 'responses', params: { v1: true } };
    if (method === 'POST' && path === '/openai/v1/responses/input_tokens') return { provider, op: 'responses_input_tokens', params: { v1: true } };
    const ia = /^\/openai\/v1\/responses\/([^/]+)\/input_items$/.exec(path);
    if (ia && method === 'GET') return { provider, op: 'responses_input_items', params: { v1: true, id: decodeURIComponent(ia[1]) } };
    const ra = /^\/openai\/v1\/responses\/([^/]+)$/.exec(path);
    if (ra && (method === 'GET' || method === 'DELETE')) return { provider, op: method === 'GET' ? 'responses_get' : 'responses_delete', params: { v1: true, id: decodeURIComponent(ra[1]) } };
    if (method === 'POST' && path === '/openai/responses') return { provider, op: 'responses', params: {} };
    return null;
  }
  if (method === 'POST' && path === '/responses') return { provider, op: 'responses', params: {} };
  if (method === 'POST' && path === '/responses/input_tokens') return { provider, op: 'responses_input_tokens', params: {} };
  const ii = /^\/responses\/([^/]+)\/input_items$/.exec(path);
  if (ii && method === 'GET') return { provider, op: 'responses_input_items', params: { id: decodeURIComponent(ii[1]) } };
  const rr = /^\/responses\/([^/]+)$/.exec(path);
  if (rr && (method === 'GET' || method === 'DELETE')) return { provider, op: method === 'GET' ? 'responses_get' : 'responses_delete', params: { id: decodeURIComponent(rr[1]) } };
  if (method === 'POST' && path === '/chat/completions') return { provider, op: 'chat', params: {} };
  if (method === 'POST' && path === '/embeddings') return { provider, op: 'embeddings', params: {} };
  if (method === 'GET' && path === '/models') return { provider, op: 'models', params: {} };
  const m = /^\/models\/(.+)$/.exec(path);
  if (method === 'GET' && m) return { provider, op: 'model', params: { id: decodeURIComponent(m[1]) } };
  return null;
}

// Azure OpenAI data-plane API versions (GA and preview) that the service accepts.
export const AZURE_API_VERSIONS = new Set([
  '2022-12-01', '2023-05-15', '2024-02-01', '2024-06-01', '2024-10-21',
  '2023-03-15-preview', '2023-06-01-preview', '2023-07-01-preview', '2023-08-01-preview', '2023-09-01-preview',
  '2023-10-01-preview', '2023-12-01-preview', '2024-02-15-preview', '2024-03-01-preview', '2024-04-01-preview',
  '2024-05-01-preview', '2024-07-01-preview', '2024-08-01-preview', '2024-09-01-preview', '2024-10-01-preview',
  '2024-12-01-preview', '2025-01-01-preview', '2025-02-01-preview', '2025-03-01-preview', '2025-04-01-preview',
]);

const CHAT_PARAMS = new Set(['model', 'messages', 'audio', 'frequency_penalty', 'function_call', 'functions', 'logit_bias',
  'logprobs', 'max_completion_tokens', 'max_tokens', 'metadata', 'modalities', 'n', 'parallel_tool_calls', 'prediction',
  'presence_penalty', 'prompt_cache_key', 'prompt_cache_retention', 'reasoning_effort', 'response_format',
  'safety_identifier', 'seed', 'service_tier', 'stop', 'store', 'stream', 'stream_options', 'temperature', 'tool_choice',
  'tools', 'top_logprobs', 'top_p', 'user', 'verbosity', 'web_search_options']);
const AZURE_EXTRA_PARAMS = new Set(['data_sources', 'user_security_context']);
const EMB_PARAMS = new Set(['model', 'input', 'encoding_format', 'dimensions', 'user']);
const ROLES = ['system', 'assistant', 'user', 'function', 'tool', 'developer'];

const FILTER_OK = { filtered: false, severity: 'safe' };
const AZURE_CHOICE_FILTER = {
  hate: FILTER_OK, protected_material_code: { filtered: false, detected: false },
  protected_material_text: { filtered: false, detected: false }, self_harm: FILTER_OK, sexual: FILTER_OK, violence: FILTER_OK,
};
const AZURE_PROMPT_FILTER = [{
  prompt_index: 0,
  content_filter_results: { hate: FILTER_OK, jailbreak: { filtered: false, detected: false }, self_harm: FILTER_OK, sexual: FILTER_OK, violence: FILTER_OK },
}];

class ApiError {
  constructor(status, message, param = null, code = null, type = 'invalid_request_error') {
    Object.assign(this, { status, message, param, code, type });
  }
}

function mask(key) {
  if (key.length <= 8) return '*'.repeat(key.length);
  return key.slice(0, 3) + '*'.repeat(key.length - 7) + key.slice(-4);
}

function flavorOf(ctx) {
  return ctx.provider === 'openai-compatible' ? (ctx.opts.compatFlavor || 'vllm') : ctx.provider;
}

// Error body in the dialect's shape.
function errorBody(ctx, e) {
  const f = flavorOf(ctx);
  if (f === 'vllm') return { error: { message: e.message, type: e.vllmType || vllmType(e.status), param: e.param, code: e.status } };
  if (f === 'llamacpp') return { error: { code: e.status, message: e.message, type: e.type } };
  if (f === 'azure' && e.azureCode) return { error: { code: e.azureCode, message: e.message } };
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

function vllmType(status) {
  return { 400: 'BadRequestError', 401: 'Unauthorized', 404: 'NotFoundError', 429: 'TooManyRequests', 500: 'InternalServerError', 503: 'ServiceUnavailable' }[status] || 'InternalServerError';
}

function baseHeaders(ctx) {
  if (ctx.provider === 'openai') {
    return {
      'openai-organization': 'user-fakeorg', 'openai-processing-ms': '12', 'openai-version': '2020-10-01',
      'openai-project': 'proj_fake', 'x-request-id': 'req_' + hexId(32),
      'x-ratelimit-limit-requests': '10000', 'x-ratelimit-limit-tokens': '30000000',
      'x-ratelimit-remaining-requests': '9999', 'x-ratelimit-remaining-tokens': '29999000',
      'x-ratelimit-reset-requests': '6ms', 'x-ratelimit-reset-tokens': '2ms',
    };
  }
  if (ctx.provider === 'azure') {
    const id = uuid();
    return {
      'apim-request-id': id, 'x-request-id': id, 'x-ms-region': 'East US', 'x-ms-rai-invoked': 'true',
      'x-ratelimit-remaining-requests': '999', 'x-ratelimit-limit-requests': '1000',
      'x-ratelimit-remaining-tokens': '999000', 'x-ratelimit-limit-tokens': '1000000',
      'azureml-model-session': 'd001-20250101000000', 'x-content-type-options': 'nosniff',
      'strict-transport-security': 'max-age=31536000; includeSubDomains; preload',
    };
  }
  return {};
}

function uuid() {
  const h = hexId(32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function sendError(ctx, e, extraHeaders = {}) {
  ctx.sendJson(e.status, errorBody(ctx, e), { ...baseHeaders(ctx), ...extraHeaders });
}

function retryHeaders(b, h) {
  if (b.retryAfter !== undefined) {
    h['retry-after'] = String(Math.ceil(b.retryAfter));
    h['retry-after-ms'] = String(Math.round(b.retryAfter * 1000));
  }
  if (b.retryAfterMs !== undefined) h['retry-after-ms'] = String(b.retryAfterMs);
  if (b.shouldRetry !== undefined) h['x-should-retry'] = String(!!b.shouldRetry);
  return h;
}

const CLOUDFLARE_502 = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n';

// A scripted { status } answered in the dialect's own shape.
function scriptedError(ctx, status) {
  const b = ctx.behavior;
  const f = flavorOf(ctx);
  const h = retryHeaders(b, { ...baseHeaders(ctx) });
  const model = safeModel(ctx);
  let e;
  if (status === 429) {
    if (f === 'openai') {
      h['x-ratelimit-remaining-requests'] = '0';
      h['x-ratelimit-reset-requests'] = `${b.retryAfter ?? 1}s`;
      e = b.quota
        ? new ApiError(429, 'You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.', null, 'insufficient_quota', 'insufficient_quota')
        : new ApiError(429, `Rate limit reached for ${model || 'gpt-4o-mini'} in organization org-fake on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in ${b.retryAfter ?? 1}s. Visit https://platform.openai.com/account/rate-limits to learn more.`, null, 'rate_limit_exceeded', 'requests');
    } else if (f === 'azure') {
      h['x-ratelimit-remaining-requests'] = '0';
      h['x-ratelimit-remaining-tokens'] = '0';
      e = new ApiError(429, `Requests to the ChatCompletions_Create Operation under Azure OpenAI API version ${ctx.query['api-version']} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after ${b.retryAfter ?? 1} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.`);
      e.azureCode = '429';
    } else {
      e = new ApiError(429, 'Too many requests', null, null, 'rate_limit_error');
    }
  } else if (status === 502 && (f === 'openai' || f === 'azure')) {
    ctx.send(502, { 'content-type': 'text/html', ...h }, CLOUDFLARE_502);
    return;
  } else if (status >= 500) {
    e = new ApiError(status, status === 503 ? 'The engine is currently overloaded, please try again later' : 'The server had an error while processing your request. Sorry about that!', null, null, 'server_error');
    if (f === 'azure') {
      e.azureCode = status === 503 ? 'ServiceUnavailable' : 'InternalServerError';
      e.message = 'The service is temporarily unable to process your request. Please try again later.';
    }
  } else if (status === 401) {
    e = new ApiError(401, 'Incorrect API key provided.', null, 'invalid_api_key');
  } else if (status === 403) {
    e = new ApiError(403, 'You are not allowed to sample from this model', null, null, 'invalid_request_error');
  } else if (status === 404) {
    e = new ApiError(404, `The model \`${model}\` does not exist or you do not have access to it.`, null, 'model_not_found');
  } else {
    e = new ApiError(status, 'Bad request', null, null);
  }
  if (b.message) e.message = b.message;
  sendError(ctx, e, h);
}

function safeModel(ctx) {
  try { return ctx.json().model; } catch { return undefined; }
}

function checkAuth(ctx) {
  if (ctx.skipAuth) return true;
  const h = ctx.headers;
  const keys = ctx.opts.keys;
  if (ctx.provider === 'azure') {
    const k = h['api-key'];
    const bearer = /^Bearer\s+(.+)$/i.exec(h.authorization || '');
    const want = [].concat(keys.azure || []);
    if ((k !== undefined && want.includes(k)) || (bearer && want.includes(bearer[1]))) return true;
    const e = new ApiError(401, 'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.');
    e.azureCode = '401';
    sendError(ctx, e);
    return false;
  }
  const want = [].concat((ctx.provider === 'openai' ? keys.openai : keys.compat) || []);
  if (!want.length) return true;
  const m = /^Bearer\s+(.+)$/i.exec(h.authorization || '');
  if (m && want.includes(m[1].trim())) return true;
  const f = flavorOf(ctx);
  if (f === 'vllm') {
    ctx.sendJson(401, { error: 'Unauthorized' });
    return false;
  }
  if (f === 'llamacpp') {
    ctx.sendJson(401, { error: { code: 401, message: 'Invalid API Key', type: 'authentication_error' } });
    return false;
  }
  if (!m) {
    sendError(ctx, new ApiError(401, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys."));
  } else {
    sendError(ctx, new ApiError(401, `Incorrect API key provided: ${mask(m[1].trim())}. You can find your API key at https://platform.openai.com/account/api-keys.`, null, 'invalid_api_key'));
  }
  return false;
}

function checkAzureVersion(ctx) {
  if (ctx.skipAuth) return true;
  const v = ctx.query['api-version'];
  const allowed = ctx.opts.azureApiVersions ? new Set(ctx.opts.azureApiVersions) : AZURE_API_VERSIONS;
  if (v === undefined || v === '') {
    ctx.sendJson(404, { error: { code: '404', message: 'Resource not found' } });
    return false;
  }
  if (!allowed.has(v)) {
    ctx.sendJson(400, { error: { code: 'BadRequest', message: 'API version not supported' } });
    return false;
  }
  return true;
}

export async function handle(ctx) {
  if (ctx.provider === 'azure' && ctx.op !== 'models' && !ctx.params.v1 && !checkAzureVersion(ctx)) return;
  if (!checkAuth(ctx)) return;
  if (ctx.behavior.status && ctx.behavior.status >= 400) return scriptedError(ctx, ctx.behavior.status);
  if (ctx.provider === 'azure' && ctx.opts.azureDeployments && ctx.params.deployment !== undefined
    && !(ctx.params.deployment in ctx.opts.azureDeployments)) {
    const e = new ApiError(404, 'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.');
    e.azureCode = 'DeploymentNotFound';
    return sendError(ctx, e);
  }
  try {
    if (ctx.op === 'chat') return await chat(ctx);
    if (ctx.op === 'responses') return await responses(ctx, { ApiError, baseHeaders });
    if (ctx.op === 'responses_input_tokens') return responseInputTokens(ctx, { ApiError, baseHeaders });
    if (ctx.op === 'responses_get') return responseGet(ctx, { ApiError, baseHeaders });
    if (ctx.op === 'responses_delete') return responseDelete(ctx, { ApiError, baseHeaders });
    if (ctx.op === 'responses_input_items') return responseInputItems(ctx, { ApiError, baseHeaders });
    if (ctx.op === 'embeddings') return embeddings(ctx);
    if (ctx.op === 'models') return models(ctx);
    if (ctx.op === 'model') return model(ctx);
  } catch (e) {
    if (e instanceof ApiError) return sendError(ctx, e);
    throw e;
  }
}

function parseBody(ctx) {
  let j;
  try { j = ctx.json(); } catch {
    throw new ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)");
  }
  if (j === null || typeof j !== 'object' || Array.isArray(j)) {
    throw new ApiError(400, `Invalid type for request body: expected an object, but got ${Array.isArray(j) ? 'an array' : typeof j} instead.`, null, 'invalid_type');
  }
  return j;
}

function typeName(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a decimal';
  if (typeof v === 'boolean') return 'a boolean';
  return 'a string';
}

function checkRange(j, name, lo, hi, integer) {
  const v = j[name];
  if (v === undefined || v === null) return;
  const kind = integer ? 'integer' : 'decimal';
  if (typeof v !== 'number' || (integer && !Number.isInteger(v))) {
    throw new ApiError(400, `Invalid type for '${name}': expected ${integer ? 'an integer' : 'a number'}, but got ${typeName(v)} instead.`, name, 'invalid_type');
  }
  if (v < lo) throw new ApiError(400, `Invalid '${name}': ${kind} below minimum value. Expected a value >= ${lo}, but got ${v} instead.`, name, `${kind}_below_min_value`);
  if (hi !== undefined && v > hi) throw new ApiError(400, `Invalid '${name}': ${kind} above maximum value. Expected a value <= ${hi}, but got ${v} instead.`, name, `${kind}_above_max_value`);
}

// Validates a chat request the way the real API does and turns it into the neutral conversation.
function toConversation(ctx, j) {
  const strict = ctx.provider !== 'openai-compatible';
  if (strict) {
    const extra = ctx.provider === 'azure' ? AZURE_EXTRA_PARAMS : null;
    for (const k of Object.keys(j)) {
      if (!CHAT_PARAMS.has(k) && !(extra && extra.has(k))) throw new ApiError(400, `Unrecognized request argument supplied: ${k}`);
    }
  }
  if (ctx.provider !== 'azure' && (j.model === undefined || j.model === null || j.model === '')) {
    throw new ApiError(400, 'you must provide a model parameter');
  }
  if (j.model !== undefined && typeof j.model !== 'string') {
    throw new ApiError(400, `Invalid type for 'model': expected a string, but got ${typeName(j.model)} instead.`, 'model', 'invalid_type');
  }
  if (j.messages === undefined) throw new ApiError(400, "Missing required parameter: 'messages'.", 'messages', 'missing_required_parameter');
  if (!Array.isArray(j.messages)) throw new ApiError(400, `Invalid type for 'messages': expected an array, but got ${typeName(j.messages)} instead.`, 'messages', 'invalid_type');
  if (!j.messages.length) throw new ApiError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", 'messages', 'empty_array');
  if (j.stream !== undefined && j.stream !== null && typeof j.stream !== 'boolean') {
    throw new ApiError(400, `Invalid type for 'stream': expected a boolean, but got ${typeName(j.stream)} instead.`, 'stream', 'invalid_type');
  }
  if (strict && j.stream_options != null && j.stream !== true) {
    throw new ApiError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options', null);
  }
  checkRange(j, 'temperature', 0, 2, false);
  checkRange(j, 'top_p', 0, 1, false);
  checkRange(j, 'n', 1, 128, true);
  checkRange(j, 'max_tokens', 1, undefined, true);
  checkRange(j, 'max_completion_tokens', 1, undefined, true);
  checkRange(j, 'presence_penalty', -2, 2, false);
  checkRange(j, 'frequency_penalty', -2, 2, false);
  if (strict && j.max_tokens != null && j.max_completion_tokens != null) {
    throw new ApiError(400, "max_tokens and max_completion_tokens cannot both be set. Please remove one.", 'max_tokens', 'invalid_request_error');
  }
  const toolNames = new Set();
  if (j.tools !== undefined && j.tools !== null) {
    if (!Array.isArray(j.tools)) throw new ApiError(400, `Invalid type for 'tools': expected an array, but got ${typeName(j.tools)} instead.`, 'tools', 'invalid_type');
    j.tools.forEach((t, i) => {
      if (!t || t.type !== 'function' && t.type !== 'custom') {
        throw new ApiError(400, `Invalid value: '${t && t.type}'. Supported values are: 'function' and 'custom'.`, `tools[${i}].type`, 'invalid_value');
      }
      const name = t.type === 'function' ? t.function && t.function.name : t.custom && t.custom.name;
      if (typeof name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(name)) {
        throw new ApiError(400, `Invalid 'tools[${i}].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.`, `tools[${i}].function.name`, 'invalid_value');
      }
      toolNames.add(name);
    });
  }
  if (Array.isArray(j.functions)) for (const f of j.functions) if (f && f.name) toolNames.add(f.name);

  const parts = [];
  let pendingIds = null; // tool_call ids of the last assistant message still waiting for tool messages
  let pendingAt = -1;
  j.messages.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || Array.isArray(m)) {
      throw new ApiError(400, `Invalid type for 'messages[${i}]': expected an object, but got ${typeName(m)} instead.`, `messages[${i}]`, 'invalid_type');
    }
    if (!ROLES.includes(m.role)) {
      if (m.role === undefined) throw new ApiError(400, `Missing required parameter: 'messages[${i}].role'.`, `messages[${i}].role`, 'missing_required_parameter');
      throw new ApiError(400, `Invalid value: '${m.role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.`, `messages[${i}].role`, 'invalid_value');
    }
    if (strict && pendingIds && m.role !== 'tool') {
      throw new ApiError(400, `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${[...pendingIds].join(', ')}`, `messages.[${pendingAt}].role`, null);
    }
    if (m.role === 'system' || m.role === 'developer') {
      parts.push({ role: 'system', items: contentItems(m.content, i, true) });
    } else if (m.role === 'user') {
      if (m.content === undefined) throw new ApiError(400, `Missing required parameter: 'messages[${i}].content'.`, `messages[${i}].content`, 'missing_required_parameter');
      parts.push({ role: 'user', items: contentItems(m.content, i, false) });
    } else if (m.role === 'assistant') {
      const items = m.content == null ? [] : contentItems(m.content, i, true);
      if (Array.isArray(m.tool_calls) && m.tool_calls.length) {
        pendingIds = new Set();
        pendingAt = i;
        m.tool_calls.forEach((tc, k) => {
          if (!tc || typeof tc.id !== 'string') throw new ApiError(400, `Missing required parameter: 'messages[${i}].tool_calls[${k}].id'.`, `messages[${i}].tool_calls[${k}].id`, 'missing_required_parameter');
          if (!tc.function || typeof tc.function.name !== 'string') throw new ApiError(400, `Missing required parameter: 'messages[${i}].tool_calls[${k}].function'.`, `messages[${i}].tool_calls[${k}].function`, 'missing_required_parameter');
          pendingIds.add(tc.id);
          items.push({ kind: 'tool_call', name: tc.function.name, args: tc.function.arguments ?? '{}' });
        });
      } else if (m.function_call && m.function_call.name) {
        items.push({ kind: 'tool_call', name: m.function_call.name, args: m.function_call.arguments ?? '{}' });
      } else if (m.content == null && strict) {
        throw new ApiError(400, `Invalid value for 'content': expected a string, got null.`, `messages.[${i}].content`, null);
      }
      parts.push({ role: 'assistant', items });
    } else if (m.role === 'tool') {
      if (strict) {
        if (!pendingIds || !pendingIds.has(m.tool_call_id)) {
          if (!pendingIds) throw new ApiError(400, "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.", `messages.[${i}].role`, null);
          throw new ApiError(400, `Invalid parameter: 'tool_call_id' of '${m.tool_call_id}' not found in 'tool_calls' of previous message.`, `messages.[${i}].tool_call_id`, null);
        }
        pendingIds.delete(m.tool_call_id);
        if (!pendingIds.size) pendingIds = null;
      }
      parts.push({ role: 'tool', items: [{ kind: 'tool_result', text: contentItems(m.content, i, true).map((it) => it.text ?? '').join(' ') }] });
    } else if (m.role === 'function') {
      parts.push({ role: 'tool', items: [{ kind: 'tool_result', text: String(m.content ?? '') }] });
    }
  });
  if (strict && pendingIds) {
    throw new ApiError(400, `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${[...pendingIds].join(', ')}`, `messages.[${pendingAt}].role`, null);
  }
  let stop = [];
  if (typeof j.stop === 'string') stop = [j.stop];
  else if (Array.isArray(j.stop)) stop = j.stop.filter((s) => typeof s === 'string');
  return { parts, toolNames, maxTokens: j.max_completion_tokens ?? j.max_tokens ?? undefined, stop };
}

function contentItems(content, i, textOnly) {
  if (content === null || content === undefined) return [];
  if (typeof content === 'string') return [{ kind: 'text', text: content }];
  if (!Array.isArray(content)) {
    throw new ApiError(400, `Invalid type for 'messages[${i}].content': expected one of a string or array of objects, but got ${typeName(content)} instead.`, `messages[${i}].content`, 'invalid_type');
  }
  return content.map((p, k) => {
    const type = p && p.type;
    if (type === 'text') return { kind: 'text', text: String(p.text ?? '') };
    if (type === 'refusal') return { kind: 'text', text: String(p.refusal ?? '') };
    if (!textOnly && type === 'image_url') {
      if (!p.image_url || typeof p.image_url.url !== 'string') throw new ApiError(400, `Missing required parameter: 'messages[${i}].content[${k}].image_url'.`, `messages[${i}].content[${k}].image_url`, 'missing_required_parameter');
      return { kind: 'image' };
    }
    if (!textOnly && (type === 'input_audio' || type === 'file')) return { kind: 'other' };
    const allowed = textOnly ? "'text'" : "'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'";
    throw new ApiError(400, `Invalid value: '${type}'. Supported values are: ${allowed}.`, `messages[${i}].content[${k}].type`, 'invalid_value');
  });
}

const FINISH = { stop: 'stop', stop_sequence: 'stop', length: 'length', tool_calls: 'tool_calls' };

function responseModel(ctx, j) {
  if (ctx.provider === 'azure') {
    const d = ctx.params.deployment;
    return (ctx.opts.azureDeployments && ctx.opts.azureDeployments[d]) || d;
  }
  return j.model;
}

function checkModel(ctx, model) {
  const list = ctx.opts.models;
  if (!list || ctx.provider === 'azure' || list.includes(model)) return;
  const f = flavorOf(ctx);
  if (f === 'vllm') { const e = new ApiError(404, `The model \`${model}\` does not exist.`); e.vllmType = 'NotFoundError'; throw e; }
  if (f === 'ollama') throw new ApiError(404, `model "${model}" not found, try pulling it first`, null, null, 'api_error');
  throw new ApiError(404, `The model \`${model}\` does not exist or you do not have access to it.`, null, 'model_not_found');
}

function completionId(ctx) {
  const f = flavorOf(ctx);
  if (f === 'vllm') return 'chatcmpl-' + hexId(32);
  if (f === 'ollama') return 'chatcmpl-' + (100 + Math.floor(Math.random() * 900));
  return 'chatcmpl-' + uniqueId(29);
}

function fingerprint(ctx) {
  const f = flavorOf(ctx);
  if (f === 'ollama') return 'fp_ollama';
  if (f === 'llamacpp') return 'b5000-fake';
  if (f === 'vllm') return undefined;
  return 'fp_f00dfake00';
}

function toolCallsOf(ctx, plan, seed) {
  return plan.toolCalls.map((c, k) => ({
    id: 'call_' + stableId(`${seed}|${k}|${c.name}|${c.argsJson}`, 24),
    type: 'function',
    function: { name: c.name, arguments: c.argsJson },
  }));
}

function usageOf(ctx, plan, n) {
  const f = flavorOf(ctx);
  const completion = plan.outputTokens * n + plan.reasoningTokens * n;
  const u = { prompt_tokens: plan.inputTokens, completion_tokens: completion, total_tokens: plan.inputTokens + completion };
  if (f === 'openai' || f === 'azure') {
    u.prompt_tokens_details = { cached_tokens: plan.cachedTokens, audio_tokens: 0 };
    u.completion_tokens_details = { reasoning_tokens: plan.reasoningTokens * n, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 };
  } else if (f === 'vllm') {
    u.prompt_tokens_details = plan.cachedTokens ? { cached_tokens: plan.cachedTokens } : null;
  }
  return forceUsage(plan, u, ['prompt_tokens', 'completion_tokens', 'total_tokens']);
}

async function chat(ctx) {
  const j = parseBody(ctx);
  const conv = toConversation(ctx, j);
  checkModel(ctx, j.model);
  const plan = makeReply(conv, ctx.behavior);
  const n = j.n || 1;
  const f = flavorOf(ctx);
  const model = responseModel(ctx, j);
  const created = Math.floor(Date.now() / 1000);
  const id = completionId(ctx);
  const seed = ctx.body.length < 4096 ? ctx.body.toString('latin1') : ctx.body.toString('latin1', 0, 4096) + ctx.body.length;
  const toolCalls = toolCallsOf(ctx, plan, seed);
  const finish = FINISH[plan.finish];
  const withUsage = ctx.behavior.usage !== false;
  const headers = { ...baseHeaders(ctx), ...retryHeaders(ctx.behavior, {}) };
  // The bill: what a real provider charges for this completion (the whole generation, even when the client goes
  // away before the end of a stream).
  ctx.fake.billing?.push({ model: j.model, user: j.user, stream: !!j.stream, input_tokens: plan.inputTokens,
    cached_tokens: plan.cachedTokens, output_tokens: plan.outputTokens * n + plan.reasoningTokens * n,
    reasoning_tokens: plan.reasoningTokens * n });

  if (!j.stream) {
    const choices = [];
    for (let i = 0; i < n; i++) {
      const message = { role: 'assistant', content: toolCalls.length ? null : plan.text };
      if (f === 'vllm') { message.reasoning_content = null; message.tool_calls = toolCalls; }
      else if (toolCalls.length) message.tool_calls = toolCalls;
      if (f === 'openai' || f === 'azure') { message.refusal = null; message.annotations = []; }
      const c = { index: i, message, logprobs: null, finish_reason: finish };
      if (f === 'vllm') c.stop_reason = plan.stopSequence;
      if (f === 'azure') c.content_filter_results = toolCalls.length ? {} : AZURE_CHOICE_FILTER;
      choices.push(c);
    }
    const body = { id, object: 'chat.completion', created, model, choices };
    if (withUsage) body.usage = usageOf(ctx, plan, n);
    if (f === 'openai') body.service_tier = 'default';
    const fp = fingerprint(ctx);
    if (fp !== undefined) body.system_fingerprint = fp;
    if (f === 'azure') body.prompt_filter_results = AZURE_PROMPT_FILTER;
    if (f === 'vllm') { body.prompt_logprobs = null; body.kv_transfer_params = null; }
    if (f === 'llamacpp') body.timings = { prompt_n: plan.inputTokens, predicted_n: plan.outputTokens, prompt_ms: 1.0, predicted_ms: 2.0 };
    return ctx.sendJson(200, body, headers);
  }

  // Streaming.
  const so = j.stream_options || {};
  const includeUsage = so.include_usage === true && withUsage;
  const obfuscate = f === 'openai' && so.include_obfuscation !== false;
  const chunks = ctx.behavior.chunks ?? ctx.opts.chunks ?? 4;
  const fp = fingerprint(ctx);
  const events = [];
  let pad = 0;
  const chunk = (choices, usage) => {
    const o = { id, object: 'chat.completion.chunk', created, model };
    if (f === 'openai') o.service_tier = 'default';
    if (fp !== undefined) o.system_fingerprint = fp;
    o.choices = choices;
    if (includeUsage) o.usage = usage ?? null;
    if (obfuscate) o.obfuscation = 'AbCdEfGhIjKlMnOp'.slice(0, 3 + (pad++ % 12));
    return 'data: ' + JSON.stringify(o) + '\n\n';
  };
  const choice = (i, delta, finishReason, filter) => {
    const c = { index: i, delta, logprobs: null, finish_reason: finishReason };
    if (f === 'azure') c.content_filter_results = filter ?? {};
    return c;
  };
  if (f === 'azure') {
    events.push('data: ' + JSON.stringify({ choices: [], created: 0, id: '', model: '', object: '', prompt_filter_results: AZURE_PROMPT_FILTER }) + '\n\n');
  }
  // First chunk: the role (and the first tool call's head).
  const first = [];
  for (let i = 0; i < n; i++) {
    if (toolCalls.length) {
      const tc = toolCalls[0];
      first.push(choice(i, { role: 'assistant', content: null, tool_calls: [{ index: 0, id: tc.id, type: 'function', function: { name: tc.function.name, arguments: '' } }], refusal: null }, null));
    } else {
      const d = f === 'openai' || f === 'azure' ? { role: 'assistant', content: '', refusal: null } : { role: 'assistant', content: '' };
      first.push(choice(i, d, null));
    }
  }
  events.push(chunk(first));
  if (toolCalls.length) {
    toolCalls.forEach((tc, k) => {
      if (k > 0) {
        const head = [];
        for (let i = 0; i < n; i++) head.push(choice(i, { tool_calls: [{ index: k, id: tc.id, type: 'function', function: { name: tc.function.name, arguments: '' } }] }, null));
        events.push(chunk(head));
      }
      for (const frag of splitPieces(tc.function.arguments, chunks)) {
        const cs = [];
        for (let i = 0; i < n; i++) cs.push(choice(i, { tool_calls: [{ index: k, function: { arguments: frag } }] }, null));
        events.push(chunk(cs));
      }
    });
  } else {
    for (const piece of splitPieces(plan.text, chunks)) {
      const cs = [];
      for (let i = 0; i < n; i++) cs.push(choice(i, { content: piece }, null, AZURE_CHOICE_FILTER));
      events.push(chunk(cs));
    }
  }
  const terminalFrom = events.length;
  const fin = [];
  for (let i = 0; i < n; i++) {
    const c = choice(i, {}, finish);
    if (f === 'vllm') c.stop_reason = plan.stopSequence;
    fin.push(c);
  }
  events.push(chunk(fin));
  if (includeUsage) events.push(chunk([], usageOf(ctx, plan, n)));
  events.push('data: [DONE]\n\n');
  const errEvent = () => {
    const e = new ApiError(500, ctx.behavior.message || 'The server had an error while processing your request. Sorry about that!', null, null, 'server_error');
    if (typeof ctx.behavior.midStreamError === 'object') Object.assign(e, ctx.behavior.midStreamError);
    return 'data: ' + JSON.stringify(errorBody(ctx, e)) + '\n\n';
  };
  const malformed = () => 'data: ' + malformedJson(events[Math.min(1, events.length - 1)].slice(6).trimEnd()) + '\n\n';
  await ctx.stream({
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers },
    events,
    terminalFrom,
    errorEvent: errEvent,
    malformedEvent: malformed,
  });
}

function embeddingDims(model, opts) {
  if (/3-large/.test(model || '')) return 3072;
  if (/3-small|ada-002/.test(model || '')) return 1536;
  return opts.embeddingDims || 1536;
}

function embeddings(ctx) {
  const j = parseBody(ctx);
  if (ctx.provider !== 'openai-compatible') {
    for (const k of Object.keys(j)) if (!EMB_PARAMS.has(k)) throw new ApiError(400, `Unrecognized request argument supplied: ${k}`);
  }
  if (ctx.provider !== 'azure' && !j.model) throw new ApiError(400, 'you must provide a model parameter');
  checkModel(ctx, j.model);
  if (j.input === undefined || j.input === null) throw new ApiError(400, "Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
  const fmt = j.encoding_format ?? 'float';
  if (fmt !== 'float' && fmt !== 'base64') throw new ApiError(400, `Invalid value: '${fmt}'. Supported values are: 'float' and 'base64'.`, 'encoding_format', 'invalid_value');
  const model = ctx.provider === 'azure' ? responseModel(ctx, j) : j.model;
  let dims = embeddingDims(model, ctx.opts);
  if (j.dimensions !== undefined) {
    if (/ada-002/.test(model || '')) throw new ApiError(400, 'This model does not support specifying dimensions.', null, null);
    if (!Number.isInteger(j.dimensions) || j.dimensions < 1) throw new ApiError(400, `Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got ${j.dimensions} instead.`, 'dimensions', 'integer_below_min_value');
    dims = j.dimensions;
  }
  // input: string | string[] | number[] (tokens) | number[][]
  let inputs;
  if (typeof j.input === 'string') inputs = [j.input];
  else if (Array.isArray(j.input) && j.input.length && j.input.every((x) => typeof x === 'number')) inputs = [j.input];
  else if (Array.isArray(j.input)) inputs = j.input;
  else throw new ApiError(400, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", null, null);
  if (!inputs.length) throw new ApiError(400, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", null, null);
  let tokens = 0;
  const data = inputs.map((x, i) => {
    let text;
    if (typeof x === 'string') { if (!x.length) throw new ApiError(400, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", null, null); text = x; tokens += textTokensOf(x); }
    else if (Array.isArray(x) && x.every((t) => Number.isInteger(t))) { text = 'tokens:' + x.join(','); tokens += x.length; }
    else throw new ApiError(400, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", null, null);
    const vec = embedding(text, dims);
    return { object: 'embedding', index: i, embedding: fmt === 'base64' ? embeddingBase64(vec) : vec };
  });
  const body = { object: 'list', data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
  ctx.sendJson(200, body, baseHeaders(ctx));
}

const DEFAULT_MODELS = ['gpt-4o-mini', 'gpt-4o', 'gpt-4.1', 'o3-mini', 'text-embedding-3-small', 'text-embedding-3-large'];

function modelObj(ctx, id) {
  const owned = { vllm: 'vllm', ollama: 'library', llamacpp: 'llamacpp' }[flavorOf(ctx)] || 'system';
  return { id, object: 'model', created: 1715367049, owned_by: owned };
}

function models(ctx) {
  const list = ctx.opts.models || DEFAULT_MODELS;
  ctx.sendJson(200, { object: 'list', data: list.map((id) => modelObj(ctx, id)) }, baseHeaders(ctx));
}

function model(ctx) {
  const list = ctx.opts.models || DEFAULT_MODELS;
  if (!list.includes(ctx.params.id)) {
    return sendError(ctx, new ApiError(404, `The model '${ctx.params.id}' does not exist`, 'model', 'model_not_found'));
  }
  ctx.sendJson(200, modelObj(ctx, ctx.params.id), baseHeaders(ctx));
}
