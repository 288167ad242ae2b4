// Container defaults (issue 13 item 1): the mounted ConfigMap file is the configuration, the data dir falls back
// to the cache volume, a kubelet-style symlink swap reloads the configuration without a signal, ENVIRONMENT=production
// turns the mock model off, every command answers --help, `agentd version`, log.format: text, import-litellm.
// AGENTD_APP_DIR stands in for /app (the container's layout) so that the tests need no root and no /app.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, renameSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { BIN, startAgentd } from '../lib/agentd.mjs';

function cleanEnv(extra = {}) {
  const e = { ...process.env };
  for (const k of Object.keys(e)) if (k.startsWith('AGENTD_') || k === 'ENVIRONMENT') delete e[k];
  return { ...e, ...extra };
}
function run(args, env = {}) { return spawnSync(BIN, args, { encoding: 'utf8', env: cleanEnv(env) }); }

// A ConfigMap volume as kubelet lays it out: agentd.yaml -> ..data/agentd.yaml, ..data -> ..<timestamp>.
function configMapVolume(dir, text) {
  mkdirSync(join(dir, '..v1'), { recursive: true });
  writeFileSync(join(dir, '..v1', 'agentd.yaml'), text);
  symlinkSync('..v1', join(dir, '..data'));
  symlinkSync('..data/agentd.yaml', join(dir, 'agentd.yaml'));
}
// kubelet's update: a new timestamped directory, a new ..data_tmp symlink renamed over ..data, the old one removed.
function configMapUpdate(dir, version, text) {
  mkdirSync(join(dir, `..v${version}`));
  writeFileSync(join(dir, `..v${version}`, 'agentd.yaml'), text);
  symlinkSync(`..v${version}`, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  rmSync(join(dir, `..v${version - 1}`), { recursive: true, force: true });
}

async function models(d) {
  const r = await d.fetch('/v1/models');
  assert.equal(r.status, 200);
  return (await r.json()).data.map((m) => m.id);
}

test('with no --config nor AGENTD_CONFIG, /app/config/agentd.yaml is the configuration', async () => {
  const app = mkdtempSync(join(tmpdir(), 'agentd-app-'));
  mkdirSync(join(app, 'config'));
  writeFileSync(join(app, 'config', 'agentd.yaml'), 'models:\n  - name: from-configmap\n    provider: mock\n');
  const d = await startAgentd({ env: cleanEnv({ AGENTD_APP_DIR: app }), inheritEnv: false });
  try {
    const l = d.logs.find((x) => x.msg === 'listening');
    assert.equal(l.config, join(app, 'config', 'agentd.yaml'));
    assert.ok((await models(d)).includes('from-configmap'));
    // the CLI reads the same file (kubectl exec ... agentd config print)
    const p = run(['config', 'print'], { AGENTD_APP_DIR: app });
    assert.equal(p.status, 0, p.stderr);
    assert.match(p.stdout, /# effective configuration from \S+\/config\/agentd\.yaml/);
    assert.match(p.stdout, /from-configmap/);
  } finally { await d.stop(); rmSync(app, { recursive: true, force: true }); }
  // AGENTD_CONFIG still wins over the mounted file
  const app2 = mkdtempSync(join(tmpdir(), 'agentd-app-'));
  mkdirSync(join(app2, 'config'));
  writeFileSync(join(app2, 'config', 'agentd.yaml'), 'models:\n  - name: from-configmap\n    provider: mock\n');
  writeFileSync(join(app2, 'other.yaml'), 'models:\n  - name: from-env\n    provider: mock\n');
  const d2 = await startAgentd({ env: cleanEnv({ AGENTD_APP_DIR: app2, AGENTD_CONFIG: join(app2, 'other.yaml') }), inheritEnv: false });
  try {
    const m = await models(d2);
    assert.ok(m.includes('from-env') && !m.includes('from-configmap'), m.join());
  } finally { await d2.stop(); rmSync(app2, { recursive: true, force: true }); }
});

test('a data dir that cannot be created falls back to /app/cache, says so, and the pod becomes ready', async () => {
  const app = mkdtempSync(join(tmpdir(), 'agentd-app-'));
  writeFileSync(join(app, 'not-a-dir'), 'x');
  const d = await startAgentd({
    env: cleanEnv({ AGENTD_APP_DIR: app }), inheritEnv: false, noDataDir: true,
    args: ['--data-dir', join(app, 'not-a-dir', 'data')],
  });
  try {
    const w = await d.waitLog((l) => l.msg === 'data dir cannot be created; using the container cache volume instead');
    assert.equal(w.level, 'warn');
    assert.equal(w.configured, join(app, 'not-a-dir', 'data'));
    assert.equal(w.data_dir, join(app, 'cache'));
    assert.equal(d.logs.find((l) => l.msg === 'listening').data_dir, join(app, 'cache'));
    const r = await d.opsFetch('/ready');
    assert.equal(r.status, 200, await r.text());
  } finally { await d.stop(); rmSync(app, { recursive: true, force: true }); }
});

test('a ConfigMap update (kubelet swaps the ..data symlink) is reloaded without a signal', async () => {
  const app = mkdtempSync(join(tmpdir(), 'agentd-app-'));
  const cfg = join(app, 'config');
  mkdirSync(cfg);
  configMapVolume(cfg, 'models:\n  - name: first\n    provider: mock\n');
  const d = await startAgentd({ env: cleanEnv({ AGENTD_APP_DIR: app }), inheritEnv: false });
  try {
    assert.ok((await models(d)).includes('first'));
    configMapUpdate(cfg, 2, 'models:\n  - name: second\n    provider: mock\n');
    const changed = await d.waitLog((l) => l.msg === 'configuration file changed: reloading');
    assert.equal(changed.noticed_by, 'watch'); // the directory watch, not the 2 s poll
    await d.waitLog((l) => /^configuration reloaded \(generation 2\)/.test(l.msg));
    const m = await models(d);
    assert.ok(m.includes('second') && !m.includes('first'), m.join());
    // a refused file keeps the running configuration, and the next good one is picked up
    configMapUpdate(cfg, 3, 'models:\n  - name: [broken\n');
    await d.waitLog((l) => l.msg === 'configuration reload refused; keeping the current configuration');
    assert.ok((await models(d)).includes('second'));
    configMapUpdate(cfg, 4, 'models:\n  - name: fourth\n    provider: mock\n');
    await d.waitLog((l) => /^configuration reloaded \(generation 3\)/.test(l.msg));
    assert.ok((await models(d)).includes('fourth'));
  } finally { await d.stop(); rmSync(app, { recursive: true, force: true }); }
});

test('ENVIRONMENT=production turns the mock model off unless configured on; the start-up line lists the models', async () => {
  const app = mkdtempSync(join(tmpdir(), 'agentd-app-'));
  const listed = (d) => d.logs.find((l) => l.msg === 'listening').models.split(',').filter(Boolean);
  let d = await startAgentd({ env: cleanEnv({ AGENTD_APP_DIR: app }), inheritEnv: false });
  try { assert.deepEqual(listed(d).filter((m) => m.startsWith('mock')), ['mock', 'mock-embedding']); } finally { await d.stop(); }
  d = await startAgentd({ env: cleanEnv({ AGENTD_APP_DIR: app, ENVIRONMENT: 'production' }), inheritEnv: false,
    config: 'models:\n  - name: served\n    provider: mock\n' });
  try { assert.deepEqual(listed(d), ['served']); } finally { await d.stop(); }
  d = await startAgentd({ env: cleanEnv({ AGENTD_APP_DIR: app, ENVIRONMENT: 'production' }), inheritEnv: false,
    config: 'gateway:\n  mock_model: true\n' });
  try { assert.deepEqual(listed(d), ['mock', 'mock-embedding']); } finally { await d.stop(); }
  rmSync(app, { recursive: true, force: true });
});

test('every command and subcommand answers --help with exit 0', () => {
  const cmds = [['serve'], ['config'], ['config', 'check'], ['config', 'print'], ['config', 'describe'],
    ['config', 'import-litellm'], ['keys'], ['keys', 'create'], ['keys', 'list'], ['keys', 'show'], ['keys', 'update'],
    ['keys', 'revoke'], ['spend'], ['spend', 'report'], ['spend', 'whatif'], ['sandbox'], ['sandbox', 'run'],
    ['sandbox', 'check'], ['sandbox', 'batch'], ['sandbox', 'bench'], ['version'], ['help']];
  for (const c of cmds) {
    for (const h of c.length === 1 ? ['--help', '-h'] : ['--help']) {
      const r = run([...c, h]);
      assert.equal(r.status, 0, `agentd ${c.join(' ')} ${h}: ${r.stderr}`);
      assert.match(r.stdout, /usage: agentd/, `agentd ${c.join(' ')} ${h}`);
    }
  }
  assert.equal(run(['--help']).status, 0);
  assert.equal(run(['no-such-command']).status, 2);
});

test('agentd version: version, git commit, build date, compiler, linked libraries', () => {
  const r = run(['version']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^agentd \d+\.\d+\.\d+\n/);
  assert.match(r.stdout, /\ncommit: +([0-9a-f]{7,40}|unknown)\n/);
  assert.match(r.stdout, /\nbuilt: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n/);
  assert.match(r.stdout, /\ncompiler: +(clang|gcc) \d+\.\d+/);
  for (const lib of ['libuv', 'http-parser', 'libcurl', 'cJSON', 'libyaml', 'libseccomp', 'SQLite', 'OpenSSL', 'zlib'])
    assert.match(r.stdout, new RegExp(`\\n  ${lib} \\d+\\.\\d+`), lib);
  const commit = spawnSync('git', ['-C', new URL('../..', import.meta.url).pathname, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
  const shown = r.stdout.match(/\ncommit: +(\S+)/)[1];
  if (commit.status === 0 && shown !== 'unknown') assert.ok(commit.stdout.startsWith(shown) || /^[0-9a-f]+$/.test(shown));
});

test('log.format: text writes "TIME LEVEL message key=value" lines', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-text-'));
  writeFileSync(join(dir, 'a.yaml'), 'log:\n  format: text\n');
  const child = spawn(BIN, ['serve', '--config', join(dir, 'a.yaml'), '--listen', '127.0.0.1:0', '--ops-listen',
    '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--workers', '1'], { env: cleanEnv({ AGENTD_APP_DIR: dir }), stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const listening = await new Promise((resolve, reject) => {
    child.stderr.on('data', (c) => {
      err += c;
      const line = err.split('\n').find((l) => / listening /.test(l));
      if (line) resolve(line);
    });
    child.on('exit', () => reject(new Error(`exited:\n${err}`)));
  });
  const exited = new Promise((r) => child.on('exit', r));
  child.kill('SIGTERM');
  await exited;
  assert.match(listening, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z INFO  listening api=127\.0\.0\.1:\d+ ops=127\.0\.0\.1:\d+ workers=1 /);
  assert.match(listening, / config=\S+a\.yaml /);
  for (const l of err.trim().split('\n')) assert.throws(() => JSON.parse(l), undefined, l);
  assert.match(err, /INFO  stopped\n$/);
  rmSync(dir, { recursive: true, force: true });
});

test('config import-litellm: model_list and router_settings become agentd YAML that passes config check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-litellm-'));
  const src = join(dir, 'litellm.yaml');
  writeFileSync(src, `model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      rpm: 600
  - model_name: gpt-4o
    litellm_params:
      model: azure/my-gpt4o
      api_base: https://example.openai.azure.com
      api_version: "2024-10-21"
      api_key: os.environ/AZURE_API_KEY
      weight: 2
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: sk-ant-inline-secret
  - model_name: nova
    litellm_params:
      model: bedrock/amazon.nova-pro-v1:0
      aws_region_name: us-east-1
  - model_name: local
    litellm_params:
      model: ollama/llama3.1
      api_base: http://127.0.0.1:11434/v1
  - model_name: embed
    litellm_params:
      model: text-embedding-3-small
    model_info:
      mode: embedding
  - model_name: sagemaker-llama
    litellm_params:
      model: sagemaker/my-llama-endpoint
router_settings:
  routing_strategy: least-busy
  timeout: 45
  num_retries: 2
  redis_host: redis
litellm_settings:
  drop_params: true
general_settings:
  master_key: sk-1234
`);
  const r = run(['config', 'import-litellm', src]);
  assert.equal(r.status, 0, r.stderr);
  const out = join(dir, 'agentd.yaml');
  writeFileSync(out, r.stdout);
  const chk = run(['config', 'check', out]);
  assert.equal(chk.status, 0, `${chk.stderr}\n${r.stdout}`);
  // what was carried over
  const printed = run(['config', 'print', '--config', out]).stdout;
  assert.match(printed, /name: "?gpt-4o"?[\s\S]*provider: openai[\s\S]*provider: azure-openai[\s\S]*my-gpt4o/);
  assert.match(r.stdout, /api_key_env: "AZURE_API_KEY"/);
  assert.match(r.stdout, /weight: 2/);
  assert.match(r.stdout, /region: "us-east-1"/);
  assert.match(r.stdout, /provider: openai-compatible\n\s+model: "llama3.1"\n\s+base_url: "http:\/\/127\.0\.0\.1:11434\/v1"/);
  assert.match(r.stdout, /- name: "embed"\n\s+embeddings: true/);
  assert.match(r.stdout, /request_timeout: 45000ms/);
  assert.doesNotMatch(r.stdout, /sk-ant-inline-secret|sk-1234/);
  // what was not, each named
  const notes = r.stderr;
  for (const re of [/model_list\[0\]\.litellm_params\.rpm/, /model_list\[2\]: an inline api_key is not copied/,
    /model_list\[6\]: provider 'sagemaker'/, /router_settings\.routing_strategy/, /router_settings\.num_retries/,
    /router_settings\.redis_host/, /litellm_settings\.drop_params/, /general_settings\.master_key/])
    assert.match(notes, re);
  assert.equal(notes.trim().split('\n').length, 8, notes);
  assert.match(r.stdout, /# 8 settings could not be carried over/);
  // not a LiteLLM file
  writeFileSync(join(dir, 'bad.yaml'), 'server:\n  listen: :8000\n');
  const bad = run(['config', 'import-litellm', join(dir, 'bad.yaml')]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /bad\.yaml: no model_list/);
  assert.equal(run(['config', 'import-litellm', join(dir, 'missing.yaml')]).status, 2);
  rmSync(dir, { recursive: true, force: true });
});
