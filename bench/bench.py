#!/usr/bin/env python3
"""agentd benchmark driver (called by bench/run.sh; see bench/README.md).

Method (DESIGN.md section 9, gateways.md section 2 "On the Bench"):
  * the process under test (agentd --workers 1, nginx worker_processes 1, Portkey = one node process) is pinned
    to CPU 0; the load generator (wrk -t1, bench/lat) and the upstreams are pinned to CPU 1;
  * every reference (nginx, the direct path, Portkey) runs in the same sitting, interleaved with agentd round by
    round, and every figure is the median over the rounds;
  * CPU per request = (utime+stime delta of the process tree, /proc/PID/stat) / requests completed;
  * peak RSS = VmHWM (summed over the process tree) at the end; idle RSS = VmRSS after start + a few idle seconds;
  * added latency = gateway percentile - direct percentile at concurrency 1, paired per round, median of pairs.
"""
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")

GW_CPU = os.environ.get("BENCH_GW_CPU", "0")      # the process under test
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "1")  # load generator + upstreams
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DUR = float(os.environ.get("BENCH_DURATION", "5"))          # seconds per measured wrk run
WARM = float(os.environ.get("BENCH_WARMUP", "1"))           # seconds of wrk warm-up before each measured run
C1_SECS = float(os.environ.get("BENCH_C1_SECONDS", "2"))  # seconds per concurrency-1 latency run
CONNS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
HIGH_CONNS = int(os.environ.get("BENCH_HIGH_CONNECTIONS", "1024"))  # 0: skip the many-connections run
HIGH_DUR = float(os.environ.get("BENCH_HIGH_DURATION", "3"))
STREAM_N = int(os.environ.get("BENCH_STREAM_REQUESTS", "250"))
STREAM_CHUNKS = int(os.environ.get("BENCH_STREAM_CHUNKS", "8"))
STREAM_INTERVAL_MS = int(os.environ.get("BENCH_STREAM_INTERVAL_MS", "1"))
SLOW_MS = int(os.environ.get("BENCH_SLOW_MS", "50"))
IDLE_SECS = float(os.environ.get("BENCH_IDLE_SECONDS", "3"))
PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "18700"))
SPIN = os.environ.get("BENCH_SPIN", "1") == "1"  # keep both vCPUs from halting during concurrency-1 probes
PREWARM = float(os.environ.get("BENCH_PREWARM", "2"))             # s of load on each gateway before round 1
PREWARM_JIT = float(os.environ.get("BENCH_PREWARM_JIT", "12"))    # same for Portkey (V8 needs it)
SSE_ON = os.environ.get("BENCH_SSE", "1") == "1"                   # the streams from a static upstream
SSE_DUR = float(os.environ.get("BENCH_SSE_DURATION", "3"))         # s per measured wrk run of a stream
SSE_N = int(os.environ.get("BENCH_SSE_REQUESTS", "1500"))          # streams at concurrency 1 (bench/lat)
SSE_EVENTS = int(os.environ.get("BENCH_SSE_EVENTS", "29"))         # SSE events in each static stream
FAKE_KEY = "sk-fake-openai-0123456789abcdef"

P = {
    "upstream": PORT_BASE + 1, "fake_slow": PORT_BASE + 2, "fake_stream": PORT_BASE + 3,
    "sse_upstream": PORT_BASE + 4,
    "agentd": PORT_BASE + 10, "agentd_ops": PORT_BASE + 11, "agentd_log": PORT_BASE + 12,
    "agentd_log_ops": PORT_BASE + 13,
    "nginx_r200": PORT_BASE + 20, "nginx_r200_log": PORT_BASE + 21, "nginx_instant": PORT_BASE + 22,
    "nginx_slow": PORT_BASE + 23, "nginx_stream": PORT_BASE + 24, "nginx_sse": PORT_BASE + 25,
    "portkey": PORT_BASE + 30,
    # instances under callgrind (counters phase)
    "cg_nginx_r200": PORT_BASE + 40, "cg_nginx_r200_log": PORT_BASE + 41, "cg_nginx_instant": PORT_BASE + 42,
    "cg_nginx_slow": PORT_BASE + 43, "cg_nginx_stream": PORT_BASE + 44, "cg_nginx_sse": PORT_BASE + 45,
    "cg_agentd": PORT_BASE + 50,
    "cg_agentd_ops": PORT_BASE + 51,
}
COUNTERS = os.environ.get("BENCH_COUNTERS", "1") == "1"
CG_REQUESTS = int(os.environ.get("BENCH_CG_REQUESTS", "1000"))
CG_SSE_REQUESTS = int(os.environ.get("BENCH_CG_SSE_REQUESTS", "300"))

# The fake's non-streaming answer to the bench request, byte for byte (587 bytes), served by the static nginx
# upstream so that the throughput runs measure the gateway, not a node process.
STATIC_COMPLETION = (
    '{"id":"chatcmpl-bench0000000000000000000000000","object":"chat.completion","created":1795878792,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"echo: hello brave new '
    'world","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,'
    '"completion_tokens":5,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
    '"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_f00dfake00"}'
)
HEALTH_BODY = '{"status":"ok","workers":[{"id":0,"last_turn_ms_ago":3,"ok":true}],"uptime_s":1}'


# ---------------------------------------------------------------------------------------------------------------
# static streams (issue 16 item 7): what a provider sends for a short streamed answer, served from a file by the
# static nginx upstream, so that the stream runs measure the relay and not a node process. Both are SSE_EVENTS
# events and about 10 KB, the shape of a real answer of ~250 tokens.

LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi")


def openai_stream(events=None):
    """chat.completion.chunk events with stream_options.include_usage: a role chunk, content chunks, the
    finish_reason chunk, the usage chunk and [DONE]"""
    events = events or SSE_EVENTS
    head = ('{"id":"chatcmpl-BenchStatic0123456789abcdefgh","object":"chat.completion.chunk","created":1733300000,'
            '"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0123456789","service_tier":"default",')
    ev = [head + '"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,'
                 '"finish_reason":null}],"usage":null}']
    for i in range(max(1, events - 4)):
        ev.append(head + '"choices":[{"index":0,"delta":{"content":" %d %s"},"logprobs":null,"finish_reason":null}],'
                         '"usage":null}' % (i, LOREM[:78]))
    ev.append(head + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}')
    ev.append(head + '"choices":[],"usage":{"prompt_tokens":21,"completion_tokens":250,"total_tokens":271,'
                     '"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":'
                     '{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
                     '"rejected_prediction_tokens":0}}}')
    ev.append("[DONE]")
    return "".join("data: %s\n\n" % e for e in ev)


def anthropic_stream(events=None):
    """a Messages stream: message_start, content_block_start, ping, text deltas, content_block_stop,
    message_delta (usage), message_stop"""
    events = events or SSE_EVENTS
    ev = [("message_start", '{"type":"message_start","message":{"id":"msg_01BenchStatic0123456789ab","type":'
                            '"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],'
                            '"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":21,'
                            '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,'
                            '"service_tier":"standard"}}}'),
          ("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text",'
                                  '"text":""}}'),
          ("ping", '{"type": "ping"}')]
    for i in range(max(1, events - 6)):
        ev.append(("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
                                          '"text":" %d %s %s"}}' % (i, LOREM, LOREM[:96])))
    ev.append(("content_block_stop", '{"type":"content_block_stop","index":0}'))
    ev.append(("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
                                '"usage":{"output_tokens":250}}'))
    ev.append(("message_stop", '{"type":"message_stop"}'))
    return "".join("event: %s\ndata: %s\n\n" % e for e in ev)


def sse_body(kind, model):
    if kind == "anthropic":
        return json.dumps({"model": model, "max_tokens": 256, "stream": True,
                           "system": "You are terse.",
                           "messages": [{"role": "user", "content": "hello brave new world"}]}, separators=(",", ":"))
    if kind == "responses":
        return json.dumps({"model": model, "max_output_tokens": 256, "stream": True, "store": False,
                           "instructions": "You are terse.", "input": "hello brave new world"},
                          separators=(",", ":"))
    return json.dumps({"model": model, "max_tokens": 256, "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "system", "content": "You are terse."},
                                    {"role": "user", "content": "hello brave new world"}]}, separators=(",", ":"))


ANTH_HEADERS = ["x-api-key: " + "sk-ant-fake-0123456789abcdef", "anthropic-version: 2023-06-01"]
# Streamed scenarios from the static upstream. Pass-through kinds are measured on direct, agentd and nginx
# proxy_pass (proxy_buffering off); a translated kind only on agentd, against the direct and nginx runs of the
# pass-through kind whose upstream stream it reads (`ref`, same round).
SSE_KINDS = {
    "sse_openai": {"label": "OpenAI chat → OpenAI (pass-through)", "front": "/v1/chat/completions",
                   "wire": "openai", "model": "bench-sse-openai", "provider": "openai", "ref": None,
                   "up_path": "/v1/chat/completions", "up_model": "gpt-4o-mini",
                   "up_headers": ["Authorization: Bearer " + FAKE_KEY]},
    "sse_anthropic": {"label": "Anthropic messages → Anthropic (pass-through)", "front": "/v1/messages",
                      "wire": "anthropic", "model": "bench-sse-anthropic", "provider": "anthropic", "ref": None,
                      "headers": ["anthropic-version: 2023-06-01"],
                      "up_path": "/v1/messages", "up_model": "claude-sonnet-4-5", "up_headers": ANTH_HEADERS},
    "sse_o2a": {"label": "OpenAI chat → Anthropic (translation)", "front": "/v1/chat/completions",
                "wire": "openai", "model": "bench-sse-o2a", "provider": "anthropic", "ref": "sse_anthropic"},
    "sse_responses": {"label": "OpenAI Responses → chat-only upstream (translation)", "front": "/v1/responses",
                      "wire": "responses", "model": "bench-sse-compat", "provider": "openai-compatible",
                      "ref": "sse_openai"},
}
SSE_ORDER = ["sse_openai", "sse_anthropic", "sse_o2a", "sse_responses"]


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# processes

class Proc:
    def __init__(self, name, argv, cpu, env=None, logfile=None, cwd=None):
        self.name = name
        self.logpath = logfile
        out = open(logfile, "ab") if logfile else subprocess.DEVNULL
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.p = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=full_env, cwd=cwd)
        self.pid = self.p.pid  # taskset execs, so this is the process itself

    def alive(self):
        return self.p.poll() is None

    def tree(self):
        """pid plus all descendants (nginx master + worker, node + nothing, agentd + any helper)."""
        kids = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    s = f.read()
            except OSError:
                continue
            ppid = int(s[s.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(kids.get(p, []))
        return out

    def cpu_ticks(self):
        t = 0
        for pid in self.tree():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    s = f.read()
            except OSError:
                continue
            fields = s[s.rindex(")") + 2:].split()
            t += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return t

    def _proc_kb(self, name, key):
        """Sum of a "Key: N kB" line of /proc/PID/<name> over the process tree."""
        t = 0
        for pid in self.tree():
            try:
                with open("/proc/%d/%s" % (pid, name)) as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            t += int(line.split()[1])
            except OSError:
                pass
        return t

    def status_kb(self, key):
        return self._proc_kb("status", key)

    def smaps_kb(self, key):
        return self._proc_kb("smaps_rollup", key)

    def stop(self):
        tree = self.tree()
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in tree:  # anything left (the nginx worker if the master was killed, a stuck child)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.alive():
            self.p.wait(5)


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, proc, timeout=20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not proc.alive():
            raise RuntimeError("%s exited during start-up (see %s)" % (proc.name, proc.logpath))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d within %.0fs (see %s)" % (proc.name, port, timeout, proc.logpath))


class Foreign:
    """CPU used by processes outside this benchmark (other people's builds, fuzzers...) while we measure.
    Ours: everything in the driver's session (every process the benchmark starts stays in it). Kernel threads are
    left out (they mostly work for our own network traffic)."""

    def __init__(self, bench):
        self.bench = bench

    def snapshot(self):
        ours = {os.getsid(0)}
        snap = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            ppid, sid = int(fields[1]), int(fields[3])
            if sid in ours or ppid == 2 or int(d) == 2:
                continue
            snap[int(d)] = int(fields[11]) + int(fields[12])
        return snap, time.time()

    @staticmethod
    def load(a, b):
        """CPUs' worth of foreign work between two snapshots (processes present in both)."""
        (sa, ta), (sb, tb) = a, b
        ticks = sum(max(0, sb[p] - sa[p]) for p in sb if p in sa)
        return ticks / CLK_TCK / max(tb - ta, 1e-3)


def start_spinners():
    """SCHED_IDLE busy loops on both CPUs: they run only when nothing else of ours wants the CPU, so they take no
    time from the processes under test, but they keep the vCPUs from halting. On a VM a halted vCPU can take
    milliseconds to wake, and at concurrency 1 every request wakes both CPUs several times: without them the
    p99 of a concurrency-1 run measures the hypervisor, not the gateway. They must share the session (so the
    scheduler autogroup) of the processes under test: in a group of their own SCHED_IDLE would mean nothing and
    they would take half of each CPU."""
    out = []
    for cpu in sorted({GW_CPU, LOAD_CPU}):
        out.append(subprocess.Popen(["chrt", "-i", "0", "taskset", "-c", cpu, "sh", "-c", "while :; do :; done"]))
    time.sleep(0.05)
    return out


def stop_spinners(sp):
    for p in sp:
        try:
            p.kill()
        except ProcessLookupError:
            pass
        p.wait()


def raise_priority():
    """Every process of the benchmark lives in the driver's session, so in one scheduler autogroup; giving that
    group a higher weight than other sessions' groups keeps other people's work on this shared machine from
    preempting the measurement (all paths, references included, get the same treatment). BENCH_NICE=0 to skip."""
    nice = os.environ.get("BENCH_NICE", "-10")
    if nice == "0":
        return None
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(nice)
        return int(nice)
    except OSError as e:
        log("could not set the autogroup nice (%s); measuring without it" % e)
        return None


# ---------------------------------------------------------------------------------------------------------------
# configuration files

def nginx_common(work, name):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    return d, """daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; multi_accept off; }}
""".format(d=d)


def temp_paths(d):
    return """  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
""".format(d=d)


def write_upstream_nginx(work):
    d, head = nginx_common(work, "nginx-upstream")
    conf = head + """http {{
{tp}  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
  # the static streams, from files: a POST to a static file is a 405, turned into the file with a 200
  server {{
    listen 127.0.0.1:{sse} reuseport backlog=4096;
    root {www};
    location / {{ default_type text/event-stream; error_page 405 =200 $uri; }}
  }}
}}
""".format(tp=temp_paths(d), port=P["upstream"], body=STATIC_COMPLETION, sse=P["sse_upstream"],
           www=write_static_streams(work))
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def write_static_streams(work):
    www = os.path.join(work, "www")
    os.makedirs(os.path.join(www, "v1", "chat"), exist_ok=True)
    with open(os.path.join(www, "v1", "chat", "completions"), "w") as f:
        f.write(openai_stream())
    with open(os.path.join(www, "v1", "messages"), "w") as f:
        f.write(anthropic_stream())
    return www


def write_gateway_nginx(work, name="nginx-gw", prefix="", master=True):
    d, head = nginx_common(work, name)
    if not master:
        head = head.replace("master_process on;", "master_process off;")
    conf = head + """http {{
{tp}  access_log off;
  log_format bench '$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_user_agent" $request_time';
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream instant {{ server 127.0.0.1:{up}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }}
  upstream slow    {{ server 127.0.0.1:{slow}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }}
  upstream stream  {{ server 127.0.0.1:{stream}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }}
  upstream sse     {{ server 127.0.0.1:{sse}; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }}
  # "return 200" reference for agentd's GET /health (same body length)
  server {{ listen 127.0.0.1:{r200} reuseport backlog=4096;
    location / {{ default_type application/json; return 200 '{health}'; }} }}
  server {{ listen 127.0.0.1:{r200log} reuseport backlog=4096; access_log {d}/access.log bench;
    location / {{ default_type application/json; return 200 '{health}'; }} }}
  # reverse proxy with upstream keep-alive (the nginx proxy_pass reference)
  server {{ listen 127.0.0.1:{pi} reuseport backlog=4096;
    location / {{ proxy_pass http://instant; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{ps} reuseport backlog=4096;
    location / {{ proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{pst} reuseport backlog=4096;
    location / {{ proxy_pass http://stream; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; }} }}
  server {{ listen 127.0.0.1:{psse} reuseport backlog=4096;
    location / {{ proxy_pass http://sse; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; }} }}
}}
""".format(tp=temp_paths(d), d=d, up=P["upstream"], slow=P["fake_slow"], stream=P["fake_stream"],
           r200=P[prefix + "nginx_r200"], r200log=P[prefix + "nginx_r200_log"], health=HEALTH_BODY,
           pi=P[prefix + "nginx_instant"], ps=P[prefix + "nginx_slow"], pst=P[prefix + "nginx_stream"],
           sse=P["sse_upstream"], psse=P[prefix + "nginx_sse"])
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def write_agentd_config(work, access_log):
    path = os.path.join(work, "agentd-%s.yaml" % ("log" if access_log else "nolog"))
    models = ""
    for name, port in (("bench-instant", P["upstream"]), ("bench-slow", P["fake_slow"]),
                       ("bench-stream", P["fake_stream"])):
        models += """  - name: {n}
    provider: openai
    model: gpt-4o-mini
    base_url: http://127.0.0.1:{p}/v1
    api_key_env: BENCH_KEY
""".format(n=name, p=port)
    for k in SSE_ORDER:
        models += """  - name: {n}
    provider: {pv}
    model: {m}
    base_url: http://127.0.0.1:{p}{v1}
    api_key_env: BENCH_KEY
""".format(n=SSE_KINDS[k]["model"], pv=SSE_KINDS[k]["provider"], p=P["sse_upstream"],
           m="claude-sonnet-4-5" if SSE_KINDS[k]["provider"] == "anthropic" else "gpt-4o-mini",
           v1="" if SSE_KINDS[k]["provider"] == "anthropic" else "/v1")
    # Without per-request logs: `access: false` alone still leaves the gateway's own per-request "llm" line (info
    # level), so the quiet variant also raises the level to warn. The logged variant is the default logging
    # (access line + llm line at info).
    logcfg = "{access: true, level: info}" if access_log else "{access: false, level: warn}"
    with open(path, "w") as f:
        f.write("log: %s\nmodels:\n%s" % (logcfg, models))
    return path


def body(model, stream=False):
    b = {"model": model, "max_tokens": 16,
         "messages": [{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "hello brave new world"}]}
    if stream:
        b["stream"] = True
    return json.dumps(b, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------------------------
# load

class Bench:
    def __init__(self, work, agentd_bin, lat_bin, which):
        self.work = work
        self.agentd_bin = agentd_bin
        self.lat_bin = lat_bin
        self.which = which
        self.procs = {}
        self.files = {}
        self.spinners = []
        self.foreign = Foreign(self)
        self.sse_kinds = []    # the static-stream kinds measured (set by sse_probe)
        self.sse_skipped = {}  # kind -> why it was not measured

    # -- request shapes per target -------------------------------------------------------------------------
    def request(self, target, kind):
        """-> (port, path, body or None, [headers]) for target in direct|agentd|agentd_log|nginx|nginx_log|portkey
        and kind in health|instant|slow|stream."""
        auth = ["Authorization: Bearer " + FAKE_KEY]
        if kind == "health":
            port = {"agentd": P["agentd"], "agentd_log": P["agentd_log"], "nginx": P["nginx_r200"],
                    "nginx_log": P["nginx_r200_log"]}[target]
            return port, "/health", None, []
        if kind in SSE_KINDS:
            k = SSE_KINDS[kind]
            if target == "agentd":
                return P["agentd"], k["front"], sse_body(k["wire"], k["model"]), k.get("headers", [])
            up = SSE_KINDS[k["ref"] or kind]
            port = {"direct": P["sse_upstream"], "nginx": P["nginx_sse"]}[target]
            return port, up["up_path"], sse_body(up["wire"], up["up_model"]), up["up_headers"]
        upstream_port = {"instant": P["upstream"], "slow": P["fake_slow"], "stream": P["fake_stream"]}[kind]
        stream = kind == "stream"
        path = "/v1/chat/completions"
        if target == "direct":
            return upstream_port, path, body("gpt-4o-mini", stream), auth
        if target in ("agentd", "agentd_log"):
            return P[target], path, body("bench-" + kind, stream), []
        if target == "nginx":
            return P["nginx_" + kind], path, body("gpt-4o-mini", stream), auth
        if target == "portkey":
            return P["portkey"], path, body("gpt-4o-mini", stream), auth + [
                "x-portkey-provider: openai", "x-portkey-custom-host: http://127.0.0.1:%d/v1" % upstream_port]
        raise KeyError(target)

    def proc_for(self, target):
        return self.procs.get({"direct": None, "agentd": "agentd", "agentd_log": "agentd_log", "nginx": "nginx",
                               "nginx_log": "nginx", "portkey": "portkey"}[target])

    def req_files(self, target, kind):
        key = (target, kind)
        if key not in self.files:
            port, path, b, hdrs = self.request(target, kind)
            bf = hf = ""
            if b is not None:
                bf = os.path.join(self.work, "req-%s-%s.json" % key)
                with open(bf, "w") as f:
                    f.write(b)
            hf = os.path.join(self.work, "req-%s-%s.headers" % key)
            with open(hf, "w") as f:
                f.write("".join(h + "\n" for h in hdrs))
            self.files[key] = (port, path, bf, hf, hdrs)
        return self.files[key]

    # -- wrk ---------------------------------------------------------------------------------------------------
    def wrk(self, target, kind, seconds, conns):
        port, path, bf, hf, _ = self.req_files(target, kind)
        env = dict(os.environ, BENCH_BODY_FILE=bf, BENCH_HEADER_FILE=hf)
        argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c%d" % conns, "-d%ds" % max(1, int(round(seconds))), "--timeout", "10s",
                "-s", os.path.join(HERE, "wrk.lua"), "http://127.0.0.1:%d%s" % (port, path)]
        proc = self.proc_for(target)
        f0 = self.foreign.snapshot()
        c0 = proc.cpu_ticks() if proc else 0
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
        c1 = proc.cpu_ticks() if proc else 0
        f1 = self.foreign.snapshot()
        line = [l for l in out.stdout.splitlines() if l.startswith("WRKJSON ")]
        if not line:
            raise RuntimeError("wrk failed for %s/%s: %s %s" % (target, kind, out.stdout, out.stderr))
        r = json.loads(line[0][8:])
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        non2xx = 0
        for l in out.stdout.splitlines():
            if "Non-2xx or 3xx responses" in l:
                non2xx = int(l.split(":")[1])
        r["non2xx"] = non2xx
        r["foreign_cpus"] = round(Foreign.load(f0, f1), 3)
        r["errors"] = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"] + non2xx
        ok = r["requests"] - non2xx
        if proc:
            r["cpu_us_per_req"] = (c1 - c0) / CLK_TCK * 1e6 / max(ok, 1)
            r["cpu_util"] = (c1 - c0) / CLK_TCK / (r["duration_us"] / 1e6)
        return r

    # -- concurrency-1 probe -------------------------------------------------------------------------------------
    def lat(self, target, kind, stream=False, n=1000000, secs=None, warm=200):
        port, path, bf, hf, hdrs = self.req_files(target, kind)
        argv = ["taskset", "-c", LOAD_CPU, self.lat_bin, "-p", str(port), "-u", path, "-n", str(n), "-w", str(warm)]
        if secs:
            argv += ["-d", str(secs)]
        if bf:
            argv += ["-f", bf, "-H", "Content-Type: application/json"]
        for h in hdrs:
            argv += ["-H", h]
        if stream:
            argv.append("--stream")
        proc = self.proc_for(target)
        if SPIN:
            self.spinners = start_spinners()
        try:
            f0 = self.foreign.snapshot()
            c0 = proc.cpu_ticks() if proc else 0
            out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            c1 = proc.cpu_ticks() if proc else 0
            f1 = self.foreign.snapshot()
        finally:
            stop_spinners(self.spinners)
            self.spinners = []
        if out.returncode != 0 and not out.stdout.strip():
            raise RuntimeError("lat failed for %s/%s: %s" % (target, kind, out.stderr))
        r = json.loads(out.stdout)
        r["foreign_cpus"] = round(Foreign.load(f0, f1), 3)
        # warm-up requests are not timed but do cost CPU: count them (warm + measured) for CPU per request
        if proc and r["requests"]:
            r["cpu_us_per_req"] = (c1 - c0) / CLK_TCK * 1e6 / (r["requests"] + warm)
        return r

    # -- deterministic counters ---------------------------------------------------------------------------------
    def syscalls(self, target, kind, seconds=3):
        """system calls per request at full load (wrk, the bench's connection count), counted on the
        raw_syscalls tracepoint (perf stat) of the process under test (nginx: its worker)"""
        if not shutil.which("perf"):
            return None
        proc = self.proc_for(target)
        pids = [p for p in proc.tree() if p != proc.pid] if target.startswith("nginx") else [proc.pid]
        out = os.path.join(self.work, "perf-%s-%s.csv" % (target, kind))
        ps = subprocess.Popen(["perf", "stat", "-e", "raw_syscalls:sys_enter", "-x,", "-o", out, "-p",
                               ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        r = self.wrk(target, kind, seconds, CONNS)
        ps.send_signal(signal.SIGINT)
        ps.wait(10)
        if r["errors"]:
            log("  syscalls: %s/%s had %d errors; not counted" % (target, kind, r["errors"]))
            return None
        try:
            for line in open(out):
                f = line.strip().split(",")
                if len(f) > 2 and "raw_syscalls" in line and f[0].replace(".", "").isdigit():
                    return round(int(float(f[0])) / max(r["requests"], 1), 2)
        except OSError:
            pass
        return None

    def callgrind(self, which_server, kind, n):
        """user-space instructions per request under callgrind, concurrency 1 (deterministic to ~1%): the
        process's event loop only (collection toggled on uv_run / ngx_process_events_and_timers)"""
        if not shutil.which("valgrind"):
            return None
        w = self.work
        out = os.path.join(w, "callgrind-%s-%s.out" % (which_server, kind))
        if which_server == "agentd":
            argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, "--collect-atstart=no",
                    "--toggle-collect=uv_run", self.agentd_bin, "serve", "--listen", "127.0.0.1:%d" % P["cg_agentd"],
                    "--ops-listen", "127.0.0.1:%d" % P["cg_agentd_ops"], "--data-dir",
                    os.path.join(w, "agentd-data-cg"), "--workers", "1", "--config", write_agentd_config(w, False)]
            port = P["cg_agentd"]
            os.makedirs(os.path.join(w, "agentd-data-cg"), exist_ok=True)
            stop_sig = signal.SIGINT
        else:
            conf = write_gateway_nginx(w, "nginx-cg", prefix="cg_", master=False)
            argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, "--collect-atstart=no",
                    "--toggle-collect=ngx_process_events_and_timers", "nginx", "-c", conf, "-p", w]
            port = P["cg_nginx_r200"] if kind == "health" else P["cg_nginx_sse"] if kind in SSE_KINDS else \
                P["cg_nginx_instant"]
            stop_sig = signal.SIGTERM  # QUIT (graceful) lingers under valgrind
        p = Proc("callgrind-" + which_server, argv, GW_CPU, env={"BENCH_KEY": FAKE_KEY},
                 logfile=os.path.join(w, "callgrind-%s.log" % which_server))
        try:
            wait_port(port, p, timeout=60)
            # the same request shape as the target's, at the valgrind instance's port
            _, path, bf, hf, hdrs = self.req_files(which_server, kind)
            argv = ["taskset", "-c", LOAD_CPU, self.lat_bin, "-p", str(port), "-u", path, "-n", str(n), "-w", "200"]
            if bf:
                argv += ["-f", bf, "-H", "Content-Type: application/json"]
            for h in hdrs:
                argv += ["-H", h]
            if kind in SSE_KINDS:
                argv.append("--stream")
            r = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout)
            if r["requests"] != n or r["errors"] or r["non2xx"]:
                raise RuntimeError("callgrind run of %s/%s failed: %s" % (which_server, kind, r))
        finally:
            if p.alive():
                os.kill(p.pid, stop_sig)
                try:
                    p.p.wait(60)
                except subprocess.TimeoutExpired:
                    p.stop()
        total, by_obj = None, {}
        try:
            for line in open(out):
                if line.startswith("totals:") or line.startswith("summary:"):
                    total = int(line.split()[1])
        except OSError:
            return None
        if total is None:
            return None
        ann = shutil.which("callgrind_annotate")
        if ann:
            a = subprocess.run([ann, "--threshold=100", out], capture_output=True, text=True, timeout=120).stdout
            for line in a.splitlines():
                m = line.strip()
                if not m or not m[0].isdigit() or "[" not in m or "PROGRAM TOTALS" in m:
                    continue
                try:
                    cnt = int(m.split()[0].replace(",", ""))
                except ValueError:
                    continue
                obj = os.path.basename(m[m.rindex("[") + 1:].rstrip("]"))
                by_obj[obj] = by_obj.get(obj, 0) + cnt
        reqs = n + 200
        return {"instructions_per_req": round(total / reqs),
                "by_object_per_req": {k: round(v / reqs) for k, v in sorted(by_obj.items(), key=lambda kv: -kv[1])
                                      if v / reqs >= 50},
                "requests": reqs}

    def counter(self, fn, *args):
        """a deterministic counter, tried twice: a failed counter run is logged and left out of the report
        instead of losing the whole sitting's measurements"""
        for attempt in (1, 2):
            try:
                return fn(*args)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                log("  counter %s%s failed (attempt %d): %s" % (fn.__name__, args[:2], attempt, str(e)[:300]))
        return None

    def counters(self, need):
        out = {}
        if "server" in need:
            out["health"] = {t: {"syscalls_per_req_c64": self.syscalls(t, "health"),
                                 "callgrind": self.callgrind(t, "health", CG_REQUESTS)}
                             for t in ("agentd", "nginx")}
        if "gateway" in need:
            out["instant"] = {t: {"syscalls_per_req_c64": self.syscalls(t, "instant"),
                                  "callgrind": self.callgrind(t, "instant", CG_REQUESTS)}
                              for t in ("agentd", "nginx")}
            out["instant"]["portkey"] = {"syscalls_per_req_c64": self.syscalls("portkey", "instant")}
        for kind in self.sse_kinds:
            # nginx cannot translate: a translated kind is compared with nginx relaying its upstream's stream
            ts = ("agentd", "nginx") if SSE_KINDS[kind]["ref"] is None else ("agentd",)
            out[kind] = {t: {"syscalls_per_req_c64": self.counter(self.syscalls, t, kind),
                             "callgrind": self.counter(self.callgrind, t, kind, CG_SSE_REQUESTS)} for t in ts}
        for sc, d in out.items():
            for t, v in d.items():
                cg = v.get("callgrind") or {}
                log("  counters %-8s %-7s syscalls/req %s  instructions/req %s" % (
                    sc, t, v["syscalls_per_req_c64"], cg.get("instructions_per_req")))
        return out

    # -- start/stop ----------------------------------------------------------------------------------------------
    def start_all(self, need):
        for name, port in P.items():
            if not port_free(port):
                raise RuntimeError("port %d (%s) is in use; set BENCH_PORT_BASE" % (port, name))
        w = self.work
        node = shutil.which("node")
        fake = os.path.join(REPO, "tests", "fakes", "fake.mjs")
        started = []

        def start(name, argv, cpu, port, env=None, cwd=None):
            p = Proc(name, argv, cpu, env=env, logfile=os.path.join(w, name + ".log"), cwd=cwd)
            self.procs[name] = p
            started.append((name, port))
            return p

        if "gateway" in need or "sse" in need:
            start("upstream", ["nginx", "-c", write_upstream_nginx(w), "-p", w], LOAD_CPU, P["upstream"])
        if "gateway" in need:
            start("fake_slow", [node, fake, "--provider", "openai", "--port", str(P["fake_slow"]), "--bench",
                                "--latency-ms", str(SLOW_MS)], LOAD_CPU, P["fake_slow"])
            start("fake_stream", [node, fake, "--provider", "openai", "--port", str(P["fake_stream"]), "--bench",
                                  "--chunks", str(STREAM_CHUNKS), "--chunk-interval-ms", str(STREAM_INTERVAL_MS)],
                  LOAD_CPU, P["fake_stream"])
        # processes under test: CPU 0
        data = os.path.join(w, "agentd-data")
        for name, logon in (("agentd", False), ("agentd_log", True)):
            os.makedirs(data + "-" + name, exist_ok=True)
            start(name, [self.agentd_bin, "serve", "--listen", "127.0.0.1:%d" % P[name],
                         "--ops-listen", "127.0.0.1:%d" % P[name + "_ops"], "--data-dir", data + "-" + name,
                         "--workers", "1", "--config", write_agentd_config(w, logon)],
                  GW_CPU, P[name], env={"BENCH_KEY": FAKE_KEY})
        start("nginx", ["nginx", "-c", write_gateway_nginx(w), "-p", w], GW_CPU, P["nginx_r200"])
        if "gateway" in need:
            pk = os.path.join(HERE, "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
            start("portkey", [node, pk, "--port=%d" % P["portkey"], "--headless"], GW_CPU, P["portkey"],
                  cwd=os.path.join(HERE, "node_modules", "@portkey-ai", "gateway"))
        for name, port in started:
            wait_port(port, self.procs[name])
        t0 = time.time()
        # idle RSS: after start-up and a few idle seconds, before any request
        time.sleep(IDLE_SECS)
        self.idle = {n: {"rss_kb": p.status_kb("VmRSS"), "rss_anon_kb": p.status_kb("RssAnon"),
                         "rss_file_kb": p.status_kb("RssFile"), "pss_kb": p.smaps_kb("Pss"),
                         "processes": len(p.tree()), "idle_seconds": round(time.time() - t0, 1)}
                     for n, p in self.procs.items() if n in ("agentd", "agentd_log", "nginx", "portkey")}
        log("idle RSS (kB):", {n: v["rss_kb"] for n, v in self.idle.items()})

    def check(self):
        for n, p in self.procs.items():
            if not p.alive():
                raise RuntimeError("%s died (exit %s); see %s" % (n, p.p.returncode, p.logpath))

    def stop_all(self):
        for p in self.procs.values():
            p.stop()

    def peak(self):
        return {n: self.procs[n].status_kb("VmHWM") for n in ("agentd", "agentd_log", "nginx", "portkey")
                if n in self.procs}

    def sse_probe(self):
        """which static-stream kinds this build can serve: /v1/responses is skipped (and the report says why) when
        agentd answers it with a 404 (a build without the Responses front door)"""
        self.sse_kinds, self.sse_skipped = [], {}
        for kind in SSE_ORDER:
            k = SSE_KINDS[kind]
            if k["front"] == "/v1/responses":
                port, path, b, hdrs = self.request("agentd", kind)
                c = socket.create_connection(("127.0.0.1", port), timeout=10)
                try:
                    c.sendall(("POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                               "Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (path, len(b), b)).encode())
                    status = c.recv(64).decode("latin-1").split(" ")[1:2]
                finally:
                    c.close()
                if status == ["404"]:
                    self.sse_skipped[kind] = "agentd answers 404 on %s: no Responses front door in this build" % path
                    log("  %s skipped: %s" % (kind, self.sse_skipped[kind]))
                    continue
            self.sse_kinds.append(kind)

    def sse_targets(self, kind):
        return ["direct", "agentd", "nginx"] if SSE_KINDS[kind]["ref"] is None else ["agentd"]

    def smoke(self, targets, kinds):
        """one request per (target, kind) through bench/lat, so a broken path fails fast and loudly."""
        for kind in kinds:
            for t in targets[kind]:
                r = self.lat(t, kind, stream=(kind == "stream" or kind in SSE_KINDS), n=1, warm=0)
                if r["requests"] != 1 or r["non2xx"] or r["errors"]:
                    raise RuntimeError("smoke test failed for %s/%s: %s" % (t, kind, r))


# ---------------------------------------------------------------------------------------------------------------
# statistics

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rnd(x, nd=1):
    return None if x is None else round(x, nd)


def summarize(runs, getters):
    """runs: list of per-round results; getters: {name: fn(run) -> number}. -> {name: {median, runs}}"""
    out = {}
    for name, g in getters.items():
        vals = []
        for r in runs:
            try:
                vals.append(g(r))
            except (KeyError, TypeError):
                vals.append(None)
        out[name] = {"median": rnd(med(vals), 2), "runs": [rnd(v, 2) for v in vals]}
    return out


def ratio(a, b):
    return None if a is None or b in (None, 0) else round(a / b, 3)


class Ratios:
    """Ratios between two paths, computed round by round (the two runs of a round are seconds apart, so they share
    the machine's state of the moment) and then the median over rounds: on a shared VM the absolute figures drift
    by tens of percent between rounds while these stay within a few percent."""

    def __init__(self, raw):
        self.raw = raw
        self.runs = {}

    def __call__(self, name, a, b, get, get_b=None):
        ra, rb = self.raw.get(a), self.raw.get(b)
        if not ra or not rb:
            return None
        vals = []
        for x, y in zip(ra, rb):
            try:
                vals.append(ratio(get(x), (get_b or get)(y)))
            except (KeyError, TypeError):
                vals.append(None)
        self.runs[name] = vals
        return rnd(med(vals), 3)


# ---------------------------------------------------------------------------------------------------------------
# scenarios

SERVER_TARGETS = ["agentd", "agentd_log", "nginx", "nginx_log"]
INSTANT_TARGETS = ["direct", "agentd", "agentd_log", "nginx", "portkey"]
SLOW_TARGETS = ["direct", "agentd", "nginx", "portkey"]
HIGH_TARGETS = ["direct", "agentd", "nginx"]
STREAM_TARGETS = ["direct", "agentd", "nginx", "portkey"]


def rotate(xs, k):
    k %= len(xs)
    return xs[k:] + xs[:k]


def run(which):
    work = os.environ["BENCH_WORK"]
    agentd_bin = os.environ["AGENTD_BIN"]
    lat_bin = os.environ["BENCH_LAT"]
    need = {"server"} if which == "server" else {"server", "gateway", "sse"} if which == "all" else \
        {"sse"} if which == "stream" else {"gateway", "sse"}
    b = Bench(work, agentd_bin, lat_bin, which)
    raw = {"server": {}, "instant": {}, "high": {}, "slow": {}, "stream": {}, "sse": {}, "sse_skipped": {}}
    peak64 = None
    t_start = time.time()
    try:
        b.start_all(need)
        targets = {"health": SERVER_TARGETS, "instant": INSTANT_TARGETS, "slow": SLOW_TARGETS,
                   "stream": STREAM_TARGETS}
        kinds = (["health"] if "server" in need else []) + (["instant", "slow", "stream"] if "gateway" in need else [])
        b.smoke(targets, kinds)
        if "sse" in need and SSE_ON:
            b.sse_probe()
            raw["sse_skipped"] = b.sse_skipped
            b.smoke({k: b.sse_targets(k) for k in b.sse_kinds}, b.sse_kinds)
        # bring every process under test to its steady state (JIT, pools, caches) before the first round
        for t in SERVER_TARGETS if "server" in need else []:
            b.wrk(t, "health", PREWARM, CONNS)
        for t in STREAM_TARGETS if "gateway" in need else []:
            b.lat(t, "stream", stream=True, n=1, warm=100)  # the fake's stream path and each relay, JIT-warm
        for t in INSTANT_TARGETS if "gateway" in need else []:
            if t != "direct":
                log("warming %s for %gs" % (t, PREWARM_JIT if t == "portkey" else PREWARM))
                b.wrk(t, "instant", PREWARM_JIT if t == "portkey" else PREWARM, CONNS)
        for rd in range(ROUNDS):
            log("round %d/%d" % (rd + 1, ROUNDS))
            if "server" in need:
                for t in rotate(SERVER_TARGETS, rd):
                    b.wrk(t, "health", WARM, CONNS)
                    r64 = b.wrk(t, "health", DUR, CONNS)
                    c1 = b.lat(t, "health", secs=C1_SECS)
                    raw["server"].setdefault(t, []).append({"c64": r64, "c1": c1})
                    log("  health %-10s %8.0f req/s  cpu %6.1f us/req  c1 p50 %6.1f p99 %7.1f us  err %d" % (
                        t, r64["rps"], r64.get("cpu_us_per_req", 0), c1["total_us"]["p50"], c1["total_us"]["p99"],
                        r64["errors"] + c1["errors"] + c1["non2xx"]))
                    b.check()
            if "gateway" in need:
                for t in rotate(INSTANT_TARGETS, rd):
                    b.wrk(t, "instant", WARM, CONNS)
                    r64 = b.wrk(t, "instant", DUR, CONNS)
                    c1 = b.lat(t, "instant", secs=C1_SECS)
                    raw["instant"].setdefault(t, []).append({"c64": r64, "c1": c1})
                    log("  instant %-10s %8.0f req/s  cpu %6.1f us/req  c1 p50 %7.1f p99 %7.1f us  err %d" % (
                        t, r64["rps"], r64.get("cpu_us_per_req", 0), c1["total_us"]["p50"], c1["total_us"]["p99"],
                        r64["errors"] + c1["errors"] + c1["non2xx"]))
                    b.check()
                if rd == 0:
                    peak64 = b.peak()  # VmHWM before anything has seen more than CONNS connections
                for t in rotate(HIGH_TARGETS, rd) if HIGH_CONNS else []:
                    b.wrk(t, "instant", WARM, HIGH_CONNS)
                    r = b.wrk(t, "instant", HIGH_DUR, HIGH_CONNS)
                    raw["high"].setdefault(t, []).append({"c64": r})
                    log("  instant@%d %-8s %8.0f req/s  p50 %8.0f p99 %8.0f us  cpu %6.1f us/req  err %d" % (
                        HIGH_CONNS, t, r["rps"], r["lat_us"]["p50"], r["lat_us"]["p99"], r.get("cpu_us_per_req", 0),
                        r["errors"]))
                    b.check()
                for t in rotate(SLOW_TARGETS, rd):
                    b.wrk(t, "slow", max(WARM, 1.5), CONNS)
                    r64 = b.wrk(t, "slow", DUR, CONNS)
                    raw["slow"].setdefault(t, []).append({"c64": r64})
                    log("  slow%dms %-10s %8.0f req/s  p50 %7.1f p99 %7.1f us  cpu %6.1f us/req  err %d" % (
                        SLOW_MS, t, r64["rps"], r64["lat_us"]["p50"], r64["lat_us"]["p99"],
                        r64.get("cpu_us_per_req", 0), r64["errors"]))
                    b.check()
                for t in rotate(STREAM_TARGETS, rd):
                    s = b.lat(t, "stream", stream=True, n=STREAM_N, warm=20)
                    raw["stream"].setdefault(t, []).append({"c1": s})
                    log("  stream %-10s ttft p50 %7.1f p99 %7.1f us  total p50 %7.1f us  events %d/%d  err %d" % (
                        t, s["ttft_us"]["p50"], s["ttft_us"]["p99"], s["total_us"]["p50"], s["min_events"],
                        s["events"], s["errors"] + s["non2xx"]))
                    b.check()
            for kind in b.sse_kinds:  # the static streams; empty unless "sse" in need
                for t in rotate(b.sse_targets(kind), rd):
                    b.wrk(t, kind, WARM, CONNS)
                    r64 = b.wrk(t, kind, SSE_DUR, CONNS)
                    c1 = b.lat(t, kind, stream=True, n=SSE_N, warm=50)
                    raw["sse"].setdefault(kind, {}).setdefault(t, []).append({"c64": r64, "c1": c1})
                    log("  %-13s %-6s %7.0f req/s  cpu %6.1f us/req @%d, %6.1f @1  c1 p50 %7.1f ttft %7.1f us"
                        "  events %d  err %d" % (
                            kind, t, r64["rps"], r64.get("cpu_us_per_req", 0), CONNS, c1.get("cpu_us_per_req", 0),
                            c1["total_us"]["p50"], c1["ttft_us"]["p50"], c1["min_events"],
                            r64["errors"] + c1["errors"] + c1["non2xx"]))
                    b.check()
        peak = b.peak()
        if peak64:
            peak = {"end": peak, "before_%d_connections" % HIGH_CONNS: peak64}
        idle = b.idle
        counters = None
        if COUNTERS:
            log("counters: syscalls per request (perf), instructions per request (callgrind)")
            counters = b.counters(need)
    finally:
        b.stop_all()
    elapsed = time.time() - t_start
    return report(which, raw, idle, peak, elapsed, counters=counters)


def params():
    return {"rounds": ROUNDS, "duration_s": DUR, "warmup_s": WARM, "c1_seconds": C1_SECS,
            "connections": CONNS, "stream_requests": STREAM_N, "stream_chunks": STREAM_CHUNKS,
            "stream_interval_ms": STREAM_INTERVAL_MS, "slow_upstream_ms": SLOW_MS, "gateway_cpu": GW_CPU,
            "load_cpu": LOAD_CPU, "idle_seconds": IDLE_SECS, "spin": SPIN, "prewarm_s": PREWARM,
            "prewarm_portkey_s": PREWARM_JIT, "counters": COUNTERS, "callgrind_requests": CG_REQUESTS,
            "high_connections": HIGH_CONNS, "high_duration_s": HIGH_DUR, "sse": SSE_ON, "sse_duration_s": SSE_DUR,
            "sse_requests": SSE_N, "sse_events": SSE_EVENTS, "callgrind_sse_requests": CG_SSE_REQUESTS}


def report(which, raw, idle, peak, elapsed, prm=None, counters=None):
    prm = prm or params()
    peak_all = peak
    peak_low = {}
    if "end" in peak:  # {"end": {...}, "before_N_connections": {...}}
        peak = peak_all["end"]
        peak_low = next((v for k, v in peak_all.items() if k != "end"), {}) or {}
    CONNS, DUR, WARM, C1_SECS = prm["connections"], prm["duration_s"], prm["warmup_s"], prm["c1_seconds"]
    SLOW_MS, STREAM_N = prm["slow_upstream_ms"], prm["stream_requests"]
    STREAM_CHUNKS, STREAM_INTERVAL_MS = prm["stream_chunks"], prm["stream_interval_ms"]
    raw = json.loads(json.dumps(raw))  # a copy: the figures below annotate it
    res = {"scenarios": {}, "raw": json.loads(json.dumps(raw))}
    c64 = lambda r: r["c64"]
    getters64 = {
        "rps": lambda r: r["c64"]["rps"],
        "cpu_us_per_req": lambda r: r["c64"]["cpu_us_per_req"],
        "cpu_util": lambda r: r["c64"]["cpu_util"],
        "p50_us_c64": lambda r: r["c64"]["lat_us"]["p50"],
        "p99_us_c64": lambda r: r["c64"]["lat_us"]["p99"],
        "errors": lambda r: r["c64"]["errors"],
        "foreign_cpus": lambda r: r["c64"]["foreign_cpus"],
    }
    getters1 = {
        "c1_p50_us": lambda r: r["c1"]["total_us"]["p50"],
        "c1_p90_us": lambda r: r["c1"]["total_us"]["p90"],
        "c1_p99_us": lambda r: r["c1"]["total_us"]["p99"],
        "c1_cpu_us_per_req": lambda r: r["c1"]["cpu_us_per_req"],
        "c1_requests": lambda r: r["c1"]["requests"],
        "c1_errors": lambda r: r["c1"]["errors"] + r["c1"]["non2xx"],
        "c1_foreign_cpus": lambda r: r["c1"]["foreign_cpus"],
    }

    if raw["server"]:
        s = {t: summarize(runs, {**getters64, **getters1}) for t, runs in raw["server"].items()}
        for t in s:
            s[t]["idle_rss_kb"] = idle.get(t, {}).get("rss_kb")
            pn = "nginx" if t.startswith("nginx") else t
            s[t]["peak_rss_kb"] = peak_low.get(pn, peak.get(pn))
        m = lambda t, k: s.get(t, {}).get(k, {}).get("median")
        R = Ratios(raw["server"])
        rps_g = lambda r: r["c64"]["rps"]
        cpu_g = lambda r: r["c64"]["cpu_us_per_req"]
        res["scenarios"]["server_health"] = {
            "what": "GET /health on agentd's API port vs nginx `return 200` with a body of the same length; "
                    "wrk -t1 -c%d (%gs, after %gs warm-up) and concurrency 1 (bench/lat, %gs)" % (
                        CONNS, DUR, WARM, C1_SECS),
            "targets": s,
            "ratios_vs_nginx": {
                "rps": R("rps", "agentd", "nginx", rps_g),
                "cpu_us_per_req": R("cpu_us_per_req", "agentd", "nginx", cpu_g),
                "c1_p50": R("c1_p50", "agentd", "nginx", lambda r: r["c1"]["total_us"]["p50"]),
                "c1_p99": R("c1_p99", "agentd", "nginx", lambda r: r["c1"]["total_us"]["p99"]),
                "rps_with_access_log": R("rps_with_access_log", "agentd_log", "nginx_log", rps_g),
                "cpu_with_access_log": R("cpu_with_access_log", "agentd_log", "nginx_log", cpu_g),
            },
            "ratio_runs": R.runs,
            "access_log_cost": {
                "agentd_cpu_us_per_req": rnd(m("agentd_log", "cpu_us_per_req") - m("agentd", "cpu_us_per_req"), 2)
                if m("agentd_log", "cpu_us_per_req") is not None and m("agentd", "cpu_us_per_req") is not None else None,
                "agentd_rps_ratio": R("agentd_log_vs_agentd_rps", "agentd_log", "agentd", rps_g),
                "nginx_cpu_us_per_req": rnd(m("nginx_log", "cpu_us_per_req") - m("nginx", "cpu_us_per_req"), 2)
                if m("nginx_log", "cpu_us_per_req") is not None and m("nginx", "cpu_us_per_req") is not None else None,
            },
        }

    def paired_added(runs_t, runs_d, key, sub="total_us"):
        vals = []
        for rt, rd in zip(runs_t, runs_d):
            vals.append(rt["c1"][sub][key] - rd["c1"][sub][key])
        return {"median": rnd(med(vals), 1), "runs": [rnd(v, 1) for v in vals]}

    if raw["instant"]:
        inst = raw["instant"]
        s = {t: summarize(runs, {**getters64, **getters1}) for t, runs in inst.items()}
        for t in s:
            if t != "direct":
                s[t]["added_c1_p50_us"] = paired_added(inst[t], inst["direct"], "p50")
                s[t]["added_c1_p99_us"] = paired_added(inst[t], inst["direct"], "p99")
                s[t]["peak_rss_kb"] = peak_low.get(t, peak.get(t))
                s[t]["idle_rss_kb"] = idle.get(t, {}).get("rss_kb")
        m = lambda t, k: (s.get(t, {}).get(k) or {}).get("median")
        R = Ratios(inst)
        rps_g = lambda r: r["c64"]["rps"]
        cpu_g = lambda r: r["c64"]["cpu_us_per_req"]
        d = {k: [r["c1"]["total_us"][k] for r in inst["direct"]] for k in ("p50", "p99")}
        added = {}
        for t in inst:
            for k in ("p50", "p99"):
                for i, r in enumerate(inst[t]):
                    r.setdefault("added", {})[k] = r["c1"]["total_us"][k] - d[k][i]
        added_g = lambda k: (lambda r: r["added"][k])
        res["scenarios"]["proxy_instant"] = {
            "what": "POST /v1/chat/completions (non-streaming) through each path to a static nginx upstream on CPU 1 "
                    "that returns the fake's 587-byte chat.completion (so the upstream is not the bottleneck); "
                    "wrk -t1 -c%d and concurrency 1" % CONNS,
            "targets": s,
            "ratios": {
                "agentd_vs_nginx_cpu_us_per_req": R("agentd_vs_nginx_cpu_us_per_req", "agentd", "nginx", cpu_g),
                "agentd_vs_nginx_rps": R("agentd_vs_nginx_rps", "agentd", "nginx", rps_g),
                "agentd_vs_nginx_added_c1_p50": R("agentd_vs_nginx_added_c1_p50", "agentd", "nginx", added_g("p50")),
                "agentd_vs_nginx_added_c1_p99": R("agentd_vs_nginx_added_c1_p99", "agentd", "nginx", added_g("p99")),
                "portkey_vs_agentd_cpu_us_per_req": R("portkey_vs_agentd_cpu_us_per_req", "portkey", "agentd", cpu_g),
                "portkey_vs_nginx_cpu_us_per_req": R("portkey_vs_nginx_cpu_us_per_req", "portkey", "nginx", cpu_g),
                "agentd_vs_direct_rps": R("agentd_vs_direct_rps", "agentd", "direct", rps_g),
                "agentd_log_vs_agentd_cpu": R("agentd_log_vs_agentd_cpu", "agentd_log", "agentd", cpu_g),
            },
            "ratio_runs": R.runs,
        }
    if raw.get("high"):
        hi = raw["high"]
        s = {t: summarize(runs, getters64) for t, runs in hi.items()}
        inst = raw.get("instant", {})
        Rh = Ratios(hi)
        res["scenarios"]["proxy_instant_many_connections"] = {
            "what": "the instant-upstream run again with wrk -t1 -c%d (%gs): how each path holds up when the "
                    "number of concurrent requests exceeds its upstream connection pool" % (
                        prm.get("high_connections", HIGH_CONNS), prm.get("high_duration_s", HIGH_DUR)),
            "targets": s,
            "ratios": {
                "agentd_vs_nginx_rps": Rh("agentd_vs_nginx_rps", "agentd", "nginx", lambda r: r["c64"]["rps"]),
                "agentd_vs_nginx_cpu_us_per_req": Rh("agentd_vs_nginx_cpu_us_per_req", "agentd", "nginx",
                                                     lambda r: r["c64"]["cpu_us_per_req"]),
            },
            "vs_own_rps_at_%d" % CONNS: {t: ratio(s[t]["rps"]["median"],
                                                  med([r["c64"]["rps"] for r in inst.get(t, [])]))
                                         for t in s if inst.get(t)},
        }
    if raw["slow"]:
        sl = raw["slow"]
        s = {t: summarize(runs, getters64) for t, runs in sl.items()}
        m = lambda t, k: (s.get(t, {}).get(k) or {}).get("median")
        res["scenarios"]["proxy_slow_upstream"] = {
            "what": "same request, node fake upstream answering after %d ms, wrk -t1 -c%d; the ideal is "
                    "%d conns / %d ms = %.0f req/s" % (SLOW_MS, CONNS, CONNS, SLOW_MS, CONNS * 1000.0 / SLOW_MS),
            "targets": s,
            "ratios_vs_direct_rps": {t: Ratios(sl)(t, t, "direct", lambda r: r["c64"]["rps"]) for t in s
                                     if t != "direct"},
        }
    if raw["stream"]:
        st = raw["stream"]
        g = {
            "ttft_p50_us": lambda r: r["c1"]["ttft_us"]["p50"],
            "ttft_p99_us": lambda r: r["c1"]["ttft_us"]["p99"],
            "total_p50_us": lambda r: r["c1"]["total_us"]["p50"],
            "total_p99_us": lambda r: r["c1"]["total_us"]["p99"],
            "ttfb_p50_us": lambda r: r["c1"]["ttfb_us"]["p50"],
            "events_min": lambda r: r["c1"]["min_events"],
            "errors": lambda r: r["c1"]["errors"] + r["c1"]["non2xx"],
            "cpu_us_per_stream": lambda r: r["c1"]["cpu_us_per_req"],
            "foreign_cpus": lambda r: r["c1"]["foreign_cpus"],
        }
        s = {t: summarize(runs, g) for t, runs in st.items()}
        for t in s:
            if t != "direct":
                s[t]["added_ttft_p50_us"] = paired_added(st[t], st["direct"], "p50", "ttft_us")
                s[t]["added_ttft_p99_us"] = paired_added(st[t], st["direct"], "p99", "ttft_us")
        m = lambda t, k: (s.get(t, {}).get(k) or {}).get("median")
        res["scenarios"]["stream_ttft"] = {
            "what": "streaming chat completion at concurrency 1 (bench/lat --stream, %d requests), node fake "
                    "sending %d content chunks %d ms apart; TTFT = request written -> first complete SSE data "
                    "event received" % (STREAM_N, STREAM_CHUNKS, STREAM_INTERVAL_MS),
            "targets": s,
            "ratios": {"agentd_vs_nginx_added_ttft_p50": ratio(m("agentd", "added_ttft_p50_us"),
                                                               m("nginx", "added_ttft_p50_us")),
                       "agentd_vs_nginx_added_ttft_p99": ratio(m("agentd", "added_ttft_p99_us"),
                                                               m("nginx", "added_ttft_p99_us"))},
            "note": "TTFT of the node fake itself varies by hundreds of microseconds between runs; the added "
                    "figures are paired per round, but differences under ~0.3 ms are within the noise",
        }
    if raw.get("sse") or raw.get("sse_skipped"):
        res["scenarios"]["stream_static"] = stream_static_report(raw.get("sse") or {}, raw.get("sse_skipped") or {},
                                                                 prm, getters64, paired_added)
    fl = []
    for name, sc in raw.items():
        for runs in ([r for k in sc.values() for r in k.values()] if name == "sse" else
                     [] if name == "sse_skipped" else sc.values()):
            for r in runs:
                for part in r.values():
                    fl.append(part.get("foreign_cpus", 0))
    res["foreign_load_cpus"] = {"median": rnd(med(fl), 2), "max": rnd(max(fl), 2) if fl else None,
                                "measurements": len(fl),
                                "what": "CPUs' worth of work by processes outside the benchmark during each "
                                        "measurement (2 = both CPUs fully taken)"}
    res["idle_rss_kb"] = {n: v["rss_kb"] for n, v in idle.items()}
    res["idle_memory_kb"] = idle
    res["peak_rss_kb"] = peak
    if peak_low:
        res["peak_rss_kb_before_many_connections"] = peak_low
    res["elapsed_s"] = round(elapsed, 1)
    if counters:
        res["counters"] = counters
        ratios = {}
        for sc, d in counters.items():
            a, n = d.get("agentd", {}), d.get("nginx", {})
            if sc in SSE_KINDS and SSE_KINDS[sc]["ref"]:  # translated: against nginx relaying the upstream stream
                n = (counters.get(SSE_KINDS[sc]["ref"]) or {}).get("nginx", {})
            ratios[sc] = {
                "syscalls": ratio(a.get("syscalls_per_req_c64"), n.get("syscalls_per_req_c64")),
                "instructions": ratio((a.get("callgrind") or {}).get("instructions_per_req"),
                                      (n.get("callgrind") or {}).get("instructions_per_req")),
            }
        res["counters_ratios_agentd_vs_nginx"] = ratios
    res["targets_design_9"] = design_checks(res, prm)
    return res


def stream_static_report(sse, skipped, prm, getters64, paired_added):
    """the streamed scenarios from the static upstream: per kind, the paths' figures, agentd ÷ nginx (CPU per
    streamed request at 64 connections and at concurrency 1, req/s) and the latency agentd and nginx add to the
    direct path, all paired per round. A translated kind is paired with its reference kind's direct and nginx runs
    of the same round (nginx relays the upstream's stream as it is)."""
    CONNS = prm["connections"]
    g = dict(getters64)
    g.update({
        "c1_cpu_us_per_req": lambda r: r["c1"]["cpu_us_per_req"],
        "c1_p50_us": lambda r: r["c1"]["total_us"]["p50"],
        "c1_p99_us": lambda r: r["c1"]["total_us"]["p99"],
        "ttft_p50_us": lambda r: r["c1"]["ttft_us"]["p50"],
        "ttft_p99_us": lambda r: r["c1"]["ttft_us"]["p99"],
        "events_min": lambda r: r["c1"]["min_events"],
        "body_bytes": lambda r: r["c1"]["body_bytes"],
        "c1_errors": lambda r: r["c1"]["errors"] + r["c1"]["non2xx"],
    })
    out = {"what": "streamed requests (bench/lat --stream at concurrency 1, %s streams; wrk -t1 -c%d, %gs) through "
                   "each path to a static nginx upstream that serves a fixed %s-event, ~10 KB SSE stream from a "
                   "file (OpenAI chat chunks with stream_options.include_usage, or an Anthropic Messages stream); "
                   "nginx is proxy_pass with proxy_buffering off" % (
                       prm.get("sse_requests"), CONNS, prm.get("sse_duration_s", 0), prm.get("sse_events")),
           "kinds": {}, "skipped": skipped}
    for kind in SSE_ORDER:
        if kind not in sse:
            continue
        k = SSE_KINDS[kind]
        runs = dict(sse.get(k["ref"]) or {}) if k["ref"] else {}
        runs.update(sse[kind])
        if k["ref"]:
            runs = {t: v for t, v in runs.items() if t in ("direct", "agentd", "nginx")}
        s = {t: summarize(v, g) for t, v in runs.items()}
        for t in s:
            if t != "direct" and "direct" in runs:
                s[t]["added_c1_p50_us"] = paired_added(runs[t], runs["direct"], "p50")
                s[t]["added_c1_p99_us"] = paired_added(runs[t], runs["direct"], "p99")
                s[t]["added_ttft_p50_us"] = paired_added(runs[t], runs["direct"], "p50", "ttft_us")
        R = Ratios(runs)
        d = {q: [r["c1"]["total_us"][q] for r in runs.get("direct", [])] for q in ("p50", "p99")}
        for t in ("agentd", "nginx"):
            for i, r in enumerate(runs.get(t, [])):
                for q in ("p50", "p99"):
                    if i < len(d[q]):
                        r.setdefault("added", {})[q] = r["c1"]["total_us"][q] - d[q][i]
        added = lambda q: (lambda r: r["added"][q])
        out["kinds"][kind] = {
            "label": k["label"], "front": k["front"], "reference_kind": k["ref"],
            "targets": s,
            "ratios": {
                "agentd_vs_nginx_cpu_us_per_req": R("agentd_vs_nginx_cpu_us_per_req", "agentd", "nginx",
                                                    lambda r: r["c64"]["cpu_us_per_req"]),
                "agentd_vs_nginx_c1_cpu_us_per_req": R("agentd_vs_nginx_c1_cpu_us_per_req", "agentd", "nginx",
                                                       lambda r: r["c1"]["cpu_us_per_req"]),
                "agentd_vs_nginx_rps": R("agentd_vs_nginx_rps", "agentd", "nginx", lambda r: r["c64"]["rps"]),
                "agentd_vs_direct_rps": R("agentd_vs_direct_rps", "agentd", "direct", lambda r: r["c64"]["rps"]),
                "agentd_vs_nginx_added_c1_p50": R("agentd_vs_nginx_added_c1_p50", "agentd", "nginx", added("p50")),
                "agentd_vs_nginx_added_c1_p99": R("agentd_vs_nginx_added_c1_p99", "agentd", "nginx", added("p99")),
            },
            "ratio_runs": R.runs,
        }
    return out


def design_checks(res, prm):
    SLOW_MS, CONNS = prm["slow_upstream_ms"], prm["connections"]
    sc = res["scenarios"]
    out = []

    def get(path):
        cur = sc
        for k in path:
            if cur is None or k not in cur:
                return None
            cur = cur[k]
        return cur

    idle = res["idle_rss_kb"].get("agentd")
    if idle is not None:
        out.append({"target": "idle RSS < 10 MB", "agentd": "%.1f MB" % (idle / 1024.0), "met": idle < 10 * 1024})
    cpu = get(["proxy_instant", "ratios", "agentd_vs_nginx_cpu_us_per_req"])
    if cpu is not None:
        out.append({"target": "CPU per proxied request <= 1.2x nginx proxy_pass", "agentd": "%.2fx" % cpu,
                    "met": cpu <= 1.2})
    for q in ("p50", "p99"):
        a = get(["proxy_instant", "targets", "agentd", "added_c1_%s_us" % q, "median"])
        n = get(["proxy_instant", "targets", "nginx", "added_c1_%s_us" % q, "median"])
        if a is not None and n is not None:
            out.append({"target": "added latency (c=1, %s) no worse than nginx proxy_pass" % q,
                        "agentd": "%.1f us vs nginx %.1f us" % (a, n), "met": a <= n})
    r = get(["proxy_slow_upstream", "ratios_vs_direct_rps", "agentd"])
    d = get(["proxy_slow_upstream", "targets", "direct", "rps"])
    if r is not None and d and d.get("median"):
        runs = [x for x in d["runs"] if x is not None]
        tol = max(0.02, (max(runs) - min(runs)) / d["median"])  # the direct path's own round-to-round spread
        n = get(["proxy_slow_upstream", "ratios_vs_direct_rps", "nginx"])
        out.append({"target": "behind a %d ms upstream, req/s at %d connections = direct (within %.1f%%, the "
                              "direct path's own spread)" % (SLOW_MS, CONNS, tol * 100),
                    "agentd": "%.3fx direct (nginx %s)" % (r, "%.3fx" % n if n is not None else "-"),
                    "met": r >= 1 - tol})
    ss = sc.get("stream_static") or {}
    for kind, x in (ss.get("kinds") or {}).items():
        goal = 1.2 if SSE_KINDS.get(kind, {}).get("ref") is None else 2.0
        for key, where in (("agentd_vs_nginx_cpu_us_per_req", "%d connections" % CONNS),
                           ("agentd_vs_nginx_c1_cpu_us_per_req", "concurrency 1")):
            v = x["ratios"].get(key)
            if v is not None:
                out.append({"target": "CPU per streamed request <= %gx nginx proxy_pass, %s, %s" % (
                    goal, x["label"], where), "agentd": "%.2fx" % v, "met": v <= goal})
    for kind, why in (ss.get("skipped") or {}).items():
        out.append({"target": "streamed %s" % SSE_KINDS.get(kind, {}).get("label", kind), "agentd":
                    "not measured: " + why, "met": None})
    return out


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip() or \
                subprocess.run(argv, capture_output=True, text=True, timeout=20).stderr.strip()
        except Exception:
            return None

    mem = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1])
    return {
        "nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(), "mem_total_kb": mem,
        "os": cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "nginx": cmd(["nginx", "-v"]), "wrk": (cmd(["wrk", "-v"]) or "").splitlines()[0] if cmd(["wrk", "-v"]) else None,
        "node": cmd(["node", "--version"]),
        "portkey": json.load(open(os.path.join(HERE, "node_modules", "@portkey-ai", "gateway", "package.json")))["version"]
        if os.path.exists(os.path.join(HERE, "node_modules", "@portkey-ai", "gateway", "package.json")) else None,
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }


def rereport(path):
    """bench.py --report FILE: recompute the summary of a results file from its raw runs (after a change to the
    statistics or the rendering), without measuring again."""
    old = json.load(open(path))
    pk = old["peak_rss_kb"]
    if old.get("peak_rss_kb_before_many_connections"):
        pk = {"end": pk, "before": old["peak_rss_kb_before_many_connections"]}
    res = report(old["which"], old["raw"], old["idle_memory_kb"], pk, old["elapsed_s"],
                 old["params"], old.get("counters"))
    keep = {k: v for k, v in old.items() if k not in res}
    res = {**keep, **res}
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    import render
    render.update_results_md(res)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--report":
        return rereport(sys.argv[2])
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # the driver and everything it starts default to the load CPU
    if os.getsid(0) != os.getpid():
        try:
            os.setsid()  # a session (so an autogroup) of our own, shared by everything we start
        except OSError:
            pass
    autogroup_nice = raise_priority()
    # run.sh forwards INT/TERM here; turn them into an exception so the processes we started are stopped
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": os.environ.get("BENCH_COMMAND", "bench/run.sh " + which),
        "which": which,
        "agentd": {"bin": os.environ["AGENTD_BIN"], "version": subprocess.run(
            [os.environ["AGENTD_BIN"], "version"], capture_output=True, text=True).stdout.strip(),
            "git": os.environ.get("BENCH_GIT", "")},
        "machine": machine(),
        "params": {**params(), "autogroup_nice": autogroup_nice},
    }
    res = run(which)
    res = {**meta, **res}
    out = os.environ.get("BENCH_OUT", os.path.join(HERE, "results", "latest.json"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    prev = None
    if os.path.exists(out):
        try:
            prev = json.load(open(out))
        except ValueError:
            prev = None
    with open(out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    os.replace(out + ".tmp", out)
    log("wrote", os.path.relpath(out, REPO), "in %.0fs" % res["elapsed_s"])
    import render
    # the default output updates bench/RESULTS.md; an experiment written elsewhere gets its own .md beside it
    md = None if os.path.abspath(out) == os.path.join(HERE, "results", "latest.json") else \
        os.path.splitext(out)[0] + ".md"
    render.update_results_md(res, prev, md)


if __name__ == "__main__":
    main()
