#!/usr/bin/env bash
# Register the development environment's targets with a running local control plane
# (deploy/local/run.sh calls it once the server is ready): its own PostgreSQL as the
# postgres target, so that the databases of section 2.1 (seeded by migration 0010) can be
# planned and provisioned; Kafka when QDB_KAFKA_BROKERS is set (the local Kafka of the
# events issue) and Kafka Connect when QDB_KAFKA_CONNECT_URL is; then the topic groups,
# consumer groups and connectors of deploy/inventory/seed.json. Idempotent: it can run at
# every start.
#   register_inventory.sh BASE_URL PG_PORT
set -euo pipefail
base=${1:?base url}
pg_port=${2:?postgres port}
root=$(cd "$(dirname "$0")/../.." && pwd)

for _ in $(seq 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
token=$(curl -fsS -XPOST -H 'Content-Type: application/json' \
  -d '{"sub":"run.sh","role":"admin"}' "$base/dev-issuer/token" |
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "register_inventory: no dev token" >&2; exit 1; }

targets="\"postgres\":{\"host\":\"127.0.0.1\",\"port\":$pg_port,\"admin_user\":\"postgres\"}"
if [ -n "${QDB_KAFKA_BROKERS:-}" ]; then
  targets="$targets,\"kafka\":{\"bootstrap_servers\":\"$QDB_KAFKA_BROKERS\",\"broker_count\":${QDB_KAFKA_BROKER_COUNT:-3}}"
fi
if [ -n "${QDB_KAFKA_CONNECT_URL:-}" ]; then
  targets="$targets,\"kafka_connect\":{\"url\":\"$QDB_KAFKA_CONNECT_URL\"}"
fi
curl -fsS -o /dev/null -XPATCH -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' -d "{\"targets\":{$targets}}" \
  "$base/api/v1/environments/development"
curl -fsS -o /dev/null -XPOST -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' --data-binary @"$root/deploy/inventory/seed.json" \
  "$base/api/v1/inventory/import"
echo "development targets registered (postgres 127.0.0.1:$pg_port${QDB_KAFKA_BROKERS:+, kafka $QDB_KAFKA_BROKERS}${QDB_KAFKA_CONNECT_URL:+, connect $QDB_KAFKA_CONNECT_URL}); plan: GET $base/api/v1/environments/development/plan" >&2
