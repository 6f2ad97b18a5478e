#!/usr/bin/env bash
# Flag evaluation benchmark (issue 11, item 9): wrk against qdb-control's OFREP bulk
# evaluation (200, and 304 with If-None-Match) and single-flag evaluation, each with a
# service API token bound to production, beside nginx serving the same bulk JSON as a
# static file in the same run; first with the 8 seed flags, then with 1,000 flags and 50
# segments (rules on segments, splits). Prints requests/s, p99, the ratios and
# qdb-control's resident memory, then how long a change made on a second replica takes to
# reach the first one's evaluations while wrk loads it.
# nginx runs as bench/http.sh runs it: the settings its documentation recommends for static
# files (sendfile, tcp_nopush, open_file_cache, a buffered access log); both log every
# request.
# Usage: bench/flags.sh [duration_s=10] [connections=64]
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"
DURATION=${1:-10}
CONNS=${2:-64}

qdb_install_packages "${QDB_PACKAGES[@]}" wrk nginx-light
qdb_build "$QDB_ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF

WORK=$(mktemp -d /tmp/qdb-bench-flags-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port); QDB_PORT=$(qdb_free_port); QDB2_PORT=$(qdb_free_port)
NGINX_PORT=$(qdb_free_port)
cleanup() {
  [ -n "${QDB_PID:-}" ] && kill "$QDB_PID" 2>/dev/null && wait "$QDB_PID" 2>/dev/null
  [ -n "${QDB2_PID:-}" ] && kill "$QDB2_PID" 2>/dev/null && wait "$QDB2_PID" 2>/dev/null
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
}
trap cleanup EXIT
QDB_PG_FSYNC=off qdb_pg_start "$WORK/pgdata" "$PG_PORT"
qdb_pg_createdb "$PG_PORT" qdb_bench
openssl rand -hex 32 > "$WORK/audit-key"
DB=postgresql://postgres@127.0.0.1:$PG_PORT/qdb_bench

# Every connection comes from 127.0.0.1: wrk holds CONNS of them, and the propagation
# check needs more than the default 64 per address.
start_replica() { # port log
  QDB_DATABASE_URL=$DB QDB_LISTEN=127.0.0.1:$1 QDB_WEB_DIR=$QDB_ROOT/web QDB_AUTH_MODE=dev \
    QDB_HTTP_PER_IP_CONNECTIONS=$((CONNS + 64)) \
    QDB_AUDIT_HMAC_KEY_FILE=$WORK/audit-key QDB_WORKERS=1 \
    "$QDB_ROOT/build-bench/qdb-control" serve 2>"$2" &
}
start_replica "$QDB_PORT" "$WORK/qdb.log"; QDB_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$QDB_PORT/readyz" >/dev/null && break; sleep 0.1; done
QDB=http://127.0.0.1:$QDB_PORT
jwt=$(curl -sf -XPOST -H 'Content-Type: application/json' -d '{"sub":"bench","role":"admin"}' \
  "$QDB/dev-issuer/token" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
[ -n "$jwt" ] || qdb_die "no token from the dev issuer"
# a service token bound to production: it evaluates there without ?environment=
svc=$(curl -sf -XPOST -H 'Content-Type: application/json' -H "Authorization: Bearer $jwt" \
  -d '{"name":"bench-svc","role":"viewer","environments":["production"]}' "$QDB/api/v1/tokens" |
  sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
[ -n "$svc" ] || qdb_die "no API token"

CTX='{"context":{"targetingKey":"user-4711","portal":"financing","app":"2.4.1","email":"a@qdb.qa"}}'
mkdir -p "$WORK/www"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log $WORK/nginx-access.log combined buffer=64k flush=1s;
  default_type application/json;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=64 inactive=60s;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
  }
}
NGINX
nginx -c "$WORK/nginx.conf"

# wrk scripts: a POST with the context, and the same with If-None-Match.
post_script() { # file etag
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = '$CTX'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $svc"
LUA
  [ -n "${2:-}" ] && echo "wrk.headers[\"If-None-Match\"] = '$2'" >> "$1"
  return 0
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# requests/s, p99 (ms), errors (socket errors; and non-2xx unless the case expects 304)
run_wrk() { # url expect_304 [wrk args]
  local url=$1 want304=$2 out; shift 2
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url")
  local rps p99 non2xx sockerr
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out"); sockerr=$(awk '/Socket errors/ {print $4+$6+$8+$10}' <<<"$out")
  [ "$want304" = 1 ] && non2xx=0   # every answer is a 304 there; the status is checked below
  echo "$rps ${p99:-0} $(( ${non2xx:-0} + ${sockerr:-0} ))"
}

rows=()
measure() { # label
  local label=$1
  curl -sf -XPOST -H 'Content-Type: application/json' -H "Authorization: Bearer $svc" -d "$CTX" \
    -D "$WORK/bulk.h" "$QDB/ofrep/v1/evaluate/flags" > "$WORK/www/bulk.json"
  local etag; etag=$(awk -F': ' 'tolower($1)=="etag" {print $2}' "$WORK/bulk.h" | tr -d '\r')
  [ -n "$etag" ] || qdb_die "no ETag on the bulk answer"
  local code304; code304=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $svc" -H "If-None-Match: $etag" -d "$CTX" "$QDB/ofrep/v1/evaluate/flags")
  [ "$code304" = 304 ] || qdb_die "If-None-Match gave $code304, not 304"
  curl -sf -XPOST -H 'Content-Type: application/json' -H "Authorization: Bearer $svc" -d "$CTX" \
    "$QDB/ofrep/v1/evaluate/flags/qdb.financing.enabled" > "$WORK/www/one.json"
  : > "$WORK/www/empty"
  post_script "$WORK/bulk.lua"; post_script "$WORK/bulk304.lua" "$etag"
  wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/bulk.json" >/dev/null   # warm-up
  wrk -t2 -c"$CONNS" -d2s -s "$WORK/bulk.lua" "$QDB/ofrep/v1/evaluate/flags" >/dev/null
  # name | qdb url | wrk script | nginx file | expects 304
  local cases=("bulk 200|$QDB/ofrep/v1/evaluate/flags|bulk.lua|bulk.json|0"
               "bulk 304|$QDB/ofrep/v1/evaluate/flags|bulk304.lua|empty|1"
               "single flag|$QDB/ofrep/v1/evaluate/flags/qdb.financing.enabled|bulk.lua|one.json|0")
  for c in "${cases[@]}"; do
    IFS='|' read -r name url script file want304 <<<"$c"
    read -r n_rps n_p99 n_err < <(run_wrk "http://127.0.0.1:$NGINX_PORT/$file" 0)
    read -r q_rps q_p99 q_err < <(run_wrk "$url" "$want304" -s "$WORK/$script")
    rows+=("$label $name|$(wc -c <"$WORK/www/$file")|$n_rps|$n_p99|$n_err|$q_rps|$q_p99|$q_err")
  done
  rss+=("$label: $(awk -v k="$(rss_kb $QDB_PID)" 'BEGIN {printf "%.1f", k/1024}') MB")
}

rss=("idle: $(awk -v k="$(rss_kb $QDB_PID)" 'BEGIN {printf "%.1f", k/1024}') MB")
measure "8 flags"

# 1,000 flags and 50 segments: every fifth flag has a rule on a segment, every third a
# split, the rest are on or off (as the seed). Written straight into the tables: the
# triggers of migration 0009 tell the replica, which reloads.
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres qdb_bench <<'SQL'
INSERT INTO flag_segment (name, conditions, included)
SELECT 'seg-' || i,
       jsonb_build_array(jsonb_build_object('attribute', 'email', 'operator', 'ends_with',
                                            'value', '@team' || i || '.qa')),
       jsonb_build_array('user-' || i)
FROM generate_series(1, 50) i;
INSERT INTO flag (key, type, variants, version)
SELECT 'bench.flag-' || i, 'boolean', '{"on": true, "off": false}', 1
FROM generate_series(1, 992) i;
INSERT INTO flag_env (flag_key, environment, config, version)
SELECT 'bench.flag-' || i, e.name,
       jsonb_build_object('enabled', i % 7 <> 0, 'default_variant', 'on', 'off_variant', 'off',
         'prerequisites', '[]'::jsonb,
         'rules', CASE WHEN i % 5 = 0 THEN jsonb_build_array(jsonb_build_object(
                     'conditions', jsonb_build_array(
                        jsonb_build_object('operator', 'in_segment', 'value', 'seg-' || (i % 50 + 1)),
                        jsonb_build_object('attribute', 'app', 'operator', 'semver_gte', 'value', '2.0.0')),
                     'variant', 'off')) ELSE '[]'::jsonb END,
         'split', CASE WHEN i % 3 = 0 THEN jsonb_build_array(
                     jsonb_build_object('variant', 'on', 'percentage', 25),
                     jsonb_build_object('variant', 'off', 'percentage', 75)) ELSE 'null'::jsonb END),
       1
FROM generate_series(1, 992) i CROSS JOIN environment e;
SQL
for _ in $(seq 100); do
  n=$(curl -sf "$QDB/metrics" | awk '/^qdb_flags_snapshot_flags / {print $2}')
  [ "${n:-0}" -ge 5000 ] && break; sleep 0.1
done
measure "1000 flags"

# A change on a second replica, served by the first within a second while wrk loads it.
start_replica "$QDB2_PORT" "$WORK/qdb2.log"; QDB2_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$QDB2_PORT/readyz" >/dev/null && break; sleep 0.1; done
jwt2=$(curl -sf -XPOST -H 'Content-Type: application/json' -d '{"sub":"bench2","role":"admin"}' \
  "http://127.0.0.1:$QDB2_PORT/dev-issuer/token" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
wrk -t2 -c"$CONNS" -d"$((DURATION + 5))s" -s "$WORK/bulk.lua" "$QDB/ofrep/v1/evaluate/flags" >/dev/null &
WRK_PID=$!
sleep 2
ver=$(curl -sf -H "Authorization: Bearer $jwt2" "http://127.0.0.1:$QDB2_PORT/api/v1/flags/qdb.guarantee.enabled" |
  sed -n 's/.*"version": *\([0-9]*\).*/\1/p')
t0=$(date +%s%N)
curl -sf -o /dev/null -XPUT -H 'Content-Type: application/json' -H "Authorization: Bearer $jwt2" \
  -H "If-Match: \"$ver\"" -d '{"enabled":true,"default_variant":"on","off_variant":"off"}' \
  "http://127.0.0.1:$QDB2_PORT/api/v1/flags/qdb.guarantee.enabled/environments/production"
seen=""
for _ in $(seq 1000); do
  if curl -sf --max-time 2 -XPOST -H 'Content-Type: application/json' -H "Authorization: Bearer $svc" -d "$CTX" \
       "$QDB/ofrep/v1/evaluate/flags/qdb.guarantee.enabled" | grep -q '"value":true'; then
    seen=$(( ($(date +%s%N) - t0) / 1000000 )); break
  fi
done
wait "$WRK_PID" || true

printf '\n%-26s %7s %12s %8s %6s %12s %8s %6s %8s %8s\n' "case (service API token)" "bytes" \
  "nginx req/s" "p99 ms" "errors" "qdb req/s" "p99 ms" "errors" "req/s x" "p99 x"
for r in "${rows[@]}"; do
  IFS='|' read -r name bytes n_rps n_p99 n_errs q_rps q_p99 q_errs <<<"$r"
  printf '%-26s %7d %12.0f %8.2f %6d %12.0f %8.2f %6d %8.2f %8.2f\n' "$name" "$bytes" "$n_rps" \
    "$n_p99" "$n_errs" "$q_rps" "$q_p99" "$q_errs" \
    "$(awk -v a="$q_rps" -v b="$n_rps" 'BEGIN {print a/b}')" \
    "$(awk -v a="$q_p99" -v b="$n_p99" 'BEGIN {print (b > 0 ? a/b : 0)}')"
done
printf '\nnginx serves the same bytes as a static file (GET); for the 304 row, an empty file.\n'
printf 'targets: req/s ratio >= 0.6, p99 <= 2x nginx, no errors\n'
printf 'qdb-control resident memory: %s\n' "$(IFS=';'; echo "${rss[*]}")"
printf 'a change on replica 2 served by replica 1 (under bulk load) after: %s ms (target < 1000)\n' "${seen:-never}"
printf 'wrk: %s connections, %s s, 2 threads, on %s cores\n' "$CONNS" "$DURATION" "$(nproc)"
# reloads slower than 500 ms, or a lost listener, would explain a late change
grep -h "slow snapshot reload\|listener lost" "$WORK/qdb.log" "$WORK/qdb2.log" | head -5 || true
