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
PG_PORT=$(qdb_free_port)
cleanup() {
  local rc=$?
  qdb_pg_stop "$WORK/pgdata"
  # No process of this run may outlive it.
  pkill -KILL -f "$WORK/build/qdb-control" 2>/dev/null || true
  if [ "${QDB_TEST_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    qdb_log "test folder kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT

qdb_build "$WORK/build" -DCMAKE_BUILD_TYPE=Debug -DQDB_SANITIZE=ON -DQDB_TESTS=ON
QDB_PG_FSYNC=off qdb_pg_start "$WORK/pgdata" "$PG_PORT"

export QDB_TEST_PG_PORT=$PG_PORT
export QDB_TEST_LOG_DIR=$WORK/logs
mkdir -p "$QDB_TEST_LOG_DIR"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$QDB_ROOT/tests/lsan.supp:print_suppressions=0

qdb_log "running tests"
cd "$WORK/build"
ctest --output-on-failure -j"${QDB_TEST_JOBS:-2}" ${QDB_TEST_REGEX:+-R "$QDB_TEST_REGEX"}
