#!/usr/bin/env bash
# Where a warm /bin/true run's time goes, phase by phase, from the kernel's own trace (tracefs: syscalls, exec, exit,
# scheduler) of N paced requests to POST /v1/sandbox/runs. Prints the median of each phase in microseconds:
#   to_child        the client's write of the request -> the warm child's recvmsg of its RUN returns
#   child_setup     -> the child's execve of the program starts (phase B: files, stdio, rlimits, ...)
#   execve          the execve itself
#   run             execve returned -> the program's exit starts (dynamic linking, main, exit_group)
#   exit_to_result  -> the zygote's send of the result starts (the exit, the reaping, the cgroup figures)
#   result_to_client-> the client's read of the response
# Tracing costs a few microseconds per syscall: compare phases between builds traced alike, not with untraced runs.
#
#   AGENTD_BIN=build/agentd N=30 bench/sandbox/phases.sh      (root: tracefs, and the sandbox's cgroups)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
root=$(cd "$here/../.." && pwd)
BIN=${AGENTD_BIN:-$root/build/agentd}
N=${N:-30}
T=/sys/kernel/tracing
[ -w "$T/trace" ] || { echo "phases: $T not writable (root, tracefs mounted?)" >&2; exit 2; }
work=$(mktemp -d)
logs=$(mktemp -d) # not next to the config: the daemon watches that directory, and a log written there wakes it
cc -O2 -Wall -Wextra -o "$work/lat" "$root/bench/lat.c"
cat > "$work/agentd.yaml" <<YAML
server: { workers: 1 }
sandbox:
  uid_base: 1700000000
  uid_count: 64
  service: { warm: 2, prewarm: true, max_running: 4 }
YAML
"$BIN" serve --config "$work/agentd.yaml" --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0 --data-dir "$logs/data" \
  2>"$logs/agentd.log" &
pid=$!
cleanup() { echo 0 > "$T/tracing_on"; echo > "$T/set_event"; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work" "$logs"; }
trap cleanup EXIT
port=$(log_port "$logs/agentd.log" "$AGENTD_PORT_SED")
[ -n "$port" ] || { echo "phases: agentd did not start" >&2; cat "$logs/agentd.log" >&2; exit 1; }
body='{"command":["/bin/true"]}'
"$work/lat" -p "$port" -u /v1/sandbox/runs -b "$body" -H 'Content-Type: application/json' -n 10 -w 0 --gap-us 50000 >/dev/null
echo 0 > "$T/tracing_on"; echo > "$T/trace"; echo 32768 > "$T/buffer_size_kb"
printf '%s\n' sched:sched_switch sched:sched_wakeup sched:sched_process_exec sched:sched_process_exit \
  raw_syscalls:sys_enter raw_syscalls:sys_exit > "$T/set_event"
echo 1 > "$T/tracing_on"
"$work/lat" -p "$port" -u /v1/sandbox/runs -b "$body" -H 'Content-Type: application/json' -n "$N" -w 0 --gap-us 50000 >/dev/null
echo 0 > "$T/tracing_on"
cp "$T/trace" "$work/trace.txt"
python3 "$here/phases.py" "$work/trace.txt"
