#!/usr/bin/env bash
# Events benchmark: the outbox relay (server/audit/audit_relay.c) against the mock Kafka
# cluster (qdb-kafka-mock, 3 brokers on loopback), beside its two floors, measured in the
# same run:
#   relay  N events committed to the outbox in one transaction while a server with Kafka
#          configured runs; events/s from that commit to the last row marked published;
#   (a)    a plain librdkafka producer (tools/qdb_kafka_bench_producer.c) sending the same
#          payloads (exported from the outbox) with the same settings: acks=all,
#          enable.idempotence, lz4, linger.ms, message.timeout.ms=0, the content-type header;
#   (b)    pgbench running the relay's own SQL, batched the same way: the lowest
#          QDB_OUTBOX_BATCH unpublished ids, their rows (payloads), then one UPDATE marking
#          them published with the totals; one client, as the relay is one connection;
# then the ratio relay / min(a, b) (target >= 0.7), and the latency from commit to delivery
# at a steady RATE events/s (pgbench -R inserting one event per transaction, from outside
# the server, so no commit hook wakes the relay: its poll does): p50/p99 from each row's
# commit timestamp (track_commit_timestamp, of the writer's transaction) to its published_at (set by the mark that
# follows the delivery report, so this bounds commit -> report from above; target p99 <= 50
# ms).
#
#   bench/events.sh        N=100000 events; set N, BATCH, RATE, STEADY_SECONDS, LINGER to change
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"

N=${N:-100000}
BATCH=${BATCH:-500}
RATE=${RATE:-500}
SECONDS_STEADY=${STEADY_SECONDS:-20}
LINGER=${LINGER:-5}

qdb_install_packages "${QDB_PACKAGES[@]}"

WORK=$(mktemp -d /tmp/qdb-bench-events-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port)
SERVER_PID=
MOCK_PID=
cleanup() {
  local rc=$?
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -n "$MOCK_PID" ] && kill -TERM "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

qdb_build "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF ${QDB_BENCH_CMAKE_ARGS:-}
qdb_pg_start "$WORK/pgdata" "$PG_PORT"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)
# commit timestamps, so that the latency is measured from the commit itself
"${PSQL[@]}" -c "ALTER SYSTEM SET track_commit_timestamp = on" postgres
qdb_pg_stop "$WORK/pgdata"
qdb_pg_start "$WORK/pgdata" "$PG_PORT"
openssl rand -hex 32 > "$WORK/hmac" && chmod 600 "$WORK/hmac"
url() { echo "postgresql://postgres@127.0.0.1:$PG_PORT/$1"; }
scalar() { "${PSQL[@]}" -Atc "$2" "$1"; }
fresh_db() {
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" postgres
  QDB_DATABASE_URL=$(url "$1") QDB_AUDIT_HMAC_KEY_FILE=$WORK/hmac QDB_LOG_LEVEL=error QDB_AUTH_MODE=dev \
    "$WORK/build/qdb-control" migrate
}

# N events as audit_event_emit writes them (id and time from the row), about the size of a
# job's event, over 1000 keys, in one transaction.
EVENT_SQL="WITH n AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id,
  clock_timestamp() AS t, 'jobs/' || (g % 1000) AS key, g FROM generate_series(1, $N) g ORDER BY g)
INSERT INTO outbox (id, topic, key, event, created_at) SELECT n.id, 'app.controlplane.bench', n.key,
  jsonb_build_object('specversion', '1.0', 'id', n.id::text, 'source', 'urn:qdb:control-plane',
    'type', 'qa.qdb.controlplane.jobs.finished', 'subject', n.key,
    'time', to_char(n.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
    'datacontenttype', 'application/json', 'actor', 'system', 'actortype', 'system',
    'data', jsonb_build_object('id', n.g, 'kind', 'noop', 'attempt', 1, 'state', 'succeeded',
      'queue', 'default', 'created_by', 'bench', 'args', jsonb_build_object('n', n.g),
      'created_at', to_char(n.t, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))), n.t FROM n"

qdb_log "mock Kafka cluster (3 brokers)"
"$WORK/build/qdb-kafka-mock" > "$WORK/mock.out" 2>&1 < /dev/null &
MOCK_PID=$!
for _ in $(seq 50); do [ -s "$WORK/mock.out" ] && break; sleep 0.1; done
BOOTSTRAP=$(head -n1 "$WORK/mock.out")
[ -n "$BOOTSTRAP" ] || qdb_die "qdb-kafka-mock did not start"

# ---- the relay ----
qdb_log "relay: $N events committed at once, relayed in batches of $BATCH"
fresh_db ev_relay >/dev/null
QDB_DATABASE_URL=$(url ev_relay) QDB_LISTEN=127.0.0.1:0 QDB_WORKERS=0 QDB_AUTH_MODE=dev \
  QDB_AUDIT_HMAC_KEY_FILE=$WORK/hmac QDB_LOG_LEVEL=${QDB_LOG_LEVEL:-warn} QDB_WEB_DIR=$QDB_ROOT/web \
  QDB_KAFKA_BROKERS=$BOOTSTRAP QDB_OUTBOX_BATCH=$BATCH QDB_KAFKA_LINGER_MS=$LINGER \
  "$WORK/build/qdb-control" serve 2>"$WORK/server.log" &
SERVER_PID=$!
sleep 2 # leadership, producer connected
T0=$("${PSQL[@]}" -At -c "BEGIN" -c "$EVENT_SQL" -c "COMMIT" \
  -c "SELECT extract(epoch FROM clock_timestamp())" ev_relay)
while [ "$(scalar ev_relay "SELECT count(*) FROM outbox WHERE published_at IS NULL")" != 0 ]; do
  sleep 0.2
  kill -0 "$SERVER_PID" 2>/dev/null || { tail "$WORK/server.log"; qdb_die "server died"; }
done
RELAY=$(scalar ev_relay "SELECT round($N / (extract(epoch FROM max(published_at)) - $T0)) FROM outbox")
PUBLISHED=$(scalar ev_relay "SELECT published FROM outbox_totals")
[ "$PUBLISHED" = "$N" ] || qdb_die "relay: $PUBLISHED of $N marked published"

# ---- commit -> delivery latency at a steady rate (the same server) ----
qdb_log "latency: $RATE events/s for ${SECONDS_STEADY} s, one event per transaction"
FROM_ID=$(scalar ev_relay "SELECT max(id) FROM outbox")
"${PSQL[@]}" -c "CREATE TABLE bench_tx (id bigint PRIMARY KEY, xid xid8 NOT NULL)" ev_relay
cat > "$WORK/one.sql" <<'SQL'
\set k random(1, 1000)
WITH n AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id, clock_timestamp() AS t),
i AS (INSERT INTO outbox (id, topic, key, event, created_at) SELECT n.id, 'app.controlplane.bench',
  'jobs/' || :k::int, jsonb_build_object('specversion', '1.0', 'id', n.id::text, 'source',
  'urn:qdb:control-plane', 'type', 'qa.qdb.controlplane.jobs.finished', 'subject', 'jobs/' || :k::int,
  'time', to_char(n.t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'datacontenttype',
  'application/json', 'data', jsonb_build_object('id', :k::int, 'state', 'succeeded')), n.t FROM n
  RETURNING id)
INSERT INTO bench_tx SELECT i.id, pg_current_xact_id() FROM i;
SQL
pgbench -n -M simple -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 2 -j 2 -R "$RATE" \
  -T "$SECONDS_STEADY" -f "$WORK/one.sql" ev_relay > "$WORK/rate.out" 2>&1
while [ "$(scalar ev_relay "SELECT count(*) FROM outbox WHERE published_at IS NULL")" != 0 ]; do sleep 0.2; done
LAT=$(scalar ev_relay "SELECT count(*) || ' ' ||
  round((1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY l))::numeric, 1) || ' ' ||
  round((1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY l))::numeric, 1) || ' ' ||
  round((1000 * max(l))::numeric, 1)
  FROM (SELECT extract(epoch FROM o.published_at - pg_xact_commit_timestamp(b.xid::text::xid)) AS l
        FROM outbox o JOIN bench_tx b USING (id) WHERE o.id > $FROM_ID) s")
read -r LAT_N LAT_P50 LAT_P99 LAT_MAX <<<"$LAT"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=

# ---- (a) the plain producer, same payloads ----
qdb_log "(a) plain librdkafka producer, the same $N payloads"
"${PSQL[@]}" -At -F $'\x1f' -c "SELECT key, event::text FROM outbox WHERE id <= $FROM_ID ORDER BY id" \
  ev_relay > "$WORK/payloads"
PLAIN_OUT=$("$WORK/build/qdb-kafka-bench-producer" "$BOOTSTRAP" bench.plain "$WORK/payloads" "$LINGER")
PLAIN=$(awk '{for (i = 1; i < NF; i++) if ($i == "events_per_s") print $(i + 1)}' <<<"$PLAIN_OUT")

# ---- (b) pgbench: the relay's SQL ----
qdb_log "(b) pgbench: the relay's read-a-batch + mark-published, $BATCH rows each"
fresh_db ev_floor >/dev/null
"${PSQL[@]}" -c "$EVENT_SQL" -c "VACUUM ANALYZE outbox" ev_floor
cat > "$WORK/floor.sql" <<SQL
SELECT coalesce(array_agg(id), '{}') AS ids FROM (SELECT o.id FROM outbox o
  WHERE o.published_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.key = o.key AND b.id <= o.id
    AND b.published_at IS NULL AND b.next_attempt_at IS NOT NULL
    AND b.next_attempt_at > clock_timestamp())
  ORDER BY o.id LIMIT $BATCH) s \gset
SELECT id, topic, key, event::text, attempts FROM outbox WHERE id = ANY(:ids::bigint[])
  AND published_at IS NULL ORDER BY id;
WITH m AS (UPDATE outbox SET published_at = clock_timestamp()
  WHERE id = ANY(:ids::bigint[]) AND published_at IS NULL RETURNING 1),
c AS (SELECT count(*) AS n FROM m)
UPDATE outbox_totals t SET published = t.published + c.n FROM c RETURNING c.n;
SQL
FLOOR_TPS=$(pgbench -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 1 \
  -t $(( N / BATCH )) -f "$WORK/floor.sql" ev_floor 2>&1 | awk '/^tps = / {print $3; exit}')
FLOOR=$(awk -v t="$FLOOR_TPS" -v b="$BATCH" 'BEGIN {printf "%d", t * b}')
LEFT=$(scalar ev_floor "SELECT count(*) FROM outbox WHERE published_at IS NULL")

echo
echo "Events, $N committed then relayed to the mock cluster (3 brokers, loopback); batches of"
echo "$BATCH; linger.ms $LINGER; $(nproc) cores, shared with whatever else runs on this machine"
printf '  %-52s %8s events/s\n' "relay (outbox -> Kafka -> marked published)" "$RELAY"
printf '  %-52s %8s events/s\n' "(a) plain librdkafka producer, same payloads" "$PLAIN"
printf '  %-52s %8s events/s  (%s left)\n' "(b) pgbench, the relay's SQL (read + mark)" "$FLOOR" "$LEFT"
awk -v r="$RELAY" -v a="$PLAIN" -v b="$FLOOR" 'BEGIN {
  f = a < b ? a : b;
  printf "  relay / min(a, b):  %.2f (target >= 0.7)\n", r / f }'
echo "Commit -> delivered (commit timestamp -> published_at) at $RATE events/s, $LAT_N events:"
printf '  p50 %s ms   p99 %s ms   max %s ms (target p99 <= 50)\n' "$LAT_P50" "$LAT_P99" "$LAT_MAX"
