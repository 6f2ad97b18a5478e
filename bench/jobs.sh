#!/usr/bin/env bash
# Job engine benchmark: end-to-end throughput of no-op jobs on one PostgreSQL (enqueued in
# batches first, then drained by the workers), beside
#   (a) pgbench running the very SQL the engine issues, batched the same way (claim 100 in
#       one statement, complete 100 in one statement): the floor the engine can approach;
#   (b) graphile-worker 0.17.3 in localQueue mode (batched fetch and completion) with the
#       same concurrency,
# plus the pickup latency of a single job on idle workers (commit -> runner start), p50/p99,
# for both engines. Leases and heartbeats stay on (qdb-control's defaults).
#
#   bench/jobs.sh            N=100000 jobs; set N, WORKERS, JOBS_BATCH to change;
#                            QDB_BENCH_CMAKE_ARGS adds cmake arguments to the Release build
# The cluster is qdb_pg_start's (fsync on, as in production). qdb-control runs with
# QDB_JOB_BATCH=JOBS_BATCH and QDB_JOB_PREFETCH=JOBS_BATCH/WORKERS, so that one claim takes
# a whole batch, as graphile-worker's local queue does.
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"

N=${N:-100000}
WORKERS=${WORKERS:-8}
JOBS_BATCH=${JOBS_BATCH:-100}
export N WORKERS JOBS_BATCH

qdb_install_packages "${QDB_PACKAGES[@]}"
command -v node >/dev/null || qdb_die "Node.js 20 is required for graphile-worker"
if [ ! -d "$QDB_ROOT/bench/node_modules/graphile-worker" ] ||
   [ "$QDB_ROOT/bench/package-lock.json" -nt "$QDB_ROOT/bench/node_modules" ]; then
  qdb_log "installing graphile-worker (npm ci)"
  (cd "$QDB_ROOT/bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

WORK=$(mktemp -d /tmp/qdb-bench-jobs-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port)
SERVER_PID=
cleanup() {
  local rc=$?
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

qdb_build "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF ${QDB_BENCH_CMAKE_ARGS:-}
qdb_pg_start "$WORK/pgdata" "$PG_PORT"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)
openssl rand -hex 32 > "$WORK/hmac" && chmod 600 "$WORK/hmac"

url() { echo "postgresql://postgres@127.0.0.1:$PG_PORT/$1"; }

# A fresh database with the schema: qdb-control migrate.
fresh_db() {
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" postgres
  QDB_DATABASE_URL=$(url "$1") QDB_AUDIT_HMAC_KEY_FILE=$WORK/hmac QDB_LOG_LEVEL=error QDB_AUTH_MODE=dev \
    "$WORK/build/qdb-control" migrate
}

# N no-op jobs, enqueued in transactions of 1000 rows.
enqueue() {
  local db=$1 args=$2 done=0
  while [ "$done" -lt "$N" ]; do
    local n=$(( N - done < 1000 ? N - done : 1000 ))
    "${PSQL[@]}" -c "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds)
                     SELECT 'noop', '$args', 'bench', 3, 60 FROM generate_series(1, $n)" "$db"
    done=$(( done + n ))
  done
  "${PSQL[@]}" -c "VACUUM ANALYZE job" "$db"
}

start_server() {
  QDB_DATABASE_URL=$(url "$1") QDB_LISTEN=127.0.0.1:0 QDB_WORKERS=$WORKERS \
    QDB_JOB_BATCH=$JOBS_BATCH QDB_JOB_PREFETCH=$(( (JOBS_BATCH + WORKERS - 1) / WORKERS )) \
    QDB_AUTH_MODE=dev QDB_AUDIT_HMAC_KEY_FILE=$WORK/hmac QDB_LOG_LEVEL=warn \
    QDB_WEB_DIR=$QDB_ROOT/web "$WORK/build/qdb-control" serve 2>"$WORK/server.log" &
  SERVER_PID=$!
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
}

scalar() { "${PSQL[@]}" -Atc "$2" "$1"; }

# ---- qdb-control: throughput ----
qdb_log "qdb-control: enqueue $N no-op jobs, then drain with $WORKERS workers"
fresh_db qdb_tp >/dev/null
enqueue qdb_tp '{}'
start_server qdb_tp
while [ "$(scalar qdb_tp "SELECT count(*) FROM job WHERE state <> 'succeeded'")" != 0 ]; do
  sleep 0.05
  kill -0 "$SERVER_PID" 2>/dev/null || { tail "$WORK/server.log"; qdb_die "server died"; }
done
stop_server
QDB_TP=$(scalar qdb_tp "SELECT round($N / extract(epoch FROM max(finished_at) - min(started_at))) FROM job")
ONCE=$(scalar qdb_tp "SELECT count(*) FROM job WHERE state = 'succeeded' AND attempt = 1")
[ "$ONCE" = "$N" ] || qdb_die "qdb-control: only $ONCE of $N jobs succeeded on their first attempt"

# ---- qdb-control: idle pickup latency ----
qdb_log "qdb-control: pickup latency of single jobs on idle workers"
fresh_db qdb_lat >/dev/null
start_server qdb_lat
sleep 2
QDB_LAT=$(cd "$QDB_ROOT/bench" && DATABASE_URL=$(url qdb_lat) node graphile.mjs qdb-latency | tail -1)
stop_server
QDB_P50=$(node -e "console.log(JSON.parse(process.argv[1]).p50_ms.toFixed(2))" "$QDB_LAT")
QDB_P99=$(node -e "console.log(JSON.parse(process.argv[1]).p99_ms.toFixed(2))" "$QDB_LAT")

# ---- the floor: pgbench issuing the engine's SQL, batched the same way ----
qdb_log "pgbench: the engine's claim + complete statements, $JOBS_BATCH jobs per statement"
fresh_db qdb_floor >/dev/null
enqueue qdb_floor '{}'
cat > "$WORK/floor.sql" <<SQL
WITH c AS (SELECT id FROM job
           WHERE state IN ('pending', 'retrying') AND concurrency_key IS NULL AND run_at <= now()
           ORDER BY priority, run_at, id LIMIT $JOBS_BATCH FOR UPDATE SKIP LOCKED),
     u AS (UPDATE job j SET state = 'running', attempt = j.attempt + 1, worker_id = 'bench',
                  lease_until = now() + make_interval(secs => 30), started_at = now(),
                  updated_at = now(), finished_at = NULL
           FROM c WHERE j.id = c.id RETURNING j.id, j.kind, j.args::text, j.attempt)
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(attempt), '{}') AS atts,
       coalesce(array_agg(NULL::text), '{}') AS results FROM u \gset
UPDATE job j SET state = 'succeeded', result = d.result, finished_at = now(),
       updated_at = now(), lease_until = NULL
FROM unnest(:ids::bigint[], :atts::int[], :results::jsonb[]) AS d(id, attempt, result)
WHERE j.id = d.id AND j.worker_id = 'bench' AND j.attempt = d.attempt AND j.state = 'running';
SQL
CLIENTS=4
TX=$(( N / JOBS_BATCH / CLIENTS ))
FLOOR_TPS=$(pgbench -n -M extended -h 127.0.0.1 -p "$PG_PORT" -U postgres -c $CLIENTS -j 2 \
  -t "$TX" -f "$WORK/floor.sql" qdb_floor 2>&1 | awk '/^tps = / {print $3; exit}')
LEFT=$(scalar qdb_floor "SELECT count(*) FROM job WHERE state <> 'succeeded'")
FLOOR=$(awk -v t="$FLOOR_TPS" -v b="$JOBS_BATCH" 'BEGIN {printf "%d", t * b}')

# ---- graphile-worker 0.17.3 ----
qdb_log "graphile-worker 0.17.3: localQueue size $JOBS_BATCH, $WORKERS concurrent jobs"
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS gw" -c "CREATE DATABASE gw" postgres
GW=$(cd "$QDB_ROOT/bench" && DATABASE_URL=$(url gw) node graphile.mjs throughput | tail -1)
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS gw_lat" -c "CREATE DATABASE gw_lat" postgres
GW_LAT=$(cd "$QDB_ROOT/bench" && DATABASE_URL=$(url gw_lat) node graphile.mjs latency | tail -1)
GW_TP=$(node -e "console.log(Math.round(JSON.parse(process.argv[1]).jobs_per_s))" "$GW")
GW_P50=$(node -e "console.log(JSON.parse(process.argv[1]).p50_ms.toFixed(2))" "$GW_LAT")
GW_P99=$(node -e "console.log(JSON.parse(process.argv[1]).p99_ms.toFixed(2))" "$GW_LAT")

echo
echo "No-op jobs, $N enqueued then drained; $WORKERS workers; batches of $JOBS_BATCH; $(nproc) cores"
printf '  %-44s %8s jobs/s\n' "qdb-control (leases + heartbeats on)" "$QDB_TP"
printf '  %-44s %8s jobs/s  (%s left)\n' "pgbench floor (same SQL, $CLIENTS clients)" "$FLOOR" "$LEFT"
printf '  %-44s %8s jobs/s\n' "graphile-worker 0.17.3 (localQueue)" "$GW_TP"
awk -v q="$QDB_TP" -v f="$FLOOR" -v g="$GW_TP" 'BEGIN {
  printf "  qdb-control / graphile-worker: %.2fx (target >= 1.0)\n", q / g;
  printf "  qdb-control / floor:           %.2fx (target >= 0.5)\n", q / f }'
echo "Pickup latency of one job on idle workers (commit -> runner start):"
printf '  %-44s p50 %6s ms   p99 %6s ms (target p99 <= 15)\n' "qdb-control" "$QDB_P50" "$QDB_P99"
printf '  %-44s p50 %6s ms   p99 %6s ms\n' "graphile-worker 0.17.3" "$GW_P50" "$GW_P99"
