#!/usr/bin/env bash
# HTTP core benchmark: wrk against qdb-control's GET /healthz, GET /api/v1/me with a JWT (dev
# issuer token) and GET /api/v1/me with an API token, and, in the same run, against nginx
# serving a static file of the same size as each reply on loopback. Prints requests/s and p99
# of each, the ratios, and qdb-control's resident memory idle and at the end of the load.
# Both servers log every request (qdb-control's JSON access log, nginx's access_log).
# nginx runs with the performance settings its documentation recommends for static files
# (sendfile, tcp_nopush, open_file_cache, a buffered access log).
# Usage: bench/http.sh [duration_s=10] [connections=64]
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"
DURATION=${1:-10}
CONNS=${2:-64}

qdb_install_packages "${QDB_PACKAGES[@]}" wrk nginx-light
qdb_build "$QDB_ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF

WORK=$(mktemp -d /tmp/qdb-bench-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port); QDB_PORT=$(qdb_free_port); NGINX_PORT=$(qdb_free_port)
cleanup() {
  [ -n "${QDB_PID:-}" ] && kill "$QDB_PID" 2>/dev/null && wait "$QDB_PID" 2>/dev/null
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
}
trap cleanup EXIT
QDB_PG_FSYNC=off qdb_pg_start "$WORK/pgdata" "$PG_PORT"
qdb_pg_createdb "$PG_PORT" qdb_bench
openssl rand -hex 32 > "$WORK/audit-key"

QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/qdb_bench QDB_LISTEN=127.0.0.1:$QDB_PORT \
  QDB_WEB_DIR=$QDB_ROOT/web QDB_AUTH_MODE=dev QDB_AUDIT_HMAC_KEY_FILE=$WORK/audit-key \
  "$QDB_ROOT/build-bench/qdb-control" serve 2>"$WORK/qdb.log" &
QDB_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$QDB_PORT/readyz" >/dev/null && break; sleep 0.1; done
QDB=http://127.0.0.1:$QDB_PORT
# The callers: a dev issuer JWT (admin, so that it can make the API token) and a viewer API
# token.
jwt=$(curl -sf -XPOST -H 'Content-Type: application/json' -d '{"sub":"bench","role":"admin"}' \
  "$QDB/dev-issuer/token" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
[ -n "$jwt" ] || qdb_die "no token from the dev issuer"
api_token=$(curl -sf -XPOST -H 'Content-Type: application/json' -H "Authorization: Bearer $jwt" \
  -d '{"name":"bench","role":"viewer"}' "$QDB/api/v1/tokens" |
  sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
[ -n "$api_token" ] || qdb_die "no API token"

mkdir -p "$WORK/www"
curl -sf "$QDB/healthz" > "$WORK/www/healthz"
curl -sf -H "Authorization: Bearer $jwt" "$QDB/api/v1/me" > "$WORK/www/me-jwt"
curl -sf -H "Authorization: Bearer $api_token" "$QDB/api/v1/me" > "$WORK/www/me-token"
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
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null && break; sleep 0.1; done

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# requests/s and p99 (ms) from wrk --latency output; errors = non-2xx + socket errors
run_wrk() {
  local url=$1 out; shift
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url")
  local rps p99 non2xx sockerr
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out"); sockerr=$(awk '/Socket errors/ {print $4+$6+$8+$10}' <<<"$out")
  echo "$rps ${p99:-0} ${non2xx:-0} ${sockerr:-0}"
}

idle=$(rss_kb $QDB_PID)
wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null   # warm-up
wrk -t2 -c"$CONNS" -d2s "$QDB/healthz" >/dev/null
# name | qdb-control path | its Authorization header | nginx file of the same size
CASES=("/healthz|/healthz||healthz"
       "/api/v1/me (JWT)|/api/v1/me|$jwt|me-jwt"
       "/api/v1/me (API token)|/api/v1/me|$api_token|me-token")
rows=()
for c in "${CASES[@]}"; do
  IFS='|' read -r name path tok file <<<"$c"
  auth=(); [ -n "$tok" ] && auth=(-H "Authorization: Bearer $tok")
  read -r n_rps n_p99 n_non2xx n_err < <(run_wrk "http://127.0.0.1:$NGINX_PORT/$file")
  read -r q_rps q_p99 q_non2xx q_err < <(run_wrk "$QDB$path" "${auth[@]}")
  rows+=("$name|$n_rps|$n_p99|$((n_non2xx + n_err))|$q_rps|$q_p99|$((q_non2xx + q_err))|$(wc -c <"$WORK/www/$file")")
done
loaded=$(rss_kb $QDB_PID)
auth_metrics=$(curl -sf "$QDB/metrics" | grep -E '^qdb_auth_(cache_lookups_total|token_listener_(up|disconnects_total))' || true)

printf '\n%-24s %6s %12s %9s %6s %12s %9s %6s %9s %9s\n' "qdb-control route" "bytes" \
  "nginx req/s" "p99 ms" "errors" "qdb req/s" "p99 ms" "errors" "req/s x" "p99 x"
for r in "${rows[@]}"; do
  IFS='|' read -r name n_rps n_p99 n_errs q_rps q_p99 q_errs bytes <<<"$r"
  printf '%-24s %6d %12.0f %9.2f %6d %12.0f %9.2f %6d %9.2f %9.2f\n' "$name" "$bytes" "$n_rps" \
    "$n_p99" "$n_errs" "$q_rps" "$q_p99" "$q_errs" \
    "$(awk -v a="$q_rps" -v b="$n_rps" 'BEGIN {print a/b}')" \
    "$(awk -v a="$q_p99" -v b="$n_p99" 'BEGIN {print (b > 0 ? a/b : 0)}')"
done
printf '\ntargets: requests/s ratio qdb-control/nginx >= 0.70 for each route; /healthz p99 <= 1.5x nginx\n'
printf 'qdb-control resident memory: idle %.1f MB, end of load %.1f MB (targets < 20, < 64)\n' \
  "$(awk -v k="$idle" 'BEGIN {print k/1024}')" "$(awk -v k="$loaded" 'BEGIN {print k/1024}')"
printf 'wrk: %s connections, %s s, 2 threads, on %s cores\n' "$CONNS" "$DURATION" "$(nproc)"
printf '\nauth caches after the load (a bypassed lookup asked the database):\n%s\n' "$auth_metrics"
