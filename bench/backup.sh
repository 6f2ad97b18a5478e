#!/usr/bin/env bash
# Backup benchmark: the backup room (server/backup/) beside the same work done by hand, in
# the same run, on one pgbench database of scale SCALE (default 50, about 750 MB) on its own
# PostgreSQL server:
#   base    POST /api/v1/databases/{id}/backups (backup.base: pg_basebackup -Ft -z -X stream
#           --manifest-checksums=SHA256, then the SHA-256 of every file) from the request to
#           the job's end, beside the same pg_basebackup command run by hand (no checksums);
#   verify  POST /api/v1/backups/{id}/verify (checksums while it unpacks, pg_verifybackup,
#           a temporary PostgreSQL started from it, row counts beside pg_amcheck, stop,
#           remove), beside a hand-run unpack + start + count of pgbench_accounts + stop +
#           remove;
# then the ratios service / by hand (targets <= 1.10). The service's verification does more
# than the hand-run one (checksums, pg_verifybackup, pg_amcheck): its job log, printed step
# by step at the end, says how long each took, and the ratio is printed as measured.
# ROUNDS (default 3) runs of each side, alternating, each side's fastest counted: a 10 s
# pg_basebackup moves by 0.5 s from run to run on a shared machine.
#
#   bench/backup.sh        SCALE=50; set SCALE to change
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"

SCALE=${SCALE:-50}
PG_BIN=/usr/lib/postgresql/15/bin

qdb_install_packages "${QDB_PACKAGES[@]}"

WORK=$(mktemp -d /tmp/qdb-bench-backup-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port)
SRC_PORT=$(qdb_free_port)
HTTP_PORT=$(qdb_free_port)
SERVER_PID=
cleanup() {
  local rc=$?
  [ -n "${EVENTS_PID:-}" ] && kill "$EVENTS_PID" 2>/dev/null
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -f "$WORK/hand/data/postmaster.pid" ] && qdb_pg_stop "$WORK/hand/data"
  qdb_pg_stop "$WORK/srcdata"
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

qdb_build "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF ${QDB_BENCH_CMAKE_ARGS:-}
qdb_pg_start "$WORK/pgdata" "$PG_PORT"
qdb_pg_start "$WORK/srcdata" "$SRC_PORT"
qdb_pg_createdb "$SRC_PORT" bench_src
qdb_pg_createdb "$PG_PORT" bk_state
qdb_log "pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$SRC_PORT" -U postgres bench_src >/dev/null 2>&1
ROWS=$((SCALE * 100000))

openssl rand -hex 32 > "$WORK/hmac" && chmod 600 "$WORK/hmac"
mkdir -p "$WORK/backups" && chmod 711 "$WORK/backups"
QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/bk_state QDB_LISTEN=127.0.0.1:$HTTP_PORT \
  QDB_AUTH_MODE=dev QDB_AUDIT_HMAC_KEY_FILE=$WORK/hmac QDB_LOG_LEVEL=${QDB_LOG_LEVEL:-warn} \
  QDB_BACKUP_DIR=$WORK/backups QDB_BACKUP_STATUS_CRON=off QDB_WEB_DIR=$QDB_ROOT/web \
  "$WORK/build/qdb-control" serve 2>"$WORK/server.log" &
SERVER_PID=$!
BASE=http://127.0.0.1:$HTTP_PORT
for _ in $(seq 1 100); do curl -fs "$BASE/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
TOKEN=$(curl -fs -H 'Content-Type: application/json' -d '{"sub":"bench","role":"admin"}' \
  "$BASE/dev-issuer/token" | jq -r .access_token)
api() { curl -fs -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
DB_ID=$(api -d "{\"environment\":\"development\",\"name\":\"bench_src\",\"storage_initial_gb\":1,\"storage_max_gb\":10,\"primary\":{\"host\":\"127.0.0.1\",\"port\":$SRC_PORT,\"admin_user\":\"postgres\"}}" \
  "$BASE/api/v1/databases" | jq -r .id)
api -d '{"component":"bench","method":"basebackup","environment":"development","database":"bench_src","retention_count":5,"rpo_seconds":86400,"rto_seconds":3600,"tables":["pgbench_accounts"]}' \
  "$BASE/api/v1/backup-policies" >/dev/null

now() { date +%s.%N; }
# The service's job is awaited on its event stream (GET /api/v1/jobs/events through a
# FIFO, a blocking read): polling GET /api/v1/jobs/{id} with curl and jq ten times a second
# took CPU from the very run it timed (the hand-run side waits for its command for free).
mkfifo "$WORK/events"
curl -sN -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/jobs/events" > "$WORK/events" &
EVENTS_PID=$!
exec 3< "$WORK/events"
IFS= read -r -t 10 _ <&3 || qdb_die "no job event stream"
# wait_job ID: until the job's event says it ended (after a "resync", its state is read);
# fails unless it succeeded
wait_job() {
  local line st= re="\"id\": *$1, *\"state\": *\"(succeeded|failed|cancelled)\""
  while [ -z "$st" ] && IFS= read -r -t 3600 line <&3; do
    if [[ $line =~ $re ]]; then
      st=${BASH_REMATCH[1]}
    elif [ "$line" = "event: resync" ]; then
      st=$(api "$BASE/api/v1/jobs/$1" | jq -r '.state | select(test("succeeded|failed|cancelled"))')
    fi
  done
  [ "$st" = succeeded ] && return 0
  api "$BASE/api/v1/jobs/$1" | jq '{state, errors}' >&2
  return 1
}

# The machine's state must be the same for both sides of a pair: a CHECKPOINT on the
# source first (pg_basebackup -c fast waits for one, and the first after pgbench -i writes
# the whole database), and the two sides alternate (service, hand, hand, service, ...) so
# that neither always finds the page cache the other warmed. Each side's figure is its
# fastest of ROUNDS runs.
ROUNDS=${ROUNDS:-3}
checkpoint() { psql -X -qAtc CHECKPOINT -h 127.0.0.1 -p "$SRC_PORT" -U postgres postgres >/dev/null; }
min() { if [ -z "$1" ]; then echo "$2"; else awk -v a="$1" -v b="$2" 'BEGIN { print (b < a) ? b : a }'; fi; }
# job_steps JOB: the job's log as seconds since its first line, for where the time goes
job_steps() {
  api "$BASE/api/v1/jobs/$1/logs?limit=1000" | jq -r '.items[] | "\(.time) \(.message)"' |
    awk '{ cmd = "date -d " $1 " +%s.%N"; cmd | getline t; close(cmd); if (!t0) t0 = t;
           $1 = ""; printf "  %7.2f s %s\n", t - t0, substr($0, 2, 110) }'
}

svc_base() {
  checkpoint
  local t0 t1 job
  t0=$(now)
  job=$(api -d '{"method":"basebackup"}' "$BASE/api/v1/databases/$DB_ID/backups" | jq -r .id)
  wait_job "$job"
  t1=$(now)
  BACKUP_ID=$(api "$BASE/api/v1/jobs/$job" | jq -r .result.backup_id)
  BASE_JOB=$job
  SVC_BASE=$(min "${SVC_BASE:-}" "$(echo "$t1 - $t0" | bc -l)")
}
hand_base() {
  checkpoint
  rm -rf "$WORK/hand/backup"
  local t0 t1
  t0=$(now)
  "$PG_BIN/pg_basebackup" -d "host=127.0.0.1 port=$SRC_PORT user=postgres dbname=postgres sslmode=prefer connect_timeout=10" \
    -D "$WORK/hand/backup" -Ft -z -X stream --manifest-checksums=SHA256 -c fast -w -v 2>/dev/null
  t1=$(now)
  HAND_BASE=$(min "${HAND_BASE:-}" "$(echo "$t1 - $t0" | bc -l)")
}
svc_verify() {
  local t0 t1 job counted
  t0=$(now)
  job=$(api -X POST "$BASE/api/v1/backups/$BACKUP_ID/verify" | jq -r .id)
  wait_job "$job"
  t1=$(now)
  VERIFY_JOB=$job
  SVC_VERIFY=$(min "${SVC_VERIFY:-}" "$(echo "$t1 - $t0" | bc -l)")
  counted=$(api "$BASE/api/v1/backups/$BACKUP_ID" | jq -r '.verifications[0].checks.row_counts["public.pgbench_accounts"]')
  [ "$counted" = "$ROWS" ] || qdb_die "the service counted $counted accounts, want $ROWS"
}
# The steps the issue names, as the PostgreSQL documentation gives them (25.3.4, restoring a
# base backup: unpack base.tar and pg_wal.tar, start the server) plus the count.
hand_verify() {
  local t0 t1 rows port
  port=$(qdb_free_port)
  t0=$(now)
  mkdir -p "$WORK/hand/data/pg_wal"
  tar -xzf "$WORK/hand/backup/base.tar.gz" -C "$WORK/hand/data"
  tar -xzf "$WORK/hand/backup/pg_wal.tar.gz" -C "$WORK/hand/data/pg_wal"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$WORK/hand"
  chmod 700 "$WORK/hand/data"
  pg_as_owner "$PG_BIN/pg_ctl" -D "$WORK/hand/data" -l "$WORK/hand/server.log" -w -t 3600 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k ''" start >/dev/null
  rows=$(psql -X -Atc "SELECT count(*) FROM pgbench_accounts" -h 127.0.0.1 -p "$port" -U postgres bench_src)
  pg_as_owner "$PG_BIN/pg_ctl" -D "$WORK/hand/data" -m fast -w stop >/dev/null
  rm -rf "$WORK/hand/data"
  t1=$(now)
  HAND_VERIFY=$(min "${HAND_VERIFY:-}" "$(echo "$t1 - $t0" | bc -l)")
  [ "$rows" = "$ROWS" ] || qdb_die "by hand: $rows accounts, want $ROWS"
}

for r in $(seq 1 "$ROUNDS"); do
  qdb_log "base backup, round $r: service and the same pg_basebackup by hand"
  if [ $((r % 2)) = 1 ]; then svc_base; hand_base; else hand_base; svc_base; fi
done
for r in $(seq 1 "$ROUNDS"); do
  qdb_log "verification, round $r: the service's test restore and unpack + start + count by hand"
  if [ $((r % 2)) = 1 ]; then svc_verify; hand_verify; else hand_verify; svc_verify; fi
done

SIZE=$(api "$BASE/api/v1/backups/$BACKUP_ID" | jq -r .size_bytes)
RESTORE=$(api "$BASE/api/v1/backups/$BACKUP_ID" | jq -r .restore_seconds)
printf '\npgbench scale %s (%s accounts), backup %s bytes\n' "$SCALE" "$ROWS" "$SIZE"
printf '%-28s %10s %10s %8s\n' "" "service s" "by hand s" "ratio"
printf '%-28s %10.2f %10.2f %8.2f\n' "base backup" "$SVC_BASE" "$HAND_BASE" "$(echo "$SVC_BASE / $HAND_BASE" | bc -l)"
printf '%-28s %10.2f %10.2f %8.2f\n' "verification (test restore)" "$SVC_VERIFY" "$HAND_VERIFY" "$(echo "$SVC_VERIFY / $HAND_VERIFY" | bc -l)"
printf 'restore time the service measured (unpack + start): %s s\n' "$RESTORE"
printf '(fastest of %s runs per side, alternating; load average at the end: %s)\n' "$ROUNDS" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '\nthe service'"'"'s last base backup, step by step:\n'
job_steps "$BASE_JOB"
printf '\nthe service'"'"'s last verification, step by step:\n'
job_steps "$VERIFY_JOB"
