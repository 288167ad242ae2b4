#!/usr/bin/env python3
"""bench/mcp/bench.py: tools/call of a trivial tool through /mcp (issue 12 item 8), agentd against a minimal MCP
server written with the official TypeScript SDK doing the same thing (bench/mcp/ts_server.mjs), same sitting.

Each server runs alone on CPU 0 (agentd `--workers 1`; node is one thread anyway), wrk on CPU 1. Both are driven
in the 2025-11-25 era with one session made by `initialize` beforehand: every request is a POST of
`tools/call echo {"text":"hello"}` with that Mcp-Session-Id, answered as application/json. Measured per server,
rounds alternating: requests/s at 32 connections for --seconds, and CPU per call (the server process's
utime+stime over the run, from /proc, divided by the requests completed). The medians of the rounds are printed
and written to bench/mcp/results.json.

  python3 bench/mcp/bench.py [--agentd build/agentd] [--rounds 3] [--seconds 10] [--connections 32]
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def post(url, body, headers):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream", **headers})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers, r.read()


def session(url):
    h, _ = post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}, {})
    sid = h["mcp-session-id"]
    post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"},
         {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})
    # one call to check the answer before measuring
    _, b = post(url, CALL, {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})
    assert json.loads(b)["result"]["content"][0]["text"].find("hello") >= 0, b
    return sid


CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hello"}}}


def run_wrk(url, sid, seconds, conns, work):
    body = os.path.join(work, "body.json")
    hdr = os.path.join(work, "headers.txt")
    with open(body, "w") as f:
        json.dump(CALL, f)
    with open(hdr, "w") as f:
        f.write(f"Accept: application/json, text/event-stream\nMcp-Session-Id: {sid}\nMCP-Protocol-Version: 2025-11-25\n")
    env = dict(os.environ, BENCH_BODY_FILE=body, BENCH_HEADER_FILE=hdr)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                          "-s", os.path.join(ROOT, "bench/wrk.lua"), url], env=env, capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"^WRKJSON (.*)$", out, re.M)
    return json.loads(m.group(1))


def measure(name, start, url_of, args, work):
    port = free_port()
    proc = start(port)
    try:
        wait_port(port)
        url = url_of(port)
        sid = session(url)
        run_wrk(url, sid, 2, args.connections, work)  # warm-up
        c0 = cpu_seconds(proc.pid)
        w = run_wrk(url, sid, args.seconds, args.connections, work)
        c1 = cpu_seconds(proc.pid)
        errors = sum(w[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
        ok = w["requests"] - errors
        return {"server": name, "rps": ok / (w["duration_us"] / 1e6), "cpu_us_per_call": (c1 - c0) * 1e6 / max(ok, 1),
                "requests": w["requests"], "errors": errors, "p50_us": w["lat_us"]["p50"], "p99_us": w["lat_us"]["p99"]}
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agentd", default=os.path.join(ROOT, "build/agentd"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-mcp-")
    cfg = os.path.join(work, "agentd.yaml")
    with open(cfg, "w") as f:
        f.write("auth: {mode: none}\n")

    def start_agentd(port):
        return subprocess.Popen(["taskset", "-c", "0", args.agentd, "serve", "--config", cfg, "--workers", "1", "--log-level", "warn",
                                 "--listen", f"127.0.0.1:{port}", "--ops-listen", f"127.0.0.1:{free_port()}",
                                 "--data-dir", os.path.join(work, f"data-{port}")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_ts(port):
        return subprocess.Popen(["taskset", "-c", "0", "node", os.path.join(HERE, "ts_server.mjs"), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    runs = {"agentd": [], "ts-sdk": []}
    for _ in range(args.rounds):
        runs["agentd"].append(measure("agentd", start_agentd, lambda p: f"http://127.0.0.1:{p}/mcp", args, work))
        runs["ts-sdk"].append(measure("ts-sdk", start_ts, lambda p: f"http://127.0.0.1:{p}/mcp", args, work))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "cpu_us_per_call")} for k, v in runs.items()}
    out = {"command": " ".join(sys.argv), "node": subprocess.run(["node", "--version"], capture_output=True,
                                                                    text=True).stdout.strip(),
           "nproc": os.cpu_count(), "runs": runs, "median": med,
           "ratio_rps": med["agentd"]["rps"] / med["ts-sdk"]["rps"],
           "ratio_cpu": med["agentd"]["cpu_us_per_call"] / med["ts-sdk"]["cpu_us_per_call"]}
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    for k, v in med.items():
        print(f"{k:7s} {v['rps']:10.0f} req/s  {v['cpu_us_per_call']:7.1f} us CPU per call")
    print(f"agentd / ts-sdk: {out['ratio_rps']:.2f}x req/s, {out['ratio_cpu']:.2f}x CPU per call")


if __name__ == "__main__":
    main()
