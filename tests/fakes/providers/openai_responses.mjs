// OpenAI Responses API (POST /v1/responses; Azure: /openai/v1/responses or /openai/responses?api-version=...),
// with POST /responses/input_tokens ({object: "response.input_tokens", input_tokens}), GET / DELETE
// /responses/{id} and GET /responses/{id}/input_items on the responses it stored:
// validates input items the way the real API does, keeps its own state for previous_response_id (404 for an id it
// never issued), answers with the full Response object, or streams the real typed events with sequence_number
// (response.created ... response.completed, usage only in the terminal event). Behaviours as for chat:
// status, midStreamError (an `error` event then the end), truncate (no terminal event), usage: false.
import { makeReply, splitPieces, stableId, hexId, inputTokens } from '../content.mjs';

const KNOWN_ITEMS = new Set(['message', 'function_call', 'function_call_output', 'reasoning', 'item_reference']);

function fail(h, status, message, param = null, code = null) {
  return new h.ApiError(status, message, param, code);
}

// Responses input items -> the neutral conversation of content.mjs.
function toConversation(h, j, history) {
  const parts = [];
  const calls = new Set();
  const toolNames = new Set();
  if (typeof j.instructions === 'string' && j.instructions) parts.push({ role: 'system', items: [{ kind: 'text', text: j.instructions }] });
  const items = [...history];
  if (typeof j.input === 'string') items.push({ type: 'message', role: 'user', content: j.input });
  else if (Array.isArray(j.input)) items.push(...j.input);
  else if (j.input !== undefined) throw fail(h, 400, "Invalid type for 'input': expected a string or an array of input items.", 'input', 'invalid_type');
  for (const it of items) if (it && it.type === 'function_call') calls.add(it.call_id);
  items.forEach((it, i) => {
    const type = it && (it.type ?? 'message');
    if (!KNOWN_ITEMS.has(type)) throw fail(h, 400, `Invalid value: '${type}'.`, `input[${i}].type`, 'invalid_value');
    if (type === 'message') {
      const text = typeof it.content === 'string' ? it.content
        : (it.content || []).map((p) => (p.type === 'input_image' ? '[image]' : p.text ?? '')).filter((s) => s).join(' ');
      const role = it.role === 'developer' ? 'system' : it.role;
      parts.push({ role, items: [{ kind: 'text', text }] });
    } else if (type === 'function_call') {
      parts.push({ role: 'assistant', items: [{ kind: 'tool_call', name: it.name, args: it.arguments }] });
    } else if (type === 'function_call_output') {
      if (!calls.has(it.call_id)) throw fail(h, 400, `No tool call found for function call output with call_id ${it.call_id}.`, 'input');
      const text = typeof it.output === 'string' ? it.output : (it.output || []).map((p) => p.text ?? '').join(' ');
      parts.push({ role: 'tool', items: [{ kind: 'tool_result', text }] });
    }
  });
  for (const t of j.tools || []) if (t && t.type === 'function') toolNames.add(t.name);
  return { parts, toolNames, maxTokens: j.max_output_tokens ?? undefined, stop: [] };
}

function usageOf(plan) {
  return {
    input_tokens: plan.inputTokens, input_tokens_details: { cached_tokens: plan.cachedTokens },
    output_tokens: plan.outputTokens + plan.reasoningTokens, output_tokens_details: { reasoning_tokens: plan.reasoningTokens },
    total_tokens: plan.inputTokens + plan.outputTokens + plan.reasoningTokens,
  };
}

function skeleton(j, id, model) {
  return {
    id, object: 'response', created_at: Math.floor(Date.now() / 1000), status: 'in_progress', background: false,
    error: null, incomplete_details: null, instructions: j.instructions ?? null, max_output_tokens: j.max_output_tokens ?? null,
    max_tool_calls: null, model, output: [], parallel_tool_calls: j.parallel_tool_calls ?? true,
    previous_response_id: j.previous_response_id ?? null, prompt_cache_key: j.prompt_cache_key ?? null,
    reasoning: { effort: j.reasoning?.effort ?? null, summary: null }, safety_identifier: null, service_tier: 'default',
    store: j.store ?? true, temperature: j.temperature ?? 1, text: j.text ?? { format: { type: 'text' }, verbosity: 'medium' },
    tool_choice: j.tool_choice ?? 'auto', tools: j.tools ?? [], top_logprobs: 0, top_p: j.top_p ?? 1, truncation: 'disabled',
    usage: null, user: null, metadata: j.metadata ?? {},
  };
}

export async function responses(ctx, h) {
  let j;
  try { j = ctx.json(); } catch { throw fail(h, 400, 'We could not parse the JSON body of your request.'); }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw fail(h, 400, 'Invalid type for request body.');
  if (ctx.provider !== 'azure' && typeof j.model !== 'string') throw fail(h, 400, "Missing required parameter: 'model'.", 'model', 'missing_required_parameter');
  const store = (ctx.fake.responsesStore ||= new Map());
  let history = [];
  if (j.previous_response_id != null) {
    const prev = store.get(j.previous_response_id);
    if (!prev) throw fail(h, 404, `Previous response with id '${j.previous_response_id}' not found.`, 'previous_response_id', 'previous_response_not_found');
    history = prev.history;
  }
  const conv = toConversation(h, j, history);
  const plan = makeReply(conv, ctx.behavior);
  const id = 'resp_' + hexId(48);
  const model = j.model || 'gpt-4o-mini';
  const resp = skeleton(j, id, model);
  const msgId = 'msg_' + hexId(48);
  const seed = ctx.body.toString('latin1', 0, 4096);
  const output = [];
  if (plan.toolCalls.length) {
    plan.toolCalls.forEach((c, k) => output.push({
      id: 'fc_' + hexId(48), type: 'function_call', status: 'completed', arguments: c.argsJson,
      call_id: 'call_' + stableId(`${seed}|${k}|${c.name}`, 24), name: c.name,
    }));
  } else {
    output.push({ id: msgId, type: 'message', status: 'completed', content: [{ type: 'output_text', annotations: [], logprobs: [], text: plan.text }], role: 'assistant' });
  }
  const incomplete = plan.finish === 'length';
  const final = { ...resp, status: incomplete ? 'incomplete' : 'completed', incomplete_details: incomplete ? { reason: 'max_output_tokens' } : null, output };
  if (ctx.behavior.usage !== false) final.usage = usageOf(plan);
  const inputItems = typeof j.input === 'string' ? [{ type: 'message', role: 'user', content: j.input }] : (j.input || []);
  if (j.store !== false) store.set(id, { history: [...history, ...inputItems, ...output], response: final, input: [...history, ...inputItems] });
  const headers = h.baseHeaders(ctx);
  if (!j.stream) return ctx.sendJson(200, final, headers);

  let seq = 0;
  const ev = (type, o) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...o })}\n\n`;
  const events = [ev('response.created', { response: resp }), ev('response.in_progress', { response: resp })];
  output.forEach((item, oi) => {
    if (item.type === 'message') {
      events.push(ev('response.output_item.added', { output_index: oi, item: { ...item, status: 'in_progress', content: [] } }));
      events.push(ev('response.content_part.added', { item_id: item.id, output_index: oi, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } }));
      for (const piece of splitPieces(plan.text, ctx.behavior.chunks ?? ctx.opts.chunks ?? 4)) {
        events.push(ev('response.output_text.delta', { item_id: item.id, output_index: oi, content_index: 0, delta: piece, logprobs: [], obfuscation: 'xyz' }));
      }
      events.push(ev('response.output_text.done', { item_id: item.id, output_index: oi, content_index: 0, text: plan.text, logprobs: [] }));
      events.push(ev('response.content_part.done', { item_id: item.id, output_index: oi, content_index: 0, part: item.content[0] }));
    } else {
      events.push(ev('response.output_item.added', { output_index: oi, item: { ...item, status: 'in_progress', arguments: '' } }));
      for (const piece of splitPieces(item.arguments, 2)) events.push(ev('response.function_call_arguments.delta', { item_id: item.id, output_index: oi, delta: piece }));
      events.push(ev('response.function_call_arguments.done', { item_id: item.id, output_index: oi, name: item.name, arguments: item.arguments }));
    }
    events.push(ev('response.output_item.done', { output_index: oi, item }));
  });
  const terminalFrom = events.length;
  events.push(ev(incomplete ? 'response.incomplete' : 'response.completed', { response: final }));
  await ctx.stream({
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers },
    events,
    terminalFrom,
    errorEvent: () => ev('error', { code: 'server_error', message: ctx.behavior.message || 'The server had an error while processing your request. Sorry about that!', param: null }),
    malformedEvent: () => 'event: response.completed\ndata: {"type":"response.completed","response":{"usage":\n\n',
  });
}

// POST /responses/input_tokens: the input a /responses request with this body would read, counted.
export function responseInputTokens(ctx, h) {
  let j;
  try { j = ctx.json(); } catch { throw fail(h, 400, 'We could not parse the JSON body of your request.'); }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw fail(h, 400, 'Invalid type for request body.');
  let history = [];
  if (j.previous_response_id != null) {
    const prev = (ctx.fake.responsesStore ||= new Map()).get(j.previous_response_id);
    if (!prev) throw fail(h, 404, `Previous response with id '${j.previous_response_id}' not found.`, 'previous_response_id', 'previous_response_not_found');
    history = prev.history;
  }
  const conv = toConversation(h, j, history);
  return ctx.sendJson(200, { object: 'response.input_tokens', input_tokens: inputTokens(conv) }, h.baseHeaders(ctx));
}

function stored(ctx, h) {
  const rec = (ctx.fake.responsesStore ||= new Map()).get(ctx.params.id);
  if (!rec) throw fail(h, 404, `Response with id '${ctx.params.id}' not found.`);
  return rec;
}

export function responseGet(ctx, h) {
  return ctx.sendJson(200, stored(ctx, h).response, h.baseHeaders(ctx));
}

export function responseDelete(ctx, h) {
  stored(ctx, h);
  ctx.fake.responsesStore.delete(ctx.params.id);
  return ctx.sendJson(200, { id: ctx.params.id, object: 'response', deleted: true }, h.baseHeaders(ctx));
}

// GET /responses/{id}/input_items: the items that went in, newest first unless order=asc.
export function responseInputItems(ctx, h) {
  const rec = stored(ctx, h);
  const items = rec.input.map((it, i) => ({ id: it.id || `msg_${String(i).padStart(4, '0')}`, ...it }));
  const asc = ctx.query.order === 'asc';
  const data = asc ? items : items.reverse();
  return ctx.sendJson(200, { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false }, h.baseHeaders(ctx));
}
