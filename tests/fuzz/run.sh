#!/usr/bin/env bash
# Build and run the libFuzzer targets of tests/fuzz/ (see CMakeLists.txt there).
#   run.sh build SRC_DIR FUZZ_BUILD_DIR      configure (CC=clang, -DQDB_FUZZ=ON) and build
#   run.sh run NAME FUZZ_BUILD_DIR [SECONDS] fuzz fuzz_NAME for SECONDS (QDB_FUZZ_SECONDS,
#                                            default 20) from a copy of corpus/NAME/
# The committed corpus is never written: libFuzzer adds what it finds to a scratch copy,
# which is removed afterwards unless QDB_FUZZ_KEEP=1. A crash leaves its input in the
# scratch folder (printed) and fails the run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

case "${1:-}" in
build)
  src=$2 out=$3
  command -v clang >/dev/null || { echo "clang not found (package clang)" >&2; exit 1; }
  # The gcc build gates warnings (-Werror); here a clang-only warning must not hide the
  # fuzzing, so it stays a warning.
  CC=clang cmake -S "$src" -B "$out" -DQDB_FUZZ=ON -DQDB_TESTS=OFF -DQDB_SANITIZE=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS=-Wno-error >/dev/null
  cmake --build "$out" -j"${QDB_FUZZ_BUILD_JOBS:-2}" >/dev/null
  ls "$out"/tests/fuzz/fuzz_* >/dev/null
  echo "1 passed, 0 failed"
  ;;
run)
  name=$2 out=$3 secs=${4:-${QDB_FUZZ_SECONDS:-20}}
  bin=$out/tests/fuzz/fuzz_$name
  [ -x "$bin" ] || { echo "$bin was not built" >&2; exit 1; }
  scratch=$(mktemp -d /tmp/qdb-fuzz-$name-XXXXXX)
  mkdir -p "$scratch/corpus" "$scratch/artifacts"
  if [ -d "$here/corpus/$name" ]; then
    cp -r "$here/corpus/$name/." "$scratch/corpus/"
  fi
  dict=()
  [ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")
  set +e
  # -rss_limit_mb: a leak or runaway allocation is a finding, not a machine-wide stall.
  "$bin" "$scratch/corpus" "${dict[@]}" -max_total_time="$secs" -max_len=4096 \
    -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$scratch/artifacts/" 2>"$scratch/log"
  rc=$?
  set -e
  tail -n 15 "$scratch/log"
  if [ $rc -ne 0 ] || ls "$scratch/artifacts"/* >/dev/null 2>&1; then
    echo "fuzz_$name found a failure; input and log kept in $scratch" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  [ "${QDB_FUZZ_KEEP:-0}" = 1 ] && echo "corpus kept in $scratch/corpus" || rm -rf "$scratch"
  echo "1 passed, 0 failed"
  ;;
*)
  echo "usage: $0 build SRC_DIR FUZZ_BUILD_DIR | run NAME FUZZ_BUILD_DIR [SECONDS]" >&2
  exit 2
  ;;
esac
