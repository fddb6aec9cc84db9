#!/usr/bin/env bash
# From nothing to every test run: installs the Debian packages, builds, runs the
# whole suite with ctest (it ends with ctest's summary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build="${FORKPOOL_BUILD_DIR:-build}"
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300
