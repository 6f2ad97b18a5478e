# Shared set-up for deploy/local/run.sh and tests/run.sh: packages, build, and an embedded
# PostgreSQL cluster in a folder. Source it; every function exits on failure.
# shellcheck shell=bash

QDB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin

# Debian packages the product needs to build and run.
QDB_PACKAGES=(build-essential cmake pkg-config libmicrohttpd-dev libgnutls28-dev libjansson-dev libpq-dev
  libcurl4-openssl-dev librdkafka-dev libssl-dev libjwt-dev postgresql-15
  postgresql-client-15 openssl ca-certificates curl procps)
# What the test suite needs on top: promtool, headless Chromium, cppcheck, yamllint and
# systemd-analyze for deploy/, readelf for the image check (Node.js 20 and
# npm come with the machine).
QDB_TEST_PACKAGES=(prometheus chromium cppcheck clang libclang-rt-14-dev yamllint systemd binutils)

qdb_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
qdb_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else qdb_die "need root to run: $*"; fi
}

# qdb_install_packages NAME...: apt-get install the ones that are missing.
qdb_install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  qdb_log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # Debian's postgresql package starts a system cluster on 5432; we run our own, so stop it.
  if printf '%s\n' "${missing[@]}" | grep -q '^postgresql-15$' && command -v pg_ctlcluster >/dev/null; then
    as_root pg_ctlcluster 15 main stop 2>/dev/null || true
  fi
}

# qdb_build DIR [cmake args...]: configure and build into DIR.
qdb_build() {
  local dir=$1; shift
  qdb_log "building in ${dir#"$QDB_ROOT"/}"
  cmake -S "$QDB_ROOT" -B "$dir" "$@" >/dev/null || qdb_die "cmake configure failed"
  cmake --build "$dir" -j"$(nproc)" >/dev/null || { cmake --build "$dir" -j1 2>&1 | tail -40; qdb_die "build failed"; }
}

# Run a PostgreSQL tool as the cluster's owner: the postgres user when we are root
# (initdb refuses root), else ourselves.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# qdb_pg_start DATADIR PORT: create the cluster the first time, then start it on
# 127.0.0.1:PORT with its socket inside DATADIR. Trust auth on loopback only.
qdb_pg_start() {
  local data=$1 port=$2
  mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$data"
    # postgres must be able to reach the folder through every parent
    local d; d=$(dirname "$data")
    while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
  fi
  chmod 700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    qdb_log "creating PostgreSQL cluster in ${data#"$QDB_ROOT"/}"
    pg_as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >/dev/null || qdb_die "initdb failed"
  fi
  if pg_as_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    return 0
  fi
  pg_as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=300 -c fsync=${QDB_PG_FSYNC:-on} ${QDB_PG_OPTS:-}" \
    start >/dev/null || { tail -20 "$data/server.log" >&2; qdb_die "PostgreSQL did not start"; }
}

qdb_pg_stop() {
  local data=$1
  [ -f "$data/postmaster.pid" ] || return 0
  pg_as_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

# qdb_pg_createdb PORT NAME: create the database if it does not exist.
qdb_pg_createdb() {
  local port=$1 name=$2
  if ! psql -h 127.0.0.1 -p "$port" -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'" postgres | grep -q 1; then
    createdb -h 127.0.0.1 -p "$port" -U postgres "$name" || qdb_die "createdb $name failed"
  fi
}

# qdb_free_port: a TCP port that nothing listens on right now.
# (a random high port that refuses a connection; no python needed on a fresh machine)
# Below the kernel's ephemeral range, where outgoing connections take their local ports
# (a port such a connection holds refuses nothing, yet cannot be listened on).
qdb_free_port() {
  local p low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$low" -gt 12000 ] 2>/dev/null || low=32768
  for _ in $(seq 100); do
    p=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  qdb_die "no free TCP port found"
}
