#!/usr/bin/env bash
# Builds agentd's OCI image without pulling a base image: a root filesystem assembled from Debian packages
# (apt-get download + dpkg-deb, no maintainer scripts run, no shell or package manager kept) plus the agentd
# binary, committed with buildah into the local container storage that podman reads.
#
#   scripts/image.sh                 full image: agentd + the sandbox's interpreters (python3, sh, node)
#   scripts/image.sh --minimal       agentd, the libraries it links and dlopens (libcurl), CA certificates
#   options: --binary PATH   the agentd to pack (default: build a Release one in build/)
#            --tag NAME      image name (default localhost/agentd:latest, localhost/agentd:minimal)
#            --cache DIR     downloaded .debs and the assembled root (default build-image/; AGENTD_IMAGE_CACHE)
#            --oci FILE      also write the image as an OCI archive (podman load / skopeo copy oci-archive:FILE)
#            --rootfs-only   assemble and check the root filesystem, do not commit an image
# Prints the image id, its size, and the root's package list under the cache directory. See docs/image.md.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)

variant=full binary= tag= oci= rootfs_only=0
cache=${AGENTD_IMAGE_CACHE:-$src/build-image}
while [ $# -gt 0 ]; do
  case "$1" in
    --minimal) variant=minimal ;;
    --full) variant=full ;;
    --binary) binary=$2; shift ;;
    --tag) tag=$2; shift ;;
    --cache) cache=$2; shift ;;
    --oci) oci=$2; shift ;;
    --rootfs-only) rootfs_only=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "image: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$tag" ] || { [ $variant = full ] && tag=localhost/agentd:latest || tag=localhost/agentd:minimal; }
die() { echo "image: $*" >&2; exit 1; }
for t in apt-get apt-cache dpkg-deb readelf ldconfig tar; do
  command -v $t >/dev/null || die "$t is missing (scripts/deps.sh image)"
done
[ $rootfs_only = 1 ] || command -v buildah >/dev/null || die "buildah is missing (scripts/deps.sh image)"
t0=$(date +%s.%N)

# ---- the binary ----
if [ -z "$binary" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAGENTD_TESTS=OFF >/dev/null
  cmake --build build -j"$(nproc)" --target agentd >/dev/null
  binary=build/agentd
fi
[ -x "$binary" ] || die "$binary is not an executable"
binary=$(realpath "$binary")

mkdir -p "$cache/debs"
cache=$(realpath "$cache")
root=$cache/rootfs-$variant
arch=$(dpkg --print-architecture)

# ---- which packages: the libraries agentd links (its DT_NEEDED, mapped to their Debian packages on this host),
# libcurl (dlopened on first https use), CA certificates, and in the full image the interpreters the sandbox
# runs (/usr/bin/python3, /bin/sh, /usr/bin/node: src/sandbox/sbx_contain.c). Their Depends are followed,
# except those only maintainer scripts or an interactive system use (nothing runs them here).
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
# (no early-exiting readers in pipes: under pipefail a writer killed by SIGPIPE would fail the build at random)
host_lib() { ldconfig -p | awk -v s="$1" '$1 == s && /x86-64|AArch64|64bit/ && !f { print $NF; f = 1 }'; }
owner() { # package owning a host file (usrmerge: registered under /lib or /usr/lib)
  local p=$1 o
  for q in "$p" "/usr$p" "${p#/usr}"; do
    o=$(dpkg-query -S "$q" 2>/dev/null | sed -n '1s/:.*//p') && [ -n "$o" ] && { echo "$o"; return; }
  done
  die "no Debian package owns $p"
}
seeds=()
for so in $(needed "$binary") libcurl.so.4 libgcc_s.so.1; do
  p=$(host_lib "$so"); [ -n "$p" ] || die "$so (needed by agentd) is not installed on this host"
  seeds+=("$(owner "$p")")
done
seeds+=(ca-certificates)
[ $variant = full ] && seeds+=(dash python3 nodejs)
skip=" dpkg debconf debconf-2.0 perl-base tar coreutils debianutils base-files init-system-helpers usrmerge
 sensible-utils install-info tzdata readline-common openssl libpam-runtime libpam-modules lsb-base adduser
 passwd login mount util-linux sysvinit-utils python3-distutils python3-lib2to3 "

# Resolved once per seed list and apt index (kept in the cache: apt-cache is slow on a busy machine), by rounds of
# one `apt-cache madison` and one `apt-cache show` each.
key=$( { printf '%s\n' "${seeds[@]}" "$skip"; ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null; } | sha256sum | cut -c1-16)
resolved=$cache/resolved-$variant-$key.txt
declare -A want=()   # package -> version
if [ -s "$resolved" ]; then
  while read -r p v; do want[$p]=$v; done <"$resolved"
else
  queue=("${seeds[@]}")
  while [ ${#queue[@]} -gt 0 ]; do
    declare -A ver=()
    names=$(printf '%s\n' "${queue[@]}" | tr '|' '\n' | sed 's/(.*)//; s/:any//; s/ //g' | sort -u)
    while IFS='|' read -r n v _; do
      n=${n// /}; v=${v// /}; [ -n "$n" ] && [ -z "${ver[$n]:-}" ] && ver[$n]=$v
    done < <(apt-cache madison $names 2>/dev/null)
    picks=()
    for dep in "${queue[@]}"; do
      # "a (>= 1) | b": the first alternative that exists in the archive and is not skipped
      pick=
      IFS='|' read -ra alts <<<"$dep"
      for a in "${alts[@]}"; do
        a=$(echo "$a" | sed 's/(.*)//; s/:any//; s/ //g')
        case "$skip" in *" $a "*) pick=-; break ;; esac
        [ -n "${want[$a]:-}" ] && { pick=-; break; }
        [ -n "${ver[$a]:-}" ] && { pick=$a; want[$a]=${ver[$a]}; picks+=("$a=${ver[$a]}"); break; }
      done
      [ -n "$pick" ] || die "no package in the archive provides '$dep' (apt-get update?)"
    done
    unset ver
    queue=()
    [ ${#picks[@]} -gt 0 ] || break
    while IFS= read -r d; do
      d=$(echo "$d" | sed 's/^ *//; s/ *$//'); [ -n "$d" ] && queue+=("$d")
    done < <(apt-cache show "${picks[@]}" | awk '/^(Pre-)?Depends:/ { sub(/^[^:]*: /, ""); print }' | tr ',' '\n')
  done
  for p in "${!want[@]}"; do echo "$p ${want[$p]}"; done | sort >"$resolved.tmp" && mv "$resolved.tmp" "$resolved"
fi

# ---- download (cached across runs: the file name carries the version) and unpack ----
debs=() missing=()
for p in $(printf '%s\n' "${!want[@]}" | sort); do
  v=${want[$p]}
  f=$(compgen -G "$cache/debs/${p}_${v//:/%3a}_*.deb" | sed -n 1p || true)
  [ -n "$f" ] || missing+=("$p=$v")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image: downloading ${#missing[@]} packages" >&2
  (cd "$cache/debs" && apt-get download -qq "${missing[@]}" >/dev/null) || die "apt-get download failed"
fi
rm -rf "$root"; mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
# merged /usr, as Debian 12 installs it: the packages' /lib and /bin land in /usr
for d in bin sbin lib lib64; do ln -s usr/$d "$root/$d"; done
: >"$cache/packages-$variant.txt"
for p in $(printf '%s\n' "${!want[@]}" | sort); do
  v=${want[$p]}
  f=$(compgen -G "$cache/debs/${p}_${v//:/%3a}_*.deb" | sed -n 1p)
  dpkg-deb --fsys-tarfile "$f" | tar -x --keep-directory-symlink -C "$root"
  echo "$p $v" >>"$cache/packages-$variant.txt"
done

# ---- trim what nothing reads at run time (keep each package's copyright) ----
find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/{man,info,lintian,locale,bug,menu,pixmaps,applications} "$root"/usr/share/doc-base \
       "$root"/usr/lib/*/gconv "$root"/usr/share/bash-completion "$root"/etc/cron.* "$root"/etc/init.d \
       "$root"/etc/logrotate.d "$root"/usr/lib/systemd "$root"/usr/share/gcc "$root"/usr/share/gdb \
       "$root"/var/lib/dpkg "$root"/usr/share/debconf

# ---- what dpkg's maintainer scripts would have made ----
install -D -m 0755 "$binary" "$root/usr/bin/agentd"
mkdir -p "$root/etc/ssl/certs" "$root/usr/lib/ssl" "$root/tmp" "$root/app/cache" "$root/app/config"
chmod 1777 "$root/tmp"
# the bundle update-ca-certificates writes, and OpenSSL's default paths (SSL_CTX_set_default_verify_paths)
find "$root/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat \
  >"$root/etc/ssl/certs/ca-certificates.crt"
[ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "no CA certificates in the ca-certificates package"
ln -sfn /etc/ssl/certs "$root/usr/lib/ssl/certs"
ln -sfn /etc/ssl/certs/ca-certificates.crt "$root/usr/lib/ssl/cert.pem"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
agentd:x:1000:1000:agentd:/app:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
agentd:x:1000:
fsgroup:x:2000:
nogroup:x:65534:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
printf 'include /etc/ld.so.conf.d/*.conf\n' >"$root/etc/ld.so.conf"
[ $variant = full ] && [ ! -e "$root/bin/sh" ] && ln -s dash "$root/usr/bin/sh"
chown -R 1000:1000 "$root/app"
chmod 0775 "$root/app/cache"
# The loader's cache (the loader finds the multiarch directories without it, just slower).
if [ "$(id -u)" = 0 ]; then ldconfig -r "$root" 2>/dev/null || true; fi

# ---- every ELF file's DT_NEEDED must be in the root: a missing library fails here, not in production ----
multi=$(basename "$(dirname "$(host_lib libc.so.6)")")
bad=0
while IFS= read -r -d '' f; do
  magic=; read -r -N4 magic <"$f" 2>/dev/null || true
  [ "$magic" = $'\x7fELF' ] || continue
  for so in $(needed "$f"); do
    [ -e "$root/usr/lib/$multi/$so" ] || [ -e "$root/usr/lib/$so" ] || [ -e "$root/usr/lib64/$so" ] || {
      echo "image: ${f#$root} needs $so, which no package in the image provides" >&2; bad=1; }
  done
done < <(find "$root/usr" -type f \( -perm -u+x -o -name '*.so*' \) -print0)
[ $bad = 0 ] || die "the root filesystem is incomplete"
rootsize=$(du -sb "$root" | cut -f1)
echo "image: root filesystem $root: $(wc -l <"$cache/packages-$variant.txt") packages, $((rootsize / 1024 / 1024)) MiB" >&2
[ $rootfs_only = 1 ] && exit 0

# ---- pack: an image from scratch, the root copied in with its owners, the run-time settings ----
ctr=$(buildah from --quiet scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
tar -C "$root" -c --numeric-owner . | tar -C "$mnt" -x --numeric-owner -p
buildah umount "$ctr" >/dev/null
version=$("$root/usr/bin/agentd" version 2>/dev/null | awk 'NR == 1 { print $2 }' || true)
buildah config \
  --user 1000:1000 --workingdir /app \
  --entrypoint '["/usr/bin/agentd"]' --cmd serve \
  --env AGENTD_SERVER_DATA_DIR=/app/cache --env HOME=/app --env PYTHONDONTWRITEBYTECODE=1 \
  --port 8000/tcp --port 8080/tcp --volume /app/cache --stop-signal SIGTERM \
  --label org.opencontainers.image.title=agentd \
  --label org.opencontainers.image.version="${version:-unknown}" \
  --label org.opencontainers.image.revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --label io.agentd.variant=$variant \
  "$ctr"
id=$(buildah commit --quiet --rm "$ctr" "$tag")
trap - EXIT
[ -z "$oci" ] || buildah push --quiet "$tag" "oci-archive:$oci:$tag" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$tag" 2>/dev/null || echo $rootsize)
gz=$(tar -C "$root" -c --numeric-owner . | gzip -6 | wc -c)
t1=$(date +%s.%N)
printf 'image: %s %s (%s) size %d MiB uncompressed, %d MiB gzip layer; %.1fs\n' "$tag" "${id:0:12}" "$variant" \
  $(( ${size:-0} / 1024 / 1024 )) $(( gz / 1024 / 1024 )) "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
echo "$id"
