#!/usr/bin/env bash
# `make dev`: from nothing to a running stack. Ensures PostgreSQL, Redis and NATS are there,
# builds both services, migrates the database, starts api-service (:8082) and ws-gateway (:8085)
# in the background (logs and pids in .dev/), waits until both are ready, and prints two
# development users with their tokens and commands to try them together. `make dev-stop` stops the two services.
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

# The demo web app (clients/demo on the TypeScript client), served by api-service under /demo/
# on the API's origin; skipped with a note when Node.js is missing.
demo=""
if command -v npm >/dev/null 2>&1; then
  echo "dev: building the demo web app"
  (cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
  (cd clients/demo && npm run --silent build)
  rm -rf .dev/demo && mkdir -p .dev/demo && cp -R clients/demo/dist/. .dev/demo/
  export DEMO_DIR="$PWD/.dev/demo"
  demo=1
else
  echo "dev: Node.js/npm not found; the demo web app is not served"
fi

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

# Two development users, kept in .dev/users so they (and their conversations) survive a restart.
if [ ! -s .dev/users ]; then
  printf '%s\n%s\n' "$(cat /proc/sys/kernel/random/uuid)" "$(cat /proc/sys/kernel/random/uuid)" >.dev/users
fi
alice=$(sed -n 1p .dev/users)
bob=$(sed -n 2p .dev/users)
# What `make token` needs to mint tokens these services accept.
cat >.dev/env <<ENV
JWT_SECRET='$JWT_SECRET'
DEV_BIN_DIR='$dir'
DEV_USER_A=$alice
DEV_USER_B=$bob
ENV
alice_token=$("$dir/api-service" token --user "$alice" --hours 24)
bob_token=$("$dir/api-service" token --user "$bob" --hours 24)
if [ -n "$demo" ]; then
  # Read by the demo's sign-in screen (served files are read per request).
  cat >.dev/demo/users.json <<JSON
[{"name": "Alice", "id": "$alice", "token": "$alice_token"},
 {"name": "Bob", "id": "$bob", "token": "$bob_token"}]
JSON
  demo_line="  Demo         http://localhost:8082/demo/   (open it twice: once as Alice, once as Bob)"
else
  demo_line="  Demo         not served (install Node.js 20+ and run make dev again)"
fi
cat <<MSG

ReTiCh Messaging is running.
  REST API     http://localhost:8082        (API reference: http://localhost:8082/docs,
                                             document: http://localhost:8082/openapi.json)
  WebSocket    ws://localhost:8085/ws
$demo_line
  Health       http://localhost:8082/ready  http://localhost:8085/ready
  Metrics      http://localhost:8082/metrics  http://localhost:8085/metrics
  Logs         .dev/api-service.log  .dev/ws-gateway.log

Development users (tokens valid 24 h; \`make token ID=<uuid>\` mints more):
  Alice  $alice
         $alice_token
  Bob    $bob
         $bob_token

Try (in two terminals):
  # Bob listens on the WebSocket (one JSON event per line):
  node --experimental-websocket -e 'const ws = new WebSocket("ws://localhost:8085/ws?token=$bob_token"); ws.onmessage = (m) => console.log(m.data)'

  # Alice opens a direct conversation with Bob, then sends a message into it:
  conv=\$(curl -s -H "Authorization: Bearer $alice_token" -H 'Content-Type: application/json' \\
         -d '{"type":"direct","participant_ids":["$bob"]}' http://localhost:8082/conversations \\
         | grep -o '"id":"[^"]*"' | head -n 1 | cut -d '"' -f 4)
  curl -s -H "Authorization: Bearer $alice_token" -H 'Content-Type: application/json' \\
       -d '{"content":"hello Bob"}' http://localhost:8082/conversations/\$conv/messages

  # Bob's conversations, with unread counts:
  curl -s -H "Authorization: Bearer $bob_token" http://localhost:8082/conversations

Stop: make dev-stop
MSG
