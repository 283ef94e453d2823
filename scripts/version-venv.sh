#!/usr/bin/env bash
# Create .venv-X.Y with the ansible-core line X.Y and the Python it is tested on:
#   scripts/version-venv.sh 2.16
# test/versions/requirements-X.Y.txt pins the packages and names the Python (`# python: 3.10`).
# The interpreter is $PYTHON_3_10 if set, else python3.10 on PATH, else pyenv's newest 3.10.*.
# A missing interpreter is an error that says how to get one: these versions are never skipped.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
line=${1:?usage: scripts/version-venv.sh ANSIBLE_CORE_LINE (2.16, 2.17, 2.18, 2.20)}
req=$ROOT/test/versions/requirements-$line.txt
[[ -f $req ]] || { echo "no $req: ansible-core $line is not one of the tested lines" >&2; exit 2; }
pyver=$(sed -n 's/^# python: *//p' "$req")
[[ -n $pyver ]] || { echo "$req names no Python (a '# python: 3.X' line)" >&2; exit 2; }
venv=$ROOT/.venv-$line

works() { [[ -n $1 ]] && "$1" -c 'import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, sys.argv[1].split("."))))' "$pyver" 2>/dev/null; }

var=PYTHON_${pyver//./_}
python=${!var:-}
if [[ -n $python ]] && ! works "$python"; then
  echo "$var=$python is not a working Python $pyver" >&2
  exit 2
fi
if [[ -z $python ]]; then
  for candidate in "$(command -v "python$pyver" || true)" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$pyver".*/bin/python"$pyver" 2>/dev/null | sort -rV); do
    if works "$candidate"; then
      python=$candidate
      break
    fi
  done
fi
if [[ -z $python ]]; then
  cat >&2 <<EOF
ansible-core $line is tested on Python $pyver, and no Python $pyver was found.
Install it, then run make again:
  pyenv install $pyver          # found in \${PYENV_ROOT:-~/.pyenv}/versions/$pyver.*
  or your system's package (python$pyver and python$pyver-venv), found as python$pyver on PATH
  or point at one: make $var=/path/to/python$pyver ...
EOF
  exit 2
fi

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
"$venv/bin/python" -c 'import sys, ansible.release as r; print("%s: Python %s, ansible-core %s" % (sys.prefix, sys.version.split()[0], r.__version__))'
