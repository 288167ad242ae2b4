#!/usr/bin/env node
// Cluster mode's cost (issue 13 item 7): the same agentd configuration — a user budget and a user rate limit on
// every request, limits high enough that nothing is refused — run embedded and with REDIS_URL, side by side in
// the same sitting against the same instant fake upstream. Per round and per mode (order alternating): agentd's
// CPU per proxied request (all its threads, /proc/<pid>/task/*/schedstat, ns) at concurrency C, and the latency
// at concurrency 1 (p50, p99; the two modes interleaved request by request). Reported: medians over rounds and the ratios cluster / embedded (goal: <= 1.05),
// and Redis commands per 1,000 requests (INFO commandstats, during the cluster runs).
//
//   node bench/cluster/cluster.mjs [--rounds 5] [--requests 4000] [--concurrency 32] [--bin build/agentd]
import { readFileSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const ROUNDS = Number(arg('rounds', 5));
const N = Number(arg('requests', 4000));
const C = Number(arg('concurrency', 32));
const LAT_N = Number(arg('latency-requests', 400));
process.env.AGENTD_BIN = resolve(arg('bin', new URL('../../build/agentd', import.meta.url).pathname));

const { startAgentd } = await import('../../tests/lib/agentd.mjs');
const { startFake, FAKE_KEYS } = await import('../../tests/fakes/fake.mjs');
const { startRedis } = await import('../../tests/lib/redis.mjs');

const f = await startFake({ provider: 'openai', instant: true, quiet: true });
const redis = await startRedis();
const config = `
server:
  workers: 1
models:
  - name: gpt
    provider: openai
    model: gpt-4o-mini
    base_url: ${f.urls.openai}
    api_key_env: FAKE_OPENAI_KEY
budgets:
  - {scope: user, name: bench, usd: 1000000, window: month}
ratelimits:
  - {scope: user, name: bench, rpm: 1000000000, tpm: 1000000000000}
`;
const env = { FAKE_OPENAI_KEY: FAKE_KEYS.openai, ASAN_OPTIONS: '' };
const emb = await startAgentd({ config, env });
const clu = await startAgentd({ config, env: { ...env, REDIS_URL: redis.url } });
const body = JSON.stringify({ model: 'gpt', user: 'bench', max_tokens: 16, messages: [{ role: 'user', content: 'hello there' }] });

function cpuNs(pid) {
  let s = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) s += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
  return s;
}
async function one(d) {
  const r = await fetch(d.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  await r.arrayBuffer();
  if (r.status !== 200) throw new Error(`status ${r.status}`);
}
async function load(d, n, c) {
  let next = 0;
  await Promise.all(Array.from({ length: c }, async () => { while (next++ < n) await one(d); }));
}
// Concurrency 1, the two modes interleaved request by request, so that the machine's drift hits both alike.
async function latencies(a, b, n) {
  const va = [], vb = [];
  for (let i = 0; i < n; i++) {
    for (const [d, v] of i % 2 ? [[b, vb], [a, va]] : [[a, va], [b, vb]]) {
      const t = process.hrtime.bigint(); await one(d); v.push(Number(process.hrtime.bigint() - t) / 1000);
    }
  }
  const q = (v) => { v.sort((x, y) => x - y); return { p50: v[Math.floor(n * 0.5)], p99: v[Math.floor(n * 0.99)] }; };
  return [q(va), q(vb)];
}
const cmds = () => Object.entries(redis.commandstats()).filter(([k]) => k !== 'info').reduce((s, [, v]) => s + v, 0);
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };

const res = { embedded: { cpu: [], p50: [], p99: [] }, cluster: { cpu: [], p50: [], p99: [] }, cmdsPer1000: [], ratios: { cpu: [], p50: [], p99: [] } };
try {
  await load(emb, 500, C); // warm-up (connections, leases)
  await load(clu, 500, C);
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 ? [['cluster', clu], ['embedded', emb]] : [['embedded', emb], ['cluster', clu]];
    const round = {};
    for (const [name, d] of order) {
      const c0 = cpuNs(d.child.pid), k0 = cmds();
      await load(d, N, C);
      const cpu = (cpuNs(d.child.pid) - c0) / N / 1000; // us per request
      if (name === 'cluster') res.cmdsPer1000.push((cmds() - k0) / N * 1000);
      round[name] = { cpu };
      res[name].cpu.push(cpu);
    }
    const [le, lc] = await latencies(emb, clu, LAT_N);
    Object.assign(round.embedded, le);
    Object.assign(round.cluster, lc);
    for (const [name, l] of [['embedded', le], ['cluster', lc]]) { res[name].p50.push(l.p50); res[name].p99.push(l.p99); }
    for (const k of ['cpu', 'p50', 'p99']) res.ratios[k].push(round.cluster[k] / round.embedded[k]);
    console.error(`round ${r + 1}: ${JSON.stringify(round)}`);
  }
} finally {
  await emb.stop(); await clu.stop(); await redis.close(); await f.close();
}
const out = {
  rounds: ROUNDS, requests: N, concurrency: C,
  cpu_us_per_request: { embedded: med(res.embedded.cpu), cluster: med(res.cluster.cpu), ratio: med(res.ratios.cpu) },
  latency_c1_us: {
    embedded: { p50: med(res.embedded.p50), p99: med(res.embedded.p99) },
    cluster: { p50: med(res.cluster.p50), p99: med(res.cluster.p99) },
    ratio_p50: med(res.ratios.p50), ratio_p99: med(res.ratios.p99),
  },
  redis_commands_per_1000_requests: med(res.cmdsPer1000),
};
console.log(JSON.stringify(out, null, 2));
