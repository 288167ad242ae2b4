#!/usr/bin/env bash
# scripts/check-includes.sh can fail: on a copy of src/ it passes as is, then each injected violation (a cycle,
# an upward include, net/ reading the configuration, a directory with no layer) must make it exit 1 and name the
# file. Usage: check_includes.test.sh [REPO_ROOT]
set -uo pipefail
root=${1:-"$(cd "$(dirname "$0")/../.." && pwd)"}
script="$root/scripts/check-includes.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
n=0

check() { # name, want_rc, want_pattern (grep -E on the output)
    n=$((n + 1))
    out=$("$script" "$tmp/src" 2>&1)
    rc=$?
    if [ "$rc" -eq "$2" ] && printf '%s\n' "$out" | grep -qE -- "$3"; then
        echo "ok $n - $1"
    else
        echo "not ok $n - $1 (exit $rc, want $2; output:)"
        printf '%s\n' "$out" | sed 's/^/#   /'
        failures=$((failures + 1))
    fi
}

fresh() {
    rm -rf "$tmp/src"
    cp -r "$root/src" "$tmp/src"
}

fresh
check "the tree as it is passes" 0 '^check-includes: ok'

fresh
echo '#include "net/upstream.h"' >>"$tmp/src/net/h1client.h" # upstream.c includes h1client.h
check "a cycle between two modules" 1 'include cycle: .*net/h1client.*net/upstream|include cycle: .*net/upstream.*net/h1client'

fresh
echo '#include "sandbox/sbx.h"' >>"$tmp/src/sandbox/sbx_spec.h" # sbx.h includes sbx_spec.h
check "a cycle through a header" 1 'src/sandbox/sbx_spec.h includes "sandbox/sbx.h"'

fresh
echo '#include "gateway/exchange.h"' >>"$tmp/src/common/buf.c"
check "common/ including gateway/ is upward" 1 'upward include: src/common/buf.c \(layer 0, common\) includes "gateway/exchange.h"'

fresh
echo '#include "config/config.h"' >>"$tmp/src/net/sse.c"
check "net/ reading the configuration is upward" 1 'upward include: src/net/sse.c .*"config/config.h"'

fresh
mkdir "$tmp/src/newdir"
printf '#include "common/buf.h"\n' >"$tmp/src/newdir/x.c"
check "a directory with no layer" 1 "src/newdir/x.c: directory 'newdir' has no layer"

fresh
printf '#include "common/buf.h"\n#include "nothere/x.h"\n' >"$tmp/src/common/y.c"
check "includes of files outside src/ are ignored" 0 '^check-includes: ok'

echo "1..$n"
[ "$failures" -eq 0 ]
