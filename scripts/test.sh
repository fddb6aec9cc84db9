#!/usr/bin/env bash
# From nothing to every test run: installs the Debian packages, builds, runs the
# whole suite with ctest (it ends with ctest's summary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build="${FORKPOOL_BUILD_DIR:-build}"
# The fuzzers (fuzz/) need clang (installed above) and a build of their own; ctest
# runs each for 20 s (label "fuzz"). A failed fuzz build fails the suite: a fuzzer
# that silently stopped building would be a test that cannot fail. (A developer's
# ctest without this build reports the fuzz tests as skipped.)
fuzz_build="${FORKPOOL_FUZZ_BUILD_DIR:-build-fuzz}"
export FORKPOOL_FUZZ_BUILD_DIR="$(realpath -m "$fuzz_build")"
cmake -S . -B "$fuzz_build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DFORKPOOL_FUZZ=ON \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$fuzz_build" -j2 forkpool_fuzzers
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300
