#!/usr/bin/env bash
# The sandbox as a service: POST /v1/sandbox/runs on a running daemon (warm pool) against bubblewrap running the
# same program, same machine, same sitting (issue 11 item 9).
#
#   bench/sandbox/service.sh            build a Release agentd (build-bench/), measure, write bench/sandbox/SERVICE.md
#   AGENTD_BIN=path RUNS=400 BLOCKS=4 WARM=2 WARM_PY=2 bench/sandbox/service.sh
#   BASE_BIN=path/to/older/agentd BASE_LABEL=commit bench/sandbox/service.sh   also measures that build (HTTP paced
#       and back to back, C API paced; /bin/true and python3 -c pass) in the same blocks: a change's before and after
#       under the same load. BASE_WARM_PY=N gives it warm Python interpreters too (a build that knows the setting).
#
# Client: bench/lat.c, one keep-alive connection, closed loop (concurrency 1), timing from the write of the request
# to the last byte of the response (the result JSON: output collected, process tree reaped, cgroup read and
# removed). Two client modes: back to back (the pool refills while the next request arrives) and paced (50 ms
# between requests, not timed, so the pool is warm when each arrives: an agent's step is far slower than that).
# bwrap: the wall time of the bwrap command (a fresh process per run), by hyperfine. Two floors, measured alike,
# say what part of a run is agentd's own: the program with no sandbox at all (hyperfine: fork, exec, wait), and an
# HTTP request the daemon answers at once (GET /v1/models, paced like the runs). Each figure is measured in
# BLOCKS blocks, the programs and kinds taking turns, so load from anything else falls on all of them alike.
# Python is measured twice: `python3 -c pass` as a command (the interpreter starts cold in a warm child), and the
# snippet `pass` as {"language":"python"} served by a warm interpreter (WARM_PY per worker, docs/sandbox.md); paced
# Python-warm requests are PY_GAP_US apart, the time the pool needs to start the next interpreter (an agent's step
# is slower than that), else a request finds none ready and takes the cold path, which the figure would then mix in.
#
# Needs root (as CI runs it), hyperfine, bwrap, python3, cc.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
root=$(cd "$here/../.." && pwd)
RUNS=${RUNS:-400}
BLOCKS=${BLOCKS:-4}
WARM=${WARM:-2}
WARM_PY=${WARM_PY:-2}
GAP_US=${GAP_US:-50000}
PY_GAP_US=${PY_GAP_US:-200000}
out=${OUT:-$here/SERVICE.md}

if [ -z "${AGENTD_BIN:-}" ]; then
  cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release -DAGENTD_TESTS=OFF >/dev/null
  cmake --build "$root/build-bench" -j"$(nproc)" --target agentd >/dev/null
  AGENTD_BIN=$root/build-bench/agentd
fi
for t in hyperfine bwrap python3 cc; do command -v "$t" >/dev/null || { echo "bench: $t not found" >&2; exit 2; }; done
[ "$(id -u)" -eq 0 ] || echo "bench: not root: agentd maps the sandbox to your own uid and may lack cgroups" >&2

work=$(mktemp -d)
cut -d' ' -f1-3 /proc/loadavg > "$work/load0"
cc -O2 -Wall -Wextra -o "$work/lat" "$root/bench/lat.c"
# start_daemon BIN UID_BASE NAME SERVICE_EXTRA: a daemon on a free port, its port in $port_NAME
start_daemon() {
  local bin=$1 ub=$2 name=$3 extra=$4 p
  # the config in a directory of its own: the daemon watches that directory, and its log written there would
  # wake it on every request
  mkdir -p "$work/cfg-$name"
  cat > "$work/cfg-$name/agentd.yaml" <<EOF
server: { workers: 1 }
sandbox:
  uid_base: $ub
  uid_count: 64
  service: { warm: $WARM,$extra prewarm: true, max_running: 4 }
EOF
  "$bin" serve --config "$work/cfg-$name/agentd.yaml" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 \
    --data-dir "$work/data-$name" 2>"$work/$name.log" &
  pids+=($!)
  p=$(log_port "$work/$name.log" "$AGENTD_PORT_SED")
  [ -n "$p" ] || { echo "bench: agentd ($bin) did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
  printf -v "port_$name" '%s' "$p"
}
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"' EXIT
start_daemon "$AGENTD_BIN" 1700000000 new " warm_python: $WARM_PY,"
port=$port_new
port_base=
if [ -n "${BASE_BIN:-}" ]; then
  start_daemon "$BASE_BIN" 1700000064 base "${BASE_WARM_PY:+ warm_python: $BASE_WARM_PY,}"
fi

BWRAP=(bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev --tmpfs /tmp --die-with-parent)
TRUE_CMD=(/bin/true)
PY_CMD=(/usr/bin/python3 -c pass)
TRUE_BODY='{"command":["/bin/true"]}'
PY_BODY='{"command":["/usr/bin/python3","-c","pass"]}'
PYWARM_BODY='{"language":"python","code":"pass"}'

per=$((RUNS / BLOCKS))
kinds=(bwrap bare http-b2b http-paced api-paced)
if [ -n "${BASE_BIN:-}" ]; then kinds+=(base-http-b2b base-http-paced base-api-paced); fi
measure() { # kind prog block
  local kind=$1 prog=$2 b=$3 cmd body bin=$AGENTD_BIN port=$port
  case $kind in base-*) bin=$BASE_BIN port=$port_base ;; esac
  if [ "$prog" = true ]; then cmd=("${TRUE_CMD[@]}"); body=$TRUE_BODY; else cmd=("${PY_CMD[@]}"); body=$PY_BODY; fi
  local f="$work/$prog.$kind.$b.json"
  if [ "$prog" = pywarm ]; then
    case $kind in
      base-*) ;; # warm Python is this build's
      bwrap | bare) ;; # the same command as python's; measured there
      http-b2b)   "$work/lat" -p "$port" -u /v1/sandbox/runs -b "$PYWARM_BODY" -H 'Content-Type: application/json' -n "$per" -w 5 --raw > "$f" ;;
      http-paced) "$work/lat" -p "$port" -u /v1/sandbox/runs -b "$PYWARM_BODY" -H 'Content-Type: application/json' -n "$per" -w 5 --raw --gap-us "$PY_GAP_US" > "$f" ;;
      api-paced)  echo pass | "$AGENTD_BIN" sandbox bench --raw --timeout 60 --runs "$per" --zygote --warm "$WARM" --warm-python "$WARM_PY" --pace --lang python > "$f" || true ;;
    esac
    return
  fi
  case $kind in
    bwrap)      hyperfine -N --warmup 3 --runs "$per" --export-json "$f" "$(printf '%q ' "${BWRAP[@]}" "${cmd[@]}")" >/dev/null 2>&1 ;;
    # paced like the runs: hyperfine's --prepare runs (and waits for) the sleep before each timed run
    bare)       hyperfine -N --warmup 3 --runs "$per" --prepare "sleep $(awk "BEGIN{print $GAP_US/1e6}")" --export-json "$f" \
                  "$(printf '%q ' "${cmd[@]}")" >/dev/null 2>&1
                # the HTTP floor, once per block, next to the bare program
                if [ "$prog" = true ]; then
                  "$work/lat" -p "$port" -u /v1/models -n "$per" -w 5 --raw --gap-us "$GAP_US" > "$work/floor.http-floor.$b.json"
                fi ;;
    http-b2b | base-http-b2b) "$work/lat" -p "$port" -u /v1/sandbox/runs -b "$body" -H 'Content-Type: application/json' -n "$per" -w 5 --raw > "$f" ;;
    http-paced | base-http-paced) "$work/lat" -p "$port" -u /v1/sandbox/runs -b "$body" -H 'Content-Type: application/json' -n "$per" -w 5 --raw --gap-us "$GAP_US" > "$f" ;;
    # the same pool through the C API in a process of its own: what HTTP and the service add is the difference
    api-paced | base-api-paced) "$bin" sandbox bench --raw --timeout 60 --runs "$per" --zygote --warm "$WARM" --pace -- "${cmd[@]}" > "$f" || true ;;
  esac
}
# the answer must be a real run, not an error
for p in "$port" ${port_base:+"$port_base"}; do
  curl -sf -XPOST "http://127.0.0.1:$p/v1/sandbox/runs" -d "$TRUE_BODY" | grep -q '"reason":"exit","exit_code":0' ||
    { echo "bench: /v1/sandbox/runs does not run /bin/true here" >&2; cat "$work"/*.log >&2; exit 1; }
done
# blocks outermost, so each program's figures (warm Python against cold Python above all) share the same conditions
progs=(true python pywarm)
for ((b = 0; b < BLOCKS; b++)); do
  for ((q = 0; q < ${#progs[@]}; q++)); do
    prog=${progs[$(((q + b) % ${#progs[@]}))]}
    echo "bench: block $((b + 1))/$BLOCKS: $prog" >&2
    n=${#kinds[@]}
    for ((k = 0; k < n; k++)); do measure "${kinds[$(((k + b) % n))]}" "$prog" "$b"; done
  done
done

python3 - "$work" "$out" "$AGENTD_BIN" "$RUNS" "$BLOCKS" "$WARM" "$GAP_US" "$WARM_PY" "$PY_GAP_US" "${BASE_BIN:-}" "${BASE_LABEL:-}" "$root" <<'PY'
import glob, json, os, platform, statistics, subprocess, sys, datetime
work, out, binp, runs, blocks, warm, gap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
warm_py, py_gap = sys.argv[8], int(sys.argv[9])
base, base_label, root = sys.argv[10], sys.argv[11] or "BASE_BIN", sys.argv[12]

def pct(v, p):
    v = sorted(v)
    k = (len(v) - 1) * p / 100
    lo = int(k); hi = min(lo + 1, len(v) - 1)
    return v[lo] + (k - lo) * (v[hi] - v[lo])

bad = {}
def times(prog, kind):
    t = []
    for f in sorted(glob.glob(f"{work}/{prog}.{kind}.*.json")):
        j = json.load(open(f))
        if kind in ("bwrap", "bare"):
            t += [x * 1000 for x in j["results"][0]["times"]]
        elif kind.endswith("api-paced"):
            t += j["times_ms"]
            bad[(prog, kind)] = bad.get((prog, kind), 0) + j["failures"]
        else:
            t += [x / 1000 for x in j["total_raw_us"]]
            bad[(prog, kind)] = bad.get((prog, kind), 0) + j["errors"] + j["non2xx"]
    return {"n": len(t), "p50": pct(t, 50), "p90": pct(t, 90), "p99": pct(t, 99), "mean": statistics.mean(t)}

rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
check = json.loads(subprocess.run([binp, "sandbox", "check"], capture_output=True, text=True).stdout)
cg = check["features"]["cgroup"]
bw = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
load = open("/proc/loadavg").read().split()[:3]
names = {"true": "`/bin/true`", "python": "`python3 -c pass`", "pywarm": "`pass`, warm Python"}
R = {(p, k): times(p, k) for p in names for k in ("bwrap", "bare", "http-b2b", "http-paced", "api-paced")
     if (p, k) not in (("pywarm", "bwrap"), ("pywarm", "bare"))}
R[("pywarm", "bwrap")] = R[("python", "bwrap")]
R[("pywarm", "bare")] = R[("python", "bare")]
floor = times("floor", "http-floor")
if base:
    R.update({(p, k): times(p, k) for p in ("true", "python") for k in ("base-http-b2b", "base-http-paced", "base-api-paced")})

L = ["# The sandbox service: POST /v1/sandbox/runs vs bubblewrap\n"]
L.append(f"Measured {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `bench/sandbox/service.sh` "
         f"(commit {rev}): kernel {platform.release()}, {os.cpu_count()} vCPUs, {bw}, agentd Release build, one worker, "
         f"{warm} warm children and {warm_py} warm Python interpreters, root, cgroup v{cg['version']} limits {'in force' if cg['in_force'] else 'NOT in force'}; "
         f"load average at the start {open(work + '/load0').read().strip()}, at the end {' '.join(load)}. {runs} runs per figure in {blocks} blocks where the kinds take turns; "
         "times in ms.\n")
L.append("agentd = an HTTP request (`lat`, one keep-alive connection) to the last byte of the result JSON: the run "
         "started from the warm pool, its output collected, its process tree reaped and its cgroup read and removed. "
         "bwrap = the wall time of `bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev --tmpfs /tmp "
         "--die-with-parent PROG`, a fresh process per run, by hyperfine. agentd's isolation is the stronger "
         "(docs/sandbox.md: minimal root, own uid per run, seccomp, no capabilities, cgroup limits, deadline). "
         "`python3 -c pass` is a command (`{\"command\":[...]}`): the interpreter starts cold in a warm child. "
         "`pass`, warm Python is `{\"language\":\"python\",\"code\":\"pass\"}` served by a warm interpreter "
         "(started before the request, used by this run only), against the same bwrap `python3 -c pass`.\n")
L.append("| program | client | agentd p50 | p90 | p99 | bwrap p50 | p90 | p99 | bwrap p50 / agentd p50 |")
L.append("|---|---|---|---|---|---|---|---|---|")
for p in names:
    b = R[(p, "bwrap")]
    g = py_gap if p == "pywarm" else gap
    for k, label in (("http-paced", f"HTTP, paced ({g // 1000} ms between requests)"), ("http-b2b", "HTTP, back to back"),
                     ("api-paced", "C API, paced (no HTTP, no service)")):
        a = R[(p, k)]
        L.append(f"| {names[p]} | {label} | {a['p50']:.2f} | {a['p90']:.2f} | {a['p99']:.2f} | {b['p50']:.2f} | "
                 f"{b['p90']:.2f} | {b['p99']:.2f} | **{b['p50'] / a['p50']:.1f}x** |")
L.append("\nWhat part of a `/bin/true` run is agentd's own (p50, ms; the floors in the same blocks, paced "
         f"{gap // 1000} ms apart like the runs): the program with no sandbox at all (`hyperfine -N`: fork, exec, wait) and "
         "an HTTP request the daemon answers at once (`GET /v1/models`), subtracted from the run through HTTP. (Python "
         "outside the sandbox is not the same program: it finds the host's site directories.)\n")
L.append("| program | agentd, HTTP paced | no sandbox | HTTP floor | agentd's own part |")
L.append("|---|---|---|---|---|")
for p in ("true",):
    a, n = R[(p, "http-paced")], R[(p, "bare")]
    L.append(f"| {names[p]} | {a['p50']:.2f} | {n['p50']:.2f} | {floor['p50']:.2f} | **{a['p50'] - n['p50'] - floor['p50']:.2f}** |")
if base:
    L.append(f"\nBefore and after in the same blocks: this build against {base_label} (times in ms):\n")
    L.append("| program | client | before p50 | after p50 | before / after | before p90 | after p90 |")
    L.append("|---|---|---|---|---|---|---|")
    for p in ("true", "python"):
        for k, label in (("http-paced", "HTTP, paced"), ("http-b2b", "HTTP, back to back"), ("api-paced", "C API, paced")):
            a, b = R[(p, k)], R[(p, "base-" + k)]
            L.append(f"| {names[p]} | {label} | {b['p50']:.2f} | {a['p50']:.2f} | **{b['p50'] / a['p50']:.2f}x** | "
                     f"{b['p90']:.2f} | {a['p90']:.2f} |")
errs = {k: v for k, v in bad.items() if v}
if errs:
    L.append("\nRequests that failed or were not 2xx: " + ", ".join(f"{p} {k}: {v}" for (p, k), v in errs.items()) + ".\n")
L.append("\n## Commands\n")
L.append("```")
L.append(f"agentd serve --config agentd.yaml   # server.workers 1, sandbox.service.warm {warm}, warm_python {warm_py}, prewarm true")
L.append(f"lat -p PORT -u /v1/sandbox/runs -b '{{\"command\":[\"/bin/true\"]}}' -H 'Content-Type: application/json' -n {runs // blocks} -w 5 --raw [--gap-us {gap}]")
L.append(f"agentd sandbox bench --raw --runs {runs // blocks} --zygote --warm {warm} --pace -- /bin/true")
L.append(f"hyperfine -N --warmup 3 --runs {runs // blocks} --prepare 'sleep {gap / 1e6:g}' /bin/true   # no sandbox")
L.append(f"lat -p PORT -u /v1/models -n {runs // blocks} -w 5 --raw --gap-us {gap}   # the HTTP floor")
L.append(f"hyperfine -N --warmup 3 --runs {runs // blocks} 'bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev --tmpfs /tmp --die-with-parent /bin/true'")
L.append("# and the same with /usr/bin/python3 -c pass; each in " + str(blocks) + " blocks, the kinds taking turns")
L.append(f"# warm Python: lat ... -b '{{\"language\":\"python\",\"code\":\"pass\"}}' [--gap-us {py_gap}]")
L.append(f"echo pass | agentd sandbox bench --raw --runs {runs // blocks} --zygote --warm {warm} --warm-python {warm_py} --pace --lang python")
L.append("```")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
