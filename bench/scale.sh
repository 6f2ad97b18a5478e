#!/usr/bin/env bash
# Scale-out benchmark (issue 16, item 4): flag evaluations and job throughput with 1, 2 and
# 3 replicas of qdb-control on one PostgreSQL, on this machine, and the scaling ratios.
#   flags: wrk on OFREP bulk evaluation (POST /ofrep/v1/evaluate/flags, 200 answers) with a
#          service API token bound to production; one wrk per replica at once, the
#          connections split between them; requests/s summed, the worst p99 shown.
#   jobs:  N noop jobs enqueued (transactions of 1000 rows, as a caller's batch would) while
#          the replicas drain them with WORKERS workers each; jobs/s from the first insert to
#          the last success.
# The limits of the machine are printed beside the ratios: every replica, the load
# generator (wrk, psql) and PostgreSQL share the same cores, so that past the core count a
# replica adds no CPU, only another process competing for it. What the figures can show
# here is that adding replicas costs nothing (no lock or leader that serialises them) and
# that work is shared; the capacity per replica is the 1-replica figure on one core.
#
#   QDB_JOB_PREFETCH is set as bench/jobs.sh sets it for a flood of short jobs
#   (QDB_JOB_BATCH / WORKERS: one claim takes a batch); PREFETCH=1 measures the default.
# Each figure is the median of ROUNDS rounds (3) that run 1, 2, 3 replicas in turn; every
# round's figures are printed too, so that the spread the machine's other load causes shows.
# Usage: bench/scale.sh [duration_s=10] [connections=48]
#        (N=20000 WORKERS=8 PREFETCH=13 ROUNDS=3 to change)
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"
DURATION=${1:-10}
CONNS=${2:-48}
N=${N:-20000}
WORKERS=${WORKERS:-8}
ROUNDS=${ROUNDS:-3}
PREFETCH=${PREFETCH:-$(( (100 + WORKERS - 1) / WORKERS ))}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

qdb_install_packages "${QDB_PACKAGES[@]}" wrk
qdb_build "$QDB_ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF

WORK=$(mktemp -d /tmp/qdb-bench-scale-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port)
PIDS=()
stop_replicas() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_replicas
  qdb_pg_stop "$WORK/pgdata"
  rm -rf "$WORK"
}
trap cleanup EXIT
QDB_PG_FSYNC=off qdb_pg_start "$WORK/pgdata" "$PG_PORT"
qdb_pg_createdb "$PG_PORT" qdb_bench
openssl rand -hex 32 > "$WORK/audit-key"
DB=postgresql://postgres@127.0.0.1:$PG_PORT/qdb_bench
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres qdb_bench)

PORTS=()
# A port below the kernel's ephemeral range (32768-60999): on a busy machine an outgoing
# connection can hold a port that nothing listens on, which a connect test calls free and
# a bind then refuses.
listen_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    case " ${PORTS[*]} " in *" $p "*) continue;; esac
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  qdb_die "no free TCP port found"
}
# Start replica i (1-based) with `workers`; tried again on another port if it cannot listen.
start_one() { # i workers
  local i=$1 port pid
  for _ in 1 2 3 4 5; do
    port=$(listen_port)
    QDB_DATABASE_URL=$DB QDB_LISTEN=127.0.0.1:$port QDB_WEB_DIR=$QDB_ROOT/web QDB_AUTH_MODE=dev \
      QDB_HTTP_PER_IP_CONNECTIONS=$((CONNS + 64)) QDB_AUDIT_HMAC_KEY_FILE=$WORK/audit-key \
      QDB_WORKERS=$2 QDB_JOB_PREFETCH=$PREFETCH QDB_LOG_LEVEL=warn "$QDB_ROOT/build-bench/qdb-control" serve \
      2>"$WORK/replica-$i.log" &
    pid=$!
    # 60 s: a loaded machine (this one is shared) starts it slowly
    for _ in $(seq 600); do
      curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && { PIDS+=("$pid"); PORTS+=("$port"); return 0; }
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    tail -2 "$WORK/replica-$i.log" >&2
  done
  qdb_die "replica $i did not start"
}
start_replicas() { # count workers
  local i
  PORTS=()
  for i in $(seq "$1"); do start_one "$i" "$2"; done
}

# One replica makes the service token (an API token: every replica accepts it).
start_replicas 1 1
QDB=http://127.0.0.1:${PORTS[0]}
jwt=$(curl -sf -XPOST -H 'Content-Type: application/json' -d '{"sub":"bench","role":"admin"}' \
  "$QDB/dev-issuer/token" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
[ -n "$jwt" ] || qdb_die "no token from the dev issuer"
svc=$(curl -sf -XPOST -H 'Content-Type: application/json' -H "Authorization: Bearer $jwt" \
  -d '{"name":"bench-svc","role":"viewer","environments":["production"]}' "$QDB/api/v1/tokens" |
  sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
[ -n "$svc" ] || qdb_die "no API token"
stop_replicas

CTX='{"context":{"targetingKey":"user-4711","portal":"financing","app":"2.4.1","email":"a@qdb.qa"}}'
cat > "$WORK/bulk.lua" <<LUA
wrk.method = "POST"
wrk.body = '$CTX'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $svc"
LUA

ms() { # a wrk latency ("812.00us", "3.21ms", "1.02s") in ms
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)}
                         else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v+0 }'
}

# flags with the replicas that run: one wrk per replica, CONNS split between them
flags_run() { # -> "rps p99_ms errors"
  local n=${#PORTS[@]} i per=$(( CONNS / ${#PORTS[@]} ))
  local wp=() p
  for i in $(seq 0 $((n - 1))); do   # warm-up
    wrk -t1 -c"$per" -d2s -s "$WORK/bulk.lua" "http://127.0.0.1:${PORTS[$i]}/ofrep/v1/evaluate/flags" >/dev/null &
    wp+=($!)
  done
  for p in "${wp[@]}"; do wait "$p"; done
  wp=()
  for i in $(seq 0 $((n - 1))); do
    wrk -t1 -c"$per" -d"${DURATION}s" --latency -s "$WORK/bulk.lua" \
      "http://127.0.0.1:${PORTS[$i]}/ofrep/v1/evaluate/flags" > "$WORK/wrk-$i.out" &
    wp+=($!)
  done
  for p in "${wp[@]}"; do wait "$p"; done
  local rps=0 p99=0 err=0 r l e
  for i in $(seq 0 $((n - 1))); do
    r=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$i.out")
    l=$(ms "$(awk '$1=="99%" {print $2}' "$WORK/wrk-$i.out")")
    e=$(awk '/Non-2xx/ {n+=$5} /Socket errors/ {n+=$4+$6+$8+$10} END {print n+0}' "$WORK/wrk-$i.out")
    rps=$(awk -v a="$rps" -v b="$r" 'BEGIN {print a+b}')
    p99=$(awk -v a="$p99" -v b="$l" 'BEGIN {print (b > a ? b : a)}')
    err=$((err + e))
  done
  echo "$rps $p99 $err"
}

# jobs: N noop jobs enqueued while the replicas drain them
jobs_run() { # -> "jobs_per_s seconds"
  "${PSQL[@]}" -c "TRUNCATE job_log, job CASCADE" -c "VACUUM ANALYZE job" >/dev/null
  local t0 t1 done=0 n
  t0=$(date +%s%N)
  while [ "$done" -lt "$N" ]; do
    n=$(( N - done < 1000 ? N - done : 1000 ))
    "${PSQL[@]}" -c "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds)
                     SELECT 'noop', '{}', 'bench', 3, 60 FROM generate_series(1, $n)" >/dev/null
    done=$((done + n))
  done
  for _ in $(seq 6000); do
    left=$("${PSQL[@]}" -tAc "SELECT count(*) FROM job WHERE state <> 'succeeded'")
    [ "$left" = 0 ] && break
    sleep 0.05
  done
  [ "$left" = 0 ] || qdb_die "$left jobs left after 300 s"
  t1=$(date +%s%N)
  local by; by=$("${PSQL[@]}" -tAc "SELECT count(DISTINCT worker_id) FROM job")
  awk -v n="$N" -v ns=$((t1 - t0)) -v by="$by" 'BEGIN {printf "%.0f %.2f %d\n", n / (ns / 1e9), ns / 1e9, by}'
}

# ROUNDS rounds of 1, 2, 3 replicas in turn, and the median of each: on a shared machine
# the load of others moves between runs, and interleaving spreads it over the three.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }
declare -A F_ALL J_ALL F_RPS F_P99 F_ERR J_RATE J_SECS J_BY
for round in $(seq "$ROUNDS"); do
  for k in 1 2 3; do
    qdb_log "round $round, $k replica(s): flag evaluations"
    start_replicas "$k" 1
    read -r rps p99 err < <(flags_run)
    stop_replicas
    F_RPS[$k]="${F_RPS[$k]:-} $rps"; F_P99[$k]="${F_P99[$k]:-} $p99"
    F_ERR[$k]=$(( ${F_ERR[$k]:-0} + err ))
    qdb_log "round $round, $k replica(s): $N noop jobs, $WORKERS workers each, prefetch $PREFETCH"
    start_replicas "$k" "$WORKERS"
    read -r rate secs by < <(jobs_run)
    stop_replicas
    J_RATE[$k]="${J_RATE[$k]:-} $rate"; J_SECS[$k]="${J_SECS[$k]:-} $secs"
    J_BY[$k]=$(( ${J_BY[$k]:-$k} < by ? ${J_BY[$k]:-$k} : by ))
  done
done
# shellcheck disable=SC2086 # the rounds' figures, split into words on purpose
for k in 1 2 3; do
  F_ALL[$k]=${F_RPS[$k]# }; J_ALL[$k]=${J_RATE[$k]# }
  F_RPS[$k]=$(median ${F_RPS[$k]}); F_P99[$k]=$(median ${F_P99[$k]})
  J_RATE[$k]=$(median ${J_RATE[$k]}); J_SECS[$k]=$(median ${J_SECS[$k]})
done

cores=$(nproc)
echo
echo "Scale-out on this machine: $cores cores, $(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo) RAM,"
echo "shared by the replicas, wrk/psql and PostgreSQL (and anything else running: load average"
echo "$LOAD_BEFORE before the run, $(cut -d' ' -f1-3 /proc/loadavg) after). Jobs: $WORKERS workers per replica, prefetch $PREFETCH."
printf '\n%-9s | %14s %8s %8s %7s | %10s %7s %9s %7s\n' "replicas" "OFREP bulk/s" "p99 ms" "errors" \
  "ratio" "jobs/s" "secs" "replicas" "ratio"
for k in 1 2 3; do
  printf '%-9s | %14.0f %8.2f %8d %7.2f | %10.0f %7.2f %9s %7.2f\n' "$k" "${F_RPS[$k]}" "${F_P99[$k]}" \
    "${F_ERR[$k]}" "$(awk -v a="${F_RPS[$k]}" -v b="${F_RPS[1]}" 'BEGIN {print a/b}')" \
    "${J_RATE[$k]}" "${J_SECS[$k]}" "${J_BY[$k]} ran" \
    "$(awk -v a="${J_RATE[$k]}" -v b="${J_RATE[1]}" 'BEGIN {print a/b}')"
done
echo
echo "every round (flags req/s | jobs/s), to show the spread:"
for k in 1 2 3; do echo "  $k replica(s): ${F_ALL[$k]} | ${J_ALL[$k]}"; done
cat <<EOF

Limits of this machine, beside the ratios: with $cores cores for everything, one replica
under wrk already uses the cores that wrk and PostgreSQL leave it, so a second or third
replica cannot add CPU: a ratio near 1.0 means replicas cost nothing (no shared lock, no
leader in the request or claim path) and the work is shared ("replicas" column: how many
ran jobs); a ratio below 1.0 is the price of more processes on the same cores (context
switches, each replica's own pools). On a machine loaded by others (load average above the
core count) a ratio above 1.0 is the larger share of the oversubscribed cores that more
processes and threads get from the scheduler, not capacity: read it as "no loss", and
look at the spread of the rounds. Linear scaling needs each replica on its own cores,
as the Deployment's pods are (1 CPU request each): there the capacity is the 1-replica
figure per replica, until PostgreSQL (jobs) or the ingress (flags) is the limit.
EOF
