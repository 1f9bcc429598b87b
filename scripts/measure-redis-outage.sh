#!/usr/bin/env bash
# Send latency while Redis is down, for one build:
#
#   scripts/measure-redis-outage.sh BIN_DIR up|refused|killed
#
# BIN_DIR holds api-service, ws-gateway and retich-bench (a release build). `up`: Redis answers;
# `refused`: REDIS_URL points at a port where nothing listens from the start; `killed`: a
# redis-server of this script's own serves the first 2 s of sends and is then SIGKILLed, so the
# services lose a connection they had (the shared Redis on 6379 is never touched). Then 8
# clients send for 8 s (`retich-bench send`) and the HTTP p50 / p99 are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath "$1"); mode=$2
work=.bench-redis-work
rm -f "$work/env"
redis_pid=""; serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && { kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; }
  [ -n "$redis_pid" ] && { kill -KILL "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; }
}
trap cleanup EXIT INT TERM
case "$mode" in
  up) ;;
  refused) export REDIS_URL=redis://127.0.0.1:1 ;;
  killed)
    port=$((20000 + RANDOM % 10000))
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    export REDIS_URL="redis://127.0.0.1:$port"
    ;;
  *) echo "usage: $0 BIN_DIR up|refused|killed" >&2; exit 2 ;;
esac
BENCH_BIN="$dir" BENCH_WORK="$work" BENCH_GATEWAYS=1 scripts/bench.sh serve >"$work.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 600); do [ -f "$work/env" ] && break; sleep 0.2; done
# shellcheck disable=SC1091
source "$work/env"
if [ "$mode" = killed ]; then
  "$dir/retich-bench" send --api "$API" --clients 8 --conversations 8 --duration 2 >/dev/null 2>&1
  kill -KILL "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
fi
"$dir/retich-bench" send --api "$API" --clients 8 --conversations 8 --duration 8 \
  --json-out "$work/send.json" >/dev/null 2>&1
python3 - "$work/send.json" "$mode" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
report = report["reports"][0] if "reports" in report else report
m = {x["name"]: x["value"] for x in report["metrics"]}
print(f'redis {sys.argv[2]}: {m["messages accepted"]:.0f} sends accepted in 8 s, '
      f'http p50 {m["http p50"]:.2f} ms, p99 {m["http p99"]:.2f} ms')
PY
