#!/usr/bin/env bash
# Layering, from the #include "..." lines under src/ (DESIGN §2, "Dependencies point down"). Fails (exit 1) and
# names the files on:
#   (a) an include cycle between modules (a module is one .c and its .h: src/net/upstream.{c,h}); a file including
#       its own header is not a cycle;
#   (b) an upward include: a file in a lower layer including one in a higher layer.
# Usage: scripts/check-includes.sh [SRC_DIR]   (default: src/ of this checkout; tests run it on a doctored copy)
#
# The layers, lowest first (a directory may include its own layer and the ones below it; api/ and main.c are the
# composition root and may include everything):
#   0  common                  buffers, strings, logging, time: depends on nothing of agentd
#   1  net                     HTTP server and upstream client: take plain option structs, never the configuration
#   2  config telemetry store sandbox policy resilience
#                              the configuration engine and the services; config sits here, above net, so that
#                              "net/ never reads the global configuration" is checked too
#   3  gateway                 the exchange, fronts, providers
#   4  agent mcp               submit exchanges to the gateway
#   5  api                     routes, daemon, workers: wires everything
#   6  main.c
# LAYERS below is this table; a new directory under src/ must be added to it (the script fails on a directory it
# has no layer for).
set -euo pipefail

LAYERS="common=0 net=1 config=2 telemetry=2 store=2 sandbox=2 policy=2 resilience=2 gateway=3 agent=4 mcp=4 api=5
main.c=6"

# Known violations, each to be deleted by whoever removes it: "<file under src/> <included path>  # why, who".
# Edges listed here are left out of both checks.
ALLOW=(
)

src=${1:-"$(cd "$(dirname "$0")/.." && pwd)/src"}
if [ ! -d "$src" ]; then
    echo "check-includes: no directory $src" >&2
    exit 2
fi
cd "$src"

for entry in "${ALLOW[@]}"; do
    if ! grep -qE "^[[:space:]]*#[[:space:]]*include[[:space:]]*\"${entry#* }\"" "${entry%% *}" 2>/dev/null; then
        echo "check-includes: note: the allowed violation '$entry' is gone: delete its ALLOW entry"
    fi
done

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT

# One line per quoted include that names a file under src/ and is not allowed above: "<file> <included>".
grep -rHo --include='*.c' --include='*.h' '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]*"' . |
    LC_ALL=C sort |
    awk -v allow="$(printf '%s\n' "${ALLOW[@]}")" '
        BEGIN { n = split(allow, a, "\n"); for (i = 1; i <= n; i++) if (a[i] != "") ok[a[i]] = 1 }
        {
            f = $0; sub(/:.*/, "", f); sub(/^\.\//, "", f)
            inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
            if (!(inc in exists)) exists[inc] = ((getline line < inc) >= 0); close(inc)
            if (!exists[inc] || ((f " " inc) in ok)) next # not one of ours (a test helper), or a known violation
            print f, inc
        }' >"$edges"

fail=0

# (b) upward includes
upward=$(awk -v layers="$LAYERS" '
    BEGIN { n = split(layers, l, /[ \n]+/); for (i = 1; i <= n; i++) { split(l[i], kv, "="); layer[kv[1]] = kv[2] } }
    function dir(p) { return p == "main.c" ? p : substr(p, 1, index(p, "/") - 1) }
    {
        fd = dir($1); id = dir($2)
        if (!(fd in layer)) { if (!(fd in told)) print "check-includes: src/" $1 ": directory \x27" fd "\x27 has no layer (add it to scripts/check-includes.sh)"; told[fd] = 1; next }
        if (!(id in layer)) next # reported when its own files are read
        if (layer[id] > layer[fd])
            printf "check-includes: upward include: src/%s (layer %d, %s) includes \"%s\" (layer %d, %s)\n", $1, layer[fd], fd, $2, layer[id], id
    }' "$edges")
if [ -n "$upward" ]; then
    echo "$upward"
    fail=1
fi

# (a) cycles between modules: depth-first search over module -> module edges, each back edge is a cycle.
cycles=$(awk '
    function mod(p) { sub(/\.[ch]$/, "", p); return p }
    {
        a = mod($1); b = mod($2)
        if (a == b) next
        key = a SUBSEP b
        if (key in seen) next
        seen[key] = 1
        n[a]++; adj[a, n[a]] = b
        nodes[a] = 1; nodes[b] = 1
    }
    function dfs(v,    i, w, j, path) {
        color[v] = 1; stack[++depth] = v
        for (i = 1; i <= n[v]; i++) {
            w = adj[v, i]
            if (color[w] == 1) {
                path = ""
                for (j = 1; j <= depth; j++) if (stack[j] == w) break
                for (; j <= depth; j++) path = path stack[j] " -> "
                print path w
            } else if (color[w] == 0) {
                dfs(w)
            }
        }
        depth--; color[v] = 2
    }
    END {
        # a stable order, so the report reads the same on every run
        m = 0
        for (v in nodes) order[++m] = v
        for (i = 2; i <= m; i++) { v = order[i]; for (j = i - 1; j >= 1 && order[j] > v; j--) order[j + 1] = order[j]; order[j + 1] = v }
        for (i = 1; i <= m; i++) if (!color[order[i]]) dfs(order[i])
    }' "$edges")
if [ -n "$cycles" ]; then
    while IFS= read -r c; do
        echo "check-includes: include cycle: $c"
        # the lines that make it, so the fix is obvious
        IFS=' ' read -r -a ms <<<"${c//->/ }"
        for ((i = 0; i + 1 < ${#ms[@]}; i++)); do
            grep -E "^${ms[i]}\.[ch] ${ms[i + 1]}\.[ch]\$" "$edges" | sed 's|^\([^ ]*\) \(.*\)|    src/\1 includes "\2"|'
        done
    done <<<"$cycles"
    fail=1
fi

if [ "$fail" -ne 0 ]; then
    exit 1
fi
echo "check-includes: ok ($(wc -l <"$edges") includes, no cycle, none upward)"
