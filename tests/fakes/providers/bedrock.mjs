// AWS Bedrock runtime: POST /model/{modelId}/converse, /model/{modelId}/converse-stream and /model/{modelId}/count-tokens.
// Every request must carry a valid SigV4 signature (service "bedrock") made with the configured test credentials,
// or, when opts.keys.bedrockApiKey is set, a Bedrock API key as `Authorization: Bearer`. ConverseStream answers
// in the binary AWS event-stream framing (eventstream.mjs).
import { makeReply, splitPieces, stableId, hexId, forceUsage, inputTokens } from '../content.mjs';
import { verifySigV4 } from '../sigv4.mjs';
import { eventFrame, exceptionFrame } from '../eventstream.mjs';
import { createHash } from 'node:crypto';

export function route(method, path) {
  const m = /^\/model\/([^/]+)\/(converse|converse-stream|count-tokens)$/.exec(path);
  if (!m || method !== 'POST') return null;
  let modelId = m[1];
  try { modelId = decodeURIComponent(m[1]); } catch { /* keep raw */ }
  const op = m[2] === 'converse' ? 'converse' : m[2] === 'count-tokens' ? 'countTokens' : 'converseStream';
  return { provider: 'bedrock', op, params: { modelId, rawModelId: m[1] } };
}

// CountTokens (POST /model/{id}/count-tokens): {input: {converse: {messages, system, toolConfig}}} -> {inputTokens}.
// Models without token counting answer the service's ValidationException (opts.noCountModels).
function countTokens(ctx) {
  let j;
  try { j = ctx.json(); } catch { throw new AwsError(400, 'SerializationException', 'Unable to parse request body as JSON.'); }
  const conv = j && j.input && j.input.converse;
  if (!conv || typeof conv !== 'object') throw validation("Value at 'input' failed to satisfy constraint: Member must not be null.");
  if ((ctx.opts.noCountModels || []).includes(ctx.params.modelId)) throw validation("The provided model doesn't support counting tokens.");
  ctx.sendJson(200, { inputTokens: inputTokens(toConversation(conv)) }, { 'x-amzn-requestid': uuid() });
}

// x-amzn-ErrorType as the service sends it: the shape name, then ':' and the Coral namespace. SDKs keep the part
// before the ':'; a gateway must do the same.
const NS_BEDROCK = ':http://internal.amazon.com/coral/com.amazon.bedrock/';
const NS_CORAL = ':http://internal.amazon.com/coral/com.amazon.coral.service/';

class AwsError {
  constructor(status, type, message) { Object.assign(this, { status, type, message }); }
}
const validation = (m) => new AwsError(400, 'ValidationException', m);

function uuid() {
  const h = hexId(32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function sendError(ctx, e, ns = NS_BEDROCK) {
  ctx.sendJson(e.status, { message: e.message }, { 'x-amzn-RequestId': uuid(), 'x-amzn-ErrorType': e.type + ns });
}

const STATUS = {
  400: ['ValidationException', 'The provided request is not valid.'],
  403: ['AccessDeniedException', "You don't have access to the model with the specified model ID."],
  404: ['ResourceNotFoundException', 'Could not resolve the foundation model from the provided model identifier.'],
  408: ['ModelTimeoutException', 'Model has timed out in processing the request. Try your request again.'],
  424: ['ModelErrorException', 'The system encountered an unexpected error during processing. Try your request again.'],
  429: ['ThrottlingException', 'Too many requests, please wait before trying again.'],
  500: ['InternalServerException', 'The system encountered an unexpected error during processing. Try your request again.'],
  503: ['ServiceUnavailableException', 'Bedrock is unable to process your request.'],
};

function regionOf(ctx) {
  const m = /^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com/.exec(ctx.headers.host || '');
  return m ? m[1] : ctx.opts.region;
}

function checkAuth(ctx) {
  if (ctx.skipAuth) return true;
  const apiKey = ctx.opts.keys.bedrockApiKey;
  const bearer = /^Bearer\s+(.+)$/i.exec(ctx.headers.authorization || '');
  if (bearer && apiKey) {
    if ([].concat(apiKey).includes(bearer[1].trim())) return true;
    sendError(ctx, new AwsError(403, 'UnrecognizedClientException', 'Invalid API Key format: Must start with pre-defined prefix'), NS_CORAL);
    return false;
  }
  const creds = [].concat(ctx.opts.keys.bedrock || []);
  if (!creds.length) return true;
  const r = verifySigV4({
    method: ctx.req.method,
    rawPath: ctx.path,
    rawQuery: ctx.rawQuery,
    headerPairs: pairs(ctx.req.rawHeaders),
    body: ctx.body,
    credentials: creds,
    service: 'bedrock',
    region: regionOf(ctx),
    maxSkewMs: ctx.opts.sigv4MaxSkewMs,
  });
  if (r.ok) return true;
  sendError(ctx, new AwsError(r.status, r.type, r.message), NS_CORAL);
  return false;
}

function pairs(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i], raw[i + 1]]);
  return out;
}

export async function handle(ctx) {
  if (!checkAuth(ctx)) return;
  const b = ctx.behavior;
  if (b.status && b.status >= 400) {
    const [type, message] = STATUS[b.status] || (b.status >= 500 ? STATUS[503] : STATUS[400]);
    return sendError(ctx, new AwsError(b.status, b.errorType || type, b.message || message));
  }
  try {
    if (ctx.op === 'countTokens') return countTokens(ctx);
    await converse(ctx);
  } catch (e) {
    if (e instanceof AwsError) return sendError(ctx, e);
    throw e;
  }
}

function only(block, where) {
  if (!block || typeof block !== 'object' || Array.isArray(block)) throw validation(`Value at '${where}' must be an object.`);
  const keys = Object.keys(block);
  if (keys.length !== 1) {
    throw validation(keys.length ? `Only one field can be set in the union ${where}, but ${keys.length} were set: [${keys.join(', ')}]`
      : `The union ${where} must have exactly one member set.`);
  }
  return keys[0];
}

function toolResultText(content) {
  if (!Array.isArray(content)) return '';
  return content.map((c) => {
    if (!c) return '';
    if (typeof c.text === 'string') return c.text;
    if (c.json !== undefined) return JSON.stringify(c.json);
    if (c.image) return '[image]';
    return '';
  }).filter((s) => s !== '').join(' ');
}

function toConversation(j) {
  const parts = [];
  if (j.system !== undefined) {
    if (!Array.isArray(j.system)) throw validation("Value at 'system' failed to satisfy constraint: Member must be a list.");
    parts.push({
      role: 'system',
      items: j.system.map((s, k) => {
        const key = only(s, `system.${k}.member`);
        if (key === 'text') return { kind: 'text', text: String(s.text) };
        if (key === 'guardContent' || key === 'cachePoint') return { kind: 'other' };
        throw validation(`Unknown member ${key} in system.${k}.member`);
      }),
    });
  }
  const tc = j.toolConfig;
  const toolNames = new Set();
  if (tc !== undefined) {
    if (!tc || !Array.isArray(tc.tools) || !tc.tools.length) {
      throw validation("1 validation error detected: Value '[]' at 'toolConfig.tools' failed to satisfy constraint: Member must have length greater than or equal to 1");
    }
    tc.tools.forEach((t, k) => {
      const key = only(t, `toolConfig.tools.${k}.member`);
      if (key === 'toolSpec') {
        if (!t.toolSpec || typeof t.toolSpec.name !== 'string') throw validation(`1 validation error detected: Value null at 'toolConfig.tools.${k + 1}.member.toolSpec.name' failed to satisfy constraint: Member must not be null`);
        if (!t.toolSpec.inputSchema || t.toolSpec.inputSchema.json === undefined) throw validation(`1 validation error detected: Value null at 'toolConfig.tools.${k + 1}.member.toolSpec.inputSchema' failed to satisfy constraint: Member must not be null`);
        toolNames.add(t.toolSpec.name);
      }
    });
  }
  if (j.messages === undefined || j.messages === null) {
    throw validation("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null");
  }
  if (!Array.isArray(j.messages)) throw validation("Value at 'messages' failed to satisfy constraint: Member must be a list.");
  if (!j.messages.length) throw validation('A conversation must start with a user message. Try again with a conversation that starts with a user message.');
  let prevUses = [];
  j.messages.forEach((m, i) => {
    if (!m || (m.role !== 'user' && m.role !== 'assistant')) {
      throw validation(`1 validation error detected: Value '${m && m.role}' at 'messages.${i + 1}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]`);
    }
    if (i === 0 && m.role !== 'user') throw validation('A conversation must start with a user message. Try again with a conversation that starts with a user message.');
    if (i > 0 && m.role === j.messages[i - 1].role) {
      throw validation('A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.');
    }
    if (!Array.isArray(m.content) || !m.content.length) {
      throw validation(`The content field in the Message object at messages.${i} is empty. Add a ContentBlock object to the content field and try again.`);
    }
    const uses = [];
    const results = [];
    const items = m.content.map((c, k) => {
      const key = only(c, `messages.${i}.content.${k}`);
      switch (key) {
        case 'text': return { kind: 'text', text: String(c.text) };
        case 'image':
          if (!c.image || !c.image.format || !c.image.source) throw validation(`1 validation error detected: Value null at 'messages.${i + 1}.member.content.${k + 1}.member.image.source' failed to satisfy constraint: Member must not be null`);
          return { kind: 'image' };
        case 'toolUse':
          if (!c.toolUse || typeof c.toolUse.toolUseId !== 'string' || typeof c.toolUse.name !== 'string') throw validation(`1 validation error detected: Value null at 'messages.${i + 1}.member.content.${k + 1}.member.toolUse.toolUseId' failed to satisfy constraint: Member must not be null`);
          if (m.role !== 'assistant') throw validation(`messages.${i}.content.${k}: toolUse blocks are only allowed in assistant messages.`);
          uses.push(c.toolUse.toolUseId);
          return { kind: 'tool_call', name: c.toolUse.name, args: c.toolUse.input ?? {} };
        case 'toolResult':
          if (!c.toolResult || typeof c.toolResult.toolUseId !== 'string') throw validation(`1 validation error detected: Value null at 'messages.${i + 1}.member.content.${k + 1}.member.toolResult.toolUseId' failed to satisfy constraint: Member must not be null`);
          results.push(c.toolResult.toolUseId);
          return { kind: 'tool_result', text: toolResultText(c.toolResult.content) };
        case 'document': case 'video': case 'guardContent': case 'cachePoint': case 'reasoningContent': case 'citationsContent':
          return { kind: 'other' };
        default:
          throw validation(`Unknown member ${key} in messages.${i}.content.${k}`);
      }
    });
    if ((uses.length || results.length) && tc === undefined) {
      throw validation('The toolConfig field must be defined when using toolUse and toolResult content blocks.');
    }
    if (results.length > prevUses.length) {
      throw validation(`The number of toolResult blocks at messages.${i}.content exceeds the number of toolUse blocks of previous turn.`);
    }
    const missing = prevUses.filter((id) => !results.includes(id));
    if (missing.length) {
      throw validation(`Expected toolResult blocks at messages.${i}.content for the following Ids: ${missing.join(', ')}`);
    }
    prevUses = uses;
    parts.push({ role: m.role, items });
  });
  const ic = j.inferenceConfig || {};
  if (ic.maxTokens !== undefined && (!Number.isInteger(ic.maxTokens) || ic.maxTokens < 1)) {
    throw validation(`1 validation error detected: Value '${ic.maxTokens}' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1`);
  }
  if (ic.temperature !== undefined && (typeof ic.temperature !== 'number' || ic.temperature < 0 || ic.temperature > 1)) {
    throw validation(`1 validation error detected: Value '${ic.temperature}' at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1`);
  }
  if (ic.topP !== undefined && (typeof ic.topP !== 'number' || ic.topP < 0 || ic.topP > 1)) {
    throw validation(`1 validation error detected: Value '${ic.topP}' at 'inferenceConfig.topP' failed to satisfy constraint: Member must have value less than or equal to 1`);
  }
  return { parts, toolNames, maxTokens: ic.maxTokens, stop: Array.isArray(ic.stopSequences) ? ic.stopSequences : [] };
}

const STOP = { stop: 'end_turn', stop_sequence: 'stop_sequence', length: 'max_tokens', tool_calls: 'tool_use' };

function usageOf(plan) {
  const input = Math.max(0, plan.inputTokens - plan.cachedTokens - plan.cacheWriteTokens);
  const u = { inputTokens: input, outputTokens: plan.outputTokens, totalTokens: input + plan.outputTokens + plan.cachedTokens + plan.cacheWriteTokens };
  if (plan.cachedTokens || plan.cacheWriteTokens) {
    u.cacheReadInputTokens = plan.cachedTokens;
    u.cacheWriteInputTokens = plan.cacheWriteTokens;
  }
  return forceUsage(plan, u, ['inputTokens', 'outputTokens', 'totalTokens']);
}

// Prompt caching as Bedrock bills it for Claude: the prefix up to the last cachePoint block (toolConfig.tools, then
// system, then messages) is written to the cache on the first call (cacheWriteInputTokens) and read on the next
// (cacheReadInputTokens); a prefix under 1024 tokens is not cached. The cache lives with the fake instance;
// behaviour cachedTokens / cacheWriteTokens still force the counters.
const MIN_CACHEABLE = 1024;
function promptCaching(ctx, j, plan) {
  if (ctx.behavior.cachedTokens || ctx.behavior.cacheWriteTokens) return;
  const seq = [];
  for (const t of (j.toolConfig && j.toolConfig.tools) || []) seq.push(t);
  for (const s of j.system || []) seq.push(s);
  for (const m of j.messages) for (const c of m.content) seq.push(c);
  let last = -1;
  seq.forEach((b, i) => { if (b && b.cachePoint) last = i; });
  if (last < 0) return;
  const prefix = seq.slice(0, last + 1);
  const chars = prefix.reduce((n, b) => n + (b && typeof b.text === 'string' ? b.text.length : 0), 0);
  const tokens = Math.min(plan.inputTokens, Math.ceil(chars / 4));
  if (tokens < MIN_CACHEABLE) return;
  const cache = ctx.opts.bedrockPromptCache || (ctx.opts.bedrockPromptCache = new Map());
  const h = createHash('sha256').update(ctx.params.modelId + '\n' + JSON.stringify(prefix)).digest('hex');
  if (cache.has(h)) plan.cachedTokens = tokens;
  else { cache.set(h, tokens); plan.cacheWriteTokens = tokens; }
}

// Bedrock pads stream payloads with a "p" field of varying length so sizes do not leak token lengths.
const PAD = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0';
let padN = 0;
function pad(o) { o.p = PAD.slice(0, 1 + (padN++ % PAD.length)); return o; }

async function converse(ctx) {
  const t0 = Date.now();
  let j;
  try { j = ctx.json(); } catch { throw new AwsError(400, 'SerializationException', 'Unable to parse request body as JSON.'); }
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw new AwsError(400, 'SerializationException', 'Start of structure or map found where not expected.');
  const conv = toConversation(j);
  if (ctx.opts.models && !ctx.opts.models.includes(ctx.params.modelId)) throw validation('The provided model identifier is invalid.');
  const plan = makeReply(conv, ctx.behavior);
  promptCaching(ctx, j, plan);
  const seed = ctx.body.length < 4096 ? ctx.body.toString('latin1') : ctx.body.toString('latin1', 0, 4096) + ctx.body.length;
  const tools = plan.toolCalls.map((c, k) => ({ toolUseId: 'tooluse_' + stableId(`${seed}|${k}|${c.name}|${c.argsJson}`, 22), name: c.name, input: c.args }));
  const stopReason = STOP[plan.finish];
  const withUsage = ctx.behavior.usage !== false;
  const rid = uuid();
  if (ctx.op === 'converse') {
    const content = tools.length ? tools.map((t) => ({ toolUse: t })) : [{ text: plan.text }];
    const body = { metrics: { latencyMs: Math.max(1, Date.now() - t0) }, output: { message: { content, role: 'assistant' } }, stopReason };
    if (withUsage) body.usage = usageOf(plan);
    return ctx.sendJson(200, body, { 'x-amzn-RequestId': rid });
  }
  const chunks = ctx.behavior.chunks ?? ctx.opts.chunks ?? 4;
  const events = [eventFrame('messageStart', pad({ role: 'assistant' }))];
  if (tools.length) {
    tools.forEach((t, k) => {
      events.push(eventFrame('contentBlockStart', pad({ contentBlockIndex: k, start: { toolUse: { name: t.name, toolUseId: t.toolUseId } } })));
      for (const frag of splitPieces(JSON.stringify(t.input), chunks)) {
        events.push(eventFrame('contentBlockDelta', pad({ contentBlockIndex: k, delta: { toolUse: { input: frag } } })));
      }
      events.push(eventFrame('contentBlockStop', pad({ contentBlockIndex: k })));
    });
  } else {
    for (const piece of splitPieces(plan.text, chunks)) {
      events.push(eventFrame('contentBlockDelta', pad({ contentBlockIndex: 0, delta: { text: piece } })));
    }
    events.push(eventFrame('contentBlockStop', pad({ contentBlockIndex: 0 })));
  }
  const terminalFrom = events.length;
  events.push(eventFrame('messageStop', pad({ stopReason })));
  if (withUsage) events.push(eventFrame('metadata', pad({ metrics: { latencyMs: Math.max(1, Date.now() - t0) }, usage: usageOf(plan) })));
  const errorEvent = () => {
    const m = typeof ctx.behavior.midStreamError === 'object' ? ctx.behavior.midStreamError : {};
    const type = m.type || 'modelStreamErrorException';
    const payload = { message: m.message || ctx.behavior.message || (type === 'throttlingException' ? 'Too many requests, please wait before trying again.' : 'The model stream encountered an error. Try your request again.') };
    if (type === 'modelStreamErrorException') { payload.originalStatusCode = 500; payload.originalMessage = 'Internal server error'; }
    return exceptionFrame(type, payload);
  };
  const malformedEvent = () => eventFrame('contentBlockDelta', pad({ contentBlockIndex: 0, delta: { text: 'corrupt' } }), { corruptCrc: true });
  await ctx.stream({
    status: 200,
    headers: { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-RequestId': rid, 'x-amzn-bedrock-content-type': 'application/json' },
    events,
    terminalFrom,
    errorEvent,
    malformedEvent,
  });
}
