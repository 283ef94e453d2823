# Environment for molecule scenarios and the demo; source it, don't run it.
# Sets PATH to the repo's .venv (or $HOSTLOCK_VENV, another ansible-core's venv such as
# .venv-2.16), points Ansible at the collection in ansible/
# through a symlink tree, and tells the collection where the helper is.
HOSTLOCK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export HOSTLOCK_REPO
HOSTLOCK_VENV="${HOSTLOCK_VENV:-$HOSTLOCK_REPO/.venv}"
export PATH="$HOSTLOCK_VENV/bin:$PATH"

# The collection root is ansible/, not a galaxy install: molecule >= 25.2 sets
# no collections path itself, so give Ansible a tree it can search.
mkdir -p "$HOSTLOCK_REPO/build/collections/ansible_collections/hostlock"
ln -sfn "$HOSTLOCK_REPO/ansible" "$HOSTLOCK_REPO/build/collections/ansible_collections/hostlock/core"
export ANSIBLE_COLLECTIONS_PATH="$HOSTLOCK_REPO/build/collections"

export HOSTLOCK_HELPER="${HOSTLOCK_HELPER:-node $HOSTLOCK_REPO/dist/cli.js}"
# Agents' sockets live here; short and private so tests never meet a user's own runs.
# A Unix socket path must stay under 108 bytes: fall back to /tmp for a deep checkout.
if [ -z "${HOSTLOCK_RUNTIME_DIR:-}" ]; then
    HOSTLOCK_RUNTIME_DIR="$HOSTLOCK_REPO/build/run"
    [ "${#HOSTLOCK_RUNTIME_DIR}" -le 60 ] || HOSTLOCK_RUNTIME_DIR="${TMPDIR:-/tmp}/hostlock-$(id -u)-tests"
fi
export HOSTLOCK_RUNTIME_DIR
mkdir -p -m 700 "$HOSTLOCK_RUNTIME_DIR"
export ANSIBLE_NOCOLOR="${ANSIBLE_NOCOLOR:-1}"

if [ ! -f "$HOSTLOCK_REPO/dist/cli.js" ] || [ ! -x "$HOSTLOCK_VENV/bin/ansible-playbook" ]; then
    echo "hostlock: run 'make build venv' first (need dist/cli.js and $HOSTLOCK_VENV)" >&2
    return 1 2>/dev/null || exit 1
fi
