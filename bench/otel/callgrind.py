#!/usr/bin/env python3
"""Instructions per proxied request with OpenTelemetry off and on, under callgrind (issue 10, item 8).

CPU time on a shared machine is noisy; instruction counts are not. agentd (--workers 1, the in-process mock model)
runs under valgrind --tool=callgrind with a fresh data directory, is warmed up, its counters are zeroed, wrk posts
chat completions for --seconds (4 connections), its counters are dumped, then agentd is stopped (the shutdown flush is counted too); Ir (all threads: the
exporter's work counts) / requests for each setting, and the ratio to "off". The callgrind files stay in --out for
callgrind_annotate (build with -DCMAKE_BUILD_TYPE=RelWithDebInfo for line-level detail).

  python3 bench/otel/callgrind.py [--bin build-prof/agentd] [--seconds 15] [--out /tmp/otel-cg]
"""
import argparse, json, os, re, signal, subprocess, sys, tempfile, threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECEIVER = """
import { startReceiver } from '%s/tests/lib/otlp_receiver.mjs';
const r = await startReceiver();
console.log(r.port);
setInterval(() => { r.requests.length = 0; }, 1000);
""" % ROOT


def run(binary, env, work, out, name, seconds, lua):
    cg = os.path.join(out, f"callgrind.{name}")
    work = tempfile.mkdtemp(prefix=f"data-{name}-", dir=work)  # a fresh ledger: no start-up replay of the last run
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", binary, "serve",
                          "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0", "--workers", "1",
                          "--data-dir", work, "--set", "log.access=false", "--set", "log.llm=false"],
                         env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    addr = None
    for line in p.stderr:
        m = re.search(r'"msg":"listening","api":"([^"]+)"', line)
        if m:
            addr = m.group(1)
            break
    if not addr:
        raise SystemExit("agentd did not start")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    url = f"http://{addr}/v1/chat/completions"
    subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-s", lua, url], capture_output=True)  # warm-up
    subprocess.run(["callgrind_control", "--zero", str(p.pid)], capture_output=True)  # count the run only
    o = subprocess.run(["wrk", "-t1", "-c4", f"-d{seconds}s", "-s", lua, url], capture_output=True,
                       text=True).stdout
    n = int(re.search(r"(\d+) requests in", o).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", o)
    n -= int(bad.group(1)) if bad else 0
    subprocess.run(["callgrind_control", "--dump=run", str(p.pid)], capture_output=True)  # the run, not the exit
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    total = 0
    for line in open(f"{cg}.1"):
        if line.startswith("summary:") or line.startswith("totals:"):
            total += int(line.split()[1])
    return n, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-prof", "agentd"))
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--out", default=tempfile.mkdtemp(prefix="otel-cg-"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="otel-cg-work-")
    lua = os.path.join(work, "post.lua")
    open(lua, "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         'wrk.body = \'{"model":"mock","messages":[{"role":"user","content":"hello there"}]}\'\n')
    rx_js = os.path.join(work, "rx.mjs")
    open(rx_js, "w").write(RECEIVER)
    rx = subprocess.Popen(["node", rx_js], stdout=subprocess.PIPE, text=True, cwd=os.path.join(ROOT, "tests"))
    port = rx.stdout.readline().strip()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    ep = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_METRIC_EXPORT_INTERVAL": "5000"}
    settings = {"off": {}, "sampled_100": ep,
                "sampled_10": {**ep, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}}
    res = {}
    try:
        for name, env in settings.items():
            n, ir = run(a.bin, {**base, **env}, work, a.out, name, a.seconds, lua)
            res[name] = {"requests": n, "ir_per_request": round(ir / max(n, 1))}
            print(f"{name}: {n} requests, {ir / max(n, 1):.0f} Ir per request", file=sys.stderr)
    finally:
        rx.terminate()
    off = res["off"]["ir_per_request"]
    for k in res:
        res[k]["ratio_to_off"] = round(res[k]["ir_per_request"] / off, 3)
    print(json.dumps({"settings": res, "callgrind_files": a.out}, indent=2))


if __name__ == "__main__":
    main()
