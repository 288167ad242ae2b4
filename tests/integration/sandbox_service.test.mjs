// The sandbox as a service (issue 11 item 6): POST /v1/sandbox/runs against the real daemon, its warm pool, its
// admission (one run at a time, one waiting, the next refused), its ceilings, its errors in OpenAI's format, the
// cancellation of a run whose client went away, virtual keys and their rate limit, and its metrics. What the host
// cannot do (no namespaces) is skipped by name with `agentd sandbox check`'s reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, startAgentd } from '../lib/agentd.mjs';
import { cgroupParents, sandboxCheck } from '../lib/sandbox.mjs';

const UID_BASE = 1620000000;
const SAN_ENV = { ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0:exitcode=86' };
const { skip } = sandboxCheck(BIN, UID_BASE, 64);

const CONFIG = `
server: { workers: 1 }
sandbox:
  uid_base: ${UID_BASE}
  uid_count: 64
  service:
    warm: 1
    prewarm: true
    max_running: 1
    max_queued: 1
    max_code_bytes: 1KiB
    max_timeout: 5s
    max_output_bytes: 64KiB
    output_files: 4
    output_files_bytes: 4KiB
`;

let d;
before(async () => {
  if (skip) return;
  d = await startAgentd({ config: CONFIG });
});
after(async () => {
  if (!d) return;
  const r = await d.stop();
  assert.equal(r.code, 0, d.rawStderr.slice(-3000));
});

const run = (body, headers = {}, signal) => d.fetch('/v1/sandbox/runs', {
  method: 'POST', headers: { 'content-type': 'application/json', ...headers },
  body: typeof body === 'string' ? body : JSON.stringify(body), signal,
});

async function ok200(body) {
  const r = await run(body);
  const j = await r.json();
  assert.equal(r.status, 200, JSON.stringify(j));
  return j;
}

async function bad(body, status, param, code, msgPart) {
  const r = await run(body);
  assert.equal(r.status, status);
  assert.match(r.headers.get('content-type'), /application\/json/);
  const j = await r.json();
  assert.deepEqual(Object.keys(j), ['error']);
  assert.deepEqual(Object.keys(j.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(j.error.type, status === 429 ? 'rate_limit_error' : 'invalid_request_error');
  assert.equal(j.error.param, param);
  assert.equal(j.error.code, code);
  if (msgPart) assert.ok(j.error.message.includes(msgPart), j.error.message);
  return j;
}

async function metric(name) {
  const text = await (await d.opsFetch('/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.split(' ').pop()) : 0;
}

test('the files a run leaves in /work come back with its result; symlinks are not followed', { skip }, async () => {
  const code = [
    'import os',
    'open("out.csv", "w").write("a,b\\n1,2\\n")',
    'open("out.bin", "wb").write(bytes([0, 1, 255]))',
    'open("changed.txt", "a").write(" more")',
    'os.symlink("/etc/passwd", "passwd")', // the host's, were it followed from outside
    'os.symlink("/work/out.csv", "link.csv")',
    'os.mkfifo("pipe")', // opening it blocking would hang the reader
    'os.mkdir("sub"); open("sub/inner.txt", "w").write("walked")',
  ].join('\n');
  const j = await ok200({ language: 'python', code,
    files: [{ name: 'changed.txt', content: 'given' }, { name: 'same.txt', content: 'left alone' }] });
  assert.equal(j.reason, 'exit', JSON.stringify(j));
  assert.equal(j.exit_code, 0, j.stderr);
  // sorted by name; the snippet and the input left unchanged are not outputs
  assert.deepEqual(j.files.map((f) => f.name), ['changed.txt', 'out.bin', 'out.csv', 'sub/inner.txt']);
  assert.deepEqual(j.files[0], { name: 'changed.txt', size: 10, mode: 0o644, content: 'given more' });
  assert.deepEqual(j.files[1], { name: 'out.bin', size: 3, mode: 0o644, content_base64: Buffer.from([0, 1, 255]).toString('base64') });
  assert.equal(j.files[2].content, 'a,b\n1,2\n');
  assert.equal(j.files_truncated, false);
  assert.ok(!JSON.stringify(j).includes('root:'), 'a symlink was followed: ' + JSON.stringify(j));

  // a command that writes nothing: an empty list, not an absent one
  const t = await ok200({ command: ['/bin/true'] });
  assert.deepEqual(t.files, []);
  assert.equal(t.files_truncated, false);
});

// The engine does not watch a running child's control socket (that would wake it mid-run): a set-up that fails after
// the run was handed over (here: the execve) is still told apart from the program's own exit, when it is reaped.
test('a program that cannot be started is a 500 sandbox_error naming why, not an exit', { skip }, async () => {
  for (const [command, why] of [[['/nonexistent/prog'], /execve.*No such file/], [['nosuchprog'], /not found in PATH/]]) {
    const r = await run({ command });
    const j = await r.json();
    assert.equal(r.status, 500, JSON.stringify(j));
    assert.equal(j.error.code, 'sandbox_error');
    assert.match(j.error.message, why);
  }
  const j = await ok200({ command: ['/bin/sh', '-c', 'exit 7'] });
  assert.equal(j.reason, 'exit');
  assert.equal(j.exit_code, 7);
});

// The daemon and its descendants (the zygote, its children).
function tree(root) {
  const kids = new Map();
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const ppid = /^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))[1];
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(p);
    } catch { /* gone meanwhile */ }
  }
  const out = [];
  for (const todo = [String(root)]; todo.length;) {
    const p = todo.pop();
    out.push(p);
    todo.push(...(kids.get(p) || []));
  }
  return out;
}

// What the daemon's processes hold that a finished run left: an fd on a mount namespace no process lives in any
// more (the engine holds a warm or running child's, which is alive), or an fd on a run's /work (by device) that no
// live child has as its /work (the engine holds each warm child's from the start, and a tmpfs of a finished run
// may have passed its device number on to a new one).
function heldByDaemon(pid, workDevs) {
  const live = new Set();
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try { live.add(readlinkSync(`/proc/${p}/ns/mnt`)); } catch { /* gone meanwhile */ }
  }
  const liveWork = new Set();
  for (const p of tree(pid)) {
    try { liveWork.add(statSync(`/proc/${p}/root/work`).dev); } catch { /* gone meanwhile, or no /work */ }
  }
  const found = [];
  for (const p of tree(pid)) {
    let fds = [];
    try { fds = readdirSync(`/proc/${p}/fd`); } catch { continue; }
    for (const fd of fds) {
      try {
        const l = readlinkSync(`/proc/${p}/fd/${fd}`);
        if (l.startsWith('mnt:[')) {
          if (!live.has(l)) found.push(`${p} fd ${fd} holds ${l}, where no process lives`);
        } else if (!l.includes(':[')) {
          const dev = statSync(`/proc/${p}/fd/${fd}`).dev;
          if (!workDevs.has(dev) || liveWork.has(dev)) continue;
          found.push(`${p} fd ${fd} -> ${l} on a run's /work`);
        }
      } catch { /* closed meanwhile */ }
    }
  }
  return found;
}

// The engine keeps each run's mount namespace open until the result is out (so the exiting program does not pay for
// its teardown), then lets it go: after the runs, nothing of them may remain.
test('finished runs leave nothing behind: no cgroup, no mount namespace, no /work', { skip }, async () => {
  const parents = cgroupParents(); // the daemon is our child: its cgroup is ours
  const runs = [];
  for (let i = 0; i < 6; i++) {
    const j = await ok200({ language: 'sh', code: 'readlink /proc/self/ns/mnt; stat -c %d /work; echo x > /work/f' });
    assert.equal(j.exit_code, 0, j.stderr);
    const [ns, dev] = j.stdout.trim().split('\n');
    assert.match(ns, /^mnt:\[\d+\]$/);
    runs.push({ dev: Number(dev), cgroup: j.cgroup_name });
  }
  if (runs[0].cgroup) assert.ok(parents.length > 0, 'runs have cgroups, but no run-group parent was found');
  const devs = new Set(runs.map((r) => r.dev));
  const left = () => [
    ...heldByDaemon(d.child.pid, devs),
    ...runs.flatMap((r) => (r.cgroup ? parents.filter((p) => existsSync(join(p, r.cgroup))) : [])
      .map((p) => `cgroup ${join(p, r.cgroup)}`)),
  ];
  const t0 = Date.now();
  let now = left();
  while (now.length) {
    assert.ok(Date.now() - t0 < 5000, `left behind: ${now.join('; ')}`);
    await new Promise((r) => setTimeout(r, 20));
    now = left();
  }
});

test('files in subdirectories of /work come back by relative name; a symlinked directory is not followed; too deep is flagged', { skip }, async () => {
  const code = [
    'import os',
    'os.makedirs("out/deep")',
    'open("out/a.txt", "w").write("A")',
    'open("out/deep/b.txt", "w").write("B")',
    'os.symlink("/etc", "etc")', // a symlinked directory (the sandbox's /etc, or the host's were it followed)
    'os.symlink("/work/out", "outlink")', // one back into /work: would give out/a.txt twice
    'print(open("data/in.csv").read(), end="")',
    'open("data/new.csv", "w").write("n")',
  ].join('\n');
  // an input file with a directory in its name: made in /work before the run, and left unchanged, no output
  let j = await ok200({ language: 'python', code, files: [{ name: 'data/in.csv', content: 'x,y' }] });
  assert.equal(j.exit_code, 0, j.stderr);
  assert.equal(j.stdout, 'x,y');
  assert.deepEqual(j.files.map((f) => f.name), ['data/new.csv', 'out/a.txt', 'out/deep/b.txt']);
  assert.deepEqual(j.files.map((f) => f.content), ['n', 'A', 'B']);
  assert.equal(j.files_truncated, false, 'symlinks are skipped quietly');
  assert.ok(!JSON.stringify(j).includes('root:') && !JSON.stringify(j).includes('outlink'), JSON.stringify(j));

  // 8 directories deep comes back; a 9th level is not walked, and the result says so
  const deep = ['import os', 'p = "/".join("d%d" % i for i in range(1, 10))', 'os.makedirs(p)',
    'open(os.path.dirname(p) + "/eight.txt", "w").write("8")', 'open(p + "/nine.txt", "w").write("9")'].join('\n');
  j = await ok200({ language: 'python', code: deep });
  assert.equal(j.exit_code, 0, j.stderr);
  assert.deepEqual(j.files.map((f) => f.name), ['d1/d2/d3/d4/d5/d6/d7/d8/eight.txt']);
  assert.equal(j.files_truncated, true);

  // input names: relative paths of plain names only
  for (const name of ['/etc/x', 'a//b', 'a/', 'a/../b', 'a/.hidden', 'd1/d2/d3/d4/d5/d6/d7/d8/d9/f']) {
    await bad({ command: ['/bin/true'], files: [{ name, content: 'x' }] }, 400, 'files', 'invalid_sandbox_request');
  }
});

test('output files past output_files or output_files_bytes are left out and flagged, not an error', { skip }, async () => {
  // six files, four returned (the first by name)
  let j = await ok200({ language: 'sh', code: 'for f in f1 f2 f3 f4 f5 f6; do echo $f > $f; done' });
  assert.equal(j.exit_code, 0, j.stderr);
  assert.deepEqual(j.files.map((f) => f.name), ['f1', 'f2', 'f3', 'f4']);
  assert.equal(j.files_truncated, true);
  // one file larger than the 4 KiB budget is left out, the small one still comes back
  j = await ok200({ language: 'sh', code: 'head -c 5000 /dev/zero | tr "\\0" x > big; echo hi > small' });
  assert.equal(j.exit_code, 0, j.stderr);
  assert.deepEqual(j.files.map((f) => f.name), ['small']);
  assert.equal(j.files[0].content, 'hi\n');
  assert.equal(j.files_truncated, true);
  // a name the sandbox would refuse as input (hidden) is not returned either, and says so
  j = await ok200({ language: 'sh', code: 'echo x > .hidden' });
  assert.deepEqual(j.files, []);
  assert.equal(j.files_truncated, true);
});

test('a snippet in each language and a command, with stdin and files', { skip }, async () => {
  const py = await ok200({ language: 'python', code: 'import sys; print(sys.stdin.read().upper(), open("in.txt").read())',
    stdin: 'abc', files: [{ name: 'in.txt', content: 'file' }] });
  assert.equal(py.reason, 'exit');
  assert.equal(py.exit_code, 0);
  assert.equal(py.stdout, 'ABC file\n');
  for (const k of ['wall_ms', 'cpu_ms', 'peak_memory_bytes', 'queue_ms']) assert.equal(typeof py[k], 'number', k);
  assert.ok(py.host_uid >= UID_BASE && py.host_uid < UID_BASE + 64, String(py.host_uid));

  const sh = await ok200({ language: 'sh', args: ['-c', 'echo "$0" >&2; exit 3', 'to-stderr'] });
  assert.equal(sh.exit_code, 3);
  assert.equal(sh.stderr, 'to-stderr\n');

  const node = await ok200({ language: 'node', code: 'console.log([1, 2].map((x) => x * 2).join(","))' });
  assert.equal(node.stdout, '2,4\n');

  // the command is PID 1 of its namespace (signals from inside are ignored by it): a child of it can crash
  const cmd = await ok200({ command: ['/bin/sh', '-c', 'id -u; /bin/sh -c \'kill -SEGV $$\'; echo $?'] });
  assert.equal(cmd.reason, 'exit');
  assert.equal(cmd.stdout, '1000\n139\n');
});

test('bad input is a 400 in OpenAI\'s error format naming the field', { skip }, async () => {
  await bad('{"language":', 400, null, 'invalid_sandbox_request', 'JSON object');
  await bad({ language: 'cobol', code: 'x' }, 400, 'language', 'invalid_sandbox_request', 'unknown language');
  await bad({ language: 'python', code: 'x'.repeat(1025) }, 400, 'code', 'invalid_sandbox_request', 'ceiling of 1024');
  await bad({ command: ['/bin/true'], limits: { timeout_ms: 6000 } }, 400, 'limits.wall_ms', 'invalid_sandbox_request', 'ceiling');
  await bad({ command: ['/bin/true'], limits: { stdout_max: 1 << 20 } }, 400, 'limits.stdout_max', 'invalid_sandbox_request');
  await bad({ command: ['/bin/true'], network: 'host' }, 400, 'network', 'invalid_sandbox_request');
  await bad({ command: ['/bin/true'], network: 'egress' }, 400, 'network', 'invalid_sandbox_request', 'sandbox.egress.enabled');
  await bad({ command: ['/bin/true'], cmd: 1 }, 400, 'cmd', 'invalid_sandbox_request', 'unknown field');
  await bad({ command: ['/bin/true'], files: [{ name: '../etc/passwd', content: 'x' }] }, 400, 'files', 'invalid_sandbox_request');
  await bad({ code: 'print(1)' }, 400, 'language', 'invalid_sandbox_request');
  // GET is not a method of the route
  const r = await d.fetch('/v1/sandbox/runs');
  assert.equal(r.status, 405);
  assert.ok((await r.json()).error);
});

test('a run past its timeout is killed and says so', { skip }, async () => {
  const t0 = Date.now();
  const j = await ok200({ language: 'sh', code: 'sleep 30', limits: { timeout_ms: 300 } });
  assert.equal(j.reason, 'timeout');
  assert.ok(j.wall_ms >= 300 && j.wall_ms < 3000, String(j.wall_ms));
  assert.ok(Date.now() - t0 < 5000);
});

test('output past its cap ends the run, the output is truncated and marked', { skip }, async () => {
  const j = await ok200({ command: ['/usr/bin/yes'], limits: { stdout_max: 4096 } });
  assert.equal(j.reason, 'output_cap');
  assert.equal(j.stdout.length, 4096);
  assert.equal(j.stdout_truncated, true);
  // the default cap is the service's output_bytes (1 MiB), under its 64 KiB max_output_bytes ceiling
  const k = await ok200({ command: ['/usr/bin/yes'] });
  assert.equal(k.reason, 'output_cap');
  assert.equal(k.stdout.length, 64 * 1024);
});

test('concurrency: one running, one waiting, the next refused with 429', { skip }, async () => {
  const slow = { language: 'sh', code: 'sleep 0.5; echo done' };
  const first = run(slow);
  // the first is running once the gauge says so (the service admits in arrival order on the single worker)
  for (let i = 0; (await metric('agentd_sandbox_running')) < 1; i++) assert.ok(i < 500, 'first run never started');
  const second = run(slow);
  for (let i = 0; (await metric('agentd_sandbox_queued')) < 1; i++) assert.ok(i < 500, 'second run never queued');
  const third = await bad(slow, 429, null, 'sandbox_busy', 'busy');
  assert.ok(third);
  const [a, b] = await Promise.all([first, second]);
  const ja = await a.json(), jb = await b.json();
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  assert.equal(ja.stdout, 'done\n');
  assert.equal(jb.stdout, 'done\n');
  assert.ok(jb.queue_ms >= 200, `the second waited for the first: ${jb.queue_ms}`);
});

test('a client that goes away cancels its run', { skip }, async () => {
  const killed0 = await metric('agentd_sandbox_runs_total{reason="killed"}');
  const ac = new AbortController();
  const p = run({ language: 'sh', code: 'sleep 30' }, {}, ac.signal).catch((e) => e);
  for (let i = 0; (await metric('agentd_sandbox_running')) < 1; i++) assert.ok(i < 500, 'run never started');
  ac.abort();
  assert.equal((await p).name, 'AbortError');
  const t0 = Date.now();
  while ((await metric('agentd_sandbox_runs_total{reason="killed"}')) < killed0 + 1) assert.ok(Date.now() - t0 < 5000, 'not killed');
  assert.equal(await metric('agentd_sandbox_running'), 0);
});

test('nothing the code does reaches the daemon or the host network', { skip }, async () => {
  const code = `
import socket, os
try:
    s = socket.create_connection(("127.0.0.1", ${d ? d.port : 0}), timeout=1); print("connected")
except OSError as e:
    print("refused", e.errno)
print(os.path.exists("${d ? d.dir : '/nonexistent'}"))`;
  const j = await ok200({ language: 'python', code });
  assert.match(j.stdout, /^refused/);
  assert.match(j.stdout, /False\n$/);
});

test('virtual keys and their rate limit apply (auth.mode keys)', { skip }, async () => {
  const k = await startAgentd({ config: CONFIG + 'auth: { mode: keys }\n' });
  try {
    const cli = (args) => {
      const r = spawnSync(BIN, ['keys', ...args, '--data-dir', join(k.dir, 'data')], { encoding: 'utf8', env: { ...process.env, ...SAN_ENV } });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    const body = JSON.stringify({ command: ['/bin/true'] });
    const post = (key) => k.fetch('/v1/sandbox/runs', { method: 'POST', body, headers: key ? { authorization: `Bearer ${key}` } : {} });
    const none = await post(null);
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error.code, 'invalid_api_key');
    const wrong = await post('sk-agentd-not-a-key');
    assert.equal(wrong.status, 401);
    await wrong.arrayBuffer();
    const key = cli(['create', '--name', 'sbx', '--rpm', '2']).key;
    // the keyring picks a new key up within its poll interval
    let r;
    for (let t0 = Date.now(); (r = await post(key)).status === 401; await r.arrayBuffer()) assert.ok(Date.now() - t0 < 5000);
    assert.equal(r.status, 200, await r.clone().text());
    assert.equal((await r.json()).reason, 'exit');
    const r2 = await post(key);
    assert.equal(r2.status, 200);
    await r2.arrayBuffer();
    const r3 = await post(key);
    assert.equal(r3.status, 429);
    assert.ok(Number(r3.headers.get('retry-after')) >= 1);
    assert.equal((await r3.json()).error.code, 'rate_limit_exceeded');
  } finally {
    const r = await k.stop();
    assert.equal(r.code, 0, k.rawStderr.slice(-3000));
  }
});

test('agentd sandbox run --daemon URL runs through the daemon', { skip }, async () => {
  const cli = (args, input) => spawnSync(BIN, ['sandbox', 'run', '--daemon', d.url, ...args],
    { input, encoding: 'utf8', env: { ...process.env, ...SAN_ENV } });
  const before_ = await metric('agentd_sandbox_runs_total{reason="exit"}');
  const r = cli(['--lang', 'python', '--timeout', '3'], 'import os; print(os.getuid(), os.listdir("/work"))');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.stdout, "1000 ['main.py']\n");
  assert.ok(j.host_uid >= UID_BASE && j.host_uid < UID_BASE + 64, "from the daemon's pool");
  assert.equal(await metric('agentd_sandbox_runs_total{reason="exit"}'), before_ + 1);
  const e = cli(['--stdin-file', '-', '--', '/bin/cat'], 'through\n');
  assert.equal(e.status, 0, e.stderr);
  assert.equal(JSON.parse(e.stdout).stdout, 'through\n');
  // the daemon's ceilings apply, and its error is shown
  const big = cli(['--timeout', '100', '--', '/bin/true']);
  assert.equal(big.status, 2);
  assert.match(big.stderr, /answered 400: .*limits\.wall_ms/);
  const gone = spawnSync(BIN, ['sandbox', 'run', '--daemon', 'http://127.0.0.1:1', '--', '/bin/true'],
    { encoding: 'utf8', env: { ...process.env, ...SAN_ENV } });
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /connect/);
});

test('kill -9 of the daemon mid-run leaves no sandbox process behind', { skip }, async () => {
  const base = UID_BASE + 1000;
  const k = await startAgentd({ config: CONFIG.replace(`uid_base: ${UID_BASE}`, `uid_base: ${base}`) });
  // processes of the daemon's uid range (warm children and runs), with their command lines
  const inRange = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map((p) => {
    try {
      const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (!m || +m[1] < base || +m[1] >= base + 64) return null;
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch { return null; }
  }).filter((c) => c !== null);
  const tick = () => new Promise((r) => setTimeout(r, 10));
  const p = k.fetch('/v1/sandbox/runs', { method: 'POST', body: JSON.stringify({ language: 'sh', code: 'sleep 30 & sleep 31' }) }).catch((e) => e);
  const t0 = Date.now();
  while (inRange().filter((c) => c.startsWith('sleep')).length < 2) {
    assert.ok(Date.now() - t0 < 5000, `the run never started: ${inRange()}`);
    await tick();
  }
  await k.stop('SIGKILL');
  await p;
  const t1 = Date.now();
  while (inRange().length > 0) {
    assert.ok(Date.now() - t1 < 5000, `left behind: ${inRange()}`);
    await tick();
  }
});

test('runs are counted in metrics', { skip }, async () => {
  const before_ = await metric('agentd_sandbox_runs_total{reason="exit"}');
  await ok200({ command: ['/bin/true'] });
  assert.equal(await metric('agentd_sandbox_runs_total{reason="exit"}'), before_ + 1);
  assert.ok((await metric('agentd_sandbox_refused_total{reason="busy"}')) >= 1);
  const invalid = await metric('agentd_sandbox_refused_total{reason="invalid"}');
  await bad({ language: 'cobol', code: 'x' }, 400, 'language', 'invalid_sandbox_request');
  assert.equal(await metric('agentd_sandbox_refused_total{reason="invalid"}'), invalid + 1);
});

// A plain warm child waits in the runner (src/sandbox/sbx_runner.h): a small program exec'd from a memfd once the
// child is isolated, not a copy of agentd. Those waiting for a run: on their run's host uid already (a child still
// setting up, a warm interpreter's included, waits in recvmsg too, for its uid map, as root), blocked in recvmsg
// (47) on their control socket.
function waitingChildren(pid, base = UID_BASE) {
  return tree(pid).flatMap((p) => {
    try {
      if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() !== 'agentd-sbx') return [];
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))[1]);
      if (uid < base || uid >= base + 64) return [];
      if (readFileSync(`/proc/${p}/syscall`, 'utf8').split(' ')[0] !== '47') return [];
      return [{ pid: Number(p), exe: readlinkSync(`/proc/${p}/exe`), maps: readFileSync(`/proc/${p}/maps`, 'utf8') }];
    } catch { return []; } // gone meanwhile
  });
}

async function untilWaiting(daemon, n = 1, base = UID_BASE) {
  const t0 = Date.now();
  for (;;) {
    const w = waitingChildren(daemon.child.pid, base);
    if (w.length >= n) return w;
    assert.ok(Date.now() - t0 < 10000, `no warm child waiting for a run: ${tree(daemon.child.pid).join(' ')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a warm child waits in the runner, and a run goes to it straight from the daemon', { skip }, async () => {
  const direct0 = await metric('agentd_sandbox_direct_runs_total');
  let served = null;
  // The zygote offers a child to the daemon once it is ready; the first run may still find the offer on its way.
  for (let i = 0; i < 10 && (await metric('agentd_sandbox_direct_runs_total')) === direct0; i++) {
    const w = await untilWaiting(d);
    for (const c of w) {
      assert.match(c.exe, /^\/memfd:agentd-sandbox-runner/, `pid ${c.pid} waits in ${c.exe}`);
      // libc, the loader, the runner, stack, vdso: not agentd's 30-odd libraries
      assert.ok(c.maps.trim().split('\n').length < 40, c.maps);
      assert.doesNotMatch(c.maps, /libuv|libcrypto|libsqlite/);
    }
    const j = await ok200({ command: ['/bin/sh', '-c', 'echo $$; ls /proc/self/fd | tr "\\n" " "'] });
    assert.equal(j.exit_code, 0, j.stderr);
    assert.equal(j.stdout, '1\n0 1 2 3 '); // PID 1; nothing of the runner's or the engine's fds
    served = { pid: j.host_pid, waiting: w.map((c) => c.pid) };
  }
  assert.ok((await metric('agentd_sandbox_direct_runs_total')) > direct0, 'no run went straight to a warm child');
  assert.ok(served.waiting.includes(served.pid), `run on pid ${served.pid}, not one of ${served.waiting}`);
});

// /proc/PID/stat fields after the name: [0] state, [1] ppid, [2] pgrp, [3] session, ... [38] the scheduling policy
// (0 SCHED_OTHER, 3 SCHED_BATCH).
const statFields = (stat) => stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
const policyOf = (stat) => statFields(stat)[38];

test('the zygote runs as SCHED_BATCH (waking it never preempts the program); children and programs as SCHED_OTHER, in a session of their own', { skip }, async () => {
  const waiting = await untilWaiting(d); // the pool comes up after the daemon does: wait for it
  const zygotes = tree(d.child.pid).filter((p) => {
    try { return readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'agentd-zygote'; } catch { return false; }
  });
  assert.equal(zygotes.length, 1, tree(d.child.pid).join(' '));
  assert.equal(policyOf(readFileSync(`/proc/${zygotes[0]}/stat`, 'utf8')), 3);
  for (const c of waiting) assert.equal(policyOf(readFileSync(`/proc/${c.pid}/stat`, 'utf8')), 0);
  assert.equal(policyOf(readFileSync(`/proc/${d.child.pid}/stat`, 'utf8')), 0); // the daemon itself: untouched
  const j = await ok200({ command: ['/bin/sh', '-c', 'cat /proc/self/stat'] });
  assert.equal(j.exit_code, 0, j.stderr);
  assert.equal(policyOf(j.stdout), 0, j.stdout);
  // setsid, done while warm (docs/sandbox.md, phase A): the program (PID 1) leads its own session and group, so no
  // terminal of the host's is its controlling one
  assert.deepEqual(statFields(j.stdout).slice(2, 4), [1, 1], j.stdout);
});

test('a warm child that dies unused is replaced, and runs that find it gone still succeed', { skip }, async () => {
  for (let round = 0; round < 3; round++) {
    const w = await untilWaiting(d);
    for (const c of w) process.kill(c.pid, 'SIGKILL');
    // Once they are reaped (their sockets closed), at once: the daemon may still hold a dead child's offer (the
    // send to it fails and the run goes through the zygote), or it was withdrawn already. (A run handed over in
    // the instant between the kill and the exit ends with that SIGKILL, as through the zygote.)
    const t0 = Date.now();
    while (w.some((c) => existsSync(`/proc/${c.pid}`))) {
      assert.ok(Date.now() - t0 < 5000, 'a killed warm child was not reaped');
      await new Promise((r) => setImmediate(r));
    }
    const j = await ok200({ command: ['/bin/sh', '-c', 'echo ok'] });
    assert.equal(j.exit_code, 0, JSON.stringify(j));
    assert.equal(j.stdout, 'ok\n');
    assert.ok(!w.some((c) => c.pid === j.host_pid), 'a run was served by a killed child');
  }
  const j = await ok200({ command: ['/bin/true'] });
  assert.equal(j.reason, 'exit');
});

test('with AGENTD_SANDBOX_RUNNER=0 a warm child runs the last steps itself, with the same result', { skip }, async () => {
  const base = UID_BASE + 2000;
  const k = await startAgentd({ config: CONFIG.replace(`uid_base: ${UID_BASE}`, `uid_base: ${base}`),
    env: { AGENTD_SANDBOX_RUNNER: '0' } });
  try {
    const w = await untilWaiting(k, 1, base);
    for (const c of w) assert.doesNotMatch(c.exe, /memfd/, `pid ${c.pid} waits in ${c.exe}`);
    const r = await k.fetch('/v1/sandbox/runs', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['/bin/sh', '-c', 'echo $$; ls /proc/self/fd | tr "\\n" " "'] }) });
    const j = await r.json();
    assert.equal(r.status, 200, JSON.stringify(j));
    assert.equal(j.stdout, '1\n0 1 2 3 ');
    assert.ok(w.some((c) => c.pid === j.host_pid), `run on pid ${j.host_pid}, not one of ${w.map((c) => c.pid)}`);
  } finally {
    const s = await k.stop();
    assert.equal(s.code, 0, k.rawStderr.slice(-3000));
  }
});
