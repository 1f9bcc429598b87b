#!/usr/bin/env bash
# Before/after fan-out comparison on this machine, alternating the two builds so that the
# machine's drift hits both alike:
#
#   scripts/bench-ab.sh DIR_A DIR_B [ROUNDS]
#
# DIR_A and DIR_B each hold api-service, ws-gateway and retich-bench binaries (e.g. a release
# build of another commit, made in a worktree with its own CARGO_TARGET_DIR). Each round starts
# the services of A with `scripts/bench.sh serve` (BENCH_BIN=DIR_A), runs the two full-speed
# fan-out scenarios of scripts/bench.sh (100 groups x 10 members with 64 publishers, 10 x 1,000
# with 16), stops them, then does the same for B; the order of A and B flips every round. The same
# load tool (DIR_B's retich-bench) drives both, so only the services differ.
#
# AB_ENV_A / AB_ENV_B: extra environment for the services of A / B (`KEY=value` words), e.g. the
# NATS_URL and REDIS_URL of a clustered topology for B with the same binaries as A
# (scripts/bench-cluster.sh does that). Scenario `send32` is the send benchmark (32 clients, 32
# conversations) instead of a fan-out.
#
# AB_SERVICE_CPUS / AB_TOOL_CPUS (e.g. `0` and `1`): CPU lists for taskset. The services of both
# builds and the machine's PostgreSQL, NATS and Redis (every thread, restored to all CPUs at the
# end) run on the first, the load tool on the second, so the clients' CPU is not taken from the
# services it measures, as when clients are on other machines. Check the tool's CPU per second
# in the output stays below the CPUs it was given, or it is the bottleneck.
#
# Prints one line per run — throughput, latency, and the CPU time per delivery of the first
# gateway, per message of the api-service and per delivery of the load tool — and keeps each
# run's JSON in .bench-ab/.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-3}
# Scenarios, each `100x10` or `10x1000`, at full speed or `@<msg/s>` (e.g. `10x1000@320`).
SCENARIOS=${AB_SCENARIOS:-100x10 10x1000}
D=${AB_DURATION:-20}; GRACE=${AB_GRACE:-10}
TOOL="$B/retich-bench"
out=.bench-ab
mkdir -p "$out"

SERVICE_CPUS=${AB_SERVICE_CPUS:-}; TOOL_CPUS=${AB_TOOL_CPUS:-}
service_prefix=(); tool_prefix=()
infra_pids() { pgrep -x postgres; pgrep -x nats-server; pgrep -x redis-server; }
if [ -n "$SERVICE_CPUS" ] && [ -n "$TOOL_CPUS" ]; then
  service_prefix=(taskset -c "$SERVICE_CPUS"); tool_prefix=(taskset -c "$TOOL_CPUS")
  for pid in $(infra_pids); do taskset -a -p -c "$SERVICE_CPUS" "$pid" >/dev/null || true; done
  echo "ab: services, PostgreSQL, NATS and Redis on CPUs $SERVICE_CPUS; the load tool on $TOOL_CPUS"
fi
unpin_infra() {
  if [ -n "$SERVICE_CPUS" ]; then
    for pid in $(infra_pids); do taskset -a -p -c "0-$(($(nproc) - 1))" "$pid" >/dev/null 2>&1 || true; done
  fi
}

serve_pid=""
stop_serve() {
  if [ -n "$serve_pid" ]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=""
  fi
}
trap 'stop_serve; unpin_infra' EXIT INT TERM

run_one() { # label dir round
  local label=$1 dir=$2 round=$3 work=".bench-ab-work"
  rm -f "$work/env"
  local extra=()
  if [ "$label" = A ]; then read -r -a extra <<<"${AB_ENV_A:-}"; else read -r -a extra <<<"${AB_ENV_B:-}"; fi
  env "${extra[@]}" BENCH_BIN="$dir" BENCH_WORK="$work" BENCH_GATEWAYS=3 "${service_prefix[@]}" scripts/bench.sh serve \
    >"$out/serve-$label-$round.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 600); do [ -f "$work/env" ] && break; sleep 0.2; done
  [ -f "$work/env" ] || { echo "ab: services of $label did not start" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$work/env"
  for name in $SCENARIOS; do
    local rate=${name#*@}
    [ "$rate" = "$name" ] && rate=0
    case "${name%@*}" in
      100x10) scenario "$name" fanout --groups 100 --members 10 --rate "$rate" --publishers 64 ;;
      10x1000) scenario "$name" fanout --groups 10 --members 1000 --rate "$rate" --publishers 16 ;;
      send32) scenario "$name" send --clients 32 --conversations 32 ;;
      *) echo "ab: unknown scenario $name" >&2; exit 2 ;;
    esac
  done
  read_gateway_counters "$label-$round"
  stop_serve
  for scenario in $SCENARIOS; do
    printf '%s round %s %-8s ' "$label" "$round" "$scenario"
    python3 - "$out/$label-$round-$scenario.json" "$out/$label-$round-$scenario.cpu" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
if "reports" in report:
    report = report["reports"][0]
metrics = {m["name"]: m for m in report.get("metrics", [])}
keep = ["messages sent/s", "deliveries/s", "end-to-end p50", "end-to-end p99", "missing deliveries",
        "messages/s (201)", "http p50", "http p99", "errors"]
line = [f'{k}={metrics[k]["value"]:.5g}' for k in keep if k in metrics]
gateway, api, tool, pg, nats, redis = (float(x) for x in open(sys.argv[2]).read().split())
messages = (metrics.get("messages accepted (201)") or metrics["messages accepted"])["value"]
line.append(f"api CPU/msg={api / messages * 1e6:.3g}us")
line.append(f"PostgreSQL CPU/msg={pg / messages * 1e6:.3g}us")
line.append(f"NATS CPU/msg={nats / messages * 1e6:.3g}us")
line.append(f"Redis CPU/msg={redis / messages * 1e6:.3g}us")
if "deliveries" in metrics:
    deliveries = metrics["deliveries"]["value"]
    line.append(f"gateway CPU/delivery={gateway / deliveries * 1e6:.3g}us")
    line.append(f"load tool CPU/delivery={tool / deliveries * 1e6:.3g}us")
if report.get("duration_secs"):
    line.append(f"load tool cores={tool / report['duration_secs']:.2f} gateway cores={gateway / report['duration_secs']:.2f}")
print("  ".join(line))
PY
  done
}

# The first gateway's write counters over the whole serve (both builds' names).
read_gateway_counters() { # label
  local port=${FIRST_GW#ws://127.0.0.1:}; port=${port%/ws}
  curl -s "http://127.0.0.1:$port/metrics" |
    grep -E '^ws_gateway_(frames_out|socket_writes|events_out|bytes_out)_total' |
    tr '\n' ' ' >"$out/$1.counters"
}

cpu_seconds() { # pid: user + system CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

# CPU seconds so far of every process named $1, plus (with a second argument) what their exited
# children used: PostgreSQL's backends come and go, and their time then counts in the
# postmaster's cutime/cstime. Processes that exited since the last reading are lost, which only
# under-counts (the services keep their pools open during a run).
cpu_of() { # name [with-children]
  local total=0 pid
  for pid in $(pgrep -x "$1"); do
    total=$(awk -v hz="$(getconf CLK_TCK)" -v t="$total" -v c="${2:-}" \
      '{print t + ($14 + $15 + (c ? $16 + $17 : 0)) / hz}' "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}

# One run (`fanout` or `send`) of the services just started; also records the CPU seconds the
# first gateway, the api-service and the load tool spent on it.
scenario() { # name subcommand args...
  local name=$1 command=$2; shift 2
  local target=(--api "$API")
  [ "$command" = fanout ] && target+=(--gateway "$FIRST_GW" --grace "$GRACE")
  local gw0 api0 gw1 api1
  gw0=$(cpu_seconds "$FIRST_GW_PID"); api0=$(cpu_seconds "$API_PID")
  local pg0 nats0 redis0 pg1 nats1 redis1
  pg0=$(cpu_of postgres children); nats0=$(cpu_of nats-server); redis0=$(cpu_of redis-server)
  local tool
  tool=$("${tool_prefix[@]}" python3 - "$TOOL" "$command" "${target[@]}" "$@" --duration "$D" \
    --json-out "$out/$label-$round-$name.json" <<'PY'
import os, resource, subprocess, sys
with open(os.devnull, "w") as sink:
    subprocess.run(sys.argv[1:], stdout=sink, stderr=sink, check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime)
PY
  )
  gw1=$(cpu_seconds "$FIRST_GW_PID"); api1=$(cpu_seconds "$API_PID")
  pg1=$(cpu_of postgres children); nats1=$(cpu_of nats-server); redis1=$(cpu_of redis-server)
  echo "$(echo "$gw1 - $gw0" | bc -l) $(echo "$api1 - $api0" | bc -l) $tool" \
    "$(echo "$pg1 - $pg0" | bc -l) $(echo "$nats1 - $nats0" | bc -l) $(echo "$redis1 - $redis0" | bc -l)" \
    >"$out/$label-$round-$name.cpu"
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="A B"; else order="B A"; fi
  for which in $order; do
    if [ "$which" = A ]; then run_one A "$A" "$round"; else run_one B "$B" "$round"; fi
  done
done
