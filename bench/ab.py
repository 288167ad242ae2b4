#!/usr/bin/env python3
"""A/B of agentd binaries on one scenario, in one sitting: callgrind instructions per request and CPU per request
at 64 connections, with rounds interleaved (the order rotates each round), so a change can be measured against a
reference binary (e.g. the pre-spine f352860) without the whole bench/run.sh.

  python3 bench/ab.py [--kinds instant,sse_responses] [--rounds 3] [--seconds 5] [--cg 1000] [--cg-sse 300]
                      [--no-cpu] [--no-cg] [--syscalls] [--latency SECS] [--top 25]
                      LABEL=BIN[,VAR=VALUE...] [LABEL=BIN ...]

Kinds: instant (POST /v1/chat/completions, the static 587-byte completion) and the static streams of bench.py
(sse_openai, sse_anthropic, sse_o2a, sse_responses). The same static nginx upstream, request files, pinning
(agentd on CPU 0, wrk / lat / upstream on CPU 1) and counters as bench.py. CPU ratios are taken per round against
the first binary, then the median. A binary that answers 404 on a kind's route is skipped for that kind.
--latency SECS adds, in every round, a concurrency-1 run of SECS seconds through each binary and one straight to
the upstream: the added latency (p50, p99) is the binary's minus the upstream's of the same round, then the median.
Environment variables after the binary apply to that run only, e.g. `noledger=build/agentd,AGENTD_LEDGER_ENABLED=false`
measures the spine without a feature the reference binary does not have.
Run it from the repository root; it needs nginx, wrk and valgrind (scripts/deps.sh bench, test).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402


def start_agentd(b, binary, w):
    binary, *assigns = binary.split(",")
    env = {"BENCH_KEY": B.FAKE_KEY}
    env.update(x.split("=", 1) for x in assigns)
    data = os.path.join(w, "data-%d" % os.getpid())
    os.makedirs(data, exist_ok=True)
    p = B.Proc("agentd", [binary, "serve", "--listen", "127.0.0.1:%d" % B.P["agentd"], "--ops-listen",
                          "127.0.0.1:%d" % B.P["agentd_ops"], "--data-dir", data, "--workers", "1", "--config",
                          B.write_agentd_config(w, False)], B.GW_CPU, env=env,
               logfile=os.path.join(w, "agentd.log"))
    B.wait_port(B.P["agentd"], p)
    b.procs["agentd"] = p
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--kinds", default="instant,sse_responses")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--cg", type=int, default=1000)
    ap.add_argument("--cg-sse", type=int, default=300)
    ap.add_argument("--no-cpu", action="store_true")
    ap.add_argument("--no-cg", action="store_true")
    ap.add_argument("--syscalls", action="store_true", help="system calls per request at 64 connections (perf)")
    ap.add_argument("--latency", type=float, default=0, help="seconds of concurrency-1 latency per round and binary")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    bins = [x.split("=", 1) for x in a.bins]
    kinds = a.kinds.split(",")
    os.sched_setaffinity(0, {int(B.LOAD_CPU)})
    w = tempfile.mkdtemp(prefix="agentd-ab-")
    os.chmod(w, 0o755)  # the static upstream's workers (nobody) read the streams from it
    lat = os.path.join(w, "lat")
    subprocess.run(["cc", "-O2", "-o", lat, os.path.join(B.HERE, "lat.c")], check=True)
    up = B.Proc("upstream", ["nginx", "-c", B.write_upstream_nginx(w), "-p", w], B.LOAD_CPU,
                logfile=os.path.join(w, "upstream.log"))
    B.wait_port(B.P["upstream"], up)
    b = B.Bench(w, bins[0][1], lat, "ab")
    res = {k: {lb: {"cpu": [], "ratio": [], "add50": [], "add99": []} for lb, _ in bins} for k in kinds}
    skip = set()
    try:
        # which binary serves which kind
        for lb, binary in bins:
            p = start_agentd(b, binary, w)
            for k in kinds:
                r = b.lat("agentd", k, stream=k in B.SSE_KINDS, n=1, warm=0)
                if r["requests"] != 1 or r["non2xx"] or r["errors"]:
                    B.log("%s does not serve %s: skipped" % (lb, k))
                    skip.add((lb, k))
            p.stop()
            b.procs.pop("agentd", None)
        for rd in range(0 if a.no_cpu else a.rounds):
            for k in kinds:
                per = {}
                direct = None
                if a.latency:
                    direct = b.lat("direct", k, stream=k in B.SSE_KINDS, secs=a.latency)["total_us"]
                for lb, binary in B.rotate(bins, rd):
                    if (lb, k) in skip:
                        continue
                    p = start_agentd(b, binary, w)
                    b.wrk("agentd", k, 1, B.CONNS)
                    r = b.wrk("agentd", k, a.seconds, B.CONNS)
                    if direct:
                        t = b.lat("agentd", k, stream=k in B.SSE_KINDS, secs=a.latency)["total_us"]
                        res[k][lb]["add50"].append(t["p50"] - direct["p50"])
                        res[k][lb]["add99"].append(t["p99"] - direct["p99"])
                    p.stop()
                    b.procs.pop("agentd", None)
                    per[lb] = r["cpu_us_per_req"]
                    res[k][lb]["cpu"].append(r["cpu_us_per_req"])
                    B.log("round %d %-14s %-10s %8.0f req/s  cpu %6.1f us/req  err %d" % (
                        rd + 1, k, lb, r["rps"], r["cpu_us_per_req"], r["errors"]))
                ref = per.get(bins[0][0])
                for lb in per:
                    if ref:
                        res[k][lb]["ratio"].append(per[lb] / ref)
        sc = {}
        if a.syscalls and shutil.which("perf"):
            for lb, binary in bins:
                for k in kinds:
                    if (lb, k) in skip:
                        continue
                    start_agentd(b, binary, w)
                    b.wrk("agentd", k, 1, B.CONNS)
                    sc[(lb, k)] = b.syscalls("agentd", k)
                    b.procs.pop("agentd").stop()
                    B.log("syscalls/req %-14s %-10s %s" % (k, lb, sc[(lb, k)]))
        cg = {}
        if not a.no_cg and shutil.which("valgrind"):
            for lb, binary in bins:
                b.agentd_bin, *assigns = binary.split(",")
                saved = {x.split("=", 1)[0]: os.environ.get(x.split("=", 1)[0]) for x in assigns}
                os.environ.update(x.split("=", 1) for x in assigns)  # the callgrind'ed agentd inherits them
                for k in kinds:
                    if (lb, k) in skip:
                        continue
                    r = b.callgrind("agentd", k, a.cg_sse if k in B.SSE_KINDS else a.cg)
                    src = os.path.join(w, "callgrind-agentd-%s.out" % k)
                    dst = os.path.join(w, "callgrind-%s-%s.out" % (lb, k))
                    os.replace(src, dst)
                    cg[(lb, k)] = r
                    ann = subprocess.run(["callgrind_annotate", "--inclusive=no", dst], capture_output=True,
                                         text=True).stdout.splitlines()
                    print("== %s %s: %s instructions/req  (%s)" % (lb, k, r and r["instructions_per_req"], dst))
                    n = 0
                    for line in ann:
                        if line.strip()[:1].isdigit() and "PROGRAM TOTALS" not in line:
                            print("   " + line.strip()[:150])
                            n += 1
                            if n >= a.top:
                                break
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
    finally:
        b.stop_all()
        up.stop()
    print("\nsummary (ratios against %s, per round then median)" % bins[0][0])
    for k in kinds:
        for lb, _ in bins:
            if (lb, k) in skip:
                continue
            d = res[k][lb]
            c = cg.get((lb, k)) or {}
            ref_cg = (cg.get((bins[0][0], k)) or {}).get("instructions_per_req")
            ipr = c.get("instructions_per_req")
            print("%-14s %-10s cpu/req med %s us  ratio %s  (rounds %s)  instr/req %s  ratio %s  syscalls/req %s" % (
                k, lb, d["cpu"] and round(statistics.median(d["cpu"]), 1),
                d["ratio"] and round(statistics.median(d["ratio"]), 3), [round(x, 1) for x in d["cpu"]], ipr,
                ipr and ref_cg and round(ipr / ref_cg, 3), sc.get((lb, k))))
            if d["add50"]:
                ref = res[k][bins[0][0]]
                print("%-14s %-10s added latency at c=1: p50 %.1f us, p99 %.1f us (medians; %s: p50 %.1f, p99 %.1f)" % (
                    k, lb, statistics.median(d["add50"]), statistics.median(d["add99"]), bins[0][0],
                    statistics.median(ref["add50"]), statistics.median(ref["add99"])))
    print("work dir (callgrind outputs):", w)


if __name__ == "__main__":
    main()
