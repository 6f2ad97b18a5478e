#!/usr/bin/env bash
# Mixed load on one replica, as an operator's day gives it, beside nginx in the same run:
#   qdb-control: 16 connections on GET /healthz, 8 on GET /api/v1/me (API token),
#                4 enqueuing noop jobs (POST /api/v1/jobs), 4 listing jobs (GET /api/v1/jobs);
#   nginx:       16 connections on a static file of the same size as /healthz's answer
#                (its documented set-up: sendfile, keep-alive, access log on), at the same time.
# The same load runs twice, one after the other, each on a fresh database of the same
# PostgreSQL: first against the baseline (the revision before issue 9's work, bedf5f3, built
# from git into build-bench-<rev>), then against this tree; the enqueue rates of the two
# give the "3 x today's rate" of issue 9 as a ratio measured on this machine in this run,
# rather than against a figure from another day (the issue's 313/s; the machine is shared
# and its figures move by 2x from run to run).
# Each stream is one wrk with a Lua script that counts statuses; each run prints per stream
# requests/s, p50/p99/max, requests past 2 s, statuses; then the 5xx answers, the statement
# timeouts ("canceling statement due to statement timeout" in PostgreSQL's log, by statement
# from the server's log), and the server's resident memory (idle, max, end).
# Targets (issue 9): /healthz p99 <= 10 ms under the mixed load, no 5xx, no statement
# timeout, enqueue >= 3 x the baseline's rate.
#
# On a shared machine the load of others moves by 2x from one minute to the next, so that
# one baseline run followed by one current run compares two different machines: with
# QDB_BENCH_ROUNDS=N (default 1) the two alternate N times (baseline, current, baseline,
# ...), each on a fresh database, and the ratio printed is the median of the N rounds'
# ratios, beside each round's.
# Beside the flat-out streams, one paced connection on each server's /healthz (10
# requests/s, as a liveness probe sends them) shows what a probe sees under that load.
# Where the time of a /healthz answer goes when it is not the server's: for the server's
# event-loop threads (libmicrohttpd's "MHD-worker", where health is answered) and nginx's
# workers, the run-queue delay the kernel counted during the load (/proc/.../schedstat:
# time runnable but waiting for a core): its share of the time they wanted a core, and its
# mean per wait. A thread that waits 5 ms for a core at each wake-up cannot answer within
# 10 ms at the 99th percentile, whatever it does once it runs.
#
#   bench/mixed.sh [seconds=300]      QDB_PG_FSYNC=off to run PostgreSQL without fsync
#                                     (default on, as in production); QDB_PG_OPTS adds
#                                     PostgreSQL settings ("-c shared_preload_libraries=
#                                     pg_stat_statements" to see where its time goes);
#                                     extra server settings
#                                     pass through the environment (QDB_DB_POOL_SIZE, ...);
#                                     QDB_BENCH_BASELINE=<git rev> (default bedf5f3) or
#                                     "none" to run this tree only.
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"
DURATION=${1:-300}

BASELINE=${QDB_BENCH_BASELINE:-bedf5f3}

qdb_install_packages "${QDB_PACKAGES[@]}" wrk nginx-light
qdb_build "$QDB_ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF
if [ "$BASELINE" != none ]; then
  BASE_REV=$(git -C "$QDB_ROOT" rev-parse --short "$BASELINE^{commit}") ||
    qdb_die "no revision $BASELINE in this repository"
  BASE_DIR=$QDB_ROOT/build-bench-$BASE_REV
  if [ ! -x "$BASE_DIR/qdb-control" ]; then
    qdb_log "building the baseline $BASE_REV in ${BASE_DIR#"$QDB_ROOT"/}"
    rm -rf "$BASE_DIR" && mkdir -p "$BASE_DIR/src"
    git -C "$QDB_ROOT" archive "$BASE_REV" | tar -x -C "$BASE_DIR/src"
    cmake -S "$BASE_DIR/src" -B "$BASE_DIR" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF >/dev/null &&
      cmake --build "$BASE_DIR" -j"$(nproc)" >/dev/null || qdb_die "baseline build failed"
  fi
fi

WORK=$(mktemp -d /tmp/qdb-bench-mixed-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port); QDB_PORT=$(qdb_free_port); NGINX_PORT=$(qdb_free_port)
QDB_PID=
WRK_PIDS=()
cleanup() {
  local rc=$?
  for p in "${WRK_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$QDB_PID" ] && kill "$QDB_PID" 2>/dev/null && wait "$QDB_PID" 2>/dev/null
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  qdb_pg_stop "$WORK/pgdata"
  if [ "${QDB_BENCH_KEEP:-0}" = 1 ]; then qdb_log "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT

QDB_PG_FSYNC=${QDB_PG_FSYNC:-on} qdb_pg_start "$WORK/pgdata" "$PG_PORT"
openssl rand -hex 32 > "$WORK/audit-key"
chmod 600 "$WORK/audit-key"
export QDB_AUDIT_HMAC_KEY_FILE=$WORK/audit-key QDB_AUTH_MODE=dev

mkdir -p "$WORK/www"
printf '{}' > "$WORK/www/healthz"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 100000;
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

# One stream: counts statuses per thread, and at the end prints one "STREAM" line with
# requests, p50/p99/max (ms) and the requests that took longer than 2 s.
cat > "$WORK/stream.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  statuses = {}
  local method, body = args[1] or "GET", args[2]
  local headers = {}
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  if body then headers["Content-Type"] = "application/json" end
  req = wrk.format(method, nil, headers, body)
end
function request() return req end
-- A paced stream (BENCH_PACE_MS): one request per connection every so many ms, as a
-- liveness probe sends them, instead of flat out.
local pace = tonumber(os.getenv("BENCH_PACE_MS") or "")
if pace then function delay() return pace end end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do agg[k] = (agg[k] or 0) + v end
  end
  local s2, s4, s5, other = 0, 0, 0, 0
  local codes = {}
  for k, v in pairs(agg) do
    if k >= 200 and k < 300 then s2 = s2 + v elseif k >= 400 and k < 500 then s4 = s4 + v
    elseif k >= 500 then s5 = s5 + v else other = other + v end
    table.insert(codes, k .. ":" .. v)
  end
  -- Requests past 2 s, from the distribution by bisection on the percentile: walking it
  -- value by value (latency(i)) scans wrk's whole histogram per call and takes hours.
  local past2s = 0
  if latency.max > 2000000 then
    local lo, hi = 0, 100
    for _ = 1, 30 do
      local mid = (lo + hi) / 2
      if latency:percentile(mid) <= 2000000 then lo = mid else hi = mid end
    end
    past2s = math.floor(summary.requests * (100 - lo) / 100 + 0.5)
  end
  local e = summary.errors
  io.write(string.format("STREAM requests=%d secs=%.3f p50=%.3f p99=%.3f max=%.3f past2s=%d " ..
    "s2xx=%d s4xx=%d s5xx=%d other=%d sockerr=%d codes=%s\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, past2s, s2, s4, s5, other,
    e.connect + e.read + e.write + e.timeout, table.concat(codes, ",")))
end
LUA
NOOP='{"kind":"noop"}'

# Run-queue figures of a set of threads: "<cpu ns> <run-queue delay ns> <waits>" summed
# over the schedstat files given (threads that ended meanwhile are simply not counted).
sched_sum() {
  local f
  for f in "$@"; do cat "$f" 2>/dev/null; done | awk '{c += $1; d += $2; n += $3} END {printf "%.0f %.0f %.0f\n", c, d, n}'
}
# The schedstat files of the threads of process $1 named $2.
thread_stats() {
  local t
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] && echo "$t/schedstat"
  done
}
nginx_worker_stats() {
  local p
  for p in $(pgrep -P "$(cat "$WORK/nginx.pid")"); do echo "/proc/$p/schedstat"; done
}
# "label before after": the delta as one line of figures.
sched_report() {
  awk -v l="$1" -v b="$2" -v a="$3" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    c = y[1] - x[1]; d = y[2] - x[2]; n = y[3] - x[3];
    printf "%-34s cpu %7.1f s, waited for a core %7.1f s = %4.1f%% of the time it wanted one, %6.2f ms per wait (%d waits)\n",
      l, c / 1e9, d / 1e9, (c + d > 0 ? 100 * d / (c + d) : 0), (n > 0 ? d / n / 1e6 : 0), n }'
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# name connections url [method body]: one wrk into $RUN/name.out
stream() {
  local name=$1 conns=$2 url=$3 method=${4:-GET} body=${5:-}
  local args=("$method")
  [ -n "$body" ] && args+=("$body")
  BENCH_TOKEN=${BENCH_TOKEN:-} BENCH_PACE_MS=${BENCH_PACE_MS:-} wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 30s \
    -s "$WORK/stream.lua" "$url" -- "${args[@]}" > "$RUN/$name.out" 2>&1 &
  WRK_PIDS+=($!)
}
field() { sed -n 's/.* '"$2"'=\([^ ]*\).*/\1/p' <<<"$(grep '^STREAM' "$RUN/$1.out" || echo STREAM)"; }

# run_load LABEL BINARY: the whole load against one build on a fresh database; prints its
# figures and leaves the enqueue rate in $RUN/enqueue.rate.
run_load() {
  local label=$1 bin=$2
  RUN=$WORK/$label
  mkdir -p "$RUN"
  qdb_pg_createdb "$PG_PORT" "qdb_bench_$label"
  export QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/qdb_bench_$label
  QDB_LOG_LEVEL=error "$bin" migrate
  # admin: enqueueing noop jobs directly needs it (jobs_kinds.c)
  local token
  token=$(QDB_LOG_LEVEL=error "$bin" token create --name bench --role admin)
  QDB_LISTEN=127.0.0.1:$QDB_PORT QDB_WEB_DIR=$QDB_ROOT/web "$bin" serve 2>"$RUN/qdb.log" &
  QDB_PID=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$QDB_PORT/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$QDB_PORT/readyz" >/dev/null ||
    qdb_die "qdb-control ($label) not ready after 30 s; its log ends: $(tail -5 "$RUN/qdb.log")"
  curl -sf "http://127.0.0.1:$QDB_PORT/healthz" > "$WORK/www/healthz"
  curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$QDB_PORT/api/v1/me" >/dev/null ||
    qdb_die "the API token is refused ($label)"

  local idle_rss pg_log_start qdb_log_start
  idle_rss=$(rss_kb "$QDB_PID")
  pg_log_start=$(stat -c %s "$WORK/pgdata/server.log")
  qdb_log_start=$(stat -c %s "$RUN/qdb.log")
  local loop_files nginx_files loop_before nginx_before
  mapfile -t loop_files < <(thread_stats "$QDB_PID" MHD-worker)
  mapfile -t nginx_files < <(nginx_worker_stats)
  loop_before=$(sched_sum "${loop_files[@]}")
  nginx_before=$(sched_sum "${nginx_files[@]}")
  local Q=http://127.0.0.1:$QDB_PORT
  qdb_log "$label ($bin): mixed load for ${DURATION} s (qdb-control and nginx at the same time)"
  stream healthz 16 "$Q/healthz"
  BENCH_TOKEN=$token stream me 8 "$Q/api/v1/me"
  BENCH_TOKEN=$token stream enqueue 4 "$Q/api/v1/jobs" POST "$NOOP"
  BENCH_TOKEN=$token stream list 4 "$Q/api/v1/jobs?limit=20"
  stream nginx 16 "http://127.0.0.1:$NGINX_PORT/healthz"
  # and what a kubelet sees meanwhile: one probe connection, 10 requests/s, on each
  BENCH_PACE_MS=100 stream probe 1 "$Q/healthz"
  BENCH_PACE_MS=100 stream nginxprobe 1 "http://127.0.0.1:$NGINX_PORT/healthz"

  local max_rss=$idle_rss alive p r
  while :; do
    alive=0
    for p in "${WRK_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    r=$(rss_kb "$QDB_PID"); [ "${r:-0}" -gt "$max_rss" ] && max_rss=$r
    sleep 1
  done
  for p in "${WRK_PIDS[@]}"; do wait "$p" || true; done
  WRK_PIDS=()
  local end_rss loop_after nginx_after
  end_rss=$(rss_kb "$QDB_PID")
  loop_after=$(sched_sum "${loop_files[@]}")
  nginx_after=$(sched_sum "${nginx_files[@]}")
  kill "$QDB_PID" && wait "$QDB_PID" || true
  QDB_PID=

  printf '\n%s (%s)\n%-24s %6s %10s %9s %9s %10s %8s %7s %7s %7s %7s\n' "$label" "$bin" stream \
    conns "req/s" "p50 ms" "p99 ms" "max ms" "past 2s" 2xx 4xx 5xx sockerr
  local total5xx=0 s name rest conns req secs
  for s in healthz:16:"qdb-control /healthz" me:8:"qdb-control /api/v1/me" \
           enqueue:4:"qdb-control POST jobs" list:4:"qdb-control GET jobs" \
           nginx:16:"nginx (static file)" probe:1:"qdb /healthz, 10/s probe" \
           nginxprobe:1:"nginx, 10/s probe"; do
    name=${s%%:*}; rest=${s#*:}; conns=${rest%%:*}; local lbl=${rest#*:}
    if ! grep -q '^STREAM' "$RUN/$name.out"; then
      printf '%-24s wrk failed: %s\n' "$lbl" "$(tail -3 "$RUN/$name.out" | tr '\n' ' ')"
      continue
    fi
    req=$(field "$name" requests); secs=$(field "$name" secs)
    printf '%-24s %6d %10.1f %9.2f %9.2f %10.1f %8d %7d %7d %7d %7d\n' "$lbl" "$conns" \
      "$(awk -v r="$req" -v s="$secs" 'BEGIN {print (s > 0 ? r / s : 0)}')" \
      "$(field "$name" p50)" "$(field "$name" p99)" "$(field "$name" max)" \
      "$(field "$name" past2s)" "$(field "$name" s2xx)" "$(field "$name" s4xx)" \
      "$(field "$name" s5xx)" "$(field "$name" sockerr)"
    case $name in nginx*) ;; *) total5xx=$((total5xx + $(field "$name" s5xx))) ;; esac
  done

  local timeouts enq_rate
  timeouts=$(tail -c +"$((pg_log_start + 1))" "$WORK/pgdata/server.log" |
    grep -c "canceling statement due to statement timeout" || true)
  enq_rate=$(awk -v r="$(field enqueue s2xx)" -v s="$(field enqueue secs)" 'BEGIN {printf "%.1f", (s > 0 ? r / s : 0)}')
  echo "$enq_rate" > "$RUN/enqueue.rate"
  field healthz p99 > "$RUN/healthz.p99"
  printf '\n/healthz p99 %s ms, %s requests past 2 s (target p99 <= 10 ms); a paced probe meanwhile: p99 %s ms, max %s ms (nginx: %s ms, %s ms)\n' \
    "$(field healthz p99)" "$(field healthz past2s)" "$(field probe p99)" "$(field probe max)" \
    "$(field nginxprobe p99)" "$(field nginxprobe max)"
  printf 'enqueue: p99 %s ms, %s jobs/s accepted\n' "$(field enqueue p99)" "$enq_rate"
  printf '5xx answers of qdb-control: %d (target 0)\n' "$total5xx"
  printf 'statement timeouts: %d in PostgreSQL'"'"'s log (target 0)\n' "$timeouts"
  tail -c +"$((qdb_log_start + 1))" "$RUN/qdb.log" | grep '"sqlstate":"57014"' |
    sed -n 's/.*"statement":"\([^"]*\)".*/\1/p' | sort | uniq -c | sed 's/^/  by statement: /' || true
  printf 'qdb-control resident memory: idle %.1f MB, max %.1f MB, end %.1f MB\n' \
    "$(awk -v k="$idle_rss" 'BEGIN {print k/1024}')" "$(awk -v k="$max_rss" 'BEGIN {print k/1024}')" \
    "$(awk -v k="$end_rss" 'BEGIN {print k/1024}')"
  printf 'warning/error lines in the server log: %d\n' \
    "$(tail -c +"$((qdb_log_start + 1))" "$RUN/qdb.log" | grep -c '"level":"\(warn\|error\)"' || true)"
  printf 'run-queue delay during the load (load average at its end: %s):\n' \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
  sched_report "  qdb-control event loops (${#loop_files[@]})" "$loop_before" "$loop_after"
  sched_report "  nginx workers (${#nginx_files[@]})" "$nginx_before" "$nginx_after"
}

ROUNDS=${QDB_BENCH_ROUNDS:-1}
for round in $(seq "$ROUNDS"); do
  sfx=$([ "$ROUNDS" -gt 1 ] && echo "_r$round" || true)
  [ "$BASELINE" != none ] && run_load "baseline_$BASE_REV$sfx" "$BASE_DIR/qdb-control"
  run_load "current$sfx" "$QDB_ROOT/build-bench/qdb-control"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }

printf '\nwrk: one per stream, 1 thread each, %s s per run, on %s cores; PostgreSQL fsync=%s\n' \
  "$DURATION" "$(nproc)" "${QDB_PG_FSYNC:-on}"
if [ "$BASELINE" != none ]; then
  ratios=() p99s=()
  for round in $(seq "$ROUNDS"); do
    sfx=$([ "$ROUNDS" -gt 1 ] && echo "_r$round" || true)
    base=$(cat "$WORK/baseline_$BASE_REV$sfx/enqueue.rate"); cur=$(cat "$WORK/current$sfx/enqueue.rate")
    ratio=$(awk -v c="$cur" -v b="$base" 'BEGIN {printf "%.2f", (b > 0 ? c / b : 0)}')
    ratios+=("$ratio"); p99s+=("$(cat "$WORK/current$sfx/healthz.p99")")
    printf 'enqueue: %s jobs/s against %s jobs/s for the baseline %s: %s x (target >= 3 x)\n' \
      "$cur" "$base" "$BASE_REV" "$ratio"
    printf '/healthz p99: %s ms against %s ms for the baseline (target <= 10 ms)\n' \
      "$(cat "$WORK/current$sfx/healthz.p99")" "$(cat "$WORK/baseline_$BASE_REV$sfx/healthz.p99")"
  done
  if [ "$ROUNDS" -gt 1 ]; then
    printf 'median of %d rounds: enqueue %s x the baseline (rounds: %s); /healthz p99 %s ms\n' \
      "$ROUNDS" "$(median "${ratios[@]}")" "${ratios[*]}" "$(median "${p99s[@]}")"
  fi
fi
