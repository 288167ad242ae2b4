#!/usr/bin/env bash
# Quick start: install what is missing, build a release agentd, run it on its embedded defaults
# (API on :8000, probes and metrics on :8080, SQLite and state in ./data). Extra arguments go to `agentd serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAGENTD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"
exec ./build/agentd serve "$@"
