#!/usr/bin/env bash
# HTTP core benchmark: wrk against qdb-control's GET /healthz and, in the same run, against
# nginx serving a static file of the same size on loopback. Prints requests/s and p99 of
# both, the ratio, and qdb-control's resident memory idle and at the end of the load.
# Both servers log every request (qdb-control's JSON access log, nginx's access_log).
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
body=$(curl -sf "http://127.0.0.1:$QDB_PORT/healthz")

mkdir -p "$WORK/www"
printf '%s' "$body" > "$WORK/www/healthz"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log $WORK/nginx-access.log;
  default_type application/json;
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
  local url=$1 out
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$url")
  local rps p99 non2xx sockerr
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out"); sockerr=$(awk '/Socket errors/ {print $4+$6+$8+$10}' <<<"$out")
  echo "$rps ${p99:-0} ${non2xx:-0} ${sockerr:-0}"
}

idle=$(rss_kb $QDB_PID)
wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null   # warm-up
wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:$QDB_PORT/healthz" >/dev/null
read -r n_rps n_p99 n_non2xx n_err < <(run_wrk "http://127.0.0.1:$NGINX_PORT/healthz")
read -r q_rps q_p99 q_non2xx q_err < <(run_wrk "http://127.0.0.1:$QDB_PORT/healthz")
loaded=$(rss_kb $QDB_PID)

printf '\n%-22s %12s %10s %8s\n' "server" "requests/s" "p99 ms" "errors"
printf '%-22s %12.0f %10.2f %8d\n' "nginx (static file)" "$n_rps" "$n_p99" "$((n_non2xx + n_err))"
printf '%-22s %12.0f %10.2f %8d\n' "qdb-control /healthz" "$q_rps" "$q_p99" "$((q_non2xx + q_err))"
ratio=$(awk -v a="$q_rps" -v b="$n_rps" 'BEGIN {printf "%.2f", a/b}')
printf '\nratio qdb-control/nginx requests/s: %s (target >= 0.70)\n' "$ratio"
printf 'ratio qdb-control/nginx p99: %s (target <= 1.50)\n' "$(awk -v a="$q_p99" -v b="$n_p99" 'BEGIN {printf "%.2f", a/b}')"
printf 'qdb-control resident memory: idle %.1f MB, end of load %.1f MB (targets < 20, < 64)\n' \
  "$(awk -v k="$idle" 'BEGIN {print k/1024}')" "$(awk -v k="$loaded" 'BEGIN {print k/1024}')"
printf 'wrk: %s connections, %s s, 2 threads, on %s cores\n' "$CONNS" "$DURATION" "$(nproc)"
