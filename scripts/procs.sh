# Sourced by scripts/cluster-infra.sh and scripts/dev-cluster.sh: background processes whose log
# and pid files live in "$state" (set by the caller), and waiting for them to come up.

# Starts a command in the background: "$state/<name>.log", "$state/<name>.pid".
start() { # name command...
  local name=$1
  shift
  nohup "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}

# Runs the command every 0.2 s until it succeeds; exits after 30 s naming what did not come up.
wait_for() { # what command...
  local what=$1
  shift
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$(basename "$0" .sh): $what did not come up; logs in $state/" >&2
  exit 1
}
