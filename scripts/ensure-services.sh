#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and NATS (with JetStream) answer on their standard local ports,
# installing them from Debian's packages and starting them when they do not. Idempotent; used by
# `make dev`, `make test` and .ci/run. Needs root (or sudo) only when something must be installed
# or started.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

answers() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_for() { # name port
  for _ in $(seq 1 100); do
    if answers 127.0.0.1 "$2"; then echo "ensure-services: $1 is up on $2"; return 0; fi
    sleep 0.2
  done
  echo "ensure-services: $1 did not come up on port $2" >&2
  return 1
}

apt_updated=""
install() { # packages...
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------------------------
if ! answers 127.0.0.1 5432; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ensure-services: installing PostgreSQL"
    install postgresql postgresql-client
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -z "$(ls /etc/postgresql/"$version" 2>/dev/null)" ]; then
    $SUDO pg_createcluster "$version" main
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL 5432
  # The defaults (and the tests) connect as postgres/postgres over TCP.
  $SUDO -u postgres psql -q -c "alter user postgres password 'postgres'" >/dev/null 2>&1 \
    || su postgres -c "psql -q -c \"alter user postgres password 'postgres'\"" >/dev/null 2>&1 || true
else
  echo "ensure-services: PostgreSQL is up on 5432"
fi

# --- Redis ------------------------------------------------------------------------------------
if ! answers 127.0.0.1 6379; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "ensure-services: installing Redis"
    install redis-server
  fi
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/retich.log
  wait_for Redis 6379
else
  echo "ensure-services: Redis is up on 6379"
fi

# --- NATS with JetStream ----------------------------------------------------------------------
if ! answers 127.0.0.1 4222; then
  if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    echo "ensure-services: installing NATS"
    install nats-server
  fi
  bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  $SUDO mkdir -p /var/lib/nats-server
  $SUDO start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for NATS 4222
else
  echo "ensure-services: NATS is up on 4222"
fi
