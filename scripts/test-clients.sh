#!/usr/bin/env bash
# The JavaScript half of `make test`: the AsyncAPI document through a real AsyncAPI parser, the
# TypeScript client's generated types against the OpenAPI snapshot, the client's tests and the
# demo's browser test against the real services (both start their own api-service and
# ws-gateway from target/debug, which `make test` builds first). Installs what is missing:
# Node.js and npm, and Debian's Chromium for the browser test (root or sudo needed only then).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
apt_updated=""
install() { # packages...
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "test-clients: installing Node.js and npm"
  install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "test-clients: Node.js 20 or later is needed (found $(node --version))" >&2
  exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "test-clients: installing Chromium (Debian's package) for the browser test"
  install chromium
fi

# `npm ci` only when the lock file changed since the last install.
npm_ci() { # dir
  local stamp="$1/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$1/package-lock.json" -nt "$stamp" ]; then
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

echo "test-clients: AsyncAPI document"
scripts/validate-asyncapi.sh

echo "test-clients: TypeScript client (type drift, build, tests)"
npm_ci clients/typescript
(cd clients/typescript && npm run --silent check-types-drift && npm run --silent build && npm test)

echo "test-clients: demo (browser test in headless Chromium)"
npm_ci clients/demo
(cd clients/demo && npm test)
