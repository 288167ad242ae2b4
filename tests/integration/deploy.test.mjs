// deploy/kubernetes and deploy/helm/agentd (issue 13 item 3), validated offline:
// - every object against the Kubernetes OpenAPI schemas (kubernetes-models; KEDA's and the Prometheus Operator's
//   CRD schemas for ScaledObject and ServiceMonitor), plus the API server's own checks those schemas do not carry
//   (names, port ranges and names, quantities, selectors that match, probe and Service ports that exist, quota
//   coverage);
// - the seed's figures (DESIGN §0) one by one;
// - the chart: its default values render exactly the seed's objects in deploy/kubernetes, its switches render the
//   extras exactly, and a value Kubernetes would refuse fails validation. The chart is rendered by `helm template`
//   when a helm binary is on PATH, else by tests/lib/helm_render.mjs (the subset of Go templates the chart uses);
// - the ConfigMap's agentd.yaml passes `agentd config check`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { BIN, SRC } from '../lib/agentd.mjs';
import { renderChart, renderTemplate } from '../lib/helm_render.mjs';

import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ResourceQuota } from 'kubernetes-models/v1/ResourceQuota';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';

const K8S = join(SRC, 'deploy', 'kubernetes');
const CHART = join(SRC, 'deploy', 'helm', 'agentd');
const models = {
  'v1/Namespace': Namespace, 'v1/ServiceAccount': ServiceAccount, 'v1/ConfigMap': ConfigMap, 'v1/Secret': Secret,
  'v1/Service': Service, 'v1/ResourceQuota': ResourceQuota, 'apps/v1/Deployment': Deployment,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler, 'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy, 'keda.sh/v1alpha1/ScaledObject': ScaledObject,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

// ---- the API server's checks that the OpenAPI schemas leave out (apimachinery validation) ----
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const IANA_SVC_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$/; // and at most 15, no "--"
const QUANTITY = /^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function apiServerChecks(o, where) {
  const errs = [];
  const e = (m) => errs.push(`${where}: ${m}`);
  const name = o.metadata?.name;
  if (!name) e('metadata.name is required');
  const dnsLabelKinds = ['Namespace', 'Service'];
  if (name && (name.length > (dnsLabelKinds.includes(o.kind) ? 63 : 253) ||
      !(dnsLabelKinds.includes(o.kind) ? DNS1123_LABEL : DNS1123_SUBDOMAIN).test(name)))
    e(`metadata.name '${name}' is not a valid DNS-1123 name`);
  if (o.kind !== 'Namespace' && o.metadata?.namespace !== undefined && !DNS1123_LABEL.test(o.metadata.namespace))
    e(`metadata.namespace '${o.metadata.namespace}' is invalid`);
  for (const [k, v] of Object.entries(o.metadata?.labels || {}))
    if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) e(`label ${k}: '${v}' is not a label value`);
  for (const [k, v] of Object.entries(o.metadata?.annotations || {}))
    if (typeof v !== 'string') e(`annotation ${k} must be a string`);
  const port = (p, what) => { if (!Number.isInteger(p) || p < 1 || p > 65535) e(`${what}: ${p} is not a port 1..65535`); };
  const portName = (n, what) => { if (n !== undefined && (n.length > 15 || n.includes('--') || !IANA_SVC_NAME.test(n))) e(`${what}: '${n}' is not an IANA service name`); };
  const quantity = (q, what) => { if (!QUANTITY.test(String(q))) e(`${what}: '${q}' is not a quantity`); };
  if (o.kind === 'Deployment') {
    const t = o.spec.template;
    const sel = o.spec.selector?.matchLabels || {};
    for (const [k, v] of Object.entries(sel))
      if (t.metadata?.labels?.[k] !== v) e(`spec.selector does not match the template's labels (${k})`);
    for (const [k, v] of Object.entries(t.metadata?.annotations || {}))
      if (typeof v !== 'string') e(`template annotation ${k} must be a string`);
    const ru = o.spec.strategy?.rollingUpdate;
    if (ru && ru.maxSurge === 0 && ru.maxUnavailable === 0) e('maxSurge and maxUnavailable cannot both be 0');
    const volumes = new Set((t.spec.volumes || []).map((v) => v.name));
    for (const v of t.spec.volumes || []) {
      if (!DNS1123_LABEL.test(v.name)) e(`volume name '${v.name}'`);
      if (v.emptyDir?.sizeLimit !== undefined) quantity(v.emptyDir.sizeLimit, `volume ${v.name} sizeLimit`);
    }
    const psc = t.spec.securityContext || {};
    for (const c of t.spec.containers) {
      if (!DNS1123_LABEL.test(c.name)) e(`container name '${c.name}'`);
      const ports = new Set();
      for (const p of c.ports || []) {
        port(p.containerPort, `container ${c.name} port`);
        portName(p.name, `container ${c.name} port name`);
        ports.add(p.containerPort); if (p.name) ports.add(p.name);
      }
      for (const pr of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
        const h = c[pr]?.httpGet;
        if (!h) continue;
        if (typeof h.port === 'number') port(h.port, `${pr}.httpGet.port`);
        else if (!ports.has(h.port)) e(`${pr}.httpGet.port '${h.port}' names no container port`);
        if (c[pr].periodSeconds !== undefined && c[pr].periodSeconds < 1) e(`${pr}.periodSeconds must be >= 1`);
        if (c[pr].timeoutSeconds !== undefined && c[pr].timeoutSeconds < 1) e(`${pr}.timeoutSeconds must be >= 1`);
        if (c[pr].failureThreshold !== undefined && c[pr].failureThreshold < 1) e(`${pr}.failureThreshold must be >= 1`);
      }
      if (pr_liveness_success(c)) e('livenessProbe.successThreshold must be 1');
      for (const m of c.volumeMounts || []) if (!volumes.has(m.name)) e(`volumeMount '${m.name}' names no volume`);
      for (const [kind, res] of Object.entries(c.resources || {}))
        for (const [r, q] of Object.entries(res)) quantity(q, `resources.${kind}.${r}`);
      for (const r of Object.keys(c.resources?.requests || {})) {
        const lim = c.resources?.limits?.[r];
        if (lim !== undefined && parseQuantity(c.resources.requests[r]) > parseQuantity(lim)) e(`resources.requests.${r} exceeds its limit`);
      }
      for (const env of c.env || []) {
        if (!/^[-._a-zA-Z][-._a-zA-Z0-9]*$/.test(env.name)) e(`env name '${env.name}'`);
        if (env.value !== undefined && typeof env.value !== 'string') e(`env ${env.name}: value must be a string`);
      }
      const sc = c.securityContext || {};
      const runAsNonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
      const runAsUser = sc.runAsUser ?? psc.runAsUser;
      if (runAsNonRoot === true && runAsUser === 0) e('runAsNonRoot with runAsUser 0');
      if (sc.privileged === true && sc.allowPrivilegeEscalation === false) e('privileged with allowPrivilegeEscalation: false');
      if (sc.procMount === 'Unmasked' && t.spec.hostUsers !== false) e('procMount: Unmasked needs hostUsers: false');
    }
  }
  if (o.kind === 'Service') {
    const names = new Set();
    for (const p of o.spec.ports) {
      port(p.port, `service port ${p.name}`);
      if (typeof p.targetPort === 'number') port(p.targetPort, `service targetPort ${p.name}`);
      portName(p.name, 'service port name');
      if (names.has(p.name)) e(`duplicate service port name ${p.name}`);
      names.add(p.name);
    }
    if (o.spec.ports.length > 1 && o.spec.ports.some((p) => !p.name)) e('every port of a multi-port Service needs a name');
  }
  if (o.kind === 'HorizontalPodAutoscaler') {
    if (!(o.spec.minReplicas >= 1)) e('minReplicas must be >= 1');
    if (!(o.spec.maxReplicas >= o.spec.minReplicas)) e('maxReplicas must be >= minReplicas');
    for (const dir of ['scaleUp', 'scaleDown']) {
      const b = o.spec.behavior?.[dir];
      if (!b) continue;
      if (b.stabilizationWindowSeconds < 0 || b.stabilizationWindowSeconds > 3600) e(`${dir}.stabilizationWindowSeconds 0..3600`);
      for (const p of b.policies || []) {
        if (!(p.value > 0)) e(`${dir} policy value must be > 0`);
        if (!(p.periodSeconds > 0 && p.periodSeconds <= 1800)) e(`${dir} policy periodSeconds 1..1800`);
      }
    }
  }
  if (o.kind === 'ResourceQuota') for (const [r, q] of Object.entries(o.spec.hard)) quantity(q, `hard.${r}`);
  if (o.kind === 'NetworkPolicy')
    for (const rule of [...(o.spec.ingress || []), ...(o.spec.egress || [])])
      for (const p of rule.ports || []) port(p.port, 'networkpolicy port');
  return errs;
}
function pr_liveness_success(c) { return c.livenessProbe?.successThreshold !== undefined && c.livenessProbe.successThreshold !== 1; }

function parseQuantity(q) {
  const m = String(q).match(/^([+-]?[\d.]+)(Ki|Mi|Gi|Ti|m|k|M|G|T)?$/);
  if (!m) return NaN;
  const mult = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2]] || 1;
  return Number(m[1]) * mult;
}

// Schema validation (throws with the first error) + the API server's checks.
function validate(o, where) {
  const key = `${o.apiVersion}/${o.kind}`;
  const M = models[key];
  if (!M) return [`${where}: no schema for ${key}`];
  try { new M(o).validate(); } catch (err) { return [`${where}: ${err.message}`]; }
  return apiServerChecks(o, where);
}

function loadDir(dir) {
  const out = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml') && n !== 'kustomization.yaml').sort())
    for (const d of YAML.parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      assert.equal(d.errors.length, 0, `${f}: ${d.errors[0]?.message}`);
      out.push({ file: f, obj: d.toJS() });
    }
  return out;
}
const core = loadDir(K8S);
const optional = loadDir(join(K8S, 'optional'));
const byKind = (list, kind, name) => list.find((d) => d.obj.kind === kind && (!name || d.obj.metadata.name === name))?.obj;

test('every manifest in deploy/kubernetes validates against the Kubernetes schemas and API server rules', () => {
  const errs = [];
  for (const d of [...core, ...optional]) errs.push(...validate(d.obj, d.file));
  assert.deepEqual(errs, []);
  const k = YAML.parse(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8'));
  assert.deepEqual([...k.resources].sort(), core.map((d) => d.file).sort(), 'kustomization lists every core file');
});

test('a value Kubernetes would refuse fails validation', () => {
  const dep = byKind(core, 'Deployment');
  const broken = [
    ['replicas as text', (o) => { o.spec.replicas = 'three'; }],
    ['containerPort 80000', (o) => { o.spec.template.spec.containers[0].ports[0].containerPort = 80000; }],
    ['port name too long', (o) => { o.spec.template.spec.containers[0].ports[1].name = 'prometheus-metrics'; }],
    ['memory "2 GB"', (o) => { o.spec.template.spec.containers[0].resources.limits.memory = '2 GB'; }],
    ['env value as a number', (o) => { o.spec.template.spec.containers[0].env.find((e) => e.name === 'MAX_CONCURRENT_REQUESTS').value = 10; }],
    ['selector not matching labels', (o) => { o.spec.selector.matchLabels.app = 'other'; }],
    ['upper-case name', (o) => { o.metadata.name = 'MCP-Agent-Server'; }],
    ['probe on an unnamed port', (o) => { o.spec.template.spec.containers[0].readinessProbe.httpGet.port = 'ops'; }],
    ['mount of a missing volume', (o) => { o.spec.template.spec.containers[0].volumeMounts[0].name = 'cfg'; }],
    ['unknown imagePullPolicy type', (o) => { o.spec.template.spec.containers[0].imagePullPolicy = 5; }],
    ['request above limit', (o) => { o.spec.template.spec.containers[0].resources.requests.cpu = '3'; }],
  ];
  for (const [what, mutate] of broken) {
    const o = structuredClone(dep);
    mutate(o);
    const errs = validate(o, what);
    if (process.env.SHOW_ERRS) console.log(errs);
    assert.notDeepEqual(errs, [], `${what} was accepted`);
  }
  const hpa = structuredClone(byKind(core, 'HorizontalPodAutoscaler'));
  hpa.spec.maxReplicas = 2;
  assert.notDeepEqual(validate(hpa, 'hpa'), []);
  const so = structuredClone(byKind(optional, 'ScaledObject'));
  so.spec.triggers = 'prometheus';
  assert.notDeepEqual(validate(so, 'keda'), []);
  const sm = structuredClone(byKind(optional, 'ServiceMonitor'));
  sm.spec.endpoints = [{ port: 8080 }];
  assert.notDeepEqual(validate(sm, 'servicemonitor'), []);
});

test('the seed\'s figures (DESIGN §0), one by one', () => {
  const dep = byKind(core, 'Deployment');
  assert.equal(dep.metadata.name, 'mcp-agent-server');
  assert.equal(dep.metadata.namespace, 'agentic-ai');
  assert.equal(dep.spec.replicas, 3);
  assert.deepEqual(dep.spec.strategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  const pod = dep.spec.template;
  assert.deepEqual(pod.metadata.annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '8080', 'prometheus.io/path': '/metrics' });
  assert.equal(pod.spec.serviceAccountName, byKind(core, 'ServiceAccount').metadata.name);
  assert.equal(pod.spec.securityContext.runAsNonRoot, true);
  assert.equal(pod.spec.securityContext.runAsUser, 1000);
  assert.equal(pod.spec.securityContext.fsGroup, 2000);
  const c = pod.spec.containers[0];
  assert.deepEqual(c.ports.map((p) => [p.name, p.containerPort]), [['http', 8000], ['metrics', 8080]]);
  const env = Object.fromEntries(c.env.map((e) => [e.name, e.value ?? e.valueFrom]));
  assert.equal(env.ENVIRONMENT, 'production');
  assert.deepEqual(env.OPENAI_API_KEY, { secretKeyRef: { name: 'llm-credentials', key: 'openai-api-key' } });
  assert.deepEqual(env.ANTHROPIC_API_KEY, { secretKeyRef: { name: 'llm-credentials', key: 'anthropic-api-key' } });
  assert.equal(env.MAX_CONCURRENT_REQUESTS, '10');
  assert.equal(env.REQUEST_TIMEOUT_SECONDS, '30');
  assert.deepEqual(c.resources, { requests: { memory: '512Mi', cpu: '500m' }, limits: { memory: '2Gi', cpu: '2' } });
  assert.deepEqual(c.livenessProbe, { httpGet: { path: '/health', port: 8000 }, initialDelaySeconds: 30, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 });
  assert.deepEqual(c.readinessProbe, { httpGet: { path: '/ready', port: 8000 }, initialDelaySeconds: 10, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 2 });
  assert.deepEqual(c.volumeMounts, [{ name: 'config', mountPath: '/app/config', readOnly: true }, { name: 'cache', mountPath: '/app/cache' }]);
  assert.deepEqual(pod.spec.volumes, [{ name: 'config', configMap: { name: 'agent-config' } }, { name: 'cache', emptyDir: { sizeLimit: '1Gi' } }]);
  const secret = byKind(core, 'Secret');
  assert.equal(secret.metadata.name, 'llm-credentials');
  assert.deepEqual(Object.keys(secret.stringData).sort(), ['anthropic-api-key', 'openai-api-key']);
  const svc = byKind(core, 'Service');
  assert.equal(svc.spec.type, 'ClusterIP');
  assert.deepEqual(svc.spec.ports.map((p) => [p.name, p.port, p.targetPort]), [['http', 80, 8000], ['metrics', 8080, 8080]]);
  assert.deepEqual(svc.spec.selector, pod.metadata.labels);
  const hpa = byKind(core, 'HorizontalPodAutoscaler');
  assert.equal(hpa.apiVersion, 'autoscaling/v2');
  assert.deepEqual([hpa.spec.minReplicas, hpa.spec.maxReplicas], [3, 20]);
  assert.deepEqual(hpa.spec.metrics.map((m) => [m.resource.name, m.resource.target.averageUtilization]), [['cpu', 70], ['memory', 80]]);
  assert.equal(hpa.spec.behavior.scaleDown.stabilizationWindowSeconds, 300);
  assert.deepEqual(hpa.spec.behavior.scaleDown.policies, [{ type: 'Percent', value: 50, periodSeconds: 60 }]);
  assert.equal(hpa.spec.behavior.scaleUp.stabilizationWindowSeconds, 0);
  assert.equal(hpa.spec.behavior.scaleUp.selectPolicy, 'Max');
  assert.deepEqual(hpa.spec.behavior.scaleUp.policies, [{ type: 'Percent', value: 100, periodSeconds: 15 }, { type: 'Pods', value: 4, periodSeconds: 15 }]);
  assert.equal(hpa.spec.scaleTargetRef.name, dep.metadata.name);
  // the extras fit the seed
  const pdb = byKind(core, 'PodDisruptionBudget');
  assert.ok(pdb.spec.minAvailable < dep.spec.replicas, 'the PDB leaves room for a drain');
  assert.deepEqual(pdb.spec.selector.matchLabels, pod.metadata.labels);
  const so = byKind(optional, 'ScaledObject');
  assert.match(so.spec.triggers[0].metadata.query, /\bagentd_admission_queue_depth\b/);
  assert.deepEqual([so.spec.minReplicaCount, so.spec.maxReplicaCount], [3, 20]);
  assert.deepEqual(so.spec.advanced.horizontalPodAutoscalerConfig.behavior, hpa.spec.behavior);
  const sm = byKind(optional, 'ServiceMonitor');
  assert.ok(svc.spec.ports.some((p) => p.name === sm.spec.endpoints[0].port));
  // the quota admits maxReplicas + maxSurge pods and covers every resource the pods declare (a quota on a
  // resource the pod does not request makes the API server refuse the pod)
  const q = byKind(core, 'ResourceQuota').spec.hard;
  const n = hpa.spec.maxReplicas + dep.spec.strategy.rollingUpdate.maxSurge;
  assert.ok(Number(q.pods) >= n);
  for (const [kind, res] of Object.entries(c.resources))
    for (const [r, v] of Object.entries(res))
      assert.ok(parseQuantity(q[`${kind}.${r}`]) >= n * parseQuantity(v), `quota ${kind}.${r} too small for ${n} pods`);
  for (const k of Object.keys(q).filter((x) => /^(requests|limits)\./.test(x)))
    assert.ok(c.resources[k.split('.')[0]]?.[k.slice(k.indexOf('.') + 1)] !== undefined, `quota on ${k}, which the pods do not declare`);
  // the sandbox variant is the seed's Deployment plus what the sandbox needs
  const sb = byKind(optional, 'Deployment');
  assert.equal(sb.spec.template.spec.hostUsers, false);
  assert.deepEqual(sb.spec.template.spec.containers[0].securityContext.capabilities, { drop: ['ALL'], add: ['SETUID', 'SETGID'] });
  assert.equal(sb.spec.template.spec.securityContext.fsGroup, 2000);
});

test('the ConfigMap\'s agentd.yaml passes agentd config check', () => {
  const cm = byKind(core, 'ConfigMap', 'agent-config');
  const dir = mkdtempSync(join(tmpdir(), 'agentd-cm-'));
  writeFileSync(join(dir, 'agentd.yaml'), cm.data['agentd.yaml']);
  const r = spawnSync(BIN, ['config', 'check', join(dir, 'agentd.yaml')], { encoding: 'utf8' });
  rmSync(dir, { recursive: true, force: true });
  assert.equal(r.status, 0, r.stderr);
});

let helmFound;
function helmAvailable() {
  if (helmFound === undefined) helmFound = spawnSync('helm', ['version', '--short'], { encoding: 'utf8' }).status === 0;
  return helmFound;
}
// `helm template` when a helm binary exists, else the test renderer; both give parsed documents.
function render(values = {}) {
  if (helmAvailable()) {
    const dir = mkdtempSync(join(tmpdir(), 'agentd-helm-'));
    writeFileSync(join(dir, 'v.yaml'), YAML.stringify(values));
    const r = spawnSync('helm', ['template', 'agentd', CHART, '--namespace', 'agentic-ai', '-f', join(dir, 'v.yaml')], { encoding: 'utf8' });
    rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 0, r.stderr);
    return YAML.parseAllDocuments(r.stdout).map((d) => d.toJS()).filter(Boolean);
  }
  return renderChart(CHART, { release: 'agentd', namespace: 'agentic-ai', values }).map((d) => d.obj);
}
const sortKey = (o) => `${o.kind}/${o.metadata.name}`;
const sorted = (l) => [...l].sort((a, b) => sortKey(a).localeCompare(sortKey(b)));

test('helm chart: the default values render exactly the seed\'s objects in deploy/kubernetes', () => {
  const got = render();
  const seed = ['serviceaccount.yaml', 'configmap.yaml', 'deployment.yaml', 'service.yaml', 'hpa.yaml']
    .map((f) => core.find((d) => d.file === f).obj);
  assert.deepEqual(sorted(got), sorted(seed));
  const errs = [];
  for (const o of got) errs.push(...validate(o, `chart ${sortKey(o)}`));
  assert.deepEqual(errs, []);
});

test('helm chart: each switch renders deploy/kubernetes\'s extra exactly, KEDA replaces the HPA', () => {
  const got = render({ credentials: { create: true }, podDisruptionBudget: { enabled: true }, networkPolicy: { enabled: true },
    serviceMonitor: { enabled: true }, keda: { enabled: true }, resourceQuota: { enabled: true } });
  const want = [...core.filter((d) => !['namespace.yaml', 'hpa.yaml'].includes(d.file)).map((d) => d.obj),
    byKind(optional, 'ServiceMonitor'), byKind(optional, 'ScaledObject')];
  assert.deepEqual(sorted(got), sorted(want));
  const errs = [];
  for (const o of got) errs.push(...validate(o, `chart ${sortKey(o)}`));
  assert.deepEqual(errs, []);
});

test('helm chart: a value Kubernetes would refuse fails the suite', () => {
  for (const [what, values] of [
    ['replicaCount: three', { replicaCount: 'three' }],
    ['cache.sizeLimit: 1 GB', { cache: { sizeLimit: '1 GB' } }],
    ['service.port: 0', { service: { port: 0 } }],
    ['autoscaling.maxReplicas below min', { autoscaling: { maxReplicas: 2 } }],
    ['resources.limits.cpu: two', { resources: { limits: { cpu: 'two' } } }],
    ['name with capitals', { name: 'MCP' }],
  ]) {
    const errs = [];
    for (const o of render(values)) errs.push(...validate(o, `chart ${sortKey(o)}`));
    if (process.env.SHOW_ERRS) console.log(what, errs);
    assert.notDeepEqual(errs, [], `${what} was accepted`);
  }
});

test('the test renderer follows Go template rules for the subset it claims', () => {
  const ctx = { Values: { a: { b: 'x', n: 3, on: true, off: false, empty: {}, list: [1], m: { k: 'v' } } }, Release: { Namespace: 'ns' } };
  assert.equal(renderTemplate('v: {{ .Values.a.b }}', ctx), 'v: x');
  assert.equal(renderTemplate('v: {{ .Values.a.n | quote }}', ctx), 'v: "3"');
  assert.equal(renderTemplate('a:\n  {{- toYaml .Values.a.m | nindent 2 }}\nb: 1', ctx), 'a:\n  k: v\nb: 1');
  assert.equal(renderTemplate('{{- if .Values.a.off }}yes{{- else }}no{{- end }}', ctx), 'no');
  assert.equal(renderTemplate('{{- if .Values.a.empty }}yes{{ end }}|{{ if .Values.a.list }}L{{ end }}', ctx), '|L');
  assert.equal(renderTemplate('{{ if not .Values.a.off }}{{ if .Values.a.on }}both{{ end }}{{ end }}', ctx), 'both');
  assert.equal(renderTemplate('x {{- /* c */ -}} y', ctx), 'xy');
  assert.equal(renderTemplate('{{ .Values.missing | default "d" }}', ctx), 'd');
  assert.throws(() => renderTemplate('{{ include "x" . }}', ctx), /unsupported/);
  assert.throws(() => renderTemplate('{{ .Values.a.m }}', ctx), /toYaml/);
  assert.throws(() => renderTemplate('{{ if .Values.a.on }}', ctx), /without end/);
});
