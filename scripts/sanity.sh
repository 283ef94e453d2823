#!/usr/bin/env bash
# `ansible-test sanity` on the collection as users get it: the built tarball
# (`make collection`, helper included), installed with ansible-galaxy into a
# temporary tree (ansible_collections/hostlock/core, the layout ansible-test
# requires), with the pinned ansible-core.
#   scripts/sanity.sh build/pkg/hostlock-core-<version>.tar.gz [ansible-test options]
# VENV=.venv-2.16 runs another ansible-core's ansible-test, on that venv's Python; each
# ansible-core reads its own ansible/tests/sanity/ignore-2.X.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ $# -lt 1 || ! -f $1 ]]; then
  echo "usage: $0 COLLECTION_TARBALL [ansible-test options] (build it with: make collection)" >&2
  exit 2
fi
tarball=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
VENV=${VENV:-$ROOT/.venv}
PYTHON_VERSION=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# --- Needed only where ansible-test's pip bootstrap host is unreachable. ---
# ansible-test downloads a get-pip script from ci-files.testing.ansible.com into
# ~/.ansible/test/cache unless one is already there. This stand-in does the same
# job: ensurepip, then `pip install` with the arguments ansible-test passes, with
# the machine's CA bundle written into each new venv (its pip does not read it).
# Each ansible-core pins its own pip for each Python, hence one stand-in per pip version.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
pip_version=$("$VENV/bin/python" -c '
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$PYTHON_VERSION"'"))["pip"])')
stand_in=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [[ ! -f $stand_in ]] || grep -q 'hostlock stand-in' "$stand_in"; then
  mkdir -p "$(dirname "$stand_in")"
  cat >"$stand_in" <<PY
# hostlock stand-in for ansible-test's get-pip bootstrap (its download host is unreachable here).
import os
import subprocess
import sys

CA_BUNDLE = '$CA_BUNDLE'
if os.path.exists(CA_BUNDLE):
    with open(os.path.join(sys.prefix, 'pip.conf'), 'w') as f:
        f.write('[global]\ncert = %s\n' % CA_BUNDLE)
subprocess.run([sys.executable, '-m', 'ensurepip', '--default-pip'], check=True, stdout=subprocess.DEVNULL)
# get-pip's own options, which pip install does not know.
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
sys.exit(subprocess.run([sys.executable, '-m', 'pip', 'install', '--cert', CA_BUNDLE, *args]).returncode)
PY
fi
# --- end of the unreachable-host set-up ---

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
coll=$tree/ansible_collections/hostlock/core
HOME=$tree "$VENV/bin/ansible-galaxy" collection install --force -p "$tree" "$tarball" >/dev/null
cd "$coll"
PATH=$VENV/bin:$PATH "$VENV/bin/ansible-test" sanity --python "$PYTHON_VERSION" --requirements --color no "$@"
