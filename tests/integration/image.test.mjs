// The OCI image (scripts/image.sh, docs/image.md): built from Debian packages and the binary under test, run by
// podman as uid 1000 on a read-only root; /health and /ready answer on both ports from the host, `agentd version`
// runs inside, the full image's interpreters run and the minimal image has none. Skips (saying why) only when
// podman or buildah is missing or the machine cannot run a container; a broken image fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { join } from 'node:path';

const SRC = process.env.AGENTD_SRC ?? new URL('../..', import.meta.url).pathname;
const BIN = process.env.AGENTD_IMAGE_BINARY ?? process.env.AGENTD_BIN;
// Within one CI run the downloaded .debs and the resolved package list are reused (build-image/ under the build).
const CACHE = process.env.AGENTD_IMAGE_CACHE ?? join(process.env.AGENTD_BUILD ?? join(SRC, 'build'), 'image-cache');

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}
function run(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: 600_000, ...opts });
}

// crun (podman's default here) refuses hybrid cgroup v1/v2 hosts; runc runs them. The VM's hard limits are below
// podman's default nofile/nproc, so set our own.
const RUNTIME = have('runc') ? ['--runtime', 'runc'] : [];
const RUN = [...RUNTIME, 'run', '--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096',
  '--read-only', '--user', '1000', '--env', 'ASAN_OPTIONS=detect_leaks=0'];

let skip = false;
if (!have('podman') || !have('buildah')) skip = 'podman or buildah is not installed (scripts/deps.sh image)';
else if (!BIN) skip = 'AGENTD_BIN is not set';

function build(variant) {
  const tag = `localhost/agentd-test:${variant}-${process.pid}`;
  const args = ['--binary', BIN, '--tag', tag, '--cache', CACHE];
  if (variant === 'minimal') args.push('--minimal');
  const r = run(join(SRC, 'scripts/image.sh'), args);
  assert.equal(r.status, 0, `image.sh ${variant} failed:\n${r.stderr}\n${r.stdout}`);
  assert.match(r.stdout, /size \d+ MiB uncompressed/);
  return tag;
}

// A container the machine refuses to start (runtime, cgroups, namespaces) is a skip; anything else is the image.
function cannotRun(stderr) {
  return /OCI runtime error|cgroups? .*not supported|newuidmap|user namespaces? .*(not|denied)|setrlimit/i.test(stderr)
    && !/executable file|no such file|not found in \$PATH/i.test(stderr);
}

// Polls until the server answers 200 (it may still be opening its store), or returns the last answer at the deadline.
async function waitHttp(url, deadline) {
  let last;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url);
      last = { status: r.status, body: await r.json() };
      if (r.status === 200) return last;
    } catch (e) { last = e; }
    await new Promise((res) => setTimeout(res, 100));
  }
  if (last && last.status) return last;
  throw new Error(`${url}: no answer (${last})`);
}

for (const variant of ['minimal', 'full']) {
  test(`image ${variant}: builds, runs read-only as uid 1000, probes answer on both ports`, { skip }, async (t) => {
    const tag = build(variant);
    t.after(() => run('podman', ['rmi', '-f', tag]));
    const inspect = JSON.parse(execFileSync('podman', ['image', 'inspect', tag], { encoding: 'utf8' }))[0];
    assert.equal(inspect.Config.User, '1000:1000');
    assert.deepEqual(inspect.Config.Entrypoint, ['/usr/bin/agentd']);
    t.diagnostic(`${variant} image size ${(inspect.Size / 1048576).toFixed(1)} MiB`);

    const v = run('podman', [...RUN, '--rm', tag, 'version'], { timeout: 120_000 });
    if (v.status !== 0 && cannotRun(v.stderr)) {
      t.skip(`podman cannot run containers on this machine: ${v.stderr.trim().split('\n').pop()}`);
      return;
    }
    assert.equal(v.status, 0, `agentd version in the image failed: ${v.stderr}`);
    assert.match(v.stdout, /^agentd \d+\.\d+/);

    // no shell in the minimal image, the interpreters in the full one
    const sh = run('podman', [...RUN, '--rm', '--entrypoint', '/bin/sh', tag, '-c', 'echo shell'], { timeout: 120_000 });
    const py = run('podman', [...RUN, '--rm', '--entrypoint', '/usr/bin/python3', tag, '-c',
      'import ssl, sqlite3, json; print(ssl.OPENSSL_VERSION.split()[0])'], { timeout: 120_000 });
    const node = run('podman', [...RUN, '--rm', '--entrypoint', '/usr/bin/node', tag, '-e', 'console.log(1 + 1)'],
      { timeout: 120_000 });
    if (variant === 'full') {
      assert.equal(sh.stdout.trim(), 'shell', sh.stderr);
      assert.equal(py.stdout.trim(), 'OpenSSL', py.stderr);
      assert.equal(node.stdout.trim(), '2', node.stderr);
    } else {
      assert.notEqual(sh.status, 0, 'the minimal image has a shell');
      assert.notEqual(py.status, 0, 'the minimal image has python3');
      assert.notEqual(node.status, 0, 'the minimal image has node');
    }

    // CA certificates: the bundle libcurl and OpenSSL read, non-empty and parseable by the image's own OpenSSL
    // (through python in the full image; by size in the minimal one, which has nothing to run but agentd)
    if (variant === 'full') {
      const ca = run('podman', [...RUN, '--rm', '--entrypoint', '/usr/bin/python3', tag, '-c',
        'import ssl; c = ssl.create_default_context(); print(len(c.get_ca_certs()))'], { timeout: 120_000 });
      assert.ok(Number(ca.stdout) > 50, `default CA store in the image: ${ca.stdout} ${ca.stderr}`);
    }

    // serve: the image's own defaults (entrypoint, data dir /app/cache as a volume); ports published on loopback
    const name = `agentd-image-test-${variant}-${process.pid}`;
    const r = run('podman', [...RUN, '-d', '--name', name, '-p', '127.0.0.1::8000', '-p', '127.0.0.1::8080', tag],
      { timeout: 120_000 });
    assert.equal(r.status, 0, `podman run -d: ${r.stderr}`);
    t.after(() => run('podman', ['rm', '-f', '-v', name]));
    const port = (p) => {
      const out = execFileSync('podman', ['port', name, `${p}/tcp`], { encoding: 'utf8' }).trim();
      return Number(out.split('\n')[0].split(':').pop());
    };
    const deadline = Date.now() + 30_000;
    try {
      for (const p of [8000, 8080]) {
        const base = `http://127.0.0.1:${port(p)}`;
        const h = await waitHttp(`${base}/health`, deadline);
        assert.equal(h.status, 200, JSON.stringify(h.body));
        assert.equal(h.body.status, 'ok');
        const rd = await waitHttp(`${base}/ready`, deadline);
        assert.equal(rd.status, 200, JSON.stringify(rd.body));
        assert.equal(rd.body.checks.data_dir, true);
      }
      // the state is on the image's /app/cache volume (the root is read-only), and agentd runs beside the server
      const c = JSON.parse(execFileSync('podman', ['container', 'inspect', name], { encoding: 'utf8' }))[0];
      assert.ok(c.Mounts.some((m) => m.Destination === '/app/cache'), JSON.stringify(c.Mounts));
      assert.equal(c.HostConfig.ReadonlyRootfs, true);
      const ex = run('podman', ['exec', name, '/usr/bin/agentd', 'version'], { timeout: 60_000 });
      assert.equal(ex.status, 0, ex.stderr);
    } catch (e) {
      const logs = run('podman', ['logs', name]);
      e.message += `\ncontainer log:\n${logs.stdout}${logs.stderr}`;
      throw e;
    }
  });
}
