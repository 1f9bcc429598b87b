#!/usr/bin/env bash
# `make bench`: a SHORT run of every retich-bench scenario against services this script starts
# itself, then stops (trap on exit). Writes bench/results/latest.json and latest.md.
#
# It starts, on free loopback ports and against its own scratch database (retich_bench, dropped
# and re-created), with its own NATS subject prefix and Redis key prefix:
#   - api-service, AUTH_MODE=jwt, AUTO_MIGRATE=true, rate limit raised out of the way;
#   - BENCH_GATEWAYS ws-gateway processes (default 3), AUTH_MODE=jwt;
#   - one api-service + one ws-gateway with AUTH_MODE=header (the header-mode checks).
# The full-size runs recorded in BENCHMARKS.md ("Latest full runs") use the same tool with
# larger arguments.
#
# `scripts/bench.sh full` runs the same scenarios at full size (a 100,000-socket fleet over six
# gateways, 30 s runs, the full-speed curve; about ten minutes) and also writes
# bench/results/full.{json,md}.
#
# `scripts/bench.sh serve` starts the same services, writes their addresses, PIDs and the JWT
# secret to .bench/env (shell syntax, for `source`), and keeps them running until interrupted:
# for full-size runs of single scenarios and for profiling.
set -euo pipefail
MODE=${1:-run}
cd "$(dirname "$0")/.."

scripts/ensure-services.sh
if ! command -v pgbench >/dev/null 2>&1; then
  echo "bench: installing pgbench (postgresql-contrib)"
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-contrib >/dev/null
fi

# BENCH_BIN: a folder holding api-service, ws-gateway and retich-bench built elsewhere (another
# commit, for a before/after comparison: scripts/bench-ab.sh); unset, this tree's release build.
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  echo "bench: building release binaries"
  cargo build --release --locked -p api-service -p ws-gateway -p retich-bench
  bin=target/release
fi
ulimit -n "$(ulimit -Hn)" || true

if [ "$MODE" = full ]; then GATEWAYS=${BENCH_GATEWAYS:-6}; else GATEWAYS=${BENCH_GATEWAYS:-3}; fi
# Loopback without TLS, for the services and pgbench alike: encrypting a connection that never
# leaves the machine only measures the cipher (a deployment sets sslmode in DATABASE_URL).
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable}
DB=${BENCH_DB:-retich_bench}
admin_base=${ADMIN_URL%%\?*}
DB_URL="${admin_base%/*}/$DB${ADMIN_URL#"$admin_base"}"
run_id=$(cat /proc/sys/kernel/random/uuid | tr -d - | cut -c1-12)
export JWT_SECRET="bench-secret-$run_id"
out=bench/results
work=${BENCH_WORK:-.bench}
mkdir -p "$out" "$work"
rm -f "$work"/*.json

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  psql -X -q "$ADMIN_URL" -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

free_port() {
  while :; do
    # Below the ephemeral range (32768-60999 here), where an outgoing connection may hold it.
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}

wait_ready() { # name port log
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$2/ready" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "bench: $1 did not become ready; see $3" >&2; tail -n 20 "$3" >&2; exit 1
}

common_env=(
  HOST=127.0.0.1 LOG_LEVEL=warn LOG_FORMAT=text DATABASE_URL="$DB_URL"
  NATS_SUBJECT_PREFIX="bench$run_id" REDIS_KEY_PREFIX="bench:$run_id"
  JWT_SECRET="$JWT_SECRET"
)
psql -X -q "$ADMIN_URL" -c "drop database if exists $DB with (force)" >/dev/null

start_api() { # port auth-mode log
  env "${common_env[@]}" PORT="$1" AUTH_MODE="$2" AUTO_MIGRATE=true \
    RATE_LIMIT_MESSAGES_PER_SEC=1000000 RATE_LIMIT_MESSAGES_BURST=1000000 \
    UPLOAD_DIR="$work/uploads" "$bin/api-service" serve >"$3" 2>&1 &
  pids+=($!)
  wait_ready api-service "$1" "$3"
}
start_gateway() { # port auth-mode log
  env "${common_env[@]}" PORT="$1" AUTH_MODE="$2" GATEWAY_ID="bench-gw-$1" WS_DRAIN_SECONDS=2 \
    "$bin/ws-gateway" serve >"$3" 2>&1 &
  pids+=($!)
  gw_pid=$!
  wait_ready ws-gateway "$1" "$3"
}

api_port=$(free_port)
start_api "$api_port" jwt "$work/api-service.log"
API="http://127.0.0.1:$api_port"
gw_args=(); gw_pid_args=(); first_gw=""; first_pid=""
for i in $(seq 1 "$GATEWAYS"); do
  port=$(free_port)
  start_gateway "$port" jwt "$work/ws-gateway-$i.log"
  gw_args+=(--gateway "ws://127.0.0.1:$port/ws"); gw_pid_args+=(--gateway-pid "$gw_pid")
  if [ -z "$first_gw" ]; then first_gw="ws://127.0.0.1:$port/ws"; first_pid=$gw_pid; fi
done
hapi_port=$(free_port)
start_api "$hapi_port" header "$work/api-service-header.log"
hgw_port=$(free_port)
start_gateway "$hgw_port" header "$work/ws-gateway-header.log"
echo "bench: api-service $API, gateways ${gw_args[*]}, header mode :$hapi_port / :$hgw_port"

B="$bin/retich-bench"
if [ "$MODE" = serve ]; then
  {
    echo "export JWT_SECRET=$JWT_SECRET"
    echo "API=$API; API_PID=${pids[0]}"
    echo "GATEWAYS=(${gw_args[*]}); GATEWAY_PIDS=(${gw_pid_args[*]})"
    echo "FIRST_GW=$first_gw; FIRST_GW_PID=$first_pid"
    echo "HEADER_API=http://127.0.0.1:$hapi_port; HEADER_GW=ws://127.0.0.1:$hgw_port/ws"
    echo "ADMIN_URL=$ADMIN_URL; DB_URL=$DB_URL"
  } >"$work/env"
  echo "bench: serving; source $work/env for the addresses; Ctrl-C stops everything"
  while :; do sleep 3600 & wait $!; done
fi
# Durations and sizes: the short run of `make bench`, or the full run recorded in BENCHMARKS.md
# (`scripts/bench.sh full`, with BENCH_GATEWAYS=6 by default: the 100,000-socket fleet needs
# six gateways, each process being limited to 20,000 open files here).
if [ "$MODE" = full ]; then
  LABEL="scripts/bench.sh full"; IDLE_HOLD=60; D=30; D_LONG=30; GRACE=15; PG_SECS=10
  FLEET_SOCKETS=100000; FLEET_GROUPS=100; FLEET_RATE=500
else
  LABEL="make bench (short)"; IDLE_HOLD=15; D=8; D_LONG=5; GRACE=5; PG_SECS=5
  FLEET_SOCKETS=30000; FLEET_GROUPS=30; FLEET_RATE=200
fi
set -x
# Sockets first: the gateway memory per socket is measured on a fresh gateway.
"$B" idle --gateway "$first_gw" --gateway-pid "$first_pid" --sockets 15000 --hold "$IDLE_HOLD" \
  --first-source 127.0.0.2 --json-out "$work/08-idle.json"
"$B" storm --gateway "$first_gw" --sockets 15000 --hold 2 --first-source 127.0.0.10 --json-out "$work/09-storm.json"
"$B" pg-baseline --admin-url "$ADMIN_URL" --clients 32 --seconds "$PG_SECS" --json-out "$work/01-pg.json"
"$B" send --api "$API" --clients 32 --conversations 32 --duration "$D" --json-out "$work/02-send.json"
"$B" send --api "http://127.0.0.1:$hapi_port" --auth header --clients 8 --conversations 8 \
  --duration 3 --json-out "$work/03-send-header.json"
"$B" fanout --api "$API" --gateway "$first_gw" --groups 100 --members 10 --rate 500 \
  --duration "$D" --grace "$GRACE" --json-out "$work/04-fanout-500.json"
"$B" fanout --api "$API" --gateway "$first_gw" --groups 100 --members 10 --rate 0 \
  --publishers 64 --duration "$D" --grace "$GRACE" --json-out "$work/05-fanout-max.json"
if [ "$MODE" = full ]; then
  # Full speed is a closed loop: the publishers' count sets the operating point on the
  # throughput/latency curve (more of them: bigger batches and more msg/s, longer queues and a
  # longer tail). The full run records the curve, not one point of it.
  for p in 32 48 80 96; do
    "$B" fanout --api "$API" --gateway "$first_gw" --groups 100 --members 10 --rate 0 \
      --publishers "$p" --duration "$D" --grace "$GRACE" --json-out "$work/05s-fanout-max-p$p.json"
  done
fi
"$B" fanout --api "$API" --gateway "$first_gw" --groups 10 --members 1000 --rate 0 \
  --publishers 16 --duration "$D_LONG" --grace "$GRACE" --json-out "$work/06-fanout-10x1000.json"
# The same just above the target (320 msg/s = 320,000 deliveries/s), open loop: at full speed the
# publishers can ask more of one gateway and its 10,000 readers than they take, and the gateway
# then closes the slowest sockets with 1013 as docs/websocket.md ("Keep-alive, limits and close
# codes") requires; this run shows the target rate is delivered with nothing missing.
"$B" fanout --api "$API" --gateway "$first_gw" --groups 10 --members 1000 --rate 320 \
  --publishers 16 --duration "$D_LONG" --grace "$GRACE" --json-out "$work/06-fanout-10x1000-320.json"
"$B" fanout --api "http://127.0.0.1:$hapi_port" --gateway "ws://127.0.0.1:$hgw_port/ws" \
  --auth header --groups 10 --members 5 --rate 100 --duration 3 --grace 3 \
  --json-out "$work/07-fanout-header.json"
"$B" fleet --api "$API" "${gw_args[@]}" "${gw_pid_args[@]}" --sockets "$FLEET_SOCKETS" \
  --first-source 127.0.0.20 --groups "$FLEET_GROUPS" --members 10 --rate "$FLEET_RATE" \
  --duration "$D" --grace "$GRACE" --json-out "$work/10-fleet.json"
set +x

"$B" report --label "$LABEL" --json-out "$out/latest.json" \
  --markdown-out "$out/latest.md" "$work"/[0-9]*.json
echo "bench: wrote $out/latest.json and $out/latest.md"
if [ "$MODE" = full ]; then
  cp "$out/latest.json" "$out/full.json"; cp "$out/latest.md" "$out/full.md"
  echo "bench: and $out/full.json, $out/full.md"
fi

