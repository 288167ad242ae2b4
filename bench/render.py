#!/usr/bin/env python3
"""Renders bench/results/latest.json as Markdown tables into bench/RESULTS.md, between the markers
<!-- BEGIN GENERATED --> and <!-- END GENERATED -->; the hand-written analysis around them is kept.

  python3 bench/render.py [results.json]     re-render without re-running
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"

NAMES = {"direct": "direct (client → upstream)", "agentd": "**agentd**", "agentd_log": "agentd + access log",
         "nginx": "nginx", "nginx_log": "nginx + access log", "portkey": "Portkey 1.15.2 (node)"}


def med(t, k):
    v = t.get(k)
    if isinstance(v, dict):
        return v.get("median")
    return v


def spread(t, k):
    v = t.get(k)
    if not isinstance(v, dict):
        return ""
    runs = [x for x in v.get("runs", []) if x is not None]
    if len(runs) < 2:
        return ""
    return " (%s–%s)" % (fmt(min(runs)), fmt(max(runs)))


def fmt(x, nd=None):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if nd is None:
        ax = abs(x)
        nd = 0 if ax >= 1000 else 1 if ax >= 10 else 2
    return ("{:,.%df}" % nd).format(x)


def mb(kb):
    return "–" if kb is None else "%.1f MB" % (kb / 1024.0)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def render(res):
    sc = res["scenarios"]
    m = res["machine"]
    p = res["params"]
    L = []
    L.append("Run **%s** · `%s` · agentd `%s` (%s) · %d rounds, median shown, (min–max) over rounds where useful · "
             "took %.0f s" % (res["date"], res["command"], res["agentd"]["version"], res["agentd"].get("git", ""),
                             p["rounds"], res["elapsed_s"]))
    L.append("")
    L.append("Machine: %s CPUs (%s), kernel %s, %s, %.1f GB RAM, load average at start %s. nginx %s, %s, node %s. "
             "Process under test on CPU %s; wrk/bench-lat and upstreams on CPU %s." % (
                 m["nproc"], m["cpu_model"], m["kernel"], m.get("os"), (m.get("mem_total_kb") or 0) / 1048576.0,
                 " ".join(m.get("loadavg_at_start") or []), (m.get("nginx") or "").replace("nginx version: ", ""),
                 m.get("wrk", "").split(" [")[0] if m.get("wrk") else "wrk", m.get("node"), p["gateway_cpu"],
                 p["load_cpu"]))
    L.append("")

    checks = res.get("targets_design_9") or []
    if checks:
        L.append("#### DESIGN §9 targets")
        L.append("")
        L.append(table(["target", "agentd", "met"], [[c["target"], c["agentd"], fmt(c["met"])] for c in checks]))
        L.append("")

    s = sc.get("server_health")
    if s:
        L.append("#### Server: `GET /health` (agentd API port) vs nginx `return 200`")
        L.append("")
        L.append(s["what"] + ".")
        L.append("")
        rows = []
        for t in ("agentd", "nginx", "agentd_log", "nginx_log"):
            x = s["targets"].get(t)
            if not x:
                continue
            rows.append([NAMES[t], fmt(med(x, "rps")) + spread(x, "rps"),
                         fmt(med(x, "cpu_us_per_req")) + spread(x, "cpu_us_per_req"),
                         "%.0f%%" % (100 * (med(x, "cpu_util") or 0)),
                         fmt(med(x, "c1_p50_us")), fmt(med(x, "c1_p99_us")),
                         mb(x.get("idle_rss_kb")) if t in ("agentd", "nginx") else "",
                         mb(x.get("peak_rss_kb")) if t in ("agentd", "nginx", "agentd_log") else "",
                         fmt(med(x, "errors"), 0)])
        L.append(table(["server", "req/s @%d conns" % p["connections"], "CPU µs/req @%d" % p["connections"],
                        "CPU used", "c=1 p50 µs", "c=1 p99 µs", "idle RSS", "peak RSS", "errors"],
                       rows))
        L.append("")
        utils = [med(x, "cpu_util") or 0 for x in s["targets"].values()]
        if utils and max(utils) < 0.95:
            L.append("The process under test never had its CPU to itself (CPU used < 95%): wrk's one core set the "
                     "rate, so compare CPU per request and the counters below, not req/s.")
            L.append("")
        r = s["ratios_vs_nginx"]
        a = s["access_log_cost"]
        L.append("agentd ÷ nginx: req/s **%s×**, CPU per request **%s×**, c=1 p50 **%s×**, c=1 p99 **%s×**; "
                 "with access logs on both: req/s %s×, CPU %s×. Access log cost in agentd: %s µs CPU per request "
                 "(req/s ×%s); in nginx: %s µs." % (
                     fmt(r["rps"], 2), fmt(r["cpu_us_per_req"], 2), fmt(r["c1_p50"], 2), fmt(r["c1_p99"], 2),
                     fmt(r["rps_with_access_log"], 2), fmt(r["cpu_with_access_log"], 2),
                     fmt(a["agentd_cpu_us_per_req"], 1), fmt(a["agentd_rps_ratio"], 2),
                     fmt(a["nginx_cpu_us_per_req"], 1)))
        L.append("")

    s = sc.get("proxy_instant")
    if s:
        L.append("#### Gateway, non-streaming, instant upstream (static nginx on CPU %s)" % p["load_cpu"])
        L.append("")
        L.append(s["what"] + ".")
        L.append("")
        rows = []
        for t in ("direct", "agentd", "nginx", "portkey", "agentd_log"):
            x = s["targets"].get(t)
            if not x:
                continue
            rows.append([NAMES[t], fmt(med(x, "rps")) + spread(x, "rps"),
                         fmt(med(x, "cpu_us_per_req")) + spread(x, "cpu_us_per_req") if t != "direct" else "",
                         fmt(med(x, "c1_p50_us")), fmt(med(x, "c1_p99_us")),
                         fmt(med(x, "added_c1_p50_us")) + spread(x, "added_c1_p50_us") if t != "direct" else "–",
                         fmt(med(x, "added_c1_p99_us")) + spread(x, "added_c1_p99_us") if t != "direct" else "–",
                         fmt(med(x, "p99_us_c64")),
                         mb((res.get("peak_rss_kb_before_many_connections") or {}).get(t, x.get("peak_rss_kb")))
                         if t != "direct" else "",
                         fmt((med(x, "errors") or 0) + (med(x, "c1_errors") or 0), 0)])
        L.append(table(["path", "req/s @%d" % p["connections"], "CPU µs/req @%d" % p["connections"],
                        "c=1 p50 µs", "c=1 p99 µs", "added p50 µs", "added p99 µs",
                        "p99 µs @%d" % p["connections"], "peak RSS @%d" % p["connections"], "errors"], rows))
        L.append("")
        r = s["ratios"]
        L.append("agentd ÷ nginx proxy_pass: CPU per request **%s×** (target ≤ 1.2), req/s **%s×**, added latency "
                 "p50 **%s×**, p99 **%s×** (target ≤ 1). Portkey ÷ agentd CPU per request: %s×. "
                 "Access log on agentd: CPU ×%s." % (
                     fmt(r["agentd_vs_nginx_cpu_us_per_req"], 2), fmt(r["agentd_vs_nginx_rps"], 2),
                     fmt(r["agentd_vs_nginx_added_c1_p50"], 2), fmt(r["agentd_vs_nginx_added_c1_p99"], 2),
                     fmt(r["portkey_vs_agentd_cpu_us_per_req"], 1), fmt(r["agentd_log_vs_agentd_cpu"], 2)))
        L.append("")

    s = sc.get("proxy_instant_many_connections")
    if s:
        hc = p.get("high_connections")
        L.append("#### Gateway, instant upstream, %s connections" % hc)
        L.append("")
        L.append(s["what"] + ".")
        L.append("")
        own = [v for k, v in s.items() if k.startswith("vs_own_rps_at_")]
        own = own[0] if own else {}
        rows = []
        for t in ("direct", "agentd", "nginx"):
            x = s["targets"].get(t)
            if not x:
                continue
            rows.append([NAMES[t], fmt(med(x, "rps")) + spread(x, "rps"), fmt(own.get(t), 2),
                         fmt(med(x, "cpu_us_per_req")) if t != "direct" else "", fmt(med(x, "p50_us_c64")),
                         fmt(med(x, "p99_us_c64")), fmt(med(x, "errors"), 0)])
        L.append(table(["path", "req/s @%s" % hc, "÷ same path @%d" % p["connections"], "CPU µs/req", "p50 µs",
                        "p99 µs", "errors"], rows))
        L.append("")
        r = s["ratios"]
        L.append("agentd ÷ nginx at %s connections: req/s **%s×**, CPU per request **%s×**." % (
            hc, fmt(r["agentd_vs_nginx_rps"], 2), fmt(r["agentd_vs_nginx_cpu_us_per_req"], 2)))
        L.append("")

    s = sc.get("proxy_slow_upstream")
    if s:
        L.append("#### Gateway behind a %d ms upstream (node fake on CPU %s)" % (p["slow_upstream_ms"], p["load_cpu"]))
        L.append("")
        L.append(s["what"] + ".")
        L.append("")
        rows = []
        for t in ("direct", "agentd", "nginx", "portkey"):
            x = s["targets"].get(t)
            if not x:
                continue
            rows.append([NAMES[t], fmt(med(x, "rps")) + spread(x, "rps"),
                         fmt(s["ratios_vs_direct_rps"].get(t), 3) if t != "direct" else "1",
                         fmt(med(x, "p50_us_c64")), fmt(med(x, "p99_us_c64")),
                         fmt(med(x, "cpu_us_per_req")) if t != "direct" else "",
                         "%.0f%%" % (100 * (med(x, "cpu_util") or 0)) if t != "direct" else "",
                         fmt(med(x, "errors"), 0)])
        L.append(table(["path", "req/s @%d" % p["connections"], "÷ direct", "p50 µs", "p99 µs", "CPU µs/req",
                        "CPU used", "errors"], rows))
        L.append("")

    s = sc.get("stream_ttft")
    if s:
        L.append("#### Streaming: time to first token at concurrency 1 (node fake on CPU %s)" % p["load_cpu"])
        L.append("")
        L.append(s["what"] + ".")
        L.append("")
        rows = []
        for t in ("direct", "agentd", "nginx", "portkey"):
            x = s["targets"].get(t)
            if not x:
                continue
            rows.append([NAMES[t], fmt(med(x, "ttft_p50_us")), fmt(med(x, "ttft_p99_us")),
                         fmt(med(x, "added_ttft_p50_us")) + spread(x, "added_ttft_p50_us") if t != "direct" else "–",
                         fmt(med(x, "added_ttft_p99_us")) + spread(x, "added_ttft_p99_us") if t != "direct" else "–",
                         fmt(med(x, "total_p50_us")), fmt(med(x, "events_min"), 0), fmt(med(x, "errors"), 0)])
        L.append(table(["path", "TTFT p50 µs", "TTFT p99 µs", "added TTFT p50 µs", "added TTFT p99 µs",
                        "whole stream p50 µs", "SSE events (min)", "errors"], rows))
        L.append("")

    s = sc.get("stream_static")
    if s:
        L.append("#### Streaming from a static upstream: CPU per streamed request, added latency (issue 16 item 7)")
        L.append("")
        L.append(s["what"] + ".")
        L.append("")
        for kind, x in (s.get("kinds") or {}).items():
            ref = x.get("reference_kind")
            L.append("**%s** (`%s`%s)" % (x["label"], x["front"], "; direct and nginx relay the upstream's own "
                                          "stream, from the %s runs of the same round" % ref if ref else ""))
            L.append("")
            rows = []
            for t in ("direct", "agentd", "nginx"):
                y = x["targets"].get(t)
                if not y:
                    continue
                nd = t == "direct"
                rows.append([NAMES[t], fmt(med(y, "rps")) + spread(y, "rps"),
                             "" if nd else fmt(med(y, "cpu_us_per_req")) + spread(y, "cpu_us_per_req"),
                             "" if nd else fmt(med(y, "c1_cpu_us_per_req")) + spread(y, "c1_cpu_us_per_req"),
                             fmt(med(y, "c1_p50_us")), fmt(med(y, "c1_p99_us")),
                             "–" if nd else fmt(med(y, "added_c1_p50_us")) + spread(y, "added_c1_p50_us"),
                             "–" if nd else fmt(med(y, "added_c1_p99_us")),
                             fmt(med(y, "ttft_p50_us")), "–" if nd else fmt(med(y, "added_ttft_p50_us")),
                             fmt(med(y, "events_min"), 0), fmt(med(y, "body_bytes"), 0),
                             fmt((med(y, "errors") or 0) + (med(y, "c1_errors") or 0), 0)])
            L.append(table(["path", "req/s @%d" % p["connections"], "CPU µs/stream @%d" % p["connections"],
                            "CPU µs/stream @1", "c=1 p50 µs", "c=1 p99 µs", "added p50 µs", "added p99 µs",
                            "TTFT p50 µs", "added TTFT p50 µs", "events", "bytes", "errors"], rows))
            L.append("")
            r = x["ratios"]
            L.append("agentd ÷ nginx: CPU per streamed request **%s×** at %d connections, **%s×** at concurrency 1 "
                     "(target ≤ %s), req/s %s×; added latency p50 %s×, p99 %s×." % (
                         fmt(r["agentd_vs_nginx_cpu_us_per_req"], 2), p["connections"],
                         fmt(r["agentd_vs_nginx_c1_cpu_us_per_req"], 2), "2" if ref else "1.2",
                         fmt(r["agentd_vs_nginx_rps"], 2), fmt(r["agentd_vs_nginx_added_c1_p50"], 2),
                         fmt(r["agentd_vs_nginx_added_c1_p99"], 2)))
            L.append("")
        for kind, why in (s.get("skipped") or {}).items():
            L.append("Not measured: `%s`: %s." % (kind, why))
            L.append("")

    cn = res.get("counters")
    if cn:
        L.append("#### Deterministic counters (agentd vs nginx)")
        L.append("")
        L.append("System calls per request at %d connections (perf, `raw_syscalls:sys_enter` of the process under "
                 "test) and user-space instructions per request at concurrency 1 (valgrind callgrind, %d requests, "
                 "the event loop only). These do not move with the machine's noise." % (
                     p["connections"], p.get("callgrind_requests", 0)))
        L.append("")
        rows = []
        ss = (sc.get("stream_static") or {}).get("kinds") or {}
        for scn, label in [("health", "GET /health"), ("instant", "proxied chat completion")] + [
                (k, "stream: " + v["label"]) for k, v in ss.items()]:
            d = cn.get(scn)
            if not d:
                continue
            for t in ("agentd", "nginx", "portkey"):
                x = d.get(t)
                if not x:
                    continue
                cg = x.get("callgrind") or {}
                objs = cg.get("by_object_per_req") or {}
                top = ", ".join("%s %s" % (k, fmt(v, 0)) for k, v in list(objs.items())[:5])
                rows.append([label, NAMES[t], fmt(x.get("syscalls_per_req_c64"), 1),
                             fmt(cg.get("instructions_per_req"), 0), top])
        L.append(table(["request", "server", "syscalls/req @%d" % p["connections"], "instructions/req (user)",
                        "instructions by object"], rows))
        L.append("")
        cr = res.get("counters_ratios_agentd_vs_nginx") or {}
        L.append("agentd ÷ nginx: " + "; ".join("%s: syscalls %s×, instructions %s×" % (
            k, fmt(v.get("syscalls"), 2), fmt(v.get("instructions"), 2)) for k, v in cr.items()) + " (a "
            "translated stream against nginx relaying its upstream's stream).")
        L.append("")
    fl = res.get("foreign_load_cpus")
    if fl:
        L.append("Noise: processes outside the benchmark used a median %s and at most %s CPUs' worth of time during "
                 "the %d measurements (per-run figures in the JSON, `foreign_cpus`)." % (
                     fmt(fl["median"], 2), fmt(fl["max"], 2), fl["measurements"]))
        L.append("")
    im = res.get("idle_memory_kb") or {}
    if im:
        L.append("#### Memory")
        L.append("")
        rows = []
        for t in ("agentd", "agentd_log", "nginx", "portkey"):
            x = im.get(t)
            if not x:
                continue
            low = res.get("peak_rss_kb_before_many_connections") or {}
            rows.append([NAMES[t], mb(x["rss_kb"]), mb(x.get("rss_anon_kb")), mb(x.get("rss_file_kb")),
                         mb(x.get("pss_kb")), str(x.get("processes")), mb(low.get(t)), mb(res["peak_rss_kb"].get(t))])
        L.append(table(["process", "idle RSS", "of which anon", "of which file-backed", "idle PSS", "processes",
                        "peak RSS ≤ %d conns" % p["connections"], "peak RSS at the end"], rows))
        L.append("")
        L.append("Idle = %s s after start, before any request. Peak = VmHWM summed over the process tree: after the "
                 "first round's %d-connection runs, and at the end of the run (after every scenario above, including "
                 "%s connections for agentd and nginx)." % (fmt(p["idle_seconds"], 0), p["connections"],
                                                            p.get("high_connections")))
    return "\n".join(L) + "\n"


def compare(res, prev):
    """a few headline figures against the previous latest.json, printed to stderr"""
    if not prev:
        return
    keys = [("server_health", "agentd", "rps"), ("server_health", "agentd", "cpu_us_per_req"),
            ("proxy_instant", "agentd", "rps"), ("proxy_instant", "agentd", "cpu_us_per_req"),
            ("proxy_instant", "agentd", "added_c1_p50_us"), ("proxy_instant", "agentd", "added_c1_p99_us"),
            ("proxy_instant", "nginx", "cpu_us_per_req"), ("stream_ttft", "agentd", "added_ttft_p50_us")]
    lines = []
    for sc, t, k in keys:
        try:
            a = prev["scenarios"][sc]["targets"][t][k]["median"]
            b = res["scenarios"][sc]["targets"][t][k]["median"]
        except (KeyError, TypeError):
            continue
        if a is None or b is None:
            continue
        lines.append("  %-14s %-7s %-16s %10s -> %10s%s" % (sc, t, k, fmt(a), fmt(b),
                                                             "  (%+.0f%%)" % ((b - a) / a * 100) if a else ""))
    if lines:
        print("[bench] against the previous run (%s):" % prev.get("date"), file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)


def update_results_md(res, prev=None, path=None):
    path = path or os.path.join(HERE, "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else "# agentd benchmark results\n\n%s\n%s\n" % (BEGIN, END)
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + "\n\n%s\n%s\n" % (BEGIN, END)
    a = text.index(BEGIN) + len(BEGIN)
    b = text.index(END)
    text = text[:a] + "\n" + render(res) + text[b:]
    with open(path, "w") as f:
        f.write(text)
    compare(res, prev)


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results", "latest.json")
    update_results_md(json.load(open(src)))
