#!/usr/bin/env bash
# From nothing to a running daemon: installs the Debian packages, builds, starts
# forkpoold with the default pool in the background and runs one task through it.
# The socket is /run/forkpool/forkpoold.sock as root, else
# $XDG_RUNTIME_DIR/forkpool/forkpoold.sock (or /tmp/forkpool-$UID/forkpoold.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build="${FORKPOOL_BUILD_DIR:-build}"
bin="$PWD/$build/bin"
if [[ $(id -u) -eq 0 ]]; then
  sock=/run/forkpool/forkpoold.sock
elif [[ -n "${XDG_RUNTIME_DIR:-}" ]]; then
  sock="$XDG_RUNTIME_DIR/forkpool/forkpoold.sock"
else
  sock="/tmp/forkpool-$(id -u)/forkpoold.sock"
fi
log="${FORKPOOL_LOG:-$PWD/$build/forkpoold.log}"
if "$bin/forkpool" --address "unix:$sock" health >/dev/null 2>&1; then
  echo "forkpoold already answers on unix:$sock"
else
  nohup "$bin/forkpoold" --socket "$sock" "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 1 100); do
    if "$bin/forkpool" --address "unix:$sock" health >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "forkpoold exited during start-up; its log ($log):" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "forkpoold started: pid $pid, socket unix:$sock, log $log"
fi
echo "+ $build/bin/forkpool apply square 7"
"$bin/forkpool" --address "unix:$sock" apply square 7
echo "Stop it with: kill \$(cat $sock.lock)"
