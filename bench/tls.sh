#!/usr/bin/env bash
# TLS cost on one replica: wrk against GET /healthz over plain HTTP, over HTTPS (TLS 1.3,
# the certificate a self-made CA signed) on kept-alive connections, and over HTTPS with a
# new connection, hence a full TLS 1.3 handshake, per request ("Connection: close"): what
# the ingress's hop to a pod costs, and what a client that does not keep its connection
# costs. Prints requests/s and p99 of each and the ratios to plain HTTP, and the server's
# resident memory at the end.
# Usage: bench/tls.sh [duration_s=10] [connections=64]
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"
DURATION=${1:-10}
CONNS=${2:-64}

qdb_install_packages "${QDB_PACKAGES[@]}" wrk
qdb_build "$QDB_ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF

WORK=$(mktemp -d /tmp/qdb-bench-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port); HTTP_PORT=$(qdb_free_port); HTTPS_PORT=$(qdb_free_port)
cleanup() {
  for p in ${HTTP_PID:-} ${HTTPS_PID:-}; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
}
trap cleanup EXIT
QDB_PG_FSYNC=off qdb_pg_start "$WORK/pgdata" "$PG_PORT"
qdb_pg_createdb "$PG_PORT" qdb_bench
openssl rand -hex 32 > "$WORK/audit-key"
(cd "$WORK" &&
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 1 -subj /CN=bench-ca 2>/dev/null &&
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr \
    -subj /CN=localhost 2>/dev/null &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 \
    -extfile ext 2>/dev/null) || qdb_die "cannot make the certificates"

start() { # PORT [extra env...]
  local port=$1; shift
  env QDB_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/qdb_bench" \
    QDB_LISTEN="127.0.0.1:$port" QDB_WEB_DIR="$QDB_ROOT/web" QDB_AUTH_MODE=dev \
    QDB_AUDIT_HMAC_KEY_FILE="$WORK/audit-key" QDB_HTTP_PER_IP_CONNECTIONS=10000 "$@" \
    "$QDB_ROOT/build-bench/qdb-control" serve 2>>"$WORK/qdb-$port.log" &
}
# One server at a time, so that each has both cores.
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
run_wrk() {
  local out rps p99 errs
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$@")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  errs=$(awk '/Non-2xx/ {n+=$5} /Socket errors/ {n+=$4+$6+$8+$10} END {print n+0}' <<<"$out")
  echo "$rps $p99 $errs"
}

start "$HTTP_PORT"; HTTP_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.1; done
read -r h_rps h_p99 h_err < <(run_wrk "http://127.0.0.1:$HTTP_PORT/healthz")
kill "$HTTP_PID"; wait "$HTTP_PID" 2>/dev/null || true; HTTP_PID=

start "$HTTPS_PORT" QDB_TLS_CERT_FILE="$WORK/srv.pem" QDB_TLS_KEY_FILE="$WORK/srv.key"; HTTPS_PID=$!
for _ in $(seq 100); do curl -sf --cacert "$WORK/ca.pem" "https://localhost:$HTTPS_PORT/readyz" >/dev/null && break; sleep 0.1; done
curl -sf --cacert "$WORK/ca.pem" --tlsv1.3 "https://localhost:$HTTPS_PORT/healthz" >/dev/null ||
  qdb_die "the HTTPS server does not answer"
read -r s_rps s_p99 s_err < <(run_wrk "https://127.0.0.1:$HTTPS_PORT/healthz")
read -r c_rps c_p99 c_err < <(run_wrk -H 'Connection: close' "https://127.0.0.1:$HTTPS_PORT/healthz")
rss=$(rss_kb "$HTTPS_PID")

printf '\n%-40s %10s %9s %7s %9s\n' "GET /healthz" "req/s" "p99 ms" "errors" "req/s x"
printf '%-40s %10.0f %9.2f %7d %9s\n' "HTTP, kept alive" "$h_rps" "$h_p99" "$h_err" "1.00"
printf '%-40s %10.0f %9.2f %7d %9.2f\n' "HTTPS TLS 1.3, kept alive" "$s_rps" "$s_p99" "$s_err" "$(awk -v a="$s_rps" -v b="$h_rps" 'BEGIN{print a/b}')"
printf '%-40s %10.0f %9.2f %7d %9.2f\n' "HTTPS TLS 1.3, a handshake per request" "$c_rps" "$c_p99" "$c_err" "$(awk -v a="$c_rps" -v b="$h_rps" 'BEGIN{print a/b}')"
echo "HTTPS server resident memory at the end: $((rss / 1024)) MB"
echo "wrk: $CONNS connections, ${DURATION} s, 2 threads, on $(nproc) cores (wrk and the server share them)"
