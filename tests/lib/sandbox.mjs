// Helpers shared by the sandbox tests (tests/integration/sandbox*.test.mjs).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// The run-group parents, as the engine computes them: "<own cgroup>/agentd-sandbox" per hierarchy (those that exist).
export function cgroupParents() {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').trim().split('\n').map((l) => {
    const f = l.split(' ');
    const dash = f.indexOf('-');
    return { root: f[3], point: f[4].replace(/\\040/g, ' '), type: f[dash + 1], opts: f[dash + 3] || '' };
  });
  const own = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n').map((l) => {
    const [id, ctrls, ...rest] = l.split(':');
    return { id, ctrls: ctrls.split(','), path: rest.join(':') };
  });
  const rel = (m, p) => (m.root !== '/' && p.startsWith(m.root) ? p.slice(m.root.length) : p);
  const out = [];
  for (const m of mounts) {
    if (m.type === 'cgroup2') {
      const o = own.find((x) => x.id === '0');
      if (o) out.push(join(m.point, rel(m, o.path), 'agentd-sandbox'));
    } else if (m.type === 'cgroup') {
      for (const c of ['memory', 'pids', 'cpu', 'cpuacct']) {
        if (!m.opts.split(',').includes(c)) continue;
        const o = own.find((x) => x.ctrls.includes(c));
        if (o) out.push(join(m.point, rel(m, o.path), 'agentd-sandbox'));
      }
    }
  }
  return [...new Set(out)].filter((p) => existsSync(p));
}

// What `agentd sandbox check` says of this host for runs mapped to uid_base..+count: { check, skip }, skip being false
// or the reason a sandbox test cannot run here (given to node:test's skip, so the reason is printed by name).
export function sandboxCheck(bin, uidBase, uidCount) {
  const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=0:exitcode=86' };
  const out = spawnSync(bin, ['sandbox', 'check', '--uid-base', String(uidBase), '--uid-count', String(uidCount)],
    { encoding: 'utf8', env });
  let check = null;
  try { check = JSON.parse(out.stdout); } catch { check = null; }
  const skip = !check ? `sandbox check printed no JSON (exit ${out.status})`
    : !check.sandbox_works ? `sandbox unusable here: ${check.error}` : false;
  return { check, skip };
}
