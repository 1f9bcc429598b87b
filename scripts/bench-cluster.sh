#!/usr/bin/env bash
# The cost of clustering: the same release binaries on the single-node topology (the machine's
# NATS and Redis) and on a clustered one (a 3-node NATS cluster and a 6-node Redis Cluster from
# scripts/cluster-infra.sh), alternated round by round with scripts/bench-ab.sh (A = single,
# B = clustered; the order flips every round):
#
#   scripts/bench-cluster.sh [ROUNDS]
#
# Scenarios (AB_SCENARIOS): send with 32 clients, fan-out 100 x 10 at 500 msg/s and at full
# speed. BENCH_BIN: a folder with release builds of api-service, ws-gateway and retich-bench
# (default: builds this tree's into target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release --locked -p api-service -p ws-gateway -p retich-bench
  BENCH_BIN=target/release
fi
state=.bench-cluster
trap 'scripts/cluster-infra.sh stop "$state"' EXIT INT TERM
scripts/cluster-infra.sh start "$state" 4251 7251
# shellcheck disable=SC1091
source "$state/infra.env"
AB_SCENARIOS=${AB_SCENARIOS:-send32 100x10@500 100x10} \
  AB_ENV_B="NATS_URL=$NATS_URL REDIS_URL=$REDIS_URL" \
  scripts/bench-ab.sh "$BENCH_BIN" "$BENCH_BIN" "$ROUNDS"
