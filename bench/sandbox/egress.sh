#!/usr/bin/env bash
# Network "egress" (docs/sandbox-service.md): what the proxy costs a run, in the same sitting.
#   latency     POST /v1/sandbox/runs of /bin/true, paced 50 ms apart: network "none" (a warm child) against
#               "egress" (a child made for the run, its loopback up and its listener handed over)
#   throughput  a 64 MiB download by Python's urllib: on the host, straight from the server, against inside a run,
#               through the proxy (plain HTTP, absolute form) and through a CONNECT tunnel
# The server stands on the host's loopback, so the daemon allows private networks (as an internal mirror would).
#
#   AGENTD_BIN=build/agentd RUNS=100 REPS=5 bench/sandbox/egress.sh     (root: the sandbox's uids and cgroups)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
root=$(cd "$here/../.." && pwd)
BIN=${AGENTD_BIN:-$root/build/agentd}
RUNS=${RUNS:-100}
REPS=${REPS:-5}
work=$(mktemp -d)
cc -O2 -Wall -Wextra -o "$work/lat" "$root/bench/lat.c"
head -c $((64 << 20)) /dev/zero > "$work/blob"
python3 -m http.server 0 --bind 127.0.0.1 --directory "$work" > "$work/http.log" 2>&1 &
hpid=$!
pids=($hpid)
# agentd first and gracefully (its zygote removes the runs' cgroups), then the file server
stop_all() {
  for ((k = ${#pids[@]} - 1; k >= 0; k--)); do
    if [ "$k" -eq 0 ]; then kill -9 "${pids[$k]}" 2>/dev/null; else kill "${pids[$k]}" 2>/dev/null; fi
    wait "${pids[$k]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop_all EXIT
hport=$(log_port "$work/http.log" 's/.*port \([0-9]*\).*/\1/p' 100)
[ -n "$hport" ] || { echo "egress bench: the HTTP server did not start" >&2; exit 1; }
mkdir -p "$work/cfg"
cat > "$work/cfg/agentd.yaml" <<YAML
server: { workers: 1 }
sandbox:
  uid_base: 1700000000
  uid_count: 64
  service: { warm: 2, prewarm: true, max_running: 4, max_timeout: 60s, max_memory: 1GiB }
  egress: { enabled: true, ports: [$hport], allow_private_networks: true, max_bytes: 1GiB }
YAML
"$BIN" serve --config "$work/cfg/agentd.yaml" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 --data-dir "$work/data" \
  2>"$work/agentd.log" &
pids+=($!)
port=$(log_port "$work/agentd.log" "$AGENTD_PORT_SED")
[ -n "$port" ] || { echo "egress bench: agentd did not start" >&2; cat "$work/agentd.log" >&2; exit 1; }

p50() { python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["total_us"]["p50"] / 1000))' "$1"; }
echo "latency: /bin/true through HTTP, p50 ms over $RUNS paced runs, the two modes taking turns"
for r in 1 2; do
  for net in none egress; do
    "$work/lat" -p "$port" -u /v1/sandbox/runs -b "{\"command\":[\"/bin/true\"],\"network\":\"$net\"}" \
      -H 'Content-Type: application/json' -n "$RUNS" -w 5 --gap-us 50000 > "$work/lat.$net.$r.json"
    echo "  round $r  $net  $(p50 "$work/lat.$net.$r.json")"
  done
done

# Python that downloads the blob and prints MB/s; MODE: direct (no proxy), forward (HTTP_PROXY), tunnel (CONNECT)
cat > "$work/dl.py" <<PY
import os, socket, sys, time, urllib.request
mode, url = sys.argv[1], "http://127.0.0.1:$hport/blob"
t = time.monotonic()
n = 0
if mode == "tunnel":
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(b"CONNECT 127.0.0.1:$hport HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    s.sendall(b"GET /blob HTTP/1.0\r\nHost: x\r\n\r\n")
    while True:
        c = s.recv(1 << 20)
        if not c: break
        n += len(c)
else:
    h = urllib.request.ProxyHandler({"http": os.environ["HTTP_PROXY"]} if mode == "forward" else {})
    with urllib.request.build_opener(h).open(url) as r:
        while True:
            c = r.read(1 << 20)
            if not c: break
            n += len(c)
dt = time.monotonic() - t
assert n >= 64 << 20, n
print("%.0f" % (n / dt / 1e6))
PY
run_in() { # mode: MB/s of one download inside a run
  python3 - "$work/dl.py" "$1" "$port" <<'PY'
import json, sys, urllib.request
code = open(sys.argv[1]).read().replace("sys.argv[1]", repr(sys.argv[2]))
body = json.dumps({"language": "python", "code": code, "network": "egress", "env": ["NO_PROXY=", "no_proxy="],
                   "limits": {"timeout_ms": 60000}}).encode()
r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%s/v1/sandbox/runs" % sys.argv[3], body,
                                                  {"Content-Type": "application/json"}), timeout=120)
j = json.loads(r.read())
assert j["reason"] == "exit" and j["exit_code"] == 0, j
print(j["stdout"].strip())
PY
}
echo "throughput: a 64 MiB download, MB/s, median of $REPS, the three taking turns"
declare -A all
for ((i = 0; i < REPS; i++)); do
  all[direct]+="$(python3 "$work/dl.py" direct) "
  all[forward]+="$(run_in forward) "
  all[tunnel]+="$(run_in tunnel) "
done
for k in direct forward tunnel; do
  echo "  $k  $(printf '%s\n' ${all[$k]} | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')   (${all[$k]% })"
done
