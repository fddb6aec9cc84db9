#!/usr/bin/env bash
# Configures and builds forkpool into ./build (or $FORKPOOL_BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${FORKPOOL_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" >/dev/null
ninja -C "$build" -j"${FORKPOOL_JOBS:-2}"
