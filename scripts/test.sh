#!/usr/bin/env bash
# Installs what is missing, builds agentd with ASan+UBSan (and libFuzzer targets), and runs every test tier:
# unit (C), integration (the real binary against fake upstreams), clients (official SDKs), fuzz (short runs);
# then the unit tests again under valgrind on a plain build, and the lint.
#   scripts/test.sh            everything
#   scripts/test.sh -R regex   only the ctest tests matching regex (passed to ctest)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc)

./scripts/deps.sh test
./scripts/deps.sh image   # podman, buildah, runc: integration.image builds and runs the OCI image
if [ -f tests/package-lock.json ]; then
  (cd tests && { [ -d node_modules ] && npm ls >/dev/null 2>&1 || npm ci --no-audit --no-fund --loglevel=error; })
fi

./scripts/lint.sh

# Sanitizer build: clang, ASan+UBSan, libFuzzer instrumentation; this is the binary every test tier runs.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
      -DAGENTD_SANITIZE=ON -DAGENTD_FUZZ=ON -DAGENTD_FUZZ_SECONDS="${AGENTD_FUZZ_SECONDS:-15}" >/dev/null
cmake --build build-asan -j"$jobs"

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
(cd build-asan && ctest --output-on-failure -j"$jobs" --timeout 600 "$@")

if [ $# -eq 0 ]; then
  # The quick start's release build (gcc -O2 warns about things -O0 and clang do not): it must compile.
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAGENTD_TESTS=OFF >/dev/null
  cmake --build build -j"$jobs"
  # Plain gcc debug build (-Werror with gcc's warnings too), unit tests under valgrind.
  cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build-valgrind -j"$jobs"
  fail=0
  for t in build-valgrind/tests/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    case "$t" in *.log) continue ;; esac
    if ! valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
         --show-leak-kinds=definite,indirect "$t" >"$t.valgrind.log" 2>&1; then
      echo "valgrind: $t failed"; tail -40 "$t.valgrind.log"; fail=1
    fi
  done
  [ $fail -eq 0 ] && echo "valgrind: all unit tests clean"
  exit $fail
fi
