#!/usr/bin/env bash
# Run one molecule scenario with the environment it needs: molecule/run-one.sh crash
set -euo pipefail
name="${1:?usage: molecule/run-one.sh SCENARIO [molecule test args...]}"
shift
source "$(dirname "$0")/shared/env.sh"
cd "$HOSTLOCK_REPO"
if [ "$name" = multi_controller ]; then
    source molecule/shared/servers.sh
    molecule test -s "$name" "$@"
else
    exec molecule test -s "$name" "$@"
fi
