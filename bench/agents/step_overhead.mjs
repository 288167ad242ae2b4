// bench/agents/step_overhead.mjs: an agent step's own overhead, excluding the model and the tool (issue 11 item 9).
//
//   node bench/agents/step_overhead.mjs [--runs 50] [--steps 8] [--workers 1]     (AGENTD_BIN: build/agentd)
//
// agentd runs `runs` agent runs one after the other (POST /v1/agents/bench/runs, wait: true), each `steps` LLM
// steps against the `mock` model (no latency), every step but the last calling the built-in `echo` tool, with the
// runs' store on disk (every step committed before the next). The daemon measures each run's own time (while none
// of its model exchanges or tool calls is in flight: the loop, the commits, the scheduling) per LLM step, in the
// histogram agentd_agent_step_overhead_seconds; this prints its mean in µs, the client's wall time per step (which
// also holds the mock exchange and the echo call) for scale, and writes bench/results/agent-overhead.json.
import { writeFileSync, mkdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { startAgentd } from '../../tests/lib/agentd.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const LOAD0 = Math.round(loadavg()[0] * 10) / 10;
const RUNS = arg('runs', 50), STEPS = arg('steps', 8), WORKERS = arg('workers', 1);
process.env.AGENTD_BIN ||= new URL('../../build/agentd', import.meta.url).pathname;

const d = await startAgentd({
  config: `server: { workers: ${WORKERS} }\nagents:\n  - name: bench\n    model: mock\n    tools: [echo]\n    limits: {max_steps: ${STEPS + 1}}\n`,
});
const script = Array.from({ length: STEPS - 1 }, (_, i) => `CALL echo {"text":"s${i}"}`).join('\n---\n') + '\n---\ndone';
async function histogram() {
  const text = await (await d.opsFetch('/metrics')).text();
  const num = (re) => Number(re.exec(text)?.[1] ?? 0);
  return {
    sum: num(/^agentd_agent_step_overhead_seconds_sum\{agent="bench"\} (\S+)$/m),
    count: num(/^agentd_agent_step_overhead_seconds_count\{agent="bench"\} (\S+)$/m),
    buckets: [...text.matchAll(/^agentd_agent_step_overhead_seconds_bucket\{agent="bench",le="([^"]+)"\} (\S+)$/gm)]
      .map((m) => ({ le: m[1], n: Number(m[2]) })),
  };
}
async function oneRun(i) {
  const t0 = process.hrtime.bigint();
  const r = await d.fetch('/v1/agents/bench/runs', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: script, wait: true }),
  });
  const b = await r.json();
  const us = Number(process.hrtime.bigint() - t0) / 1000;
  if (b.status !== 'succeeded' || b.step_count !== STEPS) throw new Error(`run ${i}: ${JSON.stringify(b).slice(0, 300)}`);
  return us / STEPS;
}
for (let i = 0; i < 3; i++) await oneRun(i); // warm-up, left out of the figures
const before = await histogram();
const wall = [];
for (let i = 0; i < RUNS; i++) wall.push(await oneRun(i));
const after = await histogram();
const sum = after.sum - before.sum, count = after.count - before.count;
const buckets = after.buckets.map((b, i) => ({ le: b.le, n: b.n - (before.buckets[i]?.n ?? 0) }));
await d.stop();
wall.sort((a, b) => a - b);
const p = (q) => wall[Math.min(wall.length - 1, Math.floor(q * wall.length))];
const p50Bucket = buckets.find((b) => b.n >= count / 2)?.le;
const out = {
  runs: RUNS, steps: STEPS, workers: WORKERS, binary: process.env.AGENTD_BIN, cpu: cpus()[0]?.model, ncpu: cpus().length,
  loadavg_1m_at_start: LOAD0,
  overhead_mean_us_per_step: Math.round((sum / count) * 1e6 * 10) / 10,
  overhead_p50_bucket_le_s: p50Bucket,
  runs_observed: count,
  client_wall_us_per_step_p50: Math.round(p(0.5)), client_wall_us_per_step_p99: Math.round(p(0.99)),
  command: `node bench/agents/step_overhead.mjs --runs ${RUNS} --steps ${STEPS} --workers ${WORKERS}`,
};
mkdirSync(new URL('../results/', import.meta.url), { recursive: true });
writeFileSync(new URL('../results/agent-overhead.json', import.meta.url), JSON.stringify(out, null, 2) + '\n');
console.log(JSON.stringify(out, null, 2));
