#!/usr/bin/env bash
# Runs galaxy-importer, what Galaxy and Automation Hub run on an uploaded collection,
# on a built collection tarball, and fails on any error it reports.
#
#   scripts/galaxy-check.sh build/pkg/hostlock-core-<version>.tar.gz
#
# Its own venv (.venv-importer, pinned in requirements-galaxy.txt). ansible-test is
# off (no container engine; `make lint` runs the sanity tests); ansible-doc and
# ansible-lint (offline) run as on Galaxy.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${IMPORTER_VENV:-$ROOT/.venv-importer}

if [[ $# -ne 1 || ! -f $1 ]]; then
  echo "usage: $0 COLLECTION_TARBALL (build it with: make collection)" >&2
  exit 2
fi
tarball=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")

if [[ ! -x $VENV/bin/python ]]; then
  echo "$0: no $VENV: make $(basename "$VENV")/.stamp creates it" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/galaxy-importer.cfg" <<CFG
[galaxy-importer]
run_ansible_test = False
run_ansible_doc = True
run_ansible_lint = True
offline_ansible_lint = True
check_changelog = True
tmp_root_dir = $work/tmp
ansible_local_tmp = $work/ansible-tmp
CFG
mkdir -p "$work/tmp" "$work/home"

# The importer writes importer_result.json to its working directory; it finds
# ansible-doc and ansible-lint on PATH.
rc=0
(cd "$work" && env -u ANSIBLE_CONFIG -u ANSIBLE_COLLECTIONS_PATH \
  HOME="$work/home" NO_COLOR=1 PATH="$VENV/bin:$PATH" \
  GALAXY_IMPORTER_CONFIG="$work/galaxy-importer.cfg" \
  "$VENV/bin/python" -m galaxy_importer.main "$tarball") >"$work/log" 2>&1 || rc=$?
cat "$work/log"

errors=$(grep -E '^(ERROR|CRITICAL)' "$work/log" || true)
if [[ $rc -ne 0 || -n $errors ]]; then
  echo "galaxy-check: galaxy-importer refuses $(basename "$tarball") (exit $rc)" >&2
  exit 1
fi
if ! grep -q 'Importer processing completed successfully' "$work/log"; then
  echo "galaxy-check: galaxy-importer did not say it completed" >&2
  exit 1
fi
python3 - "$work/importer_result.json" "$(basename "$tarball")" <<'PY'
import json
import sys

data = json.load(open(sys.argv[1]))
contents = sorted((c['content_type'], c['name']) for c in data.get('contents', []))
documented = {(d['content_type'], d['content_name']) for d in data['docs_blob']['contents'] if d.get('doc_strings')}
undocumented = [c for c in contents if c[0] == 'module' and c not in documented]
if undocumented:
    sys.exit('galaxy-check: Galaxy would show no documentation for ' + ', '.join('%s %s' % c for c in undocumented))
print('galaxy-check: %s imports cleanly: %s' % (sys.argv[2], ', '.join('%s %s' % c for c in contents)))
PY
