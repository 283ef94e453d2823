#!/usr/bin/env bash
# Checks hostlock.core in an execution environment, with no container engine:
# `ansible-builder create` on docs/examples/execution-environment.yml gives a
# build context that installs the collection tarball and the system packages
# introspection finds; `ansible-builder introspect` on the installed tarball
# names Node.js and util-linux for RPM and dpkg platforms.
#
#   scripts/ee-check.sh build/pkg/hostlock-core-<version>.tar.gz
#
# Its own venv (.venv-builder, pinned in requirements-ee.txt).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${BUILDER_VENV:-$ROOT/.venv-builder}

if [[ $# -ne 1 || ! -f $1 ]]; then
  echo "usage: $0 COLLECTION_TARBALL (build it with: make collection)" >&2
  exit 2
fi

if [[ ! -x $VENV/bin/python ]]; then
  echo "$0: no $VENV: make $(basename "$VENV")/.stamp creates it" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
env -u ANSIBLE_CONFIG -u ANSIBLE_COLLECTIONS_PATH HOME="$work/home" ANSIBLE_NOCOLOR=1 \
  PATH="$VENV/bin:$PATH" "$VENV/bin/python" "$ROOT/scripts/ee_check.py" \
  --example "$ROOT/docs/examples/execution-environment.yml" --work "$work" "$1"
