#!/usr/bin/env bash
# Runs one fuzzer for a fixed time on a scratch copy of its seed corpus (the
# repository is never written to). Usage: run_fuzzer.sh BUILD_DIR NAME SEEDS SECONDS.
# Exit 77 (ctest: skipped) when the fuzzer was not built; non-zero when it found a
# crash, which it leaves in the scratch directory it names.
set -euo pipefail
build="${FORKPOOL_FUZZ_BUILD_DIR:-$1}"
name="$2"
seeds="$3"
seconds="$4"
binary="$build/fuzz/$name"
if [[ ! -x "$binary" ]]; then
  echo "SKIPPED: $binary is not built (scripts/test.sh builds it with clang; see fuzz/README.md)"
  exit 77
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/forkpool-$name.XXXXXX")"
mkdir -p "$work/corpus" "$work/artifacts"
cp "$seeds"/* "$work/corpus/" 2>/dev/null || true
status=0
# -rss_limit_mb: the decoder may legally buffer up to its 64 MiB frame limit.
"$binary" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" || status=$?
if [[ $status -ne 0 ]]; then
  echo "FAILED: $name exited $status; reproducer(s) in $work/artifacts:" >&2
  ls -l "$work/artifacts" >&2
  exit "$status"
fi
rm -rf "$work"
