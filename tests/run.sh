#!/usr/bin/env bash
# Run the whole test suite: install what is missing, build with AddressSanitizer and UBSan
# in a throwaway folder, start a PostgreSQL cluster there, run every test through ctest.
# Exits non-zero on any failure. Set QDB_TEST_KEEP=1 to keep the folder (logs) afterwards,
# QDB_TEST_JOBS to change ctest's parallelism, QDB_TEST_REGEX to run a subset.
set -euo pipefail
source "$(dirname "$0")/../deploy/local/lib.sh"

qdb_install_packages "${QDB_PACKAGES[@]}" "${QDB_TEST_PACKAGES[@]}"
command -v node >/dev/null || qdb_die "Node.js 20 is required for the test tools (node not found)"
if [ ! -d "$QDB_ROOT/tests/node_modules" ] || [ "$QDB_ROOT/tests/package-lock.json" -nt "$QDB_ROOT/tests/node_modules" ]; then
  qdb_log "installing test tools (npm ci)"
  (cd "$QDB_ROOT/tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

WORK=$(mktemp -d /tmp/qdb-tests-XXXXXX)
chmod 755 "$WORK"
cleanup() {
  local rc=$?
  qdb_pg_stop "$WORK/pgdata"
  # No process of this run may outlive it.
  pkill -KILL -f "$WORK/build/qdb-control" 2>/dev/null || true
  pkill -KILL -f "$WORK/tsan/qdb-control" 2>/dev/null || true
  if [ "${QDB_TEST_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    qdb_log "test folder kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT

qdb_build "$WORK/build" -DCMAKE_BUILD_TYPE=Debug -DQDB_SANITIZE=ON -DQDB_TESTS=ON
# A second tree with ThreadSanitizer for the threaded integration tests (HTTP, auth, jobs,
# flags);
# QDB_TEST_TSAN=0 skips it.
TSAN_TESTS=${QDB_TEST_TSAN_REGEX:-'^integration/test_(platform|auth_dev|auth_oidc|jobs_api|jobs_replicas|flags)$'}
if [ "${QDB_TEST_TSAN:-1}" = 1 ]; then
  qdb_build "$WORK/tsan" -DCMAKE_BUILD_TYPE=Debug -DQDB_SANITIZE=thread -DQDB_TESTS=ON
fi
# The port is chosen only now, after the builds (minutes in which another process may take
# a port found free before them), and again when PostgreSQL could not bind it.
for try in 1 2 3; do
  PG_PORT=$(qdb_free_port)
  if (QDB_PG_FSYNC=off qdb_pg_start "$WORK/pgdata" "$PG_PORT"); then break; fi
  grep -q "could not bind" "$WORK/pgdata/server.log" 2>/dev/null && [ "$try" -lt 3 ] ||
    qdb_die "PostgreSQL did not start"
  qdb_log "port $PG_PORT was taken meanwhile; another"
  : >"$WORK/pgdata/server.log"
done

export QDB_TEST_PG_PORT=$PG_PORT
export QDB_TEST_LOG_DIR=$WORK/logs
mkdir -p "$QDB_TEST_LOG_DIR"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$QDB_ROOT/tests/lsan.supp:print_suppressions=0

# ThreadSanitizer: every report fails the test (th_server_stop looks for "Sanitizer" in the
# server's log, which "WARNING: ThreadSanitizer: data race" contains).
export TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1:history_size=4

qdb_log "running tests"
tsan_rc=0
if [ "${QDB_TEST_TSAN:-1}" = 1 ]; then
  # in parallel with the main run, one test at a time, its output kept in a file
  # the TSan subset, narrowed by QDB_TEST_REGEX when one is given
  tsan_list=$(cd "$WORK/tsan" && ctest -N -R "$TSAN_TESTS" | sed -n 's/^ *Test *#[0-9]*: //p' |
              { [ -n "${QDB_TEST_REGEX:-}" ] && grep -E "$QDB_TEST_REGEX" || cat; } | paste -sd'|' -)
  if [ -n "$tsan_list" ]; then
    (cd "$WORK/tsan" && mkdir -p "$WORK/logs-tsan" && QDB_TEST_LOG_DIR=$WORK/logs-tsan \
       ctest --output-on-failure -j1 -R "^($tsan_list)\$" >"$WORK/tsan.out" 2>&1) &
    tsan_pid=$!
  fi
fi
main_rc=0
(cd "$WORK/build" && ctest --output-on-failure -j"${QDB_TEST_JOBS:-2}" ${QDB_TEST_REGEX:+-R "$QDB_TEST_REGEX"}) || main_rc=$?
if [ -n "${tsan_pid:-}" ]; then
  wait "$tsan_pid" || tsan_rc=$?
  qdb_log "ThreadSanitizer run ($TSAN_TESTS):"
  cat "$WORK/tsan.out"
fi
[ "$main_rc" = 0 ] && [ "$tsan_rc" = 0 ]
