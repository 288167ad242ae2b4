// A renderer for the subset of Helm's Go templates that deploy/helm/agentd uses, for the test suite: no helm
// binary is packaged in Debian 12 nor published on npm as a self-contained package, and fetching one from the
// network at test time is not allowed. What it understands, and nothing else (anything else throws, so a chart
// change beyond the subset fails the tests instead of rendering wrongly):
//   {{ .Values.a.b }}  {{ .Release.Name }}  {{ .Release.Namespace }}  {{ .Chart.Name }}  {{ .Chart.AppVersion }}
//   "literals" and numbers;  functions toYaml X, not X, quote, nindent N, indent N, default D (in pipelines)
//   {{- if PIPELINE }} ... {{- else }} ... {{- end }} (nested), {{/* comments */}}
//   whitespace trimming with {{- and -}}.
// Truthiness follows Go templates: false, 0, "", null, empty list and empty map are false.
// `tests/integration/deploy.test.mjs` checks the renderer itself against hand-written expectations.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';

function truthy(v) {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

// Go's fmt %v for what values hold: numbers, strings, booleans.
function str(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') throw new Error(`cannot print a ${Array.isArray(v) ? 'list' : 'map'} without toYaml`);
  return String(v);
}

// Helm's toYaml (sigs.k8s.io/yaml): block style, no trailing newline.
function toYaml(v) {
  if (v === null || v === undefined) return 'null';
  return YAML.stringify(v, { lineWidth: 0 }).replace(/\n$/, '');
}

function indent(n, s) {
  const pad = ' '.repeat(n);
  return s.split('\n').map((l) => pad + l).join('\n');
}

function tokens(src) {
  const out = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) { out.push({ text: src.slice(i) }); break; }
    out.push({ text: src.slice(i, open) });
    const close = src.indexOf('}}', open);
    if (close < 0) throw new Error(`unclosed action at offset ${open}`);
    let body = src.slice(open + 2, close);
    const trimLeft = body.startsWith('-') && /^-\s/.test(body);
    const trimRight = body.endsWith('-') && /\s-$/.test(body);
    if (trimLeft) body = body.slice(1);
    if (trimRight) body = body.slice(0, -1);
    out.push({ action: body.trim(), trimLeft, trimRight });
    i = close + 2;
  }
  // trimming: {{- eats the whitespace before, -}} the whitespace after
  for (let k = 0; k < out.length; k++) {
    const t = out[k];
    if (t.action === undefined) continue;
    if (t.trimLeft && k > 0 && out[k - 1].text !== undefined) out[k - 1].text = out[k - 1].text.replace(/\s+$/, '');
    if (t.trimRight && k + 1 < out.length && out[k + 1].text !== undefined) out[k + 1].text = out[k + 1].text.replace(/^\s+/, '');
  }
  return out;
}

// Splits "a b \"c d\"" into words, keeping quoted strings whole.
function words(s) {
  const out = [];
  const re = /\s*("(?:[^"\\]|\\.)*"|[^\s"]+)/g;
  let m;
  while ((m = re.exec(s))) out.push(m[1]);
  return out;
}

function evalPipeline(expr, ctx) {
  const stages = expr.split('|').map((x) => x.trim());
  let v;
  let first = true;
  for (const st of stages) {
    const w = words(st);
    if (w.length === 0) throw new Error(`empty pipeline stage in '${expr}'`);
    const args = (from) => w.slice(from).map((a) => operand(a, ctx));
    const piped = first ? [] : [v];
    if (w[0].startsWith('.') || w[0].startsWith('"') || /^-?\d+$/.test(w[0])) {
      if (!first || w.length !== 1) throw new Error(`unsupported: '${st}'`);
      v = operand(w[0], ctx);
    } else {
      const a = [...args(1), ...piped];
      switch (w[0]) {
        case 'toYaml': want(a, 1, st); v = toYaml(a[0]); break;
        case 'not': want(a, 1, st); v = !truthy(a[0]); break;
        case 'quote': want(a, 1, st); v = JSON.stringify(str(a[0])); break;
        case 'nindent': want(a, 2, st); v = '\n' + indent(a[0], str(a[1])); break;
        case 'indent': want(a, 2, st); v = indent(a[0], str(a[1])); break;
        case 'default': want(a, 2, st); v = truthy(a[1]) ? a[1] : a[0]; break;
        default: throw new Error(`unsupported function '${w[0]}' in '${expr}'`);
      }
    }
    first = false;
  }
  return v;
}

function want(a, n, st) {
  if (a.length !== n) throw new Error(`'${st}': expected ${n} argument(s)`);
}

function operand(a, ctx) {
  if (a.startsWith('"')) return JSON.parse(a);
  if (/^-?\d+$/.test(a)) return Number(a);
  if (!a.startsWith('.')) throw new Error(`unsupported operand '${a}'`);
  let v = ctx;
  for (const part of a.slice(1).split('.')) {
    if (v === null || v === undefined || typeof v !== 'object') return undefined;
    v = v[part];
  }
  return v;
}

export function renderTemplate(src, ctx) {
  const toks = tokens(src);
  let out = '';
  const stack = []; // { active, taken, parentActive }
  const active = () => stack.every((s) => s.active);
  for (const t of toks) {
    if (t.text !== undefined) { if (active()) out += t.text; continue; }
    const a = t.action;
    if (a.startsWith('/*')) { if (!a.endsWith('*/')) throw new Error(`bad comment '${a}'`); continue; }
    const m = a.match(/^if\s+(.+)$/);
    if (m) {
      const c = active() ? truthy(evalPipeline(m[1], ctx)) : false;
      stack.push({ active: c, taken: c });
      continue;
    }
    if (a === 'else') {
      const s = stack[stack.length - 1];
      if (!s) throw new Error('else without if');
      s.active = !s.taken;
      s.taken = true;
      continue;
    }
    if (a === 'end') {
      if (!stack.pop()) throw new Error('end without if');
      continue;
    }
    if (/^(range|with|define|template|include|block)\b/.test(a)) throw new Error(`unsupported action '${a}'`);
    if (active()) out += str(evalPipeline(a, ctx));
  }
  if (stack.length) throw new Error('if without end');
  return out;
}

function merge(base, over) {
  if (over === null || typeof over !== 'object' || Array.isArray(over)) return over;
  const out = { ...(base && typeof base === 'object' && !Array.isArray(base) ? base : {}) };
  for (const [k, v] of Object.entries(over)) out[k] = merge(out[k], v);
  return out;
}

// `helm template RELEASE CHART --namespace NS [--set ...]` for this subset: returns the rendered documents, parsed,
// in template file order (the empty ones dropped).
export function renderChart(chartDir, { release = 'agentd', namespace = 'default', values = {} } = {}) {
  const chart = YAML.parse(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8'));
  const defaults = YAML.parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8'));
  const ctx = {
    Values: merge(defaults, values),
    Release: { Name: release, Namespace: namespace, Service: 'Helm' },
    Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion },
  };
  const docs = [];
  const dir = join(chartDir, 'templates');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml')).sort()) {
    const text = renderTemplate(readFileSync(join(dir, f), 'utf8'), ctx);
    for (const d of YAML.parseAllDocuments(text)) {
      if (d.errors.length) throw new Error(`${f}: ${d.errors[0].message}\n${text}`);
      const obj = d.toJS();
      if (obj !== null && obj !== undefined) docs.push({ file: f, obj });
    }
  }
  return docs;
}
