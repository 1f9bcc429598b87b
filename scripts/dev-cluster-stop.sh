#!/usr/bin/env bash
# Stops what `make dev-cluster` started: the services first (SIGTERM: graceful shutdown and
# gateway drain), then the NATS and Redis nodes.
set -uo pipefail
cd "$(dirname "$0")/.."
state=.dev-cluster
[ -d "$state" ] || exit 0
stop() { # pid files...
  local pids=()
  for file in "$@"; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); echo "stopping $(basename "$file" .pid) ($pid)"; fi
    rm -f "$file"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
stop "$state"/api-*.pid "$state"/gateway-*.pid
scripts/cluster-infra.sh stop "$state"
