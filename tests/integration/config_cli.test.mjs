// `agentd config check|print`, precedence of file < environment < flags, errors with file:line:column.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { BIN, startAgentd } from '../lib/agentd.mjs';

const dir = mkdtempSync(join(tmpdir(), 'agentd-cfg-'));
function file(name, text) { const p = join(dir, name); writeFileSync(p, text); return p; }
function run(args, env = {}) {
  const e = { ...process.env, ...env };
  for (const k of Object.keys(e)) if (k.startsWith('AGENTD_') || ['ENVIRONMENT', 'MAX_CONCURRENT_REQUESTS', 'REQUEST_TIMEOUT_SECONDS'].includes(k)) if (!(k in env)) delete e[k];
  return spawnSync(BIN, args, { encoding: 'utf8', env: e });
}

test('config check: a valid file exits 0', () => {
  const p = file('ok.yaml', 'server:\n  listen: 127.0.0.1:9000\n  workers: 2\n  timeouts:\n    header: 5s\nlog:\n  level: debug\n');
  const r = run(['config', 'check', p]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /ok/);
});

test('config check: every error names file:line:column and what is allowed; exit 2', () => {
  const p = file('bad.yaml', [
    'server:',
    '  workers: 9999',
    '  listne: 1.2.3.4:80',
    '  limits:',
    '    body_bytes: 12 parsecs',
    '  timeouts:',
    '    idle: forever',
    'log:',
    '  level: chatty',
    '  access: maybe',
    '',
  ].join('\n'));
  const r = run(['config', 'check', p]);
  assert.equal(r.status, 2);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 6, r.stderr);
  assert.match(r.stderr, /bad\.yaml:2:12: server\.workers: 9999 is out of range \(allowed 0\.\.256\)/);
  assert.match(r.stderr, /bad\.yaml:3:3: server: unknown key 'listne' \(allowed: listen, ops_listen, workers/);
  assert.match(r.stderr, /bad\.yaml:5:17: server\.limits\.body_bytes: '12 parsecs' is not a size/);
  assert.match(r.stderr, /bad\.yaml:7:11: server\.timeouts\.idle: 'forever' is not a duration/);
  assert.match(r.stderr, /bad\.yaml:9:10: log\.level: 'chatty' is not allowed \(allowed: debug, info, warn, error\)/);
  assert.match(r.stderr, /bad\.yaml:10:11: log\.access: 'maybe' is not a boolean/);
});

test('config check: broken YAML, wrong types, duplicates, aliases', () => {
  let r = run(['config', 'check', file('syntax.yaml', 'server:\n  workers: [1, 2\n')]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /syntax\.yaml:\d+:\d+: /);
  r = run(['config', 'check', file('type.yaml', 'server:\n  limits: 5\n')]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /type\.yaml:2:11: server\.limits: expected a map/);
  r = run(['config', 'check', file('dup.yaml', 'log:\n  level: info\n  level: debug\n')]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /dup\.yaml:3:3: log\.level: duplicate key/);
  r = run(['config', 'check', file('alias.yaml', 'a: &x 1\n')]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /anchors are not allowed/);
  r = run(['config', 'check', join(dir, 'missing.yaml')]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /cannot open/);
});

test('precedence: file < environment < flags; Kubernetes names are honoured', () => {
  const p = file('prec.yaml', 'server:\n  workers: 2\n  environment: staging\ngateway:\n  request_timeout: 10s\n');
  let r = run(['config', 'print', '--config', p]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /workers: 2\n/);
  assert.match(r.stdout, /environment: "staging"/);
  r = run(['config', 'print', '--config', p], {
    AGENTD_SERVER_WORKERS: '3', ENVIRONMENT: 'production', MAX_CONCURRENT_REQUESTS: '10', REQUEST_TIMEOUT_SECONDS: '30',
  });
  assert.match(r.stdout, /workers: 3\n/);
  assert.match(r.stdout, /environment: "production"/);
  assert.match(r.stdout, /max_concurrent_requests: 10\n/);
  assert.match(r.stdout, /request_timeout: 30s\n/);
  r = run(['config', 'print', '--config', p, '--workers', '4', '--set', 'server.environment=dev'], {
    AGENTD_SERVER_WORKERS: '3', ENVIRONMENT: 'production',
  });
  assert.match(r.stdout, /workers: 4\n/);
  assert.match(r.stdout, /environment: "dev"/);
  // The specific AGENTD_ variable beats the generic Kubernetes name.
  r = run(['config', 'print'], { ENVIRONMENT: 'production', AGENTD_SERVER_ENVIRONMENT: 'canary' });
  assert.match(r.stdout, /environment: "canary"/);
});

test('bad environment values and flags are errors that name their source', () => {
  let r = run(['config', 'print'], { AGENTD_SERVER_WORKERS: 'many' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /environment AGENTD_SERVER_WORKERS: server\.workers: 'many' is not an integer/);
  r = run(['config', 'print'], { REQUEST_TIMEOUT_SECONDS: '30s' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /REQUEST_TIMEOUT_SECONDS.*not a whole number of seconds/);
  r = run(['config', 'print', '--set', 'server.nope=1']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown setting 'server\.nope'/);
  r = run(['serve', '--listen', 'nonsense']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /command line --set server\.listen: server\.listen: 'nonsense' is not an address/);
});

test('with no file at all, agentd starts on its embedded defaults', async () => {
  const d = await startAgentd({});
  try {
    const line = d.logs.find((l) => l.msg === 'listening');
    assert.equal(line.config, '(built-in defaults)');
    assert.equal((await d.fetch('/health')).status, 200);
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('serve refuses an invalid file with exit 2 and the same messages as config check', () => {
  const p = file('serve-bad.yaml', 'server:\n  workers: -1\n');
  const r = run(['serve', '--config', p, '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /serve-bad\.yaml:2:12: server\.workers: -1 is out of range/);
});

test('a listen port already in use fails the start with a clear message', async () => {
  const d = await startAgentd({});
  try {
    const r = run(['serve', '--listen', `127.0.0.1:${d.opsPort}`, '--ops-listen', '127.0.0.1:0', '--data-dir', join(dir, 'd2')]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot listen: bind 127\.0\.0\.1:\d+: Address already in use/);
  } finally {
    await d.stop();
  }
});

test('docs/configuration.md lists exactly the settings the binary knows (scripts/gen-docs.sh)', () => {
  const r = run(['config', 'describe']);
  assert.equal(r.status, 0);
  const doc = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
  const section = doc.split('<!-- settings:begin -->\n')[1].split('<!-- settings:end -->')[0];
  assert.equal(section, r.stdout, 'docs/configuration.md is stale: run scripts/gen-docs.sh');
});

test('config print masks api_key and secret header values, keeps the others (issue 15 item 4)', () => {
  const p = file('secrets.yaml', [
    'models:',
    '  - name: inline',
    '    provider: openai',
    '    model: gpt-4o',
    '    api_key: sk-inline-key-1',
    '    headers: ["Authorization: Bearer sk-auth-2", "X-Api-Key: xk-3", "X-Request-Source: visible-4"]',
    '  - name: listed',
    '    deployments:',
    '      - provider: openai-compatible',
    '        model: m',
    '        base_url: http://127.0.0.1:9',
    '        headers:',
    '          - "cookie: sid=ck-5"',
    '          - "X-Upstream-Token: tk-6"',
    '          - "x-client-secret: cs-7"',
    '          - "X-DB-Password: pw-8"',
    '          - "X-Team: visible-9"',
    '',
  ].join('\n'));
  const r = run(['config', 'print', '--config', p]);
  assert.equal(r.status, 0, r.stderr);
  for (const secret of ['sk-inline-key-1', 'sk-auth-2', 'xk-3', 'ck-5', 'tk-6', 'cs-7', 'pw-8']) {
    assert.ok(!r.stdout.includes(secret), `${secret} printed`);
  }
  assert.match(r.stdout, /api_key: "\*\*\*"/);
  assert.ok(r.stdout.includes('headers: ["Authorization: ***", "X-Api-Key: ***", "X-Request-Source: visible-4"]'), r.stdout);
  assert.ok(r.stdout.includes('headers: ["cookie: ***", "X-Upstream-Token: ***", "x-client-secret: ***", "X-DB-Password: ***", "X-Team: visible-9"]'), r.stdout);
});
