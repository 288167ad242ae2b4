#!/usr/bin/env bash
# Installs the Debian packages agentd needs, and only those that are missing.
#   scripts/deps.sh build   libraries and tools to build agentd (release)
#   scripts/deps.sh test    + what the test suite runs (clang/libFuzzer, promtool, node, bubblewrap)
#   scripts/deps.sh bench   + nginx, wrk, hyperfine, bubblewrap for bench/
#   scripts/deps.sh image   + buildah, podman (runc: crun refuses hybrid cgroups), and the packages the image
#                           takes its libraries and interpreters from (scripts/image.sh)
set -euo pipefail
tier=${1:-build}

pkgs=(build-essential cmake pkg-config libuv1-dev libhttp-parser-dev libcurl4-openssl-dev
      libcjson-dev libsqlite3-dev libpq-dev libyaml-dev libseccomp-dev libssl-dev zlib1g-dev ca-certificates)
case "$tier" in
  build) ;;
  test)  pkgs+=(clang libclang-rt-14-dev llvm prometheus nodejs curl python3 procps iproute2 valgrind haproxy postgresql-15) ;;
  bench) pkgs+=(clang libclang-rt-14-dev prometheus nodejs curl python3 procps nginx wrk hyperfine bubblewrap) ;;
  image) pkgs+=(buildah podman runc uidmap slirp4netns fuse-overlayfs binutils curl nodejs python3 dash libcurl4) ;;
  *) echo "usage: $0 build|test|bench|image" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node may come from a non-Debian install; accept any node >= 18 already on PATH.
if command -v node >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d keeps packaged daemons (nginx, prometheus) from being started by their postinst.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
