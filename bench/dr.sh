#!/usr/bin/env bash
# DR benchmark: a failover of a pgbench-loaded pair (a primary with a streaming standby,
# pg_basebackup -R, on loopback ports, tests/integration/dr_pg.sh) through the service, beside
# the same steps run by hand with psql and pg_ctl promote on a second pair built the same
# way, under the same load, in the same run:
#   service  POST /api/v1/databases/{id}/failover -> dr.failover: standby in recovery and
#            its lag, fence the old primary (default_transaction_read_only, client sessions
#            ended), pg_promote(wait => true), a write on the new primary, primary and standby
#            swapped in the inventory. Its RTO is the service's own record (request -> first
#            write accepted, on the state store's clock); the client's wall time to the job's
#            end (which adds the inventory swap and the 20 ms polling) is printed beside it.
#   by hand  psql: pg_is_in_recovery and the lag on the standby; ALTER SYSTEM SET
#            default_transaction_read_only, pg_reload_conf and pg_terminate_backend on the
#            primary; pg_ctl promote -w; psql: a write (pg_current_xact_id) on the new primary;
#            timed from the first psql to the write.
# RUNS pairs of each (default 3), the median of each side, and the ratio service / by hand.
# Targets: ratio <= 1.2, and the achieved RTO under the 30 s of 7.3.
#
#   bench/dr.sh        SCALE=10 (pgbench scale) RUNS=3 CLIENTS=4 (pgbench clients)
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"

SCALE=${SCALE:-10}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-4}
DRPG="$QDB_ROOT/tests/integration/dr_pg.sh"

qdb_install_packages "${QDB_PACKAGES[@]}"

WORK=$(mktemp -d /tmp/qdb-bench-dr-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port)
HTTP_PORT=$(qdb_free_port)
SERVER_PID= LOAD_PID=
cleanup() {
  local rc=$?
  [ -n "$LOAD_PID" ] && { kill "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null; }
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  bash "$DRPG" stopall "$WORK/pairs" 2>/dev/null || true
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

now() { date +%s.%N; }
sub() { echo "$1 $2" | awk '{printf "%.3f\n", $1 - $2}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
q() { psql -h 127.0.0.1 -p "$1" -U postgres -d qdb_read_store -qAtX -v ON_ERROR_STOP=1 -c "$2"; }

# pair NAME: a primary with pgbench data and a streaming standby; echoes "primary standby"
pair() {
  local pp ps
  pp=$(qdb_free_port); ps=$(qdb_free_port)
  while [ "$ps" = "$pp" ]; do ps=$(qdb_free_port); done
  bash "$DRPG" primary "$WORK/pairs" "$1-p" "$pp"
  psql -h 127.0.0.1 -p "$pp" -U postgres -qAtXc "CREATE DATABASE qdb_read_store" postgres
  "$PG_BIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$pp" -U postgres qdb_read_store >/dev/null 2>&1
  bash "$DRPG" standby "$WORK/pairs" "$1-s" "$ps" "$pp"
  for _ in $(seq 1 100); do
    [ "$(psql -h 127.0.0.1 -p "$pp" -U postgres -qAtXc "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" postgres)" -ge 1 ] && break
    sleep 0.1
  done
  echo "$pp $ps"
}

# load PORT: pgbench on the primary until it is killed or its sessions are ended
load() {
  "$PG_BIN/pgbench" -n -c "$CLIENTS" -j 2 -T 3600 -h 127.0.0.1 -p "$1" -U postgres qdb_read_store >/dev/null 2>&1 &
  LOAD_PID=$!
  # until it has committed for a while
  local start; start=$(q "$1" "SELECT count(*) FROM pgbench_history")
  for _ in $(seq 1 100); do
    [ "$(q "$1" "SELECT count(*) FROM pgbench_history")" -gt $((start + 200)) ] && break
    sleep 0.05
  done
}
unload() { kill "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=; }

qdb_build "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF ${QDB_BENCH_CMAKE_ARGS:-}
qdb_pg_start "$WORK/pgdata" "$PG_PORT"
qdb_pg_createdb "$PG_PORT" dr_state
openssl rand -hex 32 > "$WORK/hmac" && chmod 600 "$WORK/hmac"
QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/dr_state QDB_LISTEN=127.0.0.1:$HTTP_PORT \
  QDB_AUTH_MODE=dev QDB_AUDIT_HMAC_KEY_FILE=$WORK/hmac QDB_LOG_LEVEL=${QDB_LOG_LEVEL:-warn} \
  QDB_BACKUP_STATUS_CRON=off QDB_DR_DRILL_CRON=off QDB_WEB_DIR=$QDB_ROOT/web \
  "$WORK/build/qdb-control" serve 2>"$WORK/server.log" &
SERVER_PID=$!
BASE=http://127.0.0.1:$HTTP_PORT
for _ in $(seq 1 100); do curl -fs "$BASE/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
TOKEN=$(curl -fs -H 'Content-Type: application/json' -d '{"sub":"bench","role":"admin"}' \
  "$BASE/dev-issuer/token" | jq -r .access_token)
api() { curl -fs -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
DB_ID=$(api "$BASE/api/v1/databases?environment=production" | jq -r '.items[] | select(.name == "qdb_read_store") | .id')

: > "$WORK/service" ; : > "$WORK/wall" ; : > "$WORK/hand"
for run in $(seq 1 "$RUNS"); do
  # ---- through the service ----
  read -r PP PS < <(pair "svc$run")
  api -X PATCH -d "{\"primary\":{\"host\":\"127.0.0.1\",\"port\":$PP,\"admin_user\":\"postgres\"},\"standby\":{\"host\":\"127.0.0.1\",\"port\":$PS,\"admin_user\":\"postgres\"}}" \
    "$BASE/api/v1/databases/$DB_ID" >/dev/null
  load "$PP"
  T0=$(now)
  JOB=$(api -X POST "$BASE/api/v1/databases/$DB_ID/failover" | jq -r .id)
  while :; do
    ST=$(api "$BASE/api/v1/jobs/$JOB" | jq -r .state)
    case $ST in succeeded) break ;; failed|cancelled) api "$BASE/api/v1/jobs/$JOB" | jq .errors >&2; exit 1 ;; esac
    sleep 0.02
  done
  T1=$(now)
  unload
  FO=$(api "$BASE/api/v1/dr/failovers?database_id=$DB_ID&limit=1" | jq '.items[0]')
  RTO=$(echo "$FO" | jq -r .rto_seconds)
  [ "$(q "$PS" "SELECT pg_is_in_recovery()")" = f ] || qdb_die "the service's standby was not promoted"
  echo "$RTO" >> "$WORK/service"
  sub "$T1" "$T0" >> "$WORK/wall"
  printf 'run %d  service: RTO %.3f s (request -> first write), %.3f s to the job end, lost %s bytes\n' \
    "$run" "$RTO" "$(sub "$T1" "$T0")" "$(echo "$FO" | jq -r .lost_bytes)"

  # ---- by hand ----
  read -r HP HS < <(pair "hand$run")
  load "$HP"
  T0=$(now)
  [ "$(q "$HS" "SELECT pg_is_in_recovery()")" = t ] || qdb_die "the standby is not in recovery"
  q "$HS" "SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()" >/dev/null
  q "$HP" "ALTER SYSTEM SET default_transaction_read_only = on" >/dev/null
  q "$HP" "SELECT pg_reload_conf()" >/dev/null
  q "$HP" "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'" >/dev/null
  pg_as_owner "$PG_BIN/pg_ctl" -D "$WORK/pairs/hand$run-s" -w -t 60 promote >/dev/null
  q "$HS" "SELECT pg_current_xact_id()" >/dev/null
  T1=$(now)
  unload
  sub "$T1" "$T0" >> "$WORK/hand"
  printf 'run %d  by hand: %.3f s (first psql -> first write)\n' "$run" "$(sub "$T1" "$T0")"
  bash "$DRPG" stopall "$WORK/pairs"
  rm -rf "$WORK/pairs"
done

SVC=$(median < "$WORK/service")
WALL=$(median < "$WORK/wall")
HAND=$(median < "$WORK/hand")
RATIO=$(echo "$SVC $HAND" | awk '{printf "%.2f", $1 / $2}')
WRATIO=$(echo "$WALL $HAND" | awk '{printf "%.2f", $1 / $2}')
echo
echo "failover of a pgbench-loaded pair (scale $SCALE, $CLIENTS clients), median of $RUNS runs, $(nproc) cores (shared)"
printf '  service RTO (request -> first write)   %8.3f s\n' "$SVC"
printf '  service, request -> job succeeded      %8.3f s\n' "$WALL"
printf '  by hand (psql + pg_ctl promote)        %8.3f s\n' "$HAND"
printf '  ratio service RTO / by hand            %8s   (target <= 1.2)\n' "$RATIO"
printf '  ratio job end / by hand                %8s\n' "$WRATIO"
printf '  achieved RTO under 30 s (7.3)          %8s\n' "$(echo "$SVC" | awk '{print ($1 < 30) ? "yes" : "no"}')"
