#!/usr/bin/env bash
# Regenerates the settings table in docs/configuration.md from the binary's own schema
# (`agentd config describe`), so the reference never drifts from the code. A test fails when it is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${AGENTD_BIN:-build/agentd}
doc=docs/configuration.md
table=$("$bin" config describe)
awk -v table="$table" '
  /<!-- settings:begin -->/ { print; print table; skip=1; next }
  /<!-- settings:end -->/ { skip=0 }
  !skip { print }
' "$doc" > "$doc.tmp"
mv "$doc.tmp" "$doc"
echo "updated $doc"
