// Warm Python interpreters (issue 11 item 9): POST /v1/sandbox/runs with "language":"python" served by an
// interpreter that started before the run, against the cold path (`python3 main.py`), on two daemons: one with
// `warm_python: 1`, one with `warm_python: 0`. A table of programs must give the same result on both (stdout,
// stderr, exit code, reason, truncation, output files), and no state may cross runs: every warm run is a process
// of its own that ends with it. A run is known to be warm when its host_pid is the interpreter the test saw
// waiting for a run (blocked in recvmsg on its control socket) before sending it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { BIN, startAgentd } from '../lib/agentd.mjs';

const WARM_BASE = 1650000000;
const COLD_BASE = 1650000100;
const SAN_ENV = { ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0:exitcode=86' };
const checkOut = spawnSync(BIN, ['sandbox', 'check', '--uid-base', String(WARM_BASE), '--uid-count', '64'],
  { encoding: 'utf8', env: { ...process.env, ...SAN_ENV } });
let check = null;
try { check = JSON.parse(checkOut.stdout); } catch { check = null; }
const python = spawnSync('/usr/bin/python3', ['-c', 'pass']).status === 0;
const skip = !check ? `sandbox check printed no JSON (exit ${checkOut.status})`
  : !check.sandbox_works ? `sandbox unusable here: ${check.error}`
    : !python ? 'no /usr/bin/python3 on this host'
      : process.getuid() !== 0 ? 'runs need distinct host uids to tell the pools apart (root)' : false;

const config = (base, warmPython) => `
server: { workers: 1 }
sandbox:
  uid_base: ${base}
  uid_count: 64
  service:
    warm: 1
    warm_python: ${warmPython}
    prewarm: true
    max_running: 1
    max_timeout: 5s
    max_output_bytes: 64KiB
    output_files: 8
    output_files_bytes: 16KiB
`;

let warm, cold;
before(async () => {
  if (skip) return;
  [warm, cold] = await Promise.all([startAgentd({ config: config(WARM_BASE, 1) }),
    startAgentd({ config: config(COLD_BASE, 0) })]);
});
after(async () => {
  for (const d of [warm, cold]) {
    if (!d) continue;
    const r = await d.stop();
    assert.equal(r.code, 0, d.rawStderr.slice(-3000));
  }
  if (!skip) assert.deepEqual(inRange(WARM_BASE).concat(inRange(COLD_BASE)), [], 'sandbox processes left behind');
});

const run = async (d, body) => {
  const r = await d.fetch('/v1/sandbox/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const j = await r.json();
  assert.equal(r.status, 200, JSON.stringify(j));
  return j;
};

// Processes of a daemon's uid range: [pid, cmdline].
function inRange(base) {
  const out = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const uid = Number(/\nUid:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))[1]);
      if (uid >= base && uid < base + 64) out.push([Number(p), readFileSync(`/proc/${p}/cmdline`, 'utf8')]);
    } catch { /* gone meanwhile */ }
  }
  return out;
}

// The warm interpreter of the warm daemon once it waits for a run: its bootstrap says READY, then blocks in
// recvmsg (what /proc/PID/syscall shows). Polls /proc for that state (the event itself), at most 20 s.
const RECVMSG = process.arch === 'arm64' ? 212 : 47;
async function readyInterpreter() {
  const until = Date.now() + 20000;
  while (Date.now() < until) {
    for (const [pid, cmd] of inRange(WARM_BASE)) {
      if (!cmd.startsWith('/usr/bin/python3\0-c\0import sys\ndef _agentd_boot')) continue;
      try {
        if (Number(readFileSync(`/proc/${pid}/syscall`, 'utf8').split(' ')[0]) === RECVMSG) return pid;
      } catch { /* not yet, or gone */ }
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('no warm interpreter became ready: ' + JSON.stringify(inRange(WARM_BASE)));
}

// A run on the warm interpreter (asserted), and the same run on the cold path.
async function both(body) {
  const pid = await readyInterpreter();
  const w = await run(warm, body);
  assert.equal(w.host_pid, pid, 'the run was not served by the ready interpreter: ' + JSON.stringify(w));
  const c = await run(cold, body);
  return { w, c };
}

const SAME = ['reason', 'exit_code', 'signal', 'stdout', 'stderr', 'stdout_truncated', 'stderr_truncated',
  'files', 'files_truncated', 'error'];
function assertSame(w, c, what) {
  for (const k of SAME) assert.deepEqual(w[k], c[k], `${what}: ${k} differs\nwarm: ${JSON.stringify(w)}\ncold: ${JSON.stringify(c)}`);
}

const TABLE = [
  ['print', { code: 'print("hello")\nprint(1 + 1)' }],
  ['stdin echo', { code: 'import sys\nd = sys.stdin.read()\nprint(d.upper(), end="")\nprint(sys.stdin.seekable(), sys.stdin.isatty())', stdin: 'abc\nxyz\n' }],
  ['sys.exit(3)', { code: 'import sys\nprint("before")\nsys.exit(3)' }],
  ['sys.exit("msg")', { code: 'import sys\nsys.exit("bye")' }],
  ['os._exit', { code: 'import os\nos._exit(7)' }],
  ['raise', { code: 'def f():\n    raise ValueError("boom")\nprint("x")\nf()' }],
  ['syntax error', { code: 'print("a")\ndef (:\n' }],
  ['excepthook sees only the program', { code: 'import sys\ndef h(t, v, tb):\n    print("hook", t.__name__, tb.tb_frame.f_code.co_filename, tb.tb_next)\nsys.excepthook = h\nraise KeyError(1)' }],
  ['the start-up state', {
    code: [
      'import sys, os, resource',
      'print(sorted(k for k in globals()))',
      'print(sorted(sys.modules))',
      'print(sys.argv, sys.path, sys.orig_argv, __file__, __name__, __spec__, __cached__, __loader__.path)',
      'print(sys.flags)',
      'print(os.getcwd(), oct(os.umask(0o22)), os.getuid(), os.getgid(), os.getpid(), os.getppid())',
      'print(sorted(os.listdir("/proc/self/fd")))',
      'print(sorted(os.environ.items()))',
      'print([resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")])',
      'print(sys.stdout.encoding, sys.stdout.errors, sys.stdout.line_buffering, sys.stdout.seekable(), sys.stderr.errors)',
      'print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())',
    ].join('\n'),
    env: { FOO: 'bar', USER: 'someone' },
  }],
  ['files in /work, in and out', {
    code: 'import os\nprint(sorted(os.listdir(".")), oct(os.stat("data.csv").st_mode), oct(os.stat("main.py").st_mode))\nopen("out.txt", "w").write(open("data.csv").read().upper())\nos.chmod("x.sh", 0o700)',
    files: [{ name: 'data.csv', content: 'a,b\n1,2\n' }, { name: 'x.sh', content: 'echo', mode: 0o755 }],
  }],
  ['a write outside /work is refused', { code: 'open("/usr/evil", "w")' }],
  ['a write to /etc is refused', { code: 'import os\nos.mkdir("/etc/x")' }],
  ['network is off', { code: 'import socket\ns = socket.socket()\ns.connect(("1.1.1.1", 80))' }],
  // writes until killed: a program that wrote past the cap and exited at once could win the race against the kill
  ['output past its cap', { code: 'import sys\nwhile True:\n    sys.stdout.write("x" * 1000)\n    sys.stdout.flush()', limits: { stdout_max: 1000 } }],
  ['the time limit kills', { code: 'print("start", flush=True)\nwhile True: pass', limits: { timeout_ms: 1500 } }],
  ['a file larger than RLIMIT_FSIZE', { code: 'open("big", "wb").write(b"x" * 5000)', limits: { fsize_bytes: 4096 } }],
  ['too many open files', { code: 'fs = [open("/dev/null") for _ in range(100)]', limits: { nofile: 16 } }],
  // past 32 KiB the run travels in a sealed memfd instead of the message
  ['a large snippet and files', {
    code: `x = "${'a'.repeat(40000)}"\nprint(len(x), open("f1").read() == "b" * 30000, len(open("f2").read()))`,
    files: [{ name: 'f1', content: 'b'.repeat(30000) }, { name: 'f2', content: 'c'.repeat(5000) }],
  }],
  ['non-UTF-8 output and a coding cookie', { code: '# -*- coding: latin-1 -*-\nimport sys\nsys.stdout.buffer.write(b"\\xff\\xfe")\nprint("\xe9")' }],
];

for (const [name, spec] of TABLE) {
  test(`same result warm and cold: ${name}`, { skip }, async () => {
    const { w, c } = await both({ language: 'python', ...spec });
    assertSame(w, c, name);
  });
}

test('the table is not vacuous: what the programs did', { skip }, async () => {
  // A few of the results, checked for what they are, so "same on both" cannot hide "broken on both".
  let { w } = await both({ language: 'python', code: 'import sys\nprint(sys.stdin.read().upper())', stdin: 'hi' });
  assert.equal(w.stdout, 'HI\n');
  ({ w } = await both({ language: 'python', code: 'import sys\nsys.exit(3)' }));
  assert.equal(w.exit_code, 3);
  ({ w } = await both({ language: 'python', code: 'raise ValueError("boom")' }));
  assert.equal(w.exit_code, 1);
  assert.equal(w.stderr, 'Traceback (most recent call last):\n  File "/work/main.py", line 1, in <module>\n'
    + '    raise ValueError("boom")\nValueError: boom\n');
  ({ w } = await both({ language: 'python', code: 'while True: pass', limits: { timeout_ms: 1000 } }));
  assert.equal(w.reason, 'timeout');
  ({ w } = await both({ language: 'python', code: 'open("/usr/evil", "w")' }));
  assert.match(w.stderr, /OSError: \[Errno 30\] Read-only file system: '\/usr\/evil'/);
  ({ w } = await both({ language: 'python', code: 'import socket\nsocket.socket()' }));
  assert.match(w.stderr, /PermissionError: \[Errno 1\] Operation not permitted/);
});

test('nothing of one warm run is seen by the next', { skip }, async () => {
  const first = [
    'import os, sys, builtins',
    'LEFT = 42',
    'builtins.LEFT_B = 1',
    'sys.modules["json"] = "tampered"',
    'os.environ["LEFT_ENV"] = "1"',
    'open("/tmp/left", "w").write("x")',
    'open("/work/left", "w").write("x")',
    'import threading, time',
    'threading.Thread(target=lambda: time.sleep(60), daemon=True).start()',
    'print(os.getpid(), "ok")',
  ].join('\n');
  const second = [
    'import os, sys, builtins, json',
    'print("LEFT" in globals(), hasattr(builtins, "LEFT_B"), json.dumps(1), os.environ.get("LEFT_ENV"))',
    'print(os.path.exists("/tmp/left"), os.path.exists("/work/left"), sorted(os.listdir("/work")))',
    'print(len(os.listdir("/proc/self/task")), sorted(p for p in os.listdir("/proc") if p.isdigit()))',
  ].join('\n');
  const pid1 = await readyInterpreter();
  const a = await run(warm, { language: 'python', code: first });
  assert.equal(a.host_pid, pid1);
  assert.equal(a.stdout, '1 ok\n', a.stderr);
  const pid2 = await readyInterpreter();
  assert.notEqual(pid2, pid1, 'an interpreter was used twice');
  const b = await run(warm, { language: 'python', code: second });
  assert.equal(b.host_pid, pid2);
  assert.equal(b.stdout, "False False 1 None\nFalse False ['main.py']\n1 ['1']\n", b.stderr);
  assert.notEqual(a.cgroup_name, b.cgroup_name);
  // the first interpreter is gone, with its thread
  assert.ok(!inRange(WARM_BASE).some(([p]) => p === pid1), 'the first run\'s process survived it');
});

test('runs a warm interpreter cannot serve identically take the cold path, and it stays ready', { skip }, async () => {
  const pid = await readyInterpreter();
  for (const body of [
    { language: 'python', code: 'import sys; print(sys.path[1])', env: { PYTHONPATH: '/work/lib' } },
    { language: 'python', args: ['-c', 'print("args")'] },
    { language: 'sh', code: 'echo sh' },
    { command: ['/usr/bin/python3', '-c', 'print(1)'] },
  ]) {
    const j = await run(warm, body);
    assert.equal(j.exit_code, 0, JSON.stringify(j));
    assert.notEqual(j.host_pid, pid, 'served by the warm interpreter: ' + JSON.stringify(body));
  }
  assert.equal(await readyInterpreter(), pid, 'the interpreter did not wait for its own kind of run');
  const p = await run(warm, { language: 'python', code: 'import sys; print(sys.path[1])', env: { PYTHONPATH: '/work/lib' } });
  assert.equal(p.stdout, '/work/lib\n');
});
