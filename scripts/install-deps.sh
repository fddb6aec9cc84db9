#!/usr/bin/env bash
# Installs the Debian 12 packages forkpool builds and tests with. Idempotent.
set -euo pipefail
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
  libabsl-dev libgtest-dev libgmock-dev googletest \
  libcli11-dev libsystemd-dev grpc-proto \
  procps clang libclang-rt-14-dev >/dev/null
