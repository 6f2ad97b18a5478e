#!/usr/bin/env bash
# Soak (issue 16, item 4): mixed load on 2 replicas of qdb-control over one PostgreSQL for
# a while (10 minutes by default), minute by minute:
#   - flag evaluations: wrk on OFREP bulk on each replica (a service token bound to
#     production), 5 connections each, each waiting 1 ms after every answer (wrk's delay()):
#     at most 5,000 a second per replica, about a fifth of what one replica serves on this
#     machine (bench/scale.sh). A soak holds a steady load below saturation, so that a leak
#     or a slow degradation shows; unpaced, wrk, 2 replicas and PostgreSQL saturate the 2
#     cores and the soak measures only the scheduler's queue (its 2 s timeouts);
#   - job enqueues and runs: wrk POSTing noop jobs (an admin API token) to each replica, 2 connections at about
#     20 a second each (wrk's delay()), drained by the replicas' workers;
#   - API reads: wrk on GET /api/v1/jobs?limit=20 and GET /api/v1/flags (alternating), 2
#     connections per replica, about 50 a second each;
#   - an SSE client on GET /api/v1/jobs/events of the first replica for the whole run.
# Each minute prints each replica's resident memory, the requests and errors of the minute
# (non-2xx answers and socket errors of every wrk, jobs failed, the SSE stream ended) and
# p99 of the flag evaluations and of the API calls. At the end the targets are checked:
# memory growth after the first minute < 5 %, no error, p99 of the last minute within 1.5x
# of the second's; the exit status is 1 when one is missed.
#
# Usage: bench/soak.sh [seconds=600]    (whole minutes; at least 2)
#   QDB_SOAK_FLAG_DELAY_MS=1  the wait after each flag answer (0: unpaced, a stress run)
#   QDB_BENCH_KEEP=1          keep the work folder (the replicas' logs, wrk's outputs)
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"
SECONDS_TOTAL=${1:-600}
MINUTES=$(( SECONDS_TOTAL / 60 ))
# 0: the flag load unpaced (a stress run rather than a soak)
FLAG_DELAY_MS=${QDB_SOAK_FLAG_DELAY_MS:-1}
[[ "$FLAG_DELAY_MS" =~ ^[0-9]+$ ]] || qdb_die "QDB_SOAK_FLAG_DELAY_MS: whole milliseconds"
[ "$MINUTES" -ge 2 ] || qdb_die "at least 120 seconds (two minutes to compare)"

qdb_install_packages "${QDB_PACKAGES[@]}" wrk
qdb_build "$QDB_ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DQDB_TESTS=OFF

WORK=$(mktemp -d /tmp/qdb-bench-soak-XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(qdb_free_port)
PIDS=()
SSE_PID=
cleanup() {
  local p
  [ -n "$SSE_PID" ] && kill "$SSE_PID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  qdb_pg_stop "$WORK/pgdata"
  if [ -n "${QDB_BENCH_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
QDB_PG_FSYNC=off qdb_pg_start "$WORK/pgdata" "$PG_PORT"
qdb_pg_createdb "$PG_PORT" qdb_soak
openssl rand -hex 32 > "$WORK/audit-key"
DB=postgresql://postgres@127.0.0.1:$PG_PORT/qdb_soak
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres qdb_soak)

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
# Start replica i; tried again on another port if it cannot listen.
start_one() { # i
  local i=$1 port pid
  for _ in 1 2 3 4 5; do
    port=$(listen_port)
    QDB_DATABASE_URL=$DB QDB_LISTEN=127.0.0.1:$port QDB_WEB_DIR=$QDB_ROOT/web QDB_AUTH_MODE=dev \
      QDB_AUDIT_HMAC_KEY_FILE=$WORK/audit-key QDB_WORKERS=4 QDB_LOG_LEVEL=warn \
      "$QDB_ROOT/build-bench/qdb-control" serve 2>"$WORK/replica-$i.log" &
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
start_one 1
start_one 2
A=http://127.0.0.1:${PORTS[0]}
jwt=$(curl -sf -XPOST -H 'Content-Type: application/json' -d '{"sub":"soak","role":"admin"}' \
  "$A/dev-issuer/token" | sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p')
[ -n "$jwt" ] || qdb_die "no token from the dev issuer"
token() { # name role [environments json]
  curl -sf -XPOST -H 'Content-Type: application/json' -H "Authorization: Bearer $jwt" \
    -d "{\"name\":\"$1\",\"role\":\"$2\"${3:+,\"environments\":$3}}" "$A/api/v1/tokens" |
    sed -n 's/.*"token": *"\([^"]*\)".*/\1/p'
}
svc=$(token soak-svc viewer '["production"]')
op=$(token soak-admin admin)   # enqueueing noop jobs needs the admin role
[ -n "$svc" ] && [ -n "$op" ] || qdb_die "no API tokens"

CTX='{"context":{"targetingKey":"user-4711","portal":"financing","app":"2.4.1","email":"a@qdb.qa"}}'
cat > "$WORK/flags.lua" <<LUA
wrk.method = "POST"
wrk.body = '$CTX'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $svc"
function delay() return $FLAG_DELAY_MS end
-- non-2xx answers by status, summed over the threads in done()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  if status < 200 or status > 299 then statuses[status] = (statuses[status] or 0) + 1 end
end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses") or {}) do all[s] = (all[s] or 0) + n end
  end
  for s, n in pairs(all) do io.write(string.format("status %d: %d\n", s, n)) end
end
LUA
cat > "$WORK/enqueue.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"kind":"noop","args":{}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $op"
function delay() return 50 end
-- non-2xx answers by status, summed over the threads in done()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  if status < 200 or status > 299 then statuses[status] = (statuses[status] or 0) + 1 end
end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses") or {}) do all[s] = (all[s] or 0) + n end
  end
  for s, n in pairs(all) do io.write(string.format("status %d: %d\n", s, n)) end
end
LUA
cat > "$WORK/reads.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $op"
local n = 0
function request()
  n = n + 1
  if n % 2 == 0 then return wrk.format("GET", "/api/v1/flags") end
  return wrk.format("GET", "/api/v1/jobs?limit=20")
end
function delay() return 20 end
-- non-2xx answers by status, summed over the threads in done()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  if status < 200 or status > 299 then statuses[status] = (statuses[status] or 0) + 1 end
end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses") or {}) do all[s] = (all[s] or 0) + n end
  end
  for s, n in pairs(all) do io.write(string.format("status %d: %d\n", s, n)) end
end
LUA

# The SSE client: it must stay connected for the whole run.
curl -sN -H "Authorization: Bearer $op" "$A/api/v1/jobs/events" > "$WORK/sse.out" 2>/dev/null &
SSE_PID=$!

ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)}
                              else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v+0 }'; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# errors and requests of one wrk output
wrk_errors() { awk '/Non-2xx/ {n+=$5} /Socket errors/ {n+=$4+$6+$8+$10} END {print n+0}' "$1"; }
wrk_timeouts() { awk '/Socket errors/ {n+=$10} END {print n+0}' "$1"; }
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }
wrk_p99() { ms "$(awk '$1=="99%" {print $2}' "$1")"; }

declare -a RSS1 RSS2 P99F P99A
total_errors=0
printf '\n%-6s %10s %10s %9s %9s %7s %9s %9s %8s %8s\n' "minute" "rss-1 MB" "rss-2 MB" "flag req" \
  "api req" "errors" "flag p99" "api p99" "jobs ok" "pending"
for m in $(seq "$MINUTES"); do
  wp=()
  for i in 0 1; do
    u=http://127.0.0.1:${PORTS[$i]}
    wrk -t1 -c5 -d60s --latency -s "$WORK/flags.lua" "$u/ofrep/v1/evaluate/flags" > "$WORK/f$i.out" & wp+=($!)
    wrk -t1 -c2 -d60s --latency -s "$WORK/enqueue.lua" "$u/api/v1/jobs" > "$WORK/e$i.out" & wp+=($!)
    wrk -t1 -c2 -d60s --latency -s "$WORK/reads.lua" "$u/" > "$WORK/r$i.out" & wp+=($!)
  done
  for p in "${wp[@]}"; do wait "$p"; done
  errs=0 freq=0 areq=0 fp99=0 ap99=0 why="" slow=0
  for i in 0 1; do
    for f in f e r; do
      e=$(wrk_errors "$WORK/$f$i.out"); errs=$((errs + e))
      [ "$e" = 0 ] || why="$why $f$i:$e"
      slow=$((slow + $(wrk_timeouts "$WORK/$f$i.out")))
    done
    freq=$(( freq + $(wrk_requests "$WORK/f$i.out") ))
    areq=$(( areq + $(wrk_requests "$WORK/e$i.out") + $(wrk_requests "$WORK/r$i.out") ))
    fp99=$(awk -v a="$fp99" -v b="$(wrk_p99 "$WORK/f$i.out")" 'BEGIN {print (b > a ? b : a)}')
    for f in e r; do
      ap99=$(awk -v a="$ap99" -v b="$(wrk_p99 "$WORK/$f$i.out")" 'BEGIN {print (b > a ? b : a)}')
    done
  done
  failed=$("${PSQL[@]}" -tAc "SELECT count(*) FROM job WHERE state = 'failed'")
  ok=$("${PSQL[@]}" -tAc "SELECT count(*) FROM job WHERE state = 'succeeded'")
  pending=$("${PSQL[@]}" -tAc "SELECT count(*) FROM job WHERE state IN ('pending', 'running', 'retrying')")
  kill -0 "$SSE_PID" 2>/dev/null || errs=$((errs + 1))   # the SSE stream ended
  errs=$((errs + failed - ${prev_failed:-0})); prev_failed=$failed
  total_errors=$((total_errors + errs))
  RSS1[$m]=$(rss_mb "${PIDS[0]}"); RSS2[$m]=$(rss_mb "${PIDS[1]}")
  P99F[$m]=$fp99; P99A[$m]=$ap99
  printf '%-6d %10s %10s %9d %9d %7d %9.2f %9.2f %8d %8d\n' "$m" "${RSS1[$m]}" "${RSS2[$m]}" \
    "$freq" "$areq" "$errs" "$fp99" "$ap99" "$ok" "$pending"
  # which load had errors (f: flags, e: enqueues, r: reads; 0/1: the replica)
  # wrk counts an answer slower than its 2 s timeout as a socket error: shown apart
  [ -z "$why" ] || echo "       errors by load:$why (of which wrk timeouts, no answer in 2 s: $slow; jobs failed: $failed)"
  for i in 0 1; do
    for f in f e r; do
      st=$(awk '/^status / {printf " %s%s", $2, $3}' "$WORK/$f$i.out")
      [ -z "$st" ] || echo "       answers not 2xx, $f$i:$st"
    done
  done
done

echo
verdict=0
check() { # ok text
  if [ "$1" = 1 ]; then echo "  met:    $2"; else echo "  MISSED: $2"; verdict=1; fi
}
last=$MINUTES
g1=$(awk -v a="${RSS1[1]}" -v b="${RSS1[$last]}" 'BEGIN {printf "%.1f", (b - a) / a * 100}')
g2=$(awk -v a="${RSS2[1]}" -v b="${RSS2[$last]}" 'BEGIN {printf "%.1f", (b - a) / a * 100}')
check "$(awk -v a="$g1" -v b="$g2" 'BEGIN {print (a < 5 && b < 5) ? 1 : 0}')" \
  "memory growth after the first minute < 5 % (replica 1: $g1 %, replica 2: $g2 %)"
check "$([ "$total_errors" = 0 ] && echo 1 || echo 0)" "no error ($total_errors)"
check "$(kill -0 "$SSE_PID" 2>/dev/null && echo 1 || echo 0)" \
  "the SSE client stayed connected ($(grep -c '^data:' "$WORK/sse.out" || true) events received)"
for kind in flag api; do
  if [ $kind = flag ]; then a=${P99F[2]} b=${P99F[$last]}; else a=${P99A[2]} b=${P99A[$last]}; fi
  check "$(awk -v a="$a" -v b="$b" 'BEGIN {print (b <= 1.5 * a) ? 1 : 0}')" \
    "$kind p99 of the last minute within 1.5x of the second's ($b ms vs $a ms)"
done
exit $verdict
