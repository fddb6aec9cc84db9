#!/usr/bin/env bash
# From nothing to every test run: installs the Debian packages, builds, runs the
# whole suite with ctest (it ends with ctest's summary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build="${FORKPOOL_BUILD_DIR:-build}"
# The fuzzers (fuzz/) need clang and a build of their own; ctest runs each for 20 s
# (label "fuzz"). A failed fuzz build does not stop the suite: its tests then report
# SKIPPED in ctest's summary.
fuzz_build="${FORKPOOL_FUZZ_BUILD_DIR:-build-fuzz}"
export FORKPOOL_FUZZ_BUILD_DIR="$(realpath -m "$fuzz_build")"
if cmake -S . -B "$fuzz_build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DFORKPOOL_FUZZ=ON \
     -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
   ninja -C "$fuzz_build" -j2 forkpool_fuzzers; then
  :
else
  echo "test.sh: the fuzz build failed; the fuzz tests will be skipped" >&2
  rm -f "$fuzz_build"/fuzz/*_fuzzer
fi
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300
