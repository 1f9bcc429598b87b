#!/usr/bin/env bash
# The offline query data of sqlx's macros (.sqlx/ at the workspace root), against the schema of
# migrations/:
#
#   scripts/sqlx-data.sh prepare   rewrite .sqlx/ (`make sqlx-prepare`; commit the result)
#   scripts/sqlx-data.sh check     fail when .sqlx/ is stale (`make sqlx-check`, run by `make lint`)
#
# Both create a scratch database, apply every migrations/*.up.sql in order with psql (the
# service's own `migrate up` would have to be compiled first, which needs this very data), run
# `cargo sqlx prepare --workspace` against it, and drop it on exit, failed or not. The server is
# the one the tests use: TEST_DATABASE_ADMIN_URL, by default the local server's `postgres`
# database. sqlx-cli is installed when missing, pinned to the sqlx version of Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
  prepare) check=() ;;
  check) check=(--check) ;;
  *) echo "usage: $0 prepare|check" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# sqlx-cli must match the sqlx of Cargo.lock: the data format and the describe logic are its.
want=$(awk '/^name = "sqlx"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(cargo sqlx --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "sqlx-data: installing sqlx-cli $want (found: ${have:-none})"
  cargo install sqlx-cli --version "=$want" --locked --no-default-features --features rustls,postgres
fi

admin=${TEST_DATABASE_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
db="retich_sqlx_$$_$(date +%s)"
url="${admin%/*}/$db"
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$admin" "$@"; }

psql_admin -c "create database $db"
trap 'psql_admin -c "drop database if exists $db with (force)" || true' EXIT

for f in migrations/*.up.sql; do
  psql -X -q -v ON_ERROR_STOP=1 --single-transaction "$url" -f "$f" >/dev/null
done

if ! DATABASE_URL=$url SQLX_OFFLINE=false cargo sqlx prepare --workspace "${check[@]}" -- --all-targets; then
  if [ "$mode" = check ]; then
    echo "sqlx-data: .sqlx/ does not match the queries and migrations/: run \`make sqlx-prepare\` and commit .sqlx/" >&2
  fi
  exit 1
fi
