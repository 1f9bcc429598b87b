#!/usr/bin/env bash
# A 3-node NATS cluster and a 6-node Redis Cluster (3 masters, one replica each) on loopback,
# for `make dev-cluster` and the clustered benchmarks:
#
#   scripts/cluster-infra.sh start STATE_DIR [NATS_BASE] [REDIS_BASE]
#   scripts/cluster-infra.sh stop STATE_DIR
#
# NATS clients listen on NATS_BASE..+2 (default 4241), routes on +2000, monitoring on +4100;
# Redis nodes on REDIS_BASE..+5 (default 7241). Logs, pids (<name>.pid) and the Redis node files
# go to STATE_DIR, and STATE_DIR/infra.env gets NATS_URL and REDIS_URL (shell syntax) in the
# forms the services read: a comma-separated NATS list and fred's `redis-cluster://` URL.
# The Redis Cluster is created anew on every start: it only ever holds ephemeral data.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?start or stop}
state=${2:?state directory}

stop_all() {
  local pids=()
  for file in "$state"/nats-*.pid "$state"/redis-*.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$file"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
if [ "$MODE" = stop ]; then stop_all; exit 0; fi
[ "$MODE" = start ] || { echo "cluster-infra: start or stop, not $MODE" >&2; exit 2; }

NATS_BASE=${3:-4241}
REDIS_BASE=${4:-7241}
find_bin() { # name
  for candidate in "/usr/sbin/$1" "/usr/bin/$1" "/usr/local/bin/$1" "$(command -v "$1" 2>/dev/null)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "cluster-infra: $1 not found (scripts/ensure-services.sh installs it)" >&2
  exit 1
}
NATS_BIN=$(find_bin nats-server)
REDIS_BIN=$(find_bin redis-server)
REDIS_CLI=$(find_bin redis-cli)

mkdir -p "$state"
stop_all
NATS_PORTS=("$NATS_BASE" $((NATS_BASE + 1)) $((NATS_BASE + 2)))
REDIS_PORTS=()
for i in 0 1 2 3 4 5; do REDIS_PORTS+=($((REDIS_BASE + i))); done

# shellcheck source=scripts/procs.sh
source scripts/procs.sh

# NATS: every node solicits routes to the other two; clients learn the others from INFO.
routes=""
for port in "${NATS_PORTS[@]}"; do routes+="${routes:+,}nats://127.0.0.1:$((port + 2000))"; done
for i in 0 1 2; do
  port=${NATS_PORTS[$i]}
  start "nats-$((i + 1))" "$NATS_BIN" -a 127.0.0.1 -p "$port" -m $((port + 4100)) \
    -n "nats-$((i + 1))" --cluster_name retich \
    --cluster "nats://127.0.0.1:$((port + 2000))" --routes "$routes"
done
for port in "${NATS_PORTS[@]}"; do
  wait_for "the NATS cluster's routes ($port)" \
    bash -c "curl -fsS http://127.0.0.1:$((port + 4100))/routez | grep -q '\"num_routes\": 2'"
done

# Redis Cluster: 6 empty nodes, then `redis-cli --cluster create` assigns slots and replicas.
# A short node timeout makes a failover (a replica promoted) take about two seconds.
for port in "${REDIS_PORTS[@]}"; do
  rm -rf "$state/redis-$port"
  mkdir -p "$state/redis-$port"
  start "redis-$port" "$REDIS_BIN" --bind 127.0.0.1 --port "$port" --dir "$state/redis-$port" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
    --save '' --appendonly no
done
for port in "${REDIS_PORTS[@]}"; do
  wait_for "redis-server on $port" "$REDIS_CLI" -p "$port" ping
done
nodes=()
for port in "${REDIS_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
"$REDIS_CLI" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$state/redis-create.log" 2>&1
for port in "${REDIS_PORTS[@]}"; do
  wait_for "the Redis Cluster ($port)" \
    bash -c "'$REDIS_CLI' -p $port cluster info | grep -q 'cluster_state:ok'"
done

nats_url=""
for port in "${NATS_PORTS[@]}"; do nats_url+="${nats_url:+,}nats://127.0.0.1:$port"; done
cat >"$state/infra.env" <<ENV
NATS_URL='$nats_url'
REDIS_URL='redis-cluster://127.0.0.1:${REDIS_PORTS[0]}?node=127.0.0.1:${REDIS_PORTS[1]}&node=127.0.0.1:${REDIS_PORTS[2]}'
INFRA_NATS_PORTS='${NATS_PORTS[*]}'
INFRA_REDIS_PORTS='${REDIS_PORTS[*]}'
ENV
