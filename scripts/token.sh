#!/usr/bin/env bash
# `make token [ID=<uuid>] [HOURS=24]` (or `scripts/token.sh [uuid] [hours]`): prints a
# development token for that user (default: the first development user of `make dev`, else a
# random id), signed with the JWT_SECRET the services of `make dev` run with. Uses the binary `make dev` built; builds it (same profile) only if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# What `make dev` ran with (secret, binary folder, development users), when it ran.
if [ -f .dev/env ]; then
  # shellcheck disable=SC1091
  source .dev/env
fi
export JWT_SECRET="${JWT_SECRET:-retich-dev-secret-change-me}"
PROFILE="${PROFILE:-release}"
dir="${DEV_BIN_DIR:-target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")}"
if [ ! -x "$dir/api-service" ]; then
  echo "token: building api-service ($PROFILE)" >&2
  cargo build -q --profile "$PROFILE" -p api-service
fi
user="${1:-${TOKEN_USER:-${DEV_USER_A:-$(cat /proc/sys/kernel/random/uuid)}}}"
hours="${2:-${TOKEN_HOURS:-24}}"
exec "$dir/api-service" token --user "$user" --hours "$hours"
