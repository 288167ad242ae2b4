// Deterministic content for the fake providers: what the "model" answers and how many tokens it "used".
// The rules are provider-neutral so a test can send a request through the gateway in one wire format, let the
// gateway translate it to another provider, and still compute the expected reply and usage. README.md documents
// them; keep the two in step.
//
// Every provider module turns its request into a neutral conversation:
//   { parts: [{ role: 'system'|'user'|'assistant'|'tool', items: [Item] }], toolNames: Set, maxTokens, stop[] }
// where Item is { kind: 'text', text } | { kind: 'image' } | { kind: 'tool_call', name, args }
//            | { kind: 'tool_result', text } | { kind: 'other' }.
import { createHash } from 'node:crypto';

export const IMAGE_PLACEHOLDER = '[image]';

// Characters an item contributes to the input-token count (and to the echoed text).
export function itemText(it) {
  switch (it.kind) {
    case 'text': return it.text;
    case 'image': return IMAGE_PLACEHOLDER;
    case 'tool_call': return it.name + canonicalJson(it.args);
    case 'tool_result': return it.text;
    default: return '';
  }
}

export function canonicalJson(v) {
  if (typeof v === 'string') {
    // Arguments that arrived as a JSON string (OpenAI) are re-serialised compactly so that the count does not
    // depend on the client's whitespace; unparsable strings count as they are.
    try { return JSON.stringify(JSON.parse(v)); } catch { return v; }
  }
  return JSON.stringify(v === undefined ? {} : v);
}

export function countWords(s) {
  let n = 0;
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ws = c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0x2028 || c === 0x2029 || c === 0xfeff
      || (c >= 0x2000 && c <= 0x200a) || c === 0x1680 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0x85;
    if (ws) inWord = false;
    else if (!inWord) { inWord = true; n++; }
  }
  return n;
}

// input tokens = max(1, ceil(C / 4)), C = total JS string length of every item (system included), see README.
export function inputTokens(conv) {
  let c = 0;
  for (const m of conv.parts) for (const it of m.items) c += itemText(it).length;
  return Math.max(1, Math.ceil(c / 4));
}

export function textTokensOf(s) { return Math.max(1, Math.ceil(s.length / 4)); }

// Finds every `CALL <name> <json-object>` in text, in order. name: [A-Za-z0-9_.:-]+. The object must be valid JSON.
export function findCalls(text) {
  const out = [];
  const re = /CALL\s+([A-Za-z0-9_.:-]+)\s+\{/g;
  let m;
  while ((m = re.exec(text))) {
    const start = m.index + m[0].length - 1;
    const end = matchBrace(text, start);
    if (end < 0) continue;
    let args;
    try { args = JSON.parse(text.slice(start, end + 1)); } catch { continue; }
    if (args === null || typeof args !== 'object' || Array.isArray(args)) continue;
    out.push({ name: m[1], args });
    re.lastIndex = end + 1;
  }
  return out;
}

function matchBrace(s, i) {
  let depth = 0;
  let inStr = false;
  for (; i < s.length; i++) {
    const c = s[i];
    if (inStr) {
      if (c === '\\') i++;
      else if (c === '"') inStr = false;
    } else if (c === '"') inStr = true;
    else if (c === '{') depth++;
    else if (c === '}') { depth--; if (depth === 0) return i; }
  }
  return -1;
}

// Decides the reply. Returns
//   { text, toolCalls: [{ name, args, argsJson, id? }], finish: 'stop'|'length'|'stop_sequence'|'tool_calls',
//     stopSequence, inputTokens, outputTokens, cachedTokens, cacheWriteTokens, reasoningTokens }
export function makeReply(conv, behavior = {}) {
  const last = conv.parts.filter((m) => m.role !== 'system').at(-1);
  let text = 'echo: ';
  let toolCalls = [];
  const results = last ? last.items.filter((it) => it.kind === 'tool_result') : [];
  if (results.length) {
    text = 'echo: tool result: ' + results.map((it) => it.text).join(' ');
  } else {
    const lastUser = conv.parts.filter((m) => m.role === 'user').at(-1);
    const userText = lastUser ? messageText(lastUser) : '';
    const calls = conv.toolNames && conv.toolNames.size ? findCalls(userText).filter((c) => conv.toolNames.has(c.name)) : [];
    if (calls.length) {
      toolCalls = calls.map((c) => ({ name: c.name, args: c.args, argsJson: JSON.stringify(c.args) }));
      text = '';
    } else {
      text = 'echo: ' + userText;
    }
  }
  if (typeof behavior.reply === 'string') { text = behavior.reply; toolCalls = []; }
  let finish = toolCalls.length ? 'tool_calls' : 'stop';
  let stopSequence = null;
  if (!toolCalls.length && conv.stop && conv.stop.length) {
    let best = -1;
    for (const s of conv.stop) {
      if (!s) continue;
      const i = text.indexOf(s);
      if (i >= 0 && (best < 0 || i < best)) { best = i; stopSequence = s; }
    }
    if (best >= 0) { text = text.slice(0, best); finish = 'stop_sequence'; }
  }
  // Behaviour `ignoreMaxTokens: true`: an upstream that overruns the max_tokens it was given.
  if (!toolCalls.length && !behavior.ignoreMaxTokens && Number.isInteger(conv.maxTokens) && conv.maxTokens > 0 && countWords(text) > conv.maxTokens) {
    text = firstWords(text, conv.maxTokens);
    finish = 'length';
    stopSequence = null;
  }
  let out = countWords(text);
  for (const c of toolCalls) out += 1 + Math.ceil(c.argsJson.length / 4);
  if (out === 0) out = 1;
  const inTok = inputTokens(conv);
  return {
    text,
    toolCalls,
    finish,
    stopSequence,
    inputTokens: inTok,
    outputTokens: out,
    cachedTokens: Math.min(inTok, behavior.cachedTokens | 0),
    cacheWriteTokens: behavior.cacheWriteTokens | 0,
    reasoningTokens: behavior.reasoningTokens | 0,
    usageTokens: behavior.usageTokens,
  };
}

// Behaviour `usageTokens: v`: every main token count of the usage object u (the names in keys) becomes v as is
// (1e300, -5, 1.5, "12", ...), so tests can feed agentd implausible usage in each provider's own shape.
export function forceUsage(plan, u, keys) {
  if (plan.usageTokens === undefined) return u;
  for (const k of keys) u[k] = plan.usageTokens;
  return u;
}

export function messageText(m) {
  return m.items.map(itemText).filter((s) => s !== '').join(' ');
}

// The text up to the end of the n-th whitespace-separated word (original whitespace kept, trailing dropped).
export function firstWords(s, n) {
  const re = /\S+/g;
  let m;
  let k = 0;
  let end = 0;
  while ((m = re.exec(s)) && k < n) { k++; end = m.index + m[0].length; }
  return s.slice(0, end);
}

// Splits s into at most n non-empty pieces of near-equal length (in code points) whose concatenation is s.
export function splitPieces(s, n) {
  const cps = Array.from(s);
  if (!cps.length) return [];
  n = Math.max(1, Math.min(n | 0 || 1, cps.length));
  const out = [];
  for (let i = 0; i < n; i++) {
    const a = Math.floor((i * cps.length) / n);
    const b = Math.floor(((i + 1) * cps.length) / n);
    out.push(cps.slice(a, b).join(''));
  }
  return out;
}

const B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

// Deterministic id from a seed string (same request => same tool-call ids), base62, `len` characters.
export function stableId(seed, len) {
  let out = '';
  let h = createHash('sha256').update(seed).digest();
  while (out.length < len) {
    for (const b of h) { if (out.length < len && b < 248) out += B62[b % 62]; }
    h = createHash('sha256').update(h).digest();
  }
  return out;
}

let idCounter = 0;
const idSalt = Math.random().toString(36).slice(2, 8);
// Unique id (not deterministic), base62, `len` characters.
export function uniqueId(len) {
  return stableId(idSalt + ':' + (++idCounter), len);
}

export function hexId(len) {
  return createHash('sha256').update(idSalt + ':h:' + (++idCounter)).digest('hex').slice(0, len);
}

// Deterministic unit-length embedding of `text` with `dims` dimensions (see README).
export function embedding(text, dims) {
  const v = new Array(dims);
  let block = 0;
  let h = null;
  let norm = 0;
  for (let i = 0; i < dims; i++) {
    const j = i % 32;
    if (j === 0) h = createHash('sha256').update(text + ':' + block++).digest();
    const x = h[j] / 255 * 2 - 1;
    v[i] = x;
    norm += x * x;
  }
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < dims; i++) v[i] = Math.fround(v[i] / norm);
  return v;
}

export function embeddingBase64(vec) {
  const f = new Float32Array(vec);
  return Buffer.from(f.buffer).toString('base64');
}

// A body that starts like the real JSON and stops mid-way (invalid JSON), for the `malformed` behaviour.
export function malformedJson(s) {
  return s.slice(0, Math.max(1, Math.floor(s.length / 2)));
}
