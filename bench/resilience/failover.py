#!/usr/bin/env python3
"""Failover under a flaky provider (issue 9, item 10, second half).

A model with two deployments of equal weight, each a fake OpenAI server (tests/fakes/fake.mjs, --latency-ms
added to every answer): `flaky` answers 20% of the requests it gets with 503 (a seeded random script, queued
through the fake's /__fake/script), `steady` is healthy. N chat completions at a fixed concurrency (keep-alive
connections, one thread each) go through agentd with its default retries and breakers. Two runs, each against a
fresh agentd and fresh fakes: `nofault` (nothing scripted) and `fault`. Reported:

  success   share of requests the client saw as a well-formed 200 completion (goal >= 99.9%)
  p50/p99   client-seen latency; `added p99` = p99(fault) - p99(nofault)
  attempts  x-agentd-attempts per request (2 = one failed attempt, then the other deployment)
  upstream  how many requests each fake received, and how many 503s flaky gave

  python3 bench/resilience/failover.py [--bin build/agentd] [-n 2000] [-c 16] [--latency-ms 20] [--fail 0.2]
         [--seed 1] [--no-breaker] [--json]

The exit status is 1 when the fault run's success rate is below 99.9%.
"""
import argparse, http.client, json, os, random, re, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE = os.path.join(ROOT, "tests", "fakes", "fake.mjs")
KEY = "sk-fake-openai-0123456789abcdef"


def start_fake(latency_ms):
    p = subprocess.Popen(["node", FAKE, "--provider", "openai", "--port", "0", "--latency-ms", str(latency_ms)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.search(r'"listening":"([^"]+)"', line)
    if not m:
        p.kill()
        raise SystemExit(f"the fake did not start: {line!r}")
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, m.group(1)


def post_json(addr, path, body):
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def script_faults(addr, rate, count, seed):
    """Queues `count` behaviours on the fake, each a 503 with probability `rate`: runs of normal answers
    ({"times": k}) between single 503s. Returns how many 503s were queued."""
    rnd = random.Random(seed)
    seq, run, fails = [], 0, 0
    for _ in range(count):
        if rnd.random() < rate:
            if run:
                seq.append({"times": run})
            seq.append({"status": 503})
            run, fails = 0, fails + 1
        else:
            run += 1
    if run:
        seq.append({"times": run})
    post_json(addr, "/__fake/script", seq)
    return fails


def start_agentd(binary, work, flaky, steady, breaker):
    cfg = os.path.join(work, "agentd.yaml")
    with open(cfg, "w") as f:
        f.write("log:\n  access: false\n  llm: false\n"
                + ("" if breaker else "gateway:\n  breaker: { enabled: false }\n") +
                "models:\n  - name: m\n    deployments:\n"
                f"      - {{ provider: openai, model: gpt-4o-mini, id: flaky, base_url: \"http://{flaky}/v1\", "
                "api_key_env: FAKE_OPENAI_KEY, weight: 1 }\n"
                f"      - {{ provider: openai, model: gpt-4o-mini, id: steady, base_url: \"http://{steady}/v1\", "
                "api_key_env: FAKE_OPENAI_KEY, weight: 1 }\n")
    env = dict(os.environ, FAKE_OPENAI_KEY=KEY)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    p = subprocess.Popen([binary, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--ops-listen",
                          "127.0.0.1:0", "--data-dir", os.path.join(work, "data")],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    seen = []
    for line in p.stderr:
        seen.append(line)
        m = re.search(r'"msg":"listening","api":"([^"]+)","ops":"([^"]+)"', line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, m.group(1), m.group(2)
    raise SystemExit("agentd did not start:\n" + "".join(seen[-10:]))


def load(api, n, conc):
    host, port = api.rsplit(":", 1)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "one two three"}]})
    lock = threading.Lock()
    nxt = [0]
    out = []  # (ok, latency_s, attempts, status)

    def worker():
        c = http.client.HTTPConnection(host, int(port), timeout=120)
        mine = []
        while True:
            with lock:
                if nxt[0] >= n:
                    break
                nxt[0] += 1
            t0 = time.perf_counter()
            try:
                c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
                r = c.getresponse()
                data = r.read()
                dt = time.perf_counter() - t0
                ok = False
                if r.status == 200:
                    j = json.loads(data)
                    ok = j["choices"][0]["message"]["content"] == "echo: one two three"
                mine.append((ok, dt, int(r.getheader("x-agentd-attempts") or 0), r.status))
            except Exception:  # a reset or a timeout is a failure the client saw
                mine.append((False, time.perf_counter() - t0, 0, 0))
                c.close()
                c = http.client.HTTPConnection(host, int(port), timeout=120)
        c.close()
        with lock:
            out.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, time.perf_counter() - t0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run(args, fault):
    work = tempfile.mkdtemp(prefix="agentd-failover-")
    fa, flaky = start_fake(args.latency_ms)
    fb, steady = start_fake(args.latency_ms)
    ag = None
    try:
        scripted = script_faults(flaky, args.fail, 4 * args.n, args.seed) if fault else 0
        ag, api, ops = start_agentd(args.bin, work, flaky, steady, not args.no_breaker)
        res, wall = load(api, args.n, args.c)
        metrics = urllib.request.urlopen(f"http://{ops}/metrics", timeout=10).read().decode()
        breaker = {m.group(1): float(m.group(2)) for m in
                   re.finditer(r'^agentd_gateway_breaker_state\{[^}]*deployment="([^"]+)"[^}]*\} (\S+)$', metrics,
                               re.M)}
        got = {}
        for name, addr in (("flaky", flaky), ("steady", steady)):
            got[name] = len(json.loads(urllib.request.urlopen(f"http://{addr}/__fake/requests", timeout=10).read()))
        # 503s the flaky fake actually gave: the scripted ones among the first got["flaky"] requests
        failed_upstream = 0
        if fault:
            rnd = random.Random(args.seed)
            for _ in range(got["flaky"]):
                failed_upstream += rnd.random() < args.fail
        lat = [r[1] * 1000 for r in res]
        att = {}
        for r in res:
            att[r[2]] = att.get(r[2], 0) + 1
        return {
            "run": "fault" if fault else "nofault", "n": len(res), "ok": sum(r[0] for r in res),
            "success": sum(r[0] for r in res) / len(res), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "max_ms": max(lat), "mean_ms": statistics.mean(lat), "wall_s": wall,
            "attempts": dict(sorted(att.items())), "statuses": sorted({r[3] for r in res}),
            "upstream_requests": got, "upstream_503": failed_upstream, "scripted_503": scripted,
            "breaker_state": breaker,
        }
    finally:
        if ag:
            ag.terminate()
            ag.wait(timeout=30)
        for f in (fa, fb):
            f.terminate()
            f.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "agentd"))
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-c", type=int, default=16)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--fail", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-breaker", action="store_true",
                    help="gateway.breaker.enabled=false: every failure is met by a retry (the breaker's default "
                         "5 consecutive failures may otherwise open flaky's breaker and send everything to steady)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = run(args, False)
    flt = run(args, True)
    if args.json:
        print(json.dumps({"nofault": base, "fault": flt}, indent=1))
    else:
        for r in (base, flt):
            print(f"{r['run']:8} n={r['n']} success={100 * r['success']:.2f}% ({r['ok']}) p50={r['p50_ms']:.1f}ms "
                  f"p99={r['p99_ms']:.1f}ms max={r['max_ms']:.1f}ms wall={r['wall_s']:.1f}s "
                  f"attempts={r['attempts']} upstream={r['upstream_requests']} flaky_503={r['upstream_503']} "
                  f"breaker={r['breaker_state']}")
        print(f"added latency: p50 {flt['p50_ms'] - base['p50_ms']:+.1f} ms, p99 {flt['p99_ms'] - base['p99_ms']:+.1f} ms")
    return 0 if flt["success"] >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
