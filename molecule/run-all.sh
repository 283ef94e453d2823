#!/usr/bin/env bash
# Run every molecule scenario (make test-molecule). Fails if any scenario fails.
set -euo pipefail
source "$(dirname "$0")/shared/env.sh"
cd "$HOSTLOCK_REPO"
start=$SECONDS
# First show that the journal checks can fail at all: bad journals are rejected.
pytest -q test/python/test_journal.py
# multi_controller needs private PostgreSQL and etcd servers, up for the whole run.
source molecule/shared/servers.sh
# `molecule test --all` runs the scenarios one after the other: each one starts
# concurrent runs of its own, and the one timing claim (crash: 2 s) should not
# compete with another scenario's load.
status=0
molecule test --all || status=$?
echo "molecule: all scenarios finished in $((SECONDS - start))s, exit $status"
exit $status
