#!/usr/bin/env bash
# `make dev-cluster`: the clustered topology on one machine, for trying and testing what a
# production fleet does on node loss.
#
#   NATS           3-node cluster        clients 4241-4243, routes 6241-6243, monitoring 8341-8343
#   Redis Cluster  6 nodes, 3 masters with one replica each        7241-7246
#   api-service    2 processes           8242, 8243
#   ws-gateway     3 processes           8245, 8246, 8247
#   PostgreSQL     the machine's server (127.0.0.1:5432), database `retich_cluster`
#
# Everything runs from .dev-cluster/ (logs, pids, Redis node files) and starts fresh: the Redis
# Cluster is created anew each time (it holds only presence, typing and rate-limit state). The
# addresses, the pids and two development users with tokens are written to .dev-cluster/env,
# which the cluster test suite (scripts/test-cluster.sh) reads. `make dev-cluster-stop` stops it
# all. PROFILE=dev uses debug builds (what the tests use); the default is release.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
scripts/ensure-services.sh

PROFILE="${PROFILE:-release}"
if [ "${SKIP_BUILD:-}" != 1 ]; then
  echo "dev-cluster: building ($PROFILE)"
  cargo build --profile "$PROFILE" -p api-service -p ws-gateway
fi
dir="target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"

state=.dev-cluster
scripts/dev-cluster-stop.sh >/dev/null 2>&1 || true
rm -rf "$state"
mkdir -p "$state"

API_PORTS=(8242 8243)
GATEWAY_PORTS=(8245 8246 8247)

scripts/cluster-infra.sh start "$state" 4241 7241
# shellcheck disable=SC1091
source "$state/infra.env"
read -r -a NATS_PORTS <<<"$INFRA_NATS_PORTS"
read -r -a REDIS_PORTS <<<"$INFRA_REDIS_PORTS"
nats_url=$NATS_URL
redis_url=$REDIS_URL

# shellcheck source=scripts/procs.sh
source scripts/procs.sh

export DATABASE_URL="${CLUSTER_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/retich_cluster}"
export JWT_SECRET="${JWT_SECRET:-retich-dev-secret-change-me}"
export NATS_URL="$nats_url"
export REDIS_URL="$redis_url"
export HOST=127.0.0.1
export LOG_FORMAT="${LOG_FORMAT:-text}"
export AUTO_MIGRATE=true

"$dir/api-service" migrate up >"$state/migrate.log" 2>&1
for i in 0 1; do
  PORT=${API_PORTS[$i]} start "api-$((i + 1))" "$dir/api-service" serve
done
for i in 0 1 2; do
  PORT=${GATEWAY_PORTS[$i]} GATEWAY_ID="gw-dev-$((i + 1))" start "gateway-$((i + 1))" "$dir/ws-gateway" serve
done
for port in "${API_PORTS[@]}" "${GATEWAY_PORTS[@]}"; do
  wait_for "the service on $port" curl -fsS "http://127.0.0.1:$port/ready"
done

alice=$(cat /proc/sys/kernel/random/uuid)
bob=$(cat /proc/sys/kernel/random/uuid)
alice_token=$("$dir/api-service" token --user "$alice" --hours 24)
bob_token=$("$dir/api-service" token --user "$bob" --hours 24)

pids() { # names...
  local out=""
  for name in "$@"; do out+="${out:+ }$(cat "$state/$name.pid")"; done
  echo "$out"
}
list() { # prefix suffix ports...
  local prefix=$1 suffix=$2 out=""
  shift 2
  for port in "$@"; do out+="${out:+ }$prefix$port$suffix"; done
  echo "$out"
}
cat >"$state/env" <<ENV
# Written by scripts/dev-cluster.sh; read by scripts/test-cluster.sh and the cluster tests.
CLUSTER_DATABASE_URL='$DATABASE_URL'
CLUSTER_JWT_SECRET='$JWT_SECRET'
CLUSTER_BIN_DIR='$PWD/$dir'
CLUSTER_NATS_URL='$nats_url'
CLUSTER_REDIS_URL='$redis_url'
CLUSTER_NATS_PORTS='${NATS_PORTS[*]}'
CLUSTER_NATS_PIDS='$(pids nats-1 nats-2 nats-3)'
CLUSTER_REDIS_PORTS='${REDIS_PORTS[*]}'
CLUSTER_API_URLS='$(list http://127.0.0.1: "" "${API_PORTS[@]}")'
CLUSTER_API_PIDS='$(pids api-1 api-2)'
CLUSTER_GATEWAY_URLS='$(list ws://127.0.0.1: /ws "${GATEWAY_PORTS[@]}")'
CLUSTER_GATEWAY_PIDS='$(pids gateway-1 gateway-2 gateway-3)'
CLUSTER_USER_A=$alice
CLUSTER_USER_B=$bob
ENV

cat <<MSG

ReTiCh Messaging is running on a clustered topology.
  REST API     http://localhost:${API_PORTS[0]}  http://localhost:${API_PORTS[1]}
  WebSocket    ws://localhost:${GATEWAY_PORTS[0]}/ws  ws://localhost:${GATEWAY_PORTS[1]}/ws  ws://localhost:${GATEWAY_PORTS[2]}/ws
  NATS         $nats_url   (monitoring http://localhost:8341 .. 8343)
  Redis        $redis_url   (6 nodes: 7241-7246, 3 masters + 3 replicas)
  PostgreSQL   $DATABASE_URL
  Logs, pids   $state/   (addresses and pids: $state/env)

Development users (tokens valid 24 h):
  Alice  $alice
         $alice_token
  Bob    $bob
         $bob_token

Kill a NATS node:     kill -9 \$(cat $state/nats-1.pid)
Kill a Redis master:  redis-cli -p 7241 role; kill -9 \$(cat $state/redis-7241.pid)
Stop everything:      make dev-cluster-stop
MSG
