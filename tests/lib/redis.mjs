// A real redis-server (Debian's, scripts/deps.sh test) for one test file: a random free loopback port, a temp
// dir, no persistence; stop() kills it (also on failure, from the caller's finally/after). restart() starts it
// again on the same port (for "Redis was down, now it is back").
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

export const haveRedis = spawnSync('redis-server', ['--version']).status === 0;

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function launch(port, dir) {
  const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (c) => { out += c; });
  p.stderr.on('data', (c) => { out += c; });
  const exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
  return { p, exited, log: () => out };
}

async function waitPing(port, srv, deadlineMs = 10000) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const ok = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'PING'], { encoding: 'utf8' });
    if (ok.stdout && ok.stdout.trim() === 'PONG') return;
    if (srv.p.exitCode !== null) throw new Error(`redis-server exited: ${srv.log()}`);
    if (Date.now() > until) throw new Error(`redis-server did not answer PING: ${srv.log()}`);
    await new Promise((r) => setTimeout(r, 20)); // polling the server's readiness with a deadline
  }
}

export async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-redis-'));
  const port = await freePort();
  let srv = launch(port, dir);
  await waitPing(port, srv);
  const r = {
    port,
    url: `redis://127.0.0.1:${port}`,
    cli(...args) {
      return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' }).trim();
    },
    // INFO commandstats as { cmd: calls }
    commandstats() {
      const out = r.cli('INFO', 'commandstats');
      const m = {};
      for (const line of out.split('\n')) {
        const x = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
        if (x) m[x[1]] = Number(x[2]);
      }
      return m;
    },
    running: () => srv.p.exitCode === null && srv.p.signalCode === null,
    async stop() {
      if (r.running()) srv.p.kill('SIGKILL');
      await srv.exited;
    },
    async restart() {
      await r.stop();
      srv = launch(port, dir);
      await waitPing(port, srv);
    },
    async close() {
      await r.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return r;
}
