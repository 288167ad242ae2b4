#!/usr/bin/env bash
# House rules a compiler does not check (CONTRIBUTING.md): the heap only through common/alloc.h, no unbounded
# string functions, no atoi-style parsing that ignores errors; and the include layering (scripts/check-includes.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
banned='\b(malloc|calloc|realloc|free|strdup|strndup|strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll|strtok)\s*\('
# alloc.c is the one place that may call the libc allocator.
hits=$(grep -RnP "$banned" src --include='*.c' --include='*.h' | grep -v '^src/common/alloc\.c:' \
       | grep -vP '^\S+:\d+:\s*(/\*|\*)' | grep -vP '//\s*lint:allow' || true)
if [ -n "$hits" ]; then
  echo "lint: banned functions (use xmalloc/xfree/buf_*/str_* from src/common):"
  echo "$hits"
  exit 1
fi
# Layering: no include cycle, no upward include (DESIGN §2).
scripts/check-includes.sh
echo "lint: ok"
