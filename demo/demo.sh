#!/usr/bin/env bash
# make demo: RUNS concurrent ansible-playbook runs against HOSTS local hosts,
# then a timeline of who held which host when (terminal + demo-out/timeline.svg).
#   RUNS=6 HOSTS=3 HOLD=1 make demo
set -euo pipefail
source "$(dirname "$0")/../molecule/shared/env.sh"
cd "$HOSTLOCK_REPO"
export ANSIBLE_CONFIG="$HOSTLOCK_REPO/demo/ansible.cfg"
# The journal library and the run launcher the demo shares with molecule.
export PYTHONPATH="$HOSTLOCK_REPO/molecule/shared${PYTHONPATH:+:$PYTHONPATH}"
exec python3 demo/demo.py --runs "${RUNS:-4}" --hosts "${HOSTS:-4}" --hold "${HOLD:-1.5}" --out "${DEMO_OUT:-demo-out}"
