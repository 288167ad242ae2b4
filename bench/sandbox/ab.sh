#!/usr/bin/env bash
# A/B of sandbox builds through the C API (agentd sandbox bench, zygote pool, 2 warm children), for a change's
# before and after on a host whose load moves by 2-3x within minutes: ROUNDS rounds, in each of which every build
# runs RUNS runs of /bin/true paced (--pace) and back to back, so every round's figures share its conditions. Prints,
# per mode and build, the median of the rounds' p50s and the median of the per-round ratios first-build / this.
#
#   bench/sandbox/ab.sh ROUNDS RUNS OLD_AGENTD NEW_AGENTD [MORE...]
#
# Needs root (or unprivileged user namespaces) and python3. Copy the builds first: each path is run as given.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
rounds=$1 runs=$2
shift 2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((r = 0; r < rounds; r++)); do
  for b in "$@"; do
    for mode in paced b2b; do
      flag=()
      [ "$mode" = paced ] && flag=(--pace)
      p=$("$b" sandbox bench --runs "$runs" --zygote --warm 2 "${flag[@]}" -- /bin/true 2>/dev/null | tail -1 |
        python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["p50_ms"] if j["failures"] == 0 else "nan")')
      echo "$r $b $mode $p" >> "$out"
    done
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$@" <<'PY'
import collections, math, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
bins = sys.argv[2:]
d = collections.defaultdict(dict)
for r, b, m, p in rows:
    if not math.isnan(float(p)):
        d[(b, m)][int(r)] = float(p)
for m in ("paced", "b2b"):
    for b in bins:
        v = list(d[(b, m)].values())
        rat = [d[(bins[0], m)][r] / d[(b, m)][r] for r in d[(b, m)] if r in d[(bins[0], m)]]
        print(f"{m:5s} {b}: median p50 {statistics.median(v):.2f} ms (min {min(v):.2f}, {len(v)} rounds); "
              f"median per-round ratio first/this {statistics.median(rat):.2f}")
PY
