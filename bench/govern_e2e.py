#!/usr/bin/env python3
"""The cost of governance end to end (issue 8 item 8), called by `bench/run.sh govern`.

Same method and machinery as bench.py (imported): the process under test pinned to CPU 0, wrk and the static nginx
upstream on CPU 1, every path measured in each round, interleaved, medians over rounds, ratios taken within a
round. Paths, all `POST /v1/chat/completions` answered by the static upstream (the fake's 587-byte completion):

  direct      the upstream itself
  agentd      agentd without governance (auth.mode none on loopback, no budget, no rate limit)
  agentd_gov  agentd with auth.mode keys and the request's key carrying a USD budget (day) and RPM/TPM limits, plus
              a configured team budget (month) and a per-user rate limit: a key look-up, 3 GCRA cells and 2 budget
              cells reserved at admit and settled at the end of every request
  nginx       nginx proxy_pass (upstream keep-alive)

Reported: CPU per request at 64 connections and at concurrency 1, added latency at concurrency 1 (p50, p99, minus
direct in the same round), and the ratios agentd_gov / agentd (goal: <= 1.1) and agentd_gov / nginx. The limits
are set high enough that nothing is refused: what is measured is the decision, not a refusal.
Writes BENCH_OUT (default bench/results/govern-latest.json) and a Markdown table beside it (.md).
"""
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import bench as B

P_GOV, P_GOV_OPS = B.PORT_BASE + 14, B.PORT_BASE + 15
TARGETS = ["direct", "agentd", "agentd_gov", "nginx"]


def gov_config(work):
    path = os.path.join(work, "agentd-gov.yaml")
    base = open(B.write_agentd_config(work, False)).read()
    with open(path, "w") as f:
        f.write("auth:\n  mode: keys\n" + base + """budgets:
  - {scope: team, name: bench, usd: 1000000, window: month}
ratelimits:
  - {scope: user, name: "*", rpm: 1000000000, tpm: 1000000000000}
""")
    return path


class GovBench(B.Bench):
    key = None

    def request(self, target, kind):
        if target == "agentd_gov":
            return P_GOV, "/v1/chat/completions", B.body("bench-instant"), ["Authorization: Bearer " + self.key]
        return super().request(target, kind)

    def proc_for(self, target):
        if target == "agentd_gov":
            return self.procs.get("agentd_gov")
        return super().proc_for(target)

    def start_gov(self):
        w = self.work
        started = []

        def start(name, argv, cpu, port, env=None):
            p = B.Proc(name, argv, cpu, env=env, logfile=os.path.join(w, name + ".log"))
            self.procs[name] = p
            started.append((name, port))

        start("upstream", ["nginx", "-c", B.write_upstream_nginx(w), "-p", w], B.LOAD_CPU, B.P["upstream"])
        data = os.path.join(w, "agentd-data")
        os.makedirs(data + "-agentd", exist_ok=True)
        start("agentd", [self.agentd_bin, "serve", "--listen", "127.0.0.1:%d" % B.P["agentd"],
                         "--ops-listen", "127.0.0.1:%d" % B.P["agentd_ops"], "--data-dir", data + "-agentd",
                         "--workers", "1", "--config", B.write_agentd_config(w, False)],
              B.GW_CPU, B.P["agentd"], env={"BENCH_KEY": B.FAKE_KEY})
        gdata = data + "-gov"
        os.makedirs(gdata, exist_ok=True)
        out = subprocess.run([self.agentd_bin, "keys", "create", "--name", "bench", "--user", "bench-user",
                              "--team", "bench", "--tag", "workflow=bench", "--budget-usd", "1000000",
                              "--budget-window", "day", "--rpm", "1000000000", "--tpm", "1000000000000",
                              "--data-dir", gdata], capture_output=True, text=True, check=True)
        self.key = json.loads(out.stdout)["key"]
        start("agentd_gov", [self.agentd_bin, "serve", "--listen", "127.0.0.1:%d" % P_GOV,
                             "--ops-listen", "127.0.0.1:%d" % P_GOV_OPS, "--data-dir", gdata,
                             "--workers", "1", "--config", gov_config(w)],
              B.GW_CPU, P_GOV, env={"BENCH_KEY": B.FAKE_KEY})
        start("nginx", ["nginx", "-c", B.write_gateway_nginx(w), "-p", w], B.GW_CPU, B.P["nginx_r200"])
        for name, port in started:
            B.wait_port(port, self.procs[name])


def main():
    work = os.environ["BENCH_WORK"]
    os.sched_setaffinity(0, {int(B.LOAD_CPU)})
    try:
        os.setsid()
    except OSError:
        pass
    nice = B.raise_priority()
    b = GovBench(work, os.environ["AGENTD_BIN"], os.environ["BENCH_LAT"], "govern")
    raw = {t: [] for t in TARGETS}
    t0 = time.time()
    try:
        b.start_gov()
        b.smoke({"instant": TARGETS}, ["instant"])
        # the governed path answers 200 with its key (smoke above); and it is governed: 401 without it
        no_key = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                 "-H", "content-type: application/json", "-d", B.body("bench-instant"),
                                 "http://127.0.0.1:%d/v1/chat/completions" % P_GOV], capture_output=True, text=True)
        if no_key.stdout != "401":
            raise RuntimeError("the governed agentd answered %s without a key" % no_key.stdout)
        for t in TARGETS[1:]:
            b.wrk(t, "instant", B.PREWARM, B.CONNS)
        for rd in range(B.ROUNDS):
            B.log("round %d/%d" % (rd + 1, B.ROUNDS))
            for t in B.rotate(TARGETS, rd):
                b.wrk(t, "instant", B.WARM, B.CONNS)
                r64 = b.wrk(t, "instant", B.DUR, B.CONNS)
                c1 = b.lat(t, "instant", secs=B.C1_SECS)
                raw[t].append({"c64": r64, "c1": c1})
                B.log("  %-10s %8.0f req/s  cpu %6.1f us/req @64, %6.1f @1  c1 p50 %7.1f p99 %7.1f us  err %d" % (
                    t, r64["rps"], r64.get("cpu_us_per_req", 0), c1.get("cpu_us_per_req", 0),
                    c1["total_us"]["p50"], c1["total_us"]["p99"], r64["errors"] + c1["errors"] + c1["non2xx"]))
                b.check()
        metrics = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/metrics" % P_GOV_OPS], capture_output=True,
                                 text=True).stdout
    finally:
        b.stop_all()
    refused = [l for l in metrics.splitlines() if l.startswith(("agentd_ratelimit_refusals_total",
                                                                "agentd_budget_refusals_total",
                                                                "agentd_auth_refused_total"))]
    rt = B.Ratios(raw)
    cpu64 = lambda r: r["c64"].get("cpu_us_per_req")  # noqa: E731
    cpu1 = lambda r: r["c1"].get("cpu_us_per_req")  # noqa: E731

    def added(t, pct):
        vals = [x["c1"]["total_us"][pct] - d["c1"]["total_us"][pct] for x, d in zip(raw[t], raw["direct"])]
        return B.rnd(B.med(vals), 1)

    paths = {t: {**B.summarize(raw[t], {"rps_64": lambda r: r["c64"]["rps"], "cpu_us_per_req_64": cpu64,
                                        "cpu_us_per_req_1": cpu1, "p50_us_1": lambda r: r["c1"]["total_us"]["p50"],
                                        "p99_us_1": lambda r: r["c1"]["total_us"]["p99"],
                                        "errors": lambda r: r["c64"]["errors"] + r["c1"]["errors"] + r["c1"]["non2xx"]}),
                 **({"added_p50_us_1": added(t, "p50"), "added_p99_us_1": added(t, "p99")} if t != "direct" else {})}
             for t in TARGETS}
    res = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": os.environ.get("BENCH_COMMAND", "bench/run.sh govern"),
        "agentd": {"bin": os.environ["AGENTD_BIN"], "git": os.environ.get("BENCH_GIT", "")},
        "machine": B.machine(),
        "params": {"rounds": B.ROUNDS, "duration_s": B.DUR, "warmup_s": B.WARM, "c1_seconds": B.C1_SECS,
                   "connections": B.CONNS, "gateway_cpu": B.GW_CPU, "load_cpu": B.LOAD_CPU, "spin": B.SPIN,
                   "autogroup_nice": nice},
        "paths": paths,
        "ratios": {
            "cpu_64_gov_over_agentd": rt("cpu_64_gov_over_agentd", "agentd_gov", "agentd", cpu64),
            "cpu_1_gov_over_agentd": rt("cpu_1_gov_over_agentd", "agentd_gov", "agentd", cpu1),
            "cpu_64_gov_over_nginx": rt("cpu_64_gov_over_nginx", "agentd_gov", "nginx", cpu64),
            "cpu_64_agentd_over_nginx": rt("cpu_64_agentd_over_nginx", "agentd", "nginx", cpu64),
            "rps_64_gov_over_agentd": rt("rps_64_gov_over_agentd", "agentd_gov", "agentd",
                                         lambda r: r["c64"]["rps"]),
        },
        "ratio_runs": rt.runs,
        "refusals_on_governed_path": refused,
        "elapsed_s": round(time.time() - t0, 1),
        "raw": raw,
    }
    res["checks"] = {"cpu per request governed <= 1.1x ungoverned (64 connections)":
                     res["ratios"]["cpu_64_gov_over_agentd"] is not None and
                     res["ratios"]["cpu_64_gov_over_agentd"] <= 1.1}
    out = os.environ.get("BENCH_OUT", os.path.join(B.HERE, "results", "govern-latest.json"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    md = ["Governance end to end (`%s`, %s, agentd %s)" % (res["command"], res["date"], res["agentd"]["git"]), "",
          "| path | req/s @64 | CPU µs/req @64 | CPU µs/req @1 | p50 µs @1 | added p50 µs | added p99 µs |",
          "|---|---|---|---|---|---|---|"]
    for t in TARGETS:
        p = paths[t]
        md.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            t, p["rps_64"]["median"], p["cpu_us_per_req_64"]["median"], p["cpu_us_per_req_1"]["median"],
            p["p50_us_1"]["median"], p.get("added_p50_us_1", "-"), p.get("added_p99_us_1", "-")))
    md += ["", "Ratios (median of per-round ratios): " + ", ".join("%s %s" % kv for kv in res["ratios"].items()),
           "", "Refusal counters on the governed path at the end: %s" % (", ".join(refused) or "none")]
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
