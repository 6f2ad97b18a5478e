#!/usr/bin/env bash
# PostgreSQL servers for the DR tests and bench/dr.sh, on loopback ports, each in its own
# folder under ROOT (which the caller removes):
#   dr_pg.sh primary ROOT NAME PORT            initdb --data-checksums (pg_rewind needs them
#                                              or wal_log_hints) and start, keeping commit
#                                              timestamps (a drill's RPO reads them)
#   dr_pg.sh standby ROOT NAME PORT PRIMARY    pg_basebackup -R from 127.0.0.1:PRIMARY, start
#   dr_pg.sh stop ROOT NAME                    immediate stop (a crashed primary)
#   dr_pg.sh stopall ROOT                      stop every server under ROOT
# The port is given on the command line (postmaster.opts keeps it), never in a config
# file: pg_rewind copies the new primary's configuration over the old one's.
set -euo pipefail
# shellcheck source=../../deploy/local/lib.sh
source "$(dirname "$0")/../../deploy/local/lib.sh"
cmd=$1 root=$2

prepare_root() {
  mkdir -p "$root"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$root"
    local d=$root
    while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
  fi
}

start() {
  local data=$1 port=$2
  pg_as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$data.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off -c track_commit_timestamp=on -c max_connections=60 -c wal_keep_size=256MB" \
    start >/dev/null || { tail -20 "$data.log" >&2; exit 1; }
}

case $cmd in
  primary)
    name=$3 port=$4
    prepare_root
    pg_as_owner "$PG_BIN/initdb" -D "$root/$name" -U postgres --auth=trust -E UTF8 \
      --locale=C.UTF-8 --data-checksums --no-sync >/dev/null
    start "$root/$name" "$port"
    ;;
  standby)
    name=$3 port=$4 primary=$5
    prepare_root
    pg_as_owner "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres -D "$root/$name" \
      -R -X stream -c fast -w 2>/dev/null
    start "$root/$name" "$port"
    ;;
  stop)
    name=$3
    [ -f "$root/$name/postmaster.pid" ] || exit 0
    pg_as_owner "$PG_BIN/pg_ctl" -D "$root/$name" -m immediate -w stop >/dev/null
    ;;
  stopall)
    for d in "$root"/*/; do
      [ -f "$d/postmaster.pid" ] && pg_as_owner "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    true
    ;;
  *) echo "usage: dr_pg.sh primary|standby|stop|stopall ROOT ..." >&2; exit 2 ;;
esac
