// A real PostgreSQL server for a test file: initdb into a temp dir, started once on a random loopback port (and a
// unix socket in the same dir), stopped at the end, also when the test fails or the process exits.
//
//   import { pgBinDir, startPostgres } from '../lib/pg.mjs';
//   const skip = pgBinDir() ? false : 'PostgreSQL binaries are not installed (scripts/deps.sh test)';
//   const pg = await startPostgres();           // pg.url: postgresql://agentd:<pw>@127.0.0.1:<port>/agentd
//   await pg.psql('SELECT count(*) FROM ledger_exchanges');   // -> '3' (unaligned, tuples only)
//   await pg.stop(); await pg.start();          // a server that goes away and comes back, same port and data
//   await pg.destroy();                          // stops it and removes the dir
//
// postgres refuses to run as root: as root the server runs as the `postgres` user (runuser), else as whoever runs
// the tests. Clients connect over TCP with a password (scram-sha-256), so a wrong password is a real refusal.
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, appendFileSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

// The newest /usr/lib/postgresql/<v>/bin with initdb and pg_ctl, or null.
export function pgBinDir() {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => b - a);
  for (const v of versions) {
    const d = join(root, v, 'bin');
    if (existsSync(join(d, 'initdb')) && existsSync(join(d, 'pg_ctl')) && existsSync(join(d, 'psql'))) return d;
  }
  return null;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: opts.timeout || 60000, env: opts.env || process.env },
      (err, stdout, stderr) => {
        if (err) {
          err.message += `\n${stderr}`;
          reject(err);
        } else resolve(stdout);
      });
  });
}

const live = new Set();
process.on('exit', () => {
  for (const pg of live) {
    try { execFileSync(...pg._asOwner(join(pg.bin, 'pg_ctl'), ['-D', pg.data, '-m', 'immediate', 'stop']), { stdio: 'ignore' }); } catch { /* gone */ }
    try { rmSync(pg.dir, { recursive: true, force: true }); } catch { /* ignore */ }
  }
});

export async function startPostgres(opts = {}) {
  const bin = pgBinDir();
  if (!bin) throw new Error('PostgreSQL binaries not found under /usr/lib/postgresql');
  const root = process.getuid && process.getuid() === 0;
  const dir = mkdtempSync(join(tmpdir(), 'agentd-pg-'));
  const pg = new Postgres(bin, dir, root, await freePort(), opts.password || randomBytes(9).toString('hex'));
  live.add(pg);
  try {
    await pg._init();
    await pg.start();
    await pg._createRole();
  } catch (e) {
    await pg.destroy();
    throw e;
  }
  return pg;
}

class Postgres {
  constructor(bin, dir, root, port, password) {
    this.bin = bin;
    this.dir = dir;
    this.data = join(dir, 'data');
    this.log = join(dir, 'postgres.log');
    this.root = root;
    this.port = port;
    this.password = password;
    this.user = 'agentd';
    this.database = 'agentd';
    this.url = `postgresql://${this.user}:${password}@127.0.0.1:${port}/${this.database}`;
    this.running = false;
  }

  // [cmd, args] run as the server's owner.
  _asOwner(cmd, args) {
    return this.root ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  }

  async _init() {
    if (this.root) chownSync(this.dir, uidOf('postgres'), gidOf('postgres'));
    const pw = join(this.dir, 'superpw');
    writeFileSync(pw, `${this.password}\n`);
    if (this.root) chownSync(pw, uidOf('postgres'), gidOf('postgres'));
    await run(...this._asOwner(join(this.bin, 'initdb'),
      ['-D', this.data, '-U', 'postgres', '--pwfile', pw, '-A', 'scram-sha-256', '--auth-local=trust',
        '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync']));
    rmSync(pw, { force: true });
    appendFileSync(join(this.data, 'postgresql.conf'),
      `\nlisten_addresses = '127.0.0.1'\nport = ${this.port}\nunix_socket_directories = '${this.dir}'\n` +
      'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n');
  }

  async start() {
    await run(...this._asOwner(join(this.bin, 'pg_ctl'), ['-D', this.data, '-l', this.log, '-w', '-t', '60', 'start']));
    this.running = true;
  }

  // Stops the server (fast: connections are cut at once), keeping its data for start().
  async stop(mode = 'fast') {
    if (!this.running) return;
    await run(...this._asOwner(join(this.bin, 'pg_ctl'), ['-D', this.data, '-m', mode, '-w', 'stop']));
    this.running = false;
  }

  async _createRole() {
    await this.psqlAdmin(`CREATE ROLE ${this.user} LOGIN PASSWORD '${this.password}'`);
    await this.psqlAdmin(`CREATE DATABASE ${this.database} OWNER ${this.user}`);
  }

  // As the superuser over the unix socket (trust).
  psqlAdmin(sql, db = 'postgres') {
    return run(...this._asOwner(join(this.bin, 'psql'),
      ['-h', this.dir, '-p', String(this.port), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]))
      .then((s) => s.trim());
  }

  // As the application's role over TCP, in its database: the result unaligned, tuples only, trimmed.
  psql(sql) {
    return run(join(this.bin, 'psql'), [this.url, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]).then((s) => s.trim());
  }

  // Another empty database on the same server (a fresh cluster for one test): its URL.
  async createDatabase(name) {
    await this.psqlAdmin(`CREATE DATABASE ${name} OWNER ${this.user}`);
    return `postgresql://${this.user}:${this.password}@127.0.0.1:${this.port}/${name}`;
  }

  serverLog() {
    try { return readFileSync(this.log, 'utf8'); } catch { return ''; }
  }

  async destroy() {
    try { await this.stop('immediate'); } catch { /* already gone */ }
    live.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function uidOf(user) {
  return Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
}
function gidOf(user) {
  return Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
}
