#!/bin/sh
# Runs every forkpool benchmark built in BUILD_DIR (default: build) one after another.
# Each starts its own forkpoold on a temporary socket and its Python baseline.
#   bench/run_all.sh [BUILD_DIR]        FORKPOOL_BENCH_REPS=N  (default 5)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
status=0
for name in apply_bench map_bench start_bench queue_bench; do
  bin=$build/bin/$name
  if [ ! -x "$bin" ]; then
    echo "== $name: not built ($bin); skipped"
    continue
  fi
  echo "== $name"
  start=$(date +%s)
  "$bin" || { echo "== $name FAILED (exit $?)"; status=1; }
  echo "== $name took $(( $(date +%s) - start )) s"
  echo
done
exit $status
