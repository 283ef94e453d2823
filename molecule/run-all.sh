#!/usr/bin/env bash
# Run every molecule scenario (make test-molecule). Fails if any scenario fails.
set -euo pipefail
source "$(dirname "$0")/shared/env.sh"
cd "$HOSTLOCK_REPO"
start=$SECONDS
# First show that the journal checks can fail at all: bad journals are rejected.
python3 molecule/shared/journal.py selftest
# multi_controller needs private PostgreSQL and etcd servers: up for the whole
# run (test/servers/up.ts), stopped when its stdin closes.
envfile="$(mktemp -d)/servers.env"
coproc SERVERS { node build/test/servers/up.js "$envfile"; }
stop_servers() { exec {SERVERS[1]}>&- 2>/dev/null || true; wait "$SERVERS_PID" 2>/dev/null || true; rm -rf "$(dirname "$envfile")"; }
trap stop_servers EXIT
for _ in $(seq 600); do [ -f "$envfile" ] && break; kill -0 "$SERVERS_PID" 2>/dev/null || break; sleep 0.2; done
if [ ! -f "$envfile" ]; then
    echo "molecule: the private PostgreSQL and etcd servers did not start (see above)" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1090
source "$envfile"
set +a
# `molecule test --all` runs the scenarios one after the other: each one starts
# concurrent runs of its own, and the one timing claim (crash: 2 s) should not
# compete with another scenario's load.
status=0
molecule test --all || status=$?
echo "molecule: all scenarios finished in $((SECONDS - start))s, exit $status"
exit $status
