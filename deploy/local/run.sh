#!/usr/bin/env bash
# Run the control plane locally: install what is missing, build, start an embedded
# PostgreSQL under .local/, apply migrations and serve http://127.0.0.1:8080 with the dev
# issuer for sign-in. Ctrl-C stops the server and PostgreSQL; the data is kept for next time.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

LOCAL=$QDB_ROOT/.local
PG_PORT=${QDB_LOCAL_PG_PORT:-54329}

qdb_install_packages "${QDB_PACKAGES[@]}" kcat # kcat: to watch the events (README)
qdb_build "$QDB_ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQDB_TESTS=OFF
qdb_pg_start "$LOCAL/pgdata" "$PG_PORT"
trap 'qdb_log "stopping PostgreSQL"; qdb_pg_stop "$LOCAL/pgdata"' EXIT
qdb_pg_createdb "$PG_PORT" qdb_control

mkdir -p "$LOCAL/secrets"
chmod 700 "$LOCAL/secrets"
# The audit chain key, as a Vault agent would mount it in production.
[ -s "$LOCAL/secrets/audit-hmac-key" ] || openssl rand -hex 32 > "$LOCAL/secrets/audit-hmac-key"
chmod 600 "$LOCAL/secrets/audit-hmac-key"

export QDB_DATABASE_URL=${QDB_DATABASE_URL:-postgresql://postgres@127.0.0.1:$PG_PORT/qdb_control}
export QDB_LISTEN=${QDB_LISTEN:-127.0.0.1:8080}
export QDB_WEB_DIR=${QDB_WEB_DIR:-$QDB_ROOT/web}
export QDB_AUTH_MODE=${QDB_AUTH_MODE:-dev}
export QDB_AUDIT_HMAC_KEY_FILE=${QDB_AUDIT_HMAC_KEY_FILE:-$LOCAL/secrets/audit-hmac-key}
# inventory: secret references may point into .local/secrets
export QDB_SECRET_DIRS=${QDB_SECRET_DIRS:-$LOCAL/secrets}

# A Kafka for the local run: librdkafka's mock cluster, 3 brokers on loopback (events are
# kept in memory only, until Ctrl-C). QDB_KAFKA_BROKERS set beforehand points at a real one.
if [ -z "${QDB_KAFKA_BROKERS:-}" ]; then
  "$QDB_ROOT/build/qdb-kafka-mock" > "$LOCAL/kafka-mock.out" 2>&1 < /dev/null &
  kafka_mock=$!
  trap 'kill -TERM $kafka_mock 2>/dev/null || true; qdb_log "stopping PostgreSQL"; qdb_pg_stop "$LOCAL/pgdata"' EXIT
  for _ in $(seq 50); do [ -s "$LOCAL/kafka-mock.out" ] && break; sleep 0.1; done
  QDB_KAFKA_BROKERS=$(head -n1 "$LOCAL/kafka-mock.out")
  [ -n "$QDB_KAFKA_BROKERS" ] || qdb_die "qdb-kafka-mock did not start"
  export QDB_KAFKA_BROKERS
  qdb_log "Kafka (mock, 3 brokers): $QDB_KAFKA_BROKERS — kcat -b $QDB_KAFKA_BROKERS -C -t app.controlplane.jobs"
fi

qdb_log "serving http://$QDB_LISTEN (Ctrl-C to stop)"
# Not exec: the EXIT trap must stop PostgreSQL after the server has stopped.
"$QDB_ROOT/build/qdb-control" serve &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' INT TERM
# inventory: the development environment's targets (this PostgreSQL, QDB_KAFKA_BROKERS)
"$QDB_ROOT/deploy/local/register_inventory.sh" "http://$QDB_LISTEN" "$PG_PORT" || true
wait $server || true
wait $server 2>/dev/null || true
