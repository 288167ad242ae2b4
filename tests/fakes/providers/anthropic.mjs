// Anthropic Messages API: POST /v1/messages (+ SSE streaming), POST /v1/messages/count_tokens, GET /v1/models.
import { makeReply, splitPieces, stableId, uniqueId, malformedJson, inputTokens, forceUsage } from '../content.mjs';

export function route(method, path) {
  if (method === 'POST' && path === '/v1/messages') return { provider: 'anthropic', op: 'messages', params: {} };
  if (method === 'POST' && path === '/v1/messages/count_tokens') return { provider: 'anthropic', op: 'count_tokens', params: {} };
  if (method === 'GET' && path === '/v1/models') return { provider: 'anthropic', op: 'models', params: {} };
  const m = /^\/v1\/models\/(.+)$/.exec(path);
  if (method === 'GET' && m) return { provider: 'anthropic', op: 'model', params: { id: decodeURIComponent(m[1]) } };
  return null;
}

export const ANTHROPIC_VERSIONS = new Set(['2023-01-01', '2023-06-01', '2026-10-21']);
// API version 2026-10-21 removed the sampling parameters and tightened message content rules.
const V2026 = '2026-10-21';

const PARAMS = new Set(['model', 'messages', 'max_tokens', 'metadata', 'stop_sequences', 'stream', 'system', 'temperature',
  'tool_choice', 'tools', 'top_k', 'top_p', 'thinking', 'service_tier', 'container', 'mcp_servers', 'context_management',
  'output_format', 'output_config', 'inference_geo', 'thread']);
const COUNT_PARAMS = new Set(['model', 'messages', 'system', 'tools', 'tool_choice', 'thinking', 'mcp_servers', 'context_management', 'output_format', 'output_config']);
const BLOCK_TYPES = ['text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking', 'search_result',
  'server_tool_use', 'web_search_tool_result', 'container_upload'];

class ApiError {
  constructor(status, type, message) { Object.assign(this, { status, type, message }); }
}

const invalid = (message) => new ApiError(400, 'invalid_request_error', message);

function requestId() { return 'req_011C' + uniqueId(20); }

function baseHeaders(ctx, rid) {
  const reset = new Date(Date.now() + 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    'request-id': rid,
    'anthropic-organization-id': 'a7f3c2d1-0000-4000-8000-fake00000000',
    'anthropic-ratelimit-requests-limit': '4000', 'anthropic-ratelimit-requests-remaining': '3999', 'anthropic-ratelimit-requests-reset': reset,
    'anthropic-ratelimit-tokens-limit': '2000000', 'anthropic-ratelimit-tokens-remaining': '1999000', 'anthropic-ratelimit-tokens-reset': reset,
    'anthropic-ratelimit-input-tokens-limit': '1600000', 'anthropic-ratelimit-input-tokens-remaining': '1599000', 'anthropic-ratelimit-input-tokens-reset': reset,
    'anthropic-ratelimit-output-tokens-limit': '400000', 'anthropic-ratelimit-output-tokens-remaining': '400000', 'anthropic-ratelimit-output-tokens-reset': reset,
  };
}

function sendError(ctx, e, headers = {}) {
  const rid = headers['request-id'] || requestId();
  ctx.sendJson(e.status, { type: 'error', error: { type: e.type, message: e.message }, request_id: rid }, { ...baseHeaders(ctx, rid), ...headers, 'request-id': rid, 'x-should-retry': String(e.status >= 500 || e.status === 429 || e.status === 408 || e.status === 409) });
}

const STATUS_ERRORS = {
  400: ['invalid_request_error', 'Bad request'],
  401: ['authentication_error', 'invalid x-api-key'],
  403: ['permission_error', 'Your API key does not have permission to use the specified resource.'],
  404: ['not_found_error', 'Not found'],
  408: ['timeout_error', 'Request timed out'],
  413: ['request_too_large', 'Request exceeds the maximum allowed number of bytes.'],
  429: ['rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit (https://docs.claude.com/en/api/rate-limits); see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.'],
  500: ['api_error', 'Internal server error'],
  529: ['overloaded_error', 'Overloaded'],
};

function scriptedError(ctx, status) {
  const b = ctx.behavior;
  const rid = requestId();
  const h = { ...baseHeaders(ctx, rid) };
  if (b.retryAfter !== undefined) h['retry-after'] = String(Math.ceil(b.retryAfter));
  if (status === 429) {
    const reset = new Date(Date.now() + (b.retryAfter ?? 1) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    h['anthropic-ratelimit-requests-remaining'] = '0';
    h['anthropic-ratelimit-requests-reset'] = reset;
    h['anthropic-ratelimit-input-tokens-remaining'] = '0';
    h['anthropic-ratelimit-input-tokens-reset'] = reset;
  }
  if (status === 502) {
    ctx.send(502, { 'content-type': 'text/html', ...h }, '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n');
    return;
  }
  const [type, message] = STATUS_ERRORS[status] || (status >= 500 ? ['api_error', 'Internal server error'] : ['invalid_request_error', 'Bad request']);
  const e = new ApiError(status, type, b.message || message);
  if (b.shouldRetry !== undefined) h['x-should-retry'] = String(!!b.shouldRetry);
  const rest = { ...h };
  ctx.sendJson(status, { type: 'error', error: { type: e.type, message: e.message }, request_id: rid },
    { 'x-should-retry': String(status >= 500 || status === 429 || status === 408), ...rest });
}

// API keys are accepted as `x-api-key` or, as the SDKs send them since API version 2026-10-21,
// `Authorization: Bearer <key>`.
function checkAuth(ctx) {
  if (ctx.skipAuth) return true;
  const bearer = /^Bearer\s+(.+)$/i.exec(ctx.headers.authorization || '');
  const key = ctx.headers['x-api-key'] ?? (bearer ? bearer[1].trim() : undefined);
  const want = [].concat(ctx.opts.keys.anthropic || []);
  if (want.length && key === undefined) {
    sendError(ctx, new ApiError(401, 'authentication_error', 'x-api-key header is required'));
    return false;
  }
  if (want.length && !want.includes(key)) {
    sendError(ctx, new ApiError(401, 'authentication_error', 'invalid x-api-key'));
    return false;
  }
  const v = ctx.headers['anthropic-version'];
  if (v === undefined) {
    sendError(ctx, invalid('anthropic-version: header is required'));
    return false;
  }
  if (!ANTHROPIC_VERSIONS.has(v)) {
    sendError(ctx, invalid(`anthropic-version: invalid version: "${v}"`));
    return false;
  }
  return true;
}

export async function handle(ctx) {
  if (!checkAuth(ctx)) return;
  if (ctx.behavior.status && ctx.behavior.status >= 400) return scriptedError(ctx, ctx.behavior.status);
  try {
    if (ctx.op === 'messages') return await messages(ctx);
    if (ctx.op === 'count_tokens') return countTokens(ctx);
    if (ctx.op === 'models') return models(ctx);
    if (ctx.op === 'model') return model(ctx);
  } catch (e) {
    if (e instanceof ApiError) return sendError(ctx, e);
    throw e;
  }
}

function parseBody(ctx) {
  let j;
  try { j = ctx.json(); } catch { throw invalid('The request body is not valid JSON.'); }
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw invalid('Input should be a valid dictionary or object to extract fields from');
  return j;
}

function blockItems(content, where, role, ids) {
  if (typeof content === 'string') return [{ kind: 'text', text: content }];
  if (!Array.isArray(content)) throw invalid(`${where}.content: Input should be a valid list`);
  return content.map((b, k) => {
    const w = `${where}.content.${k}`;
    if (!b || typeof b !== 'object') throw invalid(`${w}: Input should be a valid dictionary or object to extract fields from`);
    if (!BLOCK_TYPES.includes(b.type)) {
      throw invalid(`${w}: Input tag '${b.type}' found using 'type' does not match any of the expected tags: ${BLOCK_TYPES.map((t) => `'${t}'`).join(', ')}`);
    }
    switch (b.type) {
      case 'text':
        if (typeof b.text !== 'string') throw invalid(`${w}.text: Field required`);
        return { kind: 'text', text: b.text };
      case 'image':
        if (!b.source || typeof b.source !== 'object') throw invalid(`${w}.source: Field required`);
        return { kind: 'image' };
      case 'tool_use':
        if (role !== 'assistant') throw invalid(`${w}: tool_use blocks can only be in assistant messages`);
        if (typeof b.id !== 'string') throw invalid(`${w}.id: Field required`);
        if (typeof b.name !== 'string') throw invalid(`${w}.name: Field required`);
        if (b.input === undefined) throw invalid(`${w}.input: Field required`);
        ids.uses.push(b.id);
        return { kind: 'tool_call', name: b.name, args: b.input };
      case 'tool_result': {
        if (role !== 'user') throw invalid(`${w}: tool_result blocks can only be in user messages`);
        if (typeof b.tool_use_id !== 'string') throw invalid(`${w}.tool_use_id: Field required`);
        ids.results.push([b.tool_use_id, k]);
        let text = '';
        if (typeof b.content === 'string') text = b.content;
        else if (Array.isArray(b.content)) {
          text = b.content.map((c) => (c && c.type === 'text' ? c.text : c && c.type === 'image' ? '[image]' : '')).filter((s) => s !== '').join(' ');
        }
        return { kind: 'tool_result', text };
      }
      default:
        return { kind: 'other' };
    }
  });
}

function toConversation(j, count, version) {
  const allowed = count ? COUNT_PARAMS : PARAMS;
  for (const k of Object.keys(j)) if (!allowed.has(k)) throw invalid(`${k}: Extra inputs are not permitted`);
  if (j.model === undefined) throw invalid('model: Field required');
  if (typeof j.model !== 'string') throw invalid('model: Input should be a valid string');
  if (!count) {
    if (j.max_tokens === undefined) throw invalid('max_tokens: Field required');
    if (!Number.isInteger(j.max_tokens)) throw invalid('max_tokens: Input should be a valid integer');
    if (j.max_tokens < 1) throw invalid('max_tokens: Input should be greater than or equal to 1');
  }
  if (j.messages === undefined) throw invalid('messages: Field required');
  if (!Array.isArray(j.messages)) throw invalid('messages: Input should be a valid list');
  if (version === V2026) {
    for (const k of ['temperature', 'top_p', 'top_k']) {
      if (j[k] !== undefined) throw invalid(`${k}: \`${k}\` is not supported in API version ${V2026}; remove it or send anthropic-version: 2023-06-01.`);
    }
  }
  if (j.temperature !== undefined && (typeof j.temperature !== 'number' || j.temperature < 0 || j.temperature > 1)) {
    throw invalid(typeof j.temperature !== 'number' ? 'temperature: Input should be a valid number' : j.temperature < 0 ? 'temperature: Input should be greater than or equal to 0' : 'temperature: Input should be less than or equal to 1');
  }
  if (j.top_p !== undefined && (typeof j.top_p !== 'number' || j.top_p < 0 || j.top_p > 1)) throw invalid('top_p: Input should be less than or equal to 1');
  if (j.stream !== undefined && typeof j.stream !== 'boolean') throw invalid('stream: Input should be a valid boolean');
  if (j.stop_sequences !== undefined && (!Array.isArray(j.stop_sequences) || j.stop_sequences.some((s) => typeof s !== 'string'))) {
    throw invalid('stop_sequences: Input should be a valid list');
  }
  const parts = [];
  if (j.system !== undefined) {
    if (typeof j.system === 'string') parts.push({ role: 'system', items: [{ kind: 'text', text: j.system }] });
    else if (Array.isArray(j.system)) {
      parts.push({
        role: 'system',
        items: j.system.map((b, k) => {
          if (!b || b.type !== 'text' || typeof b.text !== 'string') throw invalid(`system.${k}: Input should be a valid dictionary or object with type 'text'`);
          return { kind: 'text', text: b.text };
        }),
      });
    } else throw invalid('system: Input should be a valid string');
  }
  const toolNames = new Set();
  if (j.tools !== undefined) {
    if (!Array.isArray(j.tools)) throw invalid('tools: Input should be a valid list');
    j.tools.forEach((t, k) => {
      if (!t || typeof t.name !== 'string') throw invalid(`tools.${k}.name: Field required`);
      if ((t.type === undefined || t.type === 'custom') && (t.input_schema === undefined || typeof t.input_schema !== 'object')) {
        throw invalid(`tools.${k}.custom.input_schema: Field required`);
      }
      if (!/^[a-zA-Z0-9_-]{1,128}$/.test(t.name)) throw invalid(`tools.${k}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`);
      toolNames.add(t.name);
    });
  }
  let prevUses = [];
  j.messages.forEach((m, i) => {
    if (!m || typeof m !== 'object') throw invalid(`messages.${i}: Input should be a valid dictionary`);
    if (m.role === 'system') {
      // mid-conversation system messages (text only); they sit between turns without breaking tool pairing
      const texts = typeof m.content === 'string' ? [m.content] : Array.isArray(m.content) ? m.content.map((b, k) => {
        if (!b || b.type !== 'text' || typeof b.text !== 'string') throw invalid(`messages.${i}.content.${k}: system messages hold text blocks`);
        return b.text;
      }) : null;
      if (texts === null) throw invalid(`messages.${i}.content: Input should be a valid string or list`);
      parts.push({ role: 'system', items: texts.map((text) => ({ kind: 'text', text })) });
      return;
    }
    if (m.role !== 'user' && m.role !== 'assistant') throw invalid(`messages.${i}.role: Input should be 'user' or 'assistant'`);
    if (m.content === undefined) throw invalid(`messages.${i}.content: Field required`);
    const isFinalAssistant = i === j.messages.length - 1 && m.role === 'assistant';
    if (!isFinalAssistant && (m.content === '' || (Array.isArray(m.content) && !m.content.length))) {
      throw invalid(`messages.${i}: all messages must have non-empty content except for the optional final assistant message`);
    }
    const ids = { uses: [], results: [] };
    if (version === V2026 && Array.isArray(m.content)) {
      m.content.forEach((b, k) => {
        if (m.role === 'assistant' && b && b.type === 'document') throw invalid(`messages.${i}.content.${k}: document blocks are not allowed in assistant messages in API version ${V2026}.`);
        if (m.role === 'user' && b && b.type === 'text' && Array.isArray(b.citations) && b.citations.length) {
          throw invalid(`messages.${i}.content.${k}.citations: citations on text blocks in user messages are not allowed in API version ${V2026}.`);
        }
      });
    }
    const items = blockItems(m.content, `messages.${i}`, m.role, ids);
    if (prevUses.length) {
      const got = new Set(ids.results.map(([id]) => id));
      const missing = prevUses.filter((id) => !got.has(id));
      if (missing.length) {
        throw invalid(`messages.${i}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${missing.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`);
      }
    }
    const allowedIds = new Set(prevUses);
    for (const [id, k] of ids.results) {
      if (!allowedIds.has(id)) {
        throw invalid(`messages.${i}.content.${k}: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${id}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`);
      }
    }
    prevUses = ids.uses;
    parts.push({ role: m.role, items });
  });
  if (prevUses.length && !count) {
    throw invalid(`messages.${j.messages.length - 1}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${prevUses.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`);
  }
  return { parts, toolNames, maxTokens: j.max_tokens, stop: j.stop_sequences || [] };
}

const STOP = { stop: 'end_turn', stop_sequence: 'stop_sequence', length: 'max_tokens', tool_calls: 'tool_use' };

function usageOf(plan) {
  const input = Math.max(0, plan.inputTokens - plan.cachedTokens - plan.cacheWriteTokens);
  return forceUsage(plan, {
    input_tokens: input,
    cache_creation_input_tokens: plan.cacheWriteTokens,
    cache_read_input_tokens: plan.cachedTokens,
    cache_creation: { ephemeral_5m_input_tokens: plan.cacheWriteTokens, ephemeral_1h_input_tokens: 0 },
    output_tokens: plan.outputTokens,
    service_tier: 'standard',
  }, ['input_tokens', 'output_tokens']);
}

function checkModel(ctx, model) {
  if (ctx.opts.models && !ctx.opts.models.includes(model)) throw new ApiError(404, 'not_found_error', `model: ${model}`);
}

async function messages(ctx) {
  const j = parseBody(ctx);
  const conv = toConversation(j, false, ctx.headers['anthropic-version']);
  checkModel(ctx, j.model);
  const plan = makeReply(conv, ctx.behavior);
  const rid = requestId();
  const headers = baseHeaders(ctx, rid);
  const id = 'msg_01' + uniqueId(22);
  const seed = ctx.body.length < 4096 ? ctx.body.toString('latin1') : ctx.body.toString('latin1', 0, 4096) + ctx.body.length;
  const tools = plan.toolCalls.map((c, k) => ({ type: 'tool_use', id: 'toolu_01' + stableId(`${seed}|${k}|${c.name}|${c.argsJson}`, 22), name: c.name, input: c.args }));
  const stopReason = STOP[plan.finish];
  const stopSequence = plan.finish === 'stop_sequence' ? plan.stopSequence : null;
  const withUsage = ctx.behavior.usage !== false;
  // The bill (as openai.mjs): the whole generation, even when the client goes away before the end of a stream.
  ctx.fake.billing?.push({ model: j.model, user: j.metadata?.user_id, stream: !!j.stream, input_tokens: plan.inputTokens,
    cached_tokens: plan.cachedTokens, output_tokens: plan.outputTokens, reasoning_tokens: 0 });
  if (!j.stream) {
    const content = tools.length ? tools : [{ type: 'text', text: plan.text }];
    const body = { id, type: 'message', role: 'assistant', model: j.model, content, stop_reason: stopReason, stop_sequence: stopSequence };
    if (withUsage) body.usage = usageOf(plan);
    return ctx.sendJson(200, body, headers);
  }
  const chunks = ctx.behavior.chunks ?? ctx.opts.chunks ?? 4;
  const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
  const events = [];
  const startUsage = withUsage ? { ...usageOf(plan), output_tokens: 1 } : undefined;
  const startMsg = { id, type: 'message', role: 'assistant', model: j.model, content: [], stop_reason: null, stop_sequence: null };
  if (startUsage) startMsg.usage = startUsage;
  events.push(ev('message_start', { type: 'message_start', message: startMsg }));
  if (tools.length) {
    tools.forEach((t, k) => {
      events.push(ev('content_block_start', { type: 'content_block_start', index: k, content_block: { type: 'tool_use', id: t.id, name: t.name, input: {} } }));
      if (k === 0) events.push(ev('ping', { type: 'ping' }));
      events.push(ev('content_block_delta', { type: 'content_block_delta', index: k, delta: { type: 'input_json_delta', partial_json: '' } }));
      for (const frag of splitPieces(JSON.stringify(t.input), chunks)) {
        events.push(ev('content_block_delta', { type: 'content_block_delta', index: k, delta: { type: 'input_json_delta', partial_json: frag } }));
      }
      events.push(ev('content_block_stop', { type: 'content_block_stop', index: k }));
    });
  } else {
    events.push(ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }));
    events.push(ev('ping', { type: 'ping' }));
    for (const piece of splitPieces(plan.text, chunks)) {
      events.push(ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: piece } }));
    }
    events.push(ev('content_block_stop', { type: 'content_block_stop', index: 0 }));
  }
  const terminalFrom = events.length;
  const md = { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: stopSequence } };
  if (withUsage) md.usage = forceUsage(plan, { output_tokens: plan.outputTokens }, ['output_tokens']);
  events.push(ev('message_delta', md));
  events.push(ev('message_stop', { type: 'message_stop' }));
  const errorEvent = () => {
    const m = typeof ctx.behavior.midStreamError === 'object' ? ctx.behavior.midStreamError : {};
    return ev('error', { type: 'error', error: { type: m.type || 'overloaded_error', message: m.message || ctx.behavior.message || 'Overloaded' }, request_id: rid });
  };
  const malformedEvent = () => `event: content_block_delta\ndata: ${malformedJson(JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'partial' } }))}\n\n`;
  await ctx.stream({
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers },
    events,
    terminalFrom,
    errorEvent,
    malformedEvent,
  });
}

function countTokens(ctx) {
  const j = parseBody(ctx);
  const conv = toConversation(j, true, ctx.headers['anthropic-version']);
  checkModel(ctx, j.model);
  ctx.sendJson(200, { input_tokens: inputTokens(conv) }, baseHeaders(ctx, requestId()));
}

const DEFAULT_MODELS = [
  ['claude-sonnet-4-5-20250929', 'Claude Sonnet 4.5', '2025-09-29T00:00:00Z'],
  ['claude-haiku-4-5-20251001', 'Claude Haiku 4.5', '2025-10-01T00:00:00Z'],
  ['claude-3-5-haiku-20241022', 'Claude Haiku 3.5', '2024-10-22T00:00:00Z'],
];

function modelList(ctx) {
  return ctx.opts.models ? ctx.opts.models.map((m) => [m, m, '2025-01-01T00:00:00Z']) : DEFAULT_MODELS;
}

function models(ctx) {
  const data = modelList(ctx).map(([id, display_name, created_at]) => ({ type: 'model', id, display_name, created_at }));
  ctx.sendJson(200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null }, baseHeaders(ctx, requestId()));
}

function model(ctx) {
  const m = modelList(ctx).find(([id]) => id === ctx.params.id);
  if (!m) throw new ApiError(404, 'not_found_error', `model: ${ctx.params.id}`);
  ctx.sendJson(200, { type: 'model', id: m[0], display_name: m[1], created_at: m[2] }, baseHeaders(ctx, requestId()));
}
