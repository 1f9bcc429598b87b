#!/usr/bin/env bash
# `make dev`: from nothing to a running stack. Ensures PostgreSQL, Redis and NATS are there,
# builds both services, migrates the database, starts api-service (:8082) and ws-gateway (:8085)
# in the background (logs and pids in .dev/), waits until both are ready, and prints a
# development token with the URLs to try. `make dev-stop` stops the two services.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "dev: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

scripts/ensure-services.sh

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/retich}"
export JWT_SECRET="${JWT_SECRET:-retich-dev-secret-change-me}"
export LOG_FORMAT="${LOG_FORMAT:-text}"
export AUTO_MIGRATE=true
PROFILE="${PROFILE:-release}"

echo "dev: building ($PROFILE)"
cargo build --profile "$PROFILE" -p api-service -p ws-gateway
dir="target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"

mkdir -p .dev
scripts/dev-stop.sh >/dev/null 2>&1 || true

"$dir/api-service" migrate up
nohup "$dir/api-service" serve >.dev/api-service.log 2>&1 &
echo $! >.dev/api-service.pid
nohup "$dir/ws-gateway" serve >.dev/ws-gateway.log 2>&1 &
echo $! >.dev/ws-gateway.pid

for svc in "api-service 8082" "ws-gateway 8085"; do
  set -- $svc
  ok=""
  for _ in $(seq 1 150); do
    if curl -fsS "http://127.0.0.1:$2/ready" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  if [ -z "$ok" ]; then
    echo "dev: $1 did not become ready; see .dev/$1.log" >&2
    tail -n 20 ".dev/$1.log" >&2 || true
    exit 1
  fi
done

user=$(cat /proc/sys/kernel/random/uuid)
token=$("$dir/api-service" token --user "$user" --hours 24)
cat <<MSG

ReTiCh Messaging is running.
  REST API     http://localhost:8082        (docs: http://localhost:8082/docs)
  WebSocket    ws://localhost:8085/ws
  Health       http://localhost:8082/ready  http://localhost:8085/ready
  Metrics      http://localhost:8082/metrics  http://localhost:8085/metrics
  Logs         .dev/api-service.log  .dev/ws-gateway.log

Development user: $user
Development token (24 h):
$token

Try:
  curl -s -H "Authorization: Bearer $token" http://localhost:8082/conversations
  curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \\
       -d '{"type":"group","name":"hello","participant_ids":["$(cat /proc/sys/kernel/random/uuid)"]}' \\
       http://localhost:8082/conversations

More tokens: JWT_SECRET=$JWT_SECRET $dir/api-service token --user <uuid>
Stop: make dev-stop
MSG
