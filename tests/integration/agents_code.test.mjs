// Agents' code_exec tool (issue 11 items 5 and 8): the mock model asks for code to run; agentd runs it through the
// sandbox service on the worker loop and gives the result (stdout, stderr, exit, truncation) back to the model.
// Code that tries to get out (network, writes to the host, a fork bomb) gets a contained failure, the host is
// untouched and no process of the run's uid range is left. What the host cannot do (no namespaces) is skipped
// by name with `agentd sandbox check`'s reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { BIN, startAgentd } from '../lib/agentd.mjs';
import { sandboxCheck } from '../lib/sandbox.mjs';

const UID_BASE = 1630000000;
const UID_COUNT = 64;
const { skip } = sandboxCheck(BIN, UID_BASE, UID_COUNT);

const CONFIG = `
server: { workers: 1 }
sandbox:
  uid_base: ${UID_BASE}
  uid_count: ${UID_COUNT}
  service:
    warm: 1
    max_timeout: 20s
    max_files_bytes: 64KiB
agents:
  - name: coder
    model: mock
    tools: [code_exec]
    limits: {tool_timeout: 8s, tool_output_bytes: 4KiB, code_pids: 16, code_memory: 128MiB}
  - name: bomber
    model: mock
    tools: [code_exec]
    limits: {tool_timeout: 4s, code_pids: 16}
  - name: small
    model: mock
    tools: [code_exec]
    limits: {tool_output_bytes: 300}
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

// One run of `agent` whose model asks for code_exec with args, then answers "done".
async function codeRun(agent, args) {
  const input = `CALL code_exec ${JSON.stringify(args)}\n---\ndone`;
  const r = await d.fetch(`/v1/agents/${agent}/runs`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input, wait: true }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.equal(body.status, 'succeeded', JSON.stringify(body)); // a failing tool never fails the run
  const calls = body.steps.filter((s) => s.type === 'tool_call');
  assert.equal(calls.length, 1, JSON.stringify(body.steps));
  return calls[0];
}
const parsed = (call) => {
  try { return JSON.parse(call.result); } catch { assert.fail(`not JSON: ${call.result}`); }
};

// Processes whose real uid is in the sandbox's range, but the warm children (the agentd binary, waiting).
function sandboxProcesses() {
  const out = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    let st;
    try { st = readFileSync(`/proc/${p}/status`, 'utf8'); } catch { continue; }
    const uid = Number(/^Uid:\s+(\d+)/m.exec(st)?.[1]);
    if (!(uid >= UID_BASE && uid < UID_BASE + UID_COUNT)) continue;
    let cmd = '';
    try { cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch { continue; }
    if (!cmd.includes('agentd')) out.push(`${p}: ${cmd}`);
  }
  return out;
}

test('code_exec runs python and sh and the model gets stdout', { skip }, async () => {
  let c = await codeRun('coder', { language: 'python', code: 'import sys\nprint("py", 6 * 7)\nprint("warn", file=sys.stderr)' });
  assert.equal(c.status, 'ok', c.result);
  let j = parsed(c);
  assert.equal(j.reason, 'exit');
  assert.equal(j.exit_code, 0);
  assert.equal(j.stdout, 'py 42\n');
  assert.equal(j.stderr, 'warn\n');
  assert.equal(j.stdout_truncated, false);

  c = await codeRun('coder', { language: 'sh', code: 'read x; echo "sh got $x"; pwd', stdin: 'hi\n' });
  assert.equal(c.status, 'ok', c.result);
  assert.equal(parsed(c).stdout, 'sh got hi\n/work\n');

  c = await codeRun('coder', { language: 'javascript', code: 'console.log([1,2,3].map((x) => x * 2).join(","))' });
  assert.equal(c.status, 'ok', c.result);
  assert.equal(parsed(c).stdout, '2,4,6\n');

  // a non-zero exit is a tool error carrying the same result
  c = await codeRun('coder', { language: 'python', code: 'raise SystemExit(3)' });
  assert.equal(c.status, 'error');
  assert.equal(parsed(c).exit_code, 3);
});

test('code_exec: bad arguments are a bad_args tool error', { skip }, async () => {
  let c = await codeRun('coder', { language: 'cobol', code: 'DISPLAY 1' });
  assert.equal(c.status, 'bad_args');
  assert.match(c.result, /language/);
  c = await codeRun('coder', { language: 'python' });
  assert.equal(c.status, 'bad_args');
});

test('code_exec: files given with the call are in /work; bad names and too many bytes are bad_args', { skip }, async () => {
  let c = await codeRun('coder', {
    language: 'python',
    code: 'import os\nprint(sorted(os.listdir(".")))\nprint(open("data.csv").read().strip())\nprint(open("/work/blob.bin","rb").read())',
    files: [{ name: 'data.csv', content: 'a,b\n1,2\n' }, { name: 'blob.bin', content_base64: Buffer.from([0, 1, 255]).toString('base64') }],
  });
  assert.equal(c.status, 'ok', c.result);
  assert.equal(parsed(c).stdout, "['blob.bin', 'data.csv', 'main.py']\na,b\n1,2\nb'\\x00\\x01\\xff'\n");

  c = await codeRun('coder', { language: 'sh', code: 'cat x', files: [{ name: '../etc/passwd', content: 'root' }] });
  assert.equal(c.status, 'bad_args', c.result);
  assert.match(c.result, /name/);
  c = await codeRun('coder', { language: 'sh', code: 'true', files: 'not an array' });
  assert.equal(c.status, 'bad_args', c.result);
  c = await codeRun('coder', { language: 'sh', code: 'true', files: [{ name: 'big', content: 'x'.repeat(40000) }, { name: 'big2', content: 'y'.repeat(40000) }] });
  assert.equal(c.status, 'bad_args', c.result);
  assert.match(c.result, /files|bytes|large/);
});

test('code_exec: the files the code writes in /work come back to the model', { skip }, async () => {
  let c = await codeRun('coder', {
    language: 'python',
    code: 'import os\nrows = open("data.csv").read().splitlines()\nopen("out.csv", "w").write("\\n".join(r + ",x" for r in rows) + "\\n")\nos.symlink("/etc/passwd", "pw")',
    files: [{ name: 'data.csv', content: 'a,b\n1,2\n' }],
  });
  assert.equal(c.status, 'ok', c.result);
  let j = parsed(c);
  // the input left unchanged, the snippet and the symlink are not outputs
  assert.deepEqual(j.files, [{ name: 'out.csv', size: 12, mode: 0o644, content: 'a,b,x\n1,2,x\n' }]);
  assert.equal(j.files_truncated, false);
  assert.ok(!c.result.includes('root:'), c.result);

  // a file larger than the tool's output room is left out and flagged; the result stays valid JSON
  c = await codeRun('small', { language: 'sh', code: 'head -c 1000 /dev/zero | tr "\\0" y > big.txt; echo ok > ok.txt' });
  assert.equal(c.status, 'ok', c.result);
  j = parsed(c);
  assert.deepEqual(j.files.map((f) => f.name), ['ok.txt']);
  assert.equal(j.files_truncated, true);
  assert.ok(c.result.length <= 300, String(c.result.length));
});

test('code_exec: output past tool_output_bytes is capped and marked', { skip }, async () => {
  const c = await codeRun('small', { language: 'python', code: 'print("x" * 10000)' });
  assert.equal(c.status, 'error', c.result); // the run was stopped at its output cap
  const j = parsed(c); // still valid JSON: the texts are cut, not the JSON
  assert.equal(j.reason, 'output_cap');
  assert.equal(j.stdout_truncated, true);
  assert.match(j.stdout, /^x{50,}$/);
  assert.ok(c.result.length <= 300, c.result.length);
});

test('code_exec: code that tries to escape gets a contained failure', { skip }, async () => {
  // network: no route out, and not even the daemon on the host's loopback
  const port = d.port;
  let c = await codeRun('coder', { language: 'python', code: `import socket
for addr in [("1.1.1.1", 80), ("127.0.0.1", ${port})]:
    try:
        socket.create_connection(addr, timeout=2)
        print("CONNECTED", addr)
    except OSError as e:
        print("refused", addr[0], e.errno)
` });
  assert.equal(c.status, 'ok', c.result);
  let j = parsed(c);
  assert.doesNotMatch(j.stdout, /CONNECTED/);
  assert.equal(j.stdout.split('\n').filter((l) => l.startsWith('refused')).length, 2, j.stdout);

  // writes outside /work: the root is read-only; /tmp is the sandbox's own tmpfs, not the host's
  const marker = `/tmp/agentd-escape-${process.pid}-${Date.now()}`;
  c = await codeRun('coder', { language: 'sh', code: `echo x > /etc/agentd-pwned && echo WROTE-ETC; echo y > ${marker} && echo wrote-tmp; cat /etc/shadow && echo READ-SHADOW; exit 0` });
  j = parsed(c);
  assert.doesNotMatch(j.stdout, /WROTE-ETC|READ-SHADOW/);
  assert.match(j.stderr, /Read-only file system|Permission denied/);
  assert.equal(existsSync('/etc/agentd-pwned'), false);
  assert.equal(existsSync(marker), false, 'a write to the sandbox /tmp reached the host');

  // a fork bomb: held by the pids limit, ended by the wall clock, nothing left behind
  c = await codeRun('bomber', { language: 'sh', code: 'b() { b | b & }; b; sleep 30' });
  assert.equal(c.status, 'error', c.result);
  j = parsed(c);
  assert.equal(j.reason, 'timeout', c.result);
  assert.match(j.stderr, /Cannot fork/); // held by the pids limit (code_pids: 16)
  assert.ok(j.wall_ms < 4000, c.result); // the sandbox's deadline (a tenth before the run's tool timer)
  // (the run's tree is SIGKILLed before its result is given; give the kernel a moment to reap)
  for (let i = 0; sandboxProcesses().length > 0; i++) {
    assert.ok(i < 100, `sandbox processes left: ${sandboxProcesses()}`);
    await new Promise((res) => setTimeout(res, 10));
  }

  // the daemon is fine afterwards
  c = await codeRun('coder', { language: 'python', code: 'print("still here")' });
  assert.equal(parsed(c).stdout, 'still here\n');
});
