#!/usr/bin/env bash
# Validates docs/asyncapi.yaml (the WebSocket protocol as AsyncAPI 3) with the AsyncAPI parser,
# and checks the document's message examples and the example frames of docs/websocket.md
# against its message schemas (scripts/asyncapi/validate.mjs).
#
# The parser and its dependencies are installed with `npm ci` into scripts/asyncapi/node_modules
# (gitignored) from the committed package-lock.json, on the first run and again whenever
# package.json or package-lock.json changes. Needs Node 20+ and npm. Exits non-zero on any error
# or warning of the parser and on any example that does not match.
set -euo pipefail
cd "$(dirname "$0")/asyncapi"

command -v node >/dev/null || { echo "validate-asyncapi: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "validate-asyncapi: npm is not installed" >&2; exit 1; }

# node_modules is current when it was installed from exactly these two files.
stamp=node_modules/.installed-from
wanted=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -d node_modules ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "==> npm ci (scripts/asyncapi)"
  npm ci --no-audit --no-fund
  echo "$wanted" > "$stamp"
fi

echo "==> AsyncAPI: docs/asyncapi.yaml"
node validate.mjs
