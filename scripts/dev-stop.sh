#!/usr/bin/env bash
# Stops the services started by `make dev` (SIGTERM: graceful shutdown and gateway drain).
set -uo pipefail
cd "$(dirname "$0")/.."
for svc in api-service ws-gateway; do
  if [ -f ".dev/$svc.pid" ]; then
    pid=$(cat ".dev/$svc.pid")
    kill -TERM "$pid" 2>/dev/null && echo "stopping $svc ($pid)"
    rm -f ".dev/$svc.pid"
  fi
done
