#!/usr/bin/env python3
"""CPU per proxied request with OpenTelemetry off, at 100% sampling and at 10% sampling (issue 10, item 8).

agentd (--workers 1, pinned to CPU 0) serves the in-process mock model; wrk (-t1, CPU 1) posts chat completions;
an OTLP receiver (tests/lib/otlp_receiver.mjs, CPU 1) takes the exports, metrics every 5 s. CPU per request =
agentd's utime+stime delta over the run / 2xx responses. Rounds interleave the three settings; figures are
medians, ratios are taken within a round.

  python3 bench/otel/cpu.py [--bin build/agentd] [--rounds 3] [--seconds 5]
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")

RECEIVER = """
import { startReceiver } from '%s/tests/lib/otlp_receiver.mjs';
const r = await startReceiver();
console.log(r.port);
setInterval(() => { r.requests.length = 0; }, 1000);
""" % ROOT


def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def start_agentd(binary, env, work):
    data = tempfile.mkdtemp(prefix="data-", dir=work)  # fresh: a shared one grows the ledger run after run
    p = subprocess.Popen(["taskset", "-c", "0", binary, "serve", "--listen", "127.0.0.1:0", "--ops-listen",
                          "127.0.0.1:0", "--workers", "1", "--data-dir", data, "--set", "log.access=false",
                          "--set", "log.llm=false"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         text=True)
    for line in p.stderr:
        m = re.search(r'"msg":"listening","api":"([^"]+)"', line)
        if m:
            # keep draining stderr so agentd never blocks on a full pipe
            import threading
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, m.group(1)
    raise SystemExit("agentd did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "agentd"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="otel-bench-")
    lua = os.path.join(work, "post.lua")
    open(lua, "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         'wrk.body = \'{"model":"mock","messages":[{"role":"user","content":"hello there"}]}\'\n')
    rx_js = os.path.join(work, "rx.mjs")
    open(rx_js, "w").write(RECEIVER)
    rx = subprocess.Popen(["taskset", "-c", "1", "node", rx_js], stdout=subprocess.PIPE, text=True,
                          cwd=os.path.join(ROOT, "tests"))
    port = rx.stdout.readline().strip()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    settings = {
        "off": {},
        "sampled_100": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_METRIC_EXPORT_INTERVAL": "5000"},
        "exporter_sampled_0": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                               "OTEL_METRIC_EXPORT_INTERVAL": "5000", "OTEL_TRACES_SAMPLER": "always_off"},
        "sampled_10": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_METRIC_EXPORT_INTERVAL": "5000",
                       "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    }
    per = {k: [] for k in settings}
    ratios = {k: [] for k in settings if k != "off"}
    try:
        for rnd in range(a.rounds):
            got = {}
            order = list(settings)[rnd % len(settings):] + list(settings)[:rnd % len(settings)]
            for name in order:
                p, addr = start_agentd(a.bin, {**base, **settings[name]}, work)
                url = f"http://{addr}/v1/chat/completions"
                subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c16", "-d1s", "-s", lua, url],
                               capture_output=True)  # warm-up
                t0 = ticks(p.pid)
                out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{a.seconds}s", "-s", lua, url],
                                     capture_output=True, text=True).stdout
                t1 = ticks(p.pid)
                m = re.search(r"(\d+) requests in", out)
                if not m:
                    raise SystemExit(f"wrk: {out}")
                n = int(m.group(1))
                bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                n -= int(bad.group(1)) if bad else 0
                us = (t1 - t0) / TICK * 1e6 / max(n, 1)
                got[name] = us
                per[name].append(us)
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
                print(f"round {rnd + 1} {name}: {n} requests, {us:.1f} us CPU per request", file=sys.stderr)
            for k in ratios:
                ratios[k].append(got[k] / got["off"])
    finally:
        rx.terminate()
    res = {"cpu_us_per_request_median": {k: round(statistics.median(v), 1) for k, v in per.items()},
           "ratio_to_off_median": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
           "rounds": a.rounds, "seconds": a.seconds}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
