#!/usr/bin/env bash
# agentd benchmarks, one command: bench/run.sh [server|gateway|stream|all]   (default: all)
#
#   server   GET /health on agentd's API port vs nginx `return 200`; idle RSS            (issue 2)
#   gateway  client -> {direct | agentd | nginx proxy_pass | Portkey} -> fake upstream     (issue 3),
#            and the streams from a static upstream (below)
#   stream   only the streams from a static upstream: direct | agentd | nginx proxy_pass, OpenAI and Anthropic
#            pass-through, chat -> Anthropic and /v1/responses -> chat-only translation    (issue 16 items 7, 8)
#   all      all of them, sharing one set of processes
#   govern   agentd with a key, a budget and rate limits on every request vs agentd without, vs nginx and the
#            direct path: CPU per request and added latency (issue 8 item 8; govern_e2e.py). Not part of all.
#
# Installs what it needs (scripts/deps.sh bench, npm ci in bench/), builds agentd (Release, into build/) unless
# AGENTD_BIN points at a binary, runs the scenarios with the process under test pinned to CPU 0 and the load
# generator and upstreams pinned to CPU 1, and writes bench/results/latest.json and the tables in
# bench/RESULTS.md. Knobs (environment): AGENTD_BIN, BENCH_ROUNDS (3), BENCH_DURATION (5 s per wrk run),
# BENCH_WARMUP (1 s), BENCH_C1_SECONDS (2), BENCH_CONNECTIONS (64), BENCH_STREAM_REQUESTS (250),
# BENCH_STREAM_CHUNKS (8), BENCH_STREAM_INTERVAL_MS (1), BENCH_SLOW_MS (50), BENCH_SSE (1), BENCH_SSE_DURATION (3),
# BENCH_SSE_REQUESTS (1500), BENCH_SSE_EVENTS (29), BENCH_CG_SSE_REQUESTS (300), BENCH_PORT_BASE (18700),
# BENCH_OUT (bench/results/latest.json), BENCH_KEEP_WORK=1 to keep the work dir (configs, logs); the rest in
# bench/README.md.
set -euo pipefail
which=${1:-all}
case "$which" in server|gateway|stream|all|govern) ;; *) echo "usage: $0 [server|gateway|stream|all|govern]" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cmdline="bench/run.sh $*"
[ -n "${AGENTD_BIN:-}" ] && cmdline="AGENTD_BIN=$AGENTD_BIN $cmdline"
[ -n "${BENCH_GIT:-}" ] && cmdline="BENCH_GIT=$BENCH_GIT $cmdline"
# the knobs given in the environment are part of the command that reproduces the figures
for v in $(env | grep -o '^BENCH_[A-Z_0-9]*' | grep -v '^BENCH_GIT$' | sort -r); do cmdline="$v=${!v} $cmdline"; done

"$repo/scripts/deps.sh" bench

# Peers from npm: exact versions from bench/package-lock.json.
if [ "$which" = gateway ] || [ "$which" = all ]; then
  if [ ! -f "$here/node_modules/@portkey-ai/gateway/package.json" ] ||
     ! cmp -s "$here/package-lock.json" "$here/node_modules/.bench-lock" 2>/dev/null; then
    (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    cp "$here/package-lock.json" "$here/node_modules/.bench-lock"
  fi
fi

if [ -z "${AGENTD_BIN:-}" ]; then
  cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$repo/build" -j"$(nproc)" --target agentd
  AGENTD_BIN="$repo/build/agentd"
fi
[ -x "$AGENTD_BIN" ] || { echo "bench: no agentd binary at $AGENTD_BIN" >&2; exit 1; }

ts=$(date -u +%Y%m%dT%H%M%SZ)
work="$here/work/$ts"
mkdir -p "$work"
cleanup() { [ "${BENCH_KEEP_WORK:-0}" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

cc -O2 -Wall -Wextra -o "$work/lat" "$here/lat.c"

# What was measured: the tree's commit (+dirty if src/ has local changes), or BENCH_GIT when AGENTD_BIN was built
# from something else (a clean export of a commit, another branch).
git_desc=${BENCH_GIT:-$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${BENCH_GIT:-}" ] && [ -n "$(cd "$repo" && git status --porcelain -- src CMakeLists.txt cmake 2>/dev/null)" ]; then
  git_desc="$git_desc+dirty"
fi

echo "bench: $which; agentd $AGENTD_BIN ($git_desc); work dir $work" >&2
# The driver puts itself in a session of its own (one scheduler autogroup for everything it starts, see
# bench.py), which detaches it from the terminal: forward INT/TERM so it still stops its processes.
BENCH_WORK="$work" BENCH_LAT="$work/lat" AGENTD_BIN="$AGENTD_BIN" BENCH_GIT="$git_desc" BENCH_COMMAND="$cmdline" \
  python3 "$here/$([ "$which" = govern ] && echo govern_e2e.py || echo bench.py)" "$which" &
driver=$!
trap 'kill -TERM $driver 2>/dev/null' INT TERM HUP
rc=0; wait $driver || rc=$?
# a trapped signal interrupts the first wait: wait again for the driver to clean up
while kill -0 $driver 2>/dev/null; do wait $driver || rc=$?; done
exit $rc
