#!/usr/bin/env bash
# How long api-service and ws-gateway take to be connected to NATS again after it comes back.
#
# Starts everything it measures on its own, on free loopback ports, and stops it on exit (trap):
# a nats-server, a redis-server (when installed; otherwise REDIS_URL with a key prefix of its
# own), a scratch PostgreSQL database (created through psql on 127.0.0.1:5432 as user root with
# trust auth, dropped at the end), one api-service and one ws-gateway (release builds). It never
# touches the NATS, Redis or database the other tools use.
#
# Then RUNS times (default 5): SIGKILL nats-server, wait DOWN_SECONDS (default 2), start it again
# on the same port, note when it accepts TCP, and poll both services' GET /ready every 10 ms
# until their "nats" check is "ok" again. Prints each run's delays (from TCP accept to /ready
# ok) and their medians. Precision is about the polling interval plus a curl (~10-20 ms).
#
#   scripts/measure-nats-reconnect.sh [RUNS]
#   SKIP_BUILD=1 DOWN_SECONDS=5 scripts/measure-nats-reconnect.sh 10
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-${RUNS:-5}}
DOWN_SECONDS=${DOWN_SECONDS:-2}
ADMIN_URL=${MEASURE_ADMIN_URL:-postgres://root@127.0.0.1:5432/postgres?sslmode=disable}
run_id=$(tr -d - </proc/sys/kernel/random/uuid | cut -c1-12)
DB="retich_reconnect_$run_id"
admin_base=${ADMIN_URL%%\?*}
DB_URL="${admin_base%/*}/$DB${ADMIN_URL#"$admin_base"}"
work=$(mktemp -d "${TMPDIR:-/tmp}/retich-reconnect.XXXXXX")

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "measure: building release binaries"
  cargo build --release -p api-service -p ws-gateway
fi
bin=target/release
nats_bin=$(command -v nats-server || true)
for candidate in /usr/sbin/nats-server /usr/bin/nats-server; do
  [ -n "$nats_bin" ] && break
  [ -x "$candidate" ] && nats_bin=$candidate
done
[ -n "$nats_bin" ] || { echo "measure: nats-server not found" >&2; exit 1; }

# Everything started here, by pid: stopped on exit.
nats_pid=""
pids=()
db_created=""
cleanup() {
  set +e
  if [ -n "$nats_pid" ]; then
    kill -KILL "$nats_pid" 2>/dev/null
    { wait "$nats_pid"; } 2>/dev/null
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  if [ -n "$db_created" ]; then
    psql -X -q "$ADMIN_URL" -c "drop database if exists $DB with (force)" >/dev/null 2>&1
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
  while :; do
    # Below the ephemeral range, where an outgoing connection may hold it.
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Milliseconds since the epoch, without starting a process.
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

nats_port=$(free_port)
printf 'listen: 127.0.0.1:%s\n' "$nats_port" >"$work/nats.conf"
start_nats() {
  "$nats_bin" -c "$work/nats.conf" >>"$work/nats.log" 2>&1 &
  nats_pid=$!
}
start_nats
for _ in $(seq 1 500); do accepts "$nats_port" && break; sleep 0.01; done
accepts "$nats_port" || { echo "measure: nats-server did not start; see $work/nats.log" >&2; exit 1; }

if command -v redis-server >/dev/null 2>&1; then
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    >"$work/redis.log" 2>&1 &
  pids+=($!)
  REDIS="redis://127.0.0.1:$redis_port"
else
  REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
fi

psql -X -q "$ADMIN_URL" -c "create database $DB" >/dev/null
db_created=1

common_env=(
  HOST=127.0.0.1 LOG_LEVEL=warn LOG_FORMAT=text DATABASE_URL="$DB_URL"
  NATS_URL="nats://127.0.0.1:$nats_port" REDIS_URL="$REDIS"
  NATS_SUBJECT_PREFIX="reconnect$run_id" REDIS_KEY_PREFIX="reconnect:$run_id"
  JWT_SECRET="reconnect-secret-$run_id"
)

# The body of GET /ready, or nothing.
ready_body() { curl -s -m 1 "http://127.0.0.1:$1/ready" 2>/dev/null || true; }
nats_ok() { [[ "$(ready_body "$1")" == *'"nats":"ok"'* ]]; }

wait_nats_ok() { # name port log
  for _ in $(seq 1 300); do nats_ok "$2" && return 0; sleep 0.1; done
  echo "measure: $1 is not connected to NATS; see $3" >&2
  tail -n 20 "$3" >&2
  exit 1
}

api_port=$(free_port)
env "${common_env[@]}" PORT="$api_port" AUTO_MIGRATE=true "$bin/api-service" serve \
  >"$work/api-service.log" 2>&1 &
pids+=($!)
wait_nats_ok api-service "$api_port" "$work/api-service.log"

gw_port=$(free_port)
env "${common_env[@]}" PORT="$gw_port" GATEWAY_ID="reconnect-gw-$run_id" WS_DRAIN_SECONDS=1 \
  "$bin/ws-gateway" serve >"$work/ws-gateway.log" 2>&1 &
pids+=($!)
wait_nats_ok ws-gateway "$gw_port" "$work/ws-gateway.log"

echo "measure: nats :$nats_port, api-service :$api_port, ws-gateway :$gw_port;" \
  "$RUNS runs, NATS down ${DOWN_SECONDS}s each"

median() { # values...
  local sorted
  mapfile -t sorted < <(printf '%s\n' "$@" | grep -v '^timeout$' | sort -n)
  local n=${#sorted[@]}
  if [ "$n" -eq 0 ]; then echo "n/a"; return; fi
  if [ $((n % 2)) -eq 1 ]; then
    echo "${sorted[$((n / 2))]}"
  else
    echo $(((sorted[n / 2 - 1] + sorted[n / 2]) / 2))
  fi
}

api_delays=()
gw_delays=()
printf '%-5s %18s %18s\n' run "api-service (ms)" "ws-gateway (ms)"
for run in $(seq 1 "$RUNS"); do
  kill -KILL "$nats_pid"
  wait "$nats_pid" 2>/dev/null || true
  nats_pid=""
  # Both services notice the loss before NATS is back.
  for _ in $(seq 1 200); do
    if ! nats_ok "$api_port" && ! nats_ok "$gw_port"; then break; fi
    sleep 0.01
  done
  sleep "$DOWN_SECONDS"
  start_nats
  for _ in $(seq 1 5000); do accepts "$nats_port" && break; sleep 0.002; done
  accepted=$(now_ms)
  api_ms=""; gw_ms=""
  deadline=$((accepted + 30000))
  while [ -z "$api_ms" ] || [ -z "$gw_ms" ]; do
    if [ -z "$api_ms" ] && nats_ok "$api_port"; then api_ms=$(($(now_ms) - accepted)); fi
    if [ -z "$gw_ms" ] && nats_ok "$gw_port"; then gw_ms=$(($(now_ms) - accepted)); fi
    if [ "$(now_ms)" -gt "$deadline" ]; then
      api_ms=${api_ms:-timeout}; gw_ms=${gw_ms:-timeout}
      break
    fi
    sleep 0.01
  done
  api_delays+=("$api_ms"); gw_delays+=("$gw_ms")
  printf '%-5s %18s %18s\n' "$run" "$api_ms" "$gw_ms"
done
printf '%-5s %18s %18s\n' median "$(median "${api_delays[@]}")" "$(median "${gw_delays[@]}")"
