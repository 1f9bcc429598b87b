#!/usr/bin/env bash
# The cluster suite: starts the `make dev-cluster` topology from the debug builds (which
# `make test` / `make test-cluster` build first), runs clients/typescript/test/cluster against it
# (cross-gateway delivery, presence, typing, the fleet-wide rate limit, and a failover that kills
# a NATS node and a Redis master mid-traffic), and stops the topology whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'scripts/dev-cluster-stop.sh >/dev/null 2>&1 || true' EXIT INT TERM
echo "test-cluster: starting the clustered topology"
# A fresh database each run (the topology migrates it).
psql -h 127.0.0.1 -U root -d postgres -qc "drop database if exists retich_cluster_test with (force)" >/dev/null
if ! PROFILE=dev SKIP_BUILD=1 CLUSTER_DATABASE_URL="postgres://root@127.0.0.1:5432/retich_cluster_test" \
  scripts/dev-cluster.sh >.dev-cluster.log 2>&1; then
  cat .dev-cluster.log >&2
  for log in .dev-cluster/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
  exit 1
fi
if [ ! -f clients/typescript/node_modules/.package-lock.json ]; then
  (cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "test-cluster: the cluster suite"
status=0
(cd clients/typescript && npm run --silent test:cluster) || status=$?
if [ "$status" != 0 ]; then
  for log in .dev-cluster/api-*.log .dev-cluster/gateway-*.log; do echo "--- $log" >&2; tail -n 30 "$log" >&2; done
fi
exit "$status"
