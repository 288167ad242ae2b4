#!/usr/bin/env python3
"""CPU per request on the no-fault path with admission (and, once they exist, retries and breakers) on vs off
(issue 9, item 10).

agentd (--workers 1, pinned to CPU 0) serves the in-process mock model; wrk (-t1 -c16, CPU 1) posts chat
completions. CPU per request = agentd's utime+stime delta over the run / 2xx responses. Settings:

  off      this binary, gateway.max_concurrent_requests=0 (no limit, no queue)
  on       this binary, 256 slots, a queue of 1000, max_wait 30s, plus every --on-set (retries, breakers ...)
  before   --before BIN: a binary built from the commit before admission (same flags as `off`), if given

wrk's 16 connections never fill 256 slots, so `on` is the path every request takes when nothing is wrong: it
takes a slot and gives it back, and never waits (the script checks that agentd_admission_wait_seconds counted
nothing and nothing was refused). Rounds interleave the settings (the order rotates); figures are medians over
rounds and ratios are taken within each round, then the median (absolute figures drift on a shared VM, same-round
ratios much less).

  python3 bench/admission/cpu.py [--bin build/agentd] [--before /path/to/agentd-main] [--rounds 5] [--seconds 5]
         [--callgrind 2000] [--resilience] [--on-set gateway.SOME.KEY=VALUE ...] [--off-set ...]

--resilience switches retries and breakers (issue 9 items 1-5; gateway.retries, gateway.breaker) on for `on` and
off for `off` (a --before binary has neither); --on-set / --off-set add any other key. An unknown key makes
agentd refuse to start, and the script says so.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")

ADMISSION_ON = ["gateway.max_concurrent_requests=256", "gateway.admission.queue_size=1000",
                "gateway.admission.max_wait=30s"]
# The keys of the resilience branch (gateway.retries, gateway.breaker: docs/resilience.md). Retries and breakers
# are on by default there, so `off` turns them off explicitly.
RESILIENCE_ON = ["gateway.retries.max_attempts=3", "gateway.breaker.enabled=true"]
RESILIENCE_OFF = ["gateway.retries.max_attempts=1", "gateway.breaker.enabled=false"]


def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def start_agentd(binary, sets, work):
    args = ["taskset", "-c", "0", binary, "serve", "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0",
            "--workers", "1", "--data-dir", work, "--set", "log.access=false", "--set", "log.llm=false"]
    for s in sets:
        args += ["--set", s]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in p.stderr:
        seen.append(line)
        m = re.search(r'"msg":"listening","api":"([^"]+)","ops":"([^"]+)"', line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, m.group(1), m.group(2)
    raise SystemExit(f"agentd did not start with {sets}:\n" + "".join(seen[-10:]))


def scrape(ops, name):
    text = urllib.request.urlopen(f"http://{ops}/metrics", timeout=10).read().decode()
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        total += float(m.group(1))
    return total


def callgrind(binary, sets, work, n):
    """Instructions per request in agentd's event loops (collection toggled on uv_run), n sequential requests on
    one keep-alive connection: deterministic to well under 1%, unlike CPU time on a shared machine."""
    import http.client
    out = os.path.join(work, "callgrind.out")
    args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, "--collect-atstart=no",
            "--toggle-collect=uv_run", binary, "serve", "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0",
            "--workers", "1", "--data-dir", work, "--set", "log.access=false", "--set", "log.llm=false"]
    for x in sets:
        args += ["--set", x]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    api = None
    for line in p.stderr:
        m = re.search(r'"msg":"listening","api":"([^"]+)"', line)
        if m:
            api = m.group(1)
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            break
    if api is None:
        raise SystemExit("agentd under callgrind did not start")
    host, port = api.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    body = '{"model":"mock","messages":[{"role":"user","content":"hello there"}]}'
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"callgrind run: status {r.status}")
    c.close()
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    for line in open(out):
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1]) / n
    raise SystemExit("no callgrind totals")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "agentd"))
    ap.add_argument("--before", help="agentd built from the commit before admission (optional)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--on-set", action="append", default=[], help="extra --set for `on` (retries, breakers)")
    ap.add_argument("--off-set", action="append", default=[], help="extra --set for `off` and `before`")
    ap.add_argument("--callgrind", type=int, default=0, metavar="N",
                    help="also count instructions per request under callgrind, N requests per setting")
    ap.add_argument("--resilience", action="store_true",
                    help="also retries and breakers: on with the defaults of docs/resilience.md, off for off/before")
    a = ap.parse_args()
    if a.resilience:
        a.on_set += RESILIENCE_ON
        a.off_set += RESILIENCE_OFF
    work = tempfile.mkdtemp(prefix="admission-bench-")
    lua = os.path.join(work, "post.lua")
    open(lua, "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         'wrk.body = \'{"model":"mock","messages":[{"role":"user","content":"hello there"}]}\'\n')
    settings = {"off": (a.bin, ["gateway.max_concurrent_requests=0"] + a.off_set),
                "on": (a.bin, ADMISSION_ON + a.on_set)}
    if a.before:  # a binary from before knows none of the new keys: only what it has
        settings["before"] = (a.before, ["gateway.max_concurrent_requests=0"] +
                              [x for x in a.off_set if x not in RESILIENCE_OFF])
    per = {k: [] for k in settings}
    pairs = [("on", "off")] + ([("on", "before"), ("off", "before")] if a.before else [])
    ratios = {f"{x}/{y}": [] for x, y in pairs}
    for rnd in range(a.rounds):
        got = {}
        names = list(settings)
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            binary, sets = settings[name]
            p, api, ops = start_agentd(binary, sets, work)
            url = f"http://{api}/v1/chat/completions"
            wrk = ["taskset", "-c", "1", "wrk", "-t1", f"-c{a.connections}"]
            subprocess.run(wrk + ["-d1s", "-s", lua, url], capture_output=True)  # warm-up
            t0 = ticks(p.pid)
            out = subprocess.run(wrk + [f"-d{a.seconds}s", "-s", lua, url], capture_output=True, text=True).stdout
            t1 = ticks(p.pid)
            m = re.search(r"(\d+) requests in", out)
            if not m:
                raise SystemExit(f"wrk: {out}")
            n = int(m.group(1))
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            n -= int(bad.group(1)) if bad else 0
            if name == "on":  # the no-fault path: nobody waited, nobody was refused
                waited = scrape(ops, "agentd_admission_wait_seconds_count")
                refused = scrape(ops, "agentd_admission_refused_total")
                if waited or refused or bad:
                    raise SystemExit(f"not the no-fault path: waited {waited}, refused {refused}, non-2xx {bad}")
            us = (t1 - t0) / TICK * 1e6 / max(n, 1)
            got[name] = us
            per[name].append(us)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            print(f"round {rnd + 1} {name}: {n} requests, {us:.1f} us CPU per request", file=sys.stderr)
        for x, y in pairs:
            ratios[f"{x}/{y}"].append(got[x] / got[y])
    cg = {}
    if a.callgrind:
        for name, (binary, sets) in settings.items():
            cg[name] = round(callgrind(binary, sets, work, a.callgrind))
            print(f"callgrind {name}: {cg[name]} instructions per request", file=sys.stderr)
    res = {"cpu_us_per_request_median": {k: round(statistics.median(v), 2) for k, v in per.items()},
           "ratio_median": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
           "ratios_per_round": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
           "on_sets": ADMISSION_ON + a.on_set, "off_sets": a.off_set, "rounds": a.rounds, "seconds": a.seconds,
           "connections": a.connections}
    if cg:
        res["instructions_per_request"] = cg
        res["instructions_ratio"] = {f"{x}/{y}": round(cg[x] / cg[y], 4) for x, y in pairs}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
