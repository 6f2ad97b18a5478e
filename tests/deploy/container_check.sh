#!/usr/bin/env bash
# deploy/container/Containerfile, checked without building it (no container engine runs
# here): two Debian 12 slim stages; the runtime stage installs no build tools, runs as a
# non-root user, ships the console and has a health check; and its package list covers
# every shared library the built binary links (each library's Debian package is one of
# the listed packages or one of their dependencies).
set -euo pipefail
root=$1 binary=$2
cf=$root/deploy/container/Containerfile
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
[ "$(grep -c '^FROM debian:12-slim' "$cf")" = 2 ] || bad "two stages FROM debian:12-slim"
grep -q '^FROM debian:12-slim AS build$' "$cf" || bad "the first stage is the build stage"
runtime=$(awk '/^FROM /{n++} n==2' "$cf")
# the runtime stage's packages: the words after "install ... --no-install-recommends"
pkgs=$(printf '%s\n' "$runtime" | sed -n '/apt-get install/,/&&/p' | tr ' \\' '\n\n' |
       grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|rm|groupadd|useradd)$' | sort -u)
[ -n "$pkgs" ] || bad "no runtime packages found"
grep -Eq -- '-dev$|^(build-essential|cmake|gcc|pkg-config)$' <<<"$pkgs" && bad "build tools in the runtime stage: $pkgs"
grep -Eq '^USER [1-9][0-9]*(:[1-9][0-9]*)?$' <<<"$runtime" || bad "a numeric non-root USER"
grep -q '^HEALTHCHECK ' <<<"$runtime" || bad "a HEALTHCHECK"
grep -q '/healthz' <<<"$runtime" || bad "the health check asks /healthz"
grep -q '^COPY web/ /usr/share/qdb-control/web/$' <<<"$runtime" || bad "the console's files"
grep -q 'QDB_WEB_DIR=/usr/share/qdb-control/web' <<<"$runtime" || bad "QDB_WEB_DIR points at them"
grep -q '^ENTRYPOINT \["/usr/bin/qdb-control"\]$' <<<"$runtime" || bad "the entrypoint is the server"
for p in $pkgs; do apt-cache show "$p" >/dev/null 2>&1 || bad "no Debian package $p"; done
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
            --no-replaces --no-enhances $pkgs 2>/dev/null | grep -E '^[a-z0-9]' | sort -u)
# what the binary links (its NEEDED entries and theirs), minus the sanitizers of a test
# build and what only they pull in, and the C library itself
declare -A where=() seen=()
while read -r name _ file _; do where[$name]=$file; done < <(ldd "$binary" | awk '/=>/ && $3 ~ /^\//')
libs=() queue=("$binary")
while [ ${#queue[@]} -gt 0 ]; do
  f=${queue[0]}; queue=("${queue[@]:1}")
  for n in $(readelf -d "$f" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    case "$n" in libasan*|libubsan*|libtsan*) continue ;; esac
    [ -n "${seen[$n]:-}" ] && continue
    seen[$n]=1
    [ -n "${where[$n]:-}" ] && { libs+=("${where[$n]}"); queue+=("${where[$n]}"); }
  done
done
[ ${#libs[@]} -gt 5 ] || bad "ldd found too few libraries in $binary"
for lib in "${libs[@]}"; do
  pkg=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -1 | cut -d: -f1) || pkg=
  case "$pkg" in libasan*|libubsan*|libtsan*|libc6|libgcc-s1|"") continue ;; esac
  grep -qx "$pkg" <<<"$closure" || bad "$(basename "$lib") comes from $pkg, which the runtime stage does not install"
done
[ $fail = 0 ] && echo "Containerfile: $(printf '%s\n' "$pkgs" | wc -l) runtime packages cover ${#libs[@]} linked libraries"
exit $fail
