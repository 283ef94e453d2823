"""Bad arguments and a missing or incompatible helper fail with one clear message."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

BAD_ARGS = [
    ('state: grabbed', 'value of state must be one of: acquired, try, released, status'),
    ('timeout: -5', 'timeout must be a number of seconds from 0 to 31536000'),
    ('timeout: soon', 'timeout'),
    ('name: ""', 'name must be a non-empty string'),
    ('colour: red', 'Unsupported parameters'),
]


@pytest.mark.nohelper
@pytest.mark.parametrize('arg,message', BAD_ARGS, ids=[a for a, _ in BAD_ARGS])
def test_bad_argument_fails_clearly(env, arg, message):
    pb = env.playbook(
        'bad.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: lock
              hostlock.core.lock:
                %s
    """
        % arg,
    )
    code, out = env.run(pb)
    assert code == 2, out
    rec = env.record('run', 'lock')
    assert rec['status'] == 'failed'
    assert message in rec['result']['msg'], rec['result']['msg']


def _no_helper_env(env):
    # A PATH with python and node but no `hostlock` (not even one the user installed
    # next to node, as `npm install -g` does into /usr/bin), and no HOSTLOCK_HELPER.
    bin_dir = env.tmp / 'bin-without-hostlock'
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / 'node').exists():
        (bin_dir / 'node').symlink_to(shutil.which('node'))
    return {'HOSTLOCK_HELPER': '', 'PATH': os.pathsep.join([str(sys.executable.rsplit('/', 1)[0]), str(bin_dir)])}


@pytest.mark.nohelper
def test_no_helper_found(env):
    pb = env.playbook(
        'nohelper.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: lock
              hostlock.core.lock:
    """,
    )
    code, out = env.run(pb, env=_no_helper_env(env))
    assert code == 2, out
    msg = env.record('run', 'lock')['result']['msg']
    assert 'hostlock helper not found' in msg
    assert 'npm install -g ./hostlock-<version>.tgz' in msg and 'HOSTLOCK_HELPER=' in msg


@pytest.mark.nohelper
def test_helper_script_missing(env):
    pb = env.playbook(
        'badpath.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: lock
              hostlock.core.lock:
                helper: node /nonexistent/dist/cli.js
    """,
    )
    code, out = env.run(pb)
    assert code == 2, out
    msg = env.record('run', 'lock')['result']['msg']
    assert '/nonexistent/dist/cli.js does not exist' in msg and 'npm install -g ./hostlock-<version>.tgz' in msg


@pytest.mark.nohelper
def test_node_missing(env):
    pb = env.playbook(
        'nonode.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: lock
              hostlock.core.lock:
                helper: nodejs-not-installed /opt/hostlock/dist/cli.js
    """,
    )
    code, out = env.run(pb)
    assert code == 2, out
    msg = env.record('run', 'lock')['result']['msg']
    assert 'nodejs-not-installed' in msg and 'not installed or not on PATH' in msg
    assert 'npm install -g ./hostlock-<version>.tgz' in msg


OLD_HELPER = r"""
import json, os, socket, sys
# A stand-in for an old helper: it answers hello with protocol 0, and refuses
# every other request as an old helper refuses the parameter `protocol`.


def answer(rfile, wfile):
    for line in rfile:
        req = json.loads(line)
        reply = {"jsonrpc": "2.0", "id": req["id"],
                 "result": {"version": "0.0.1", "protocol": 0, "pid": os.getpid(), "lost": []}}
        if req["method"] != "hello":
            reply = {"jsonrpc": "2.0", "id": req["id"],
                     "error": {"code": -32602, "message": "params has unknown key protocol"}}
        wfile.write(json.dumps(reply) + "\n")
        wfile.flush()


def socket_path():
    # The documented rule: <runtime>/agent-<PID>-<starttime>.sock
    args = sys.argv
    pid = args[args.index("--owner-pid") + 1]
    run = args[args.index("--runtime-dir") + 1] if "--runtime-dir" in args else os.environ["HOSTLOCK_RUNTIME_DIR"]
    stat = open("/proc/%s/stat" % pid).read()
    return os.path.join(run, "agent-%s-%s.sock" % (pid, stat[stat.rindex(")") + 2:].split()[19]))


if sys.argv[1:2] == ["agent"]:
    if "--print-socket" in sys.argv:
        print(socket_path())
        sys.exit(0)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(socket_path())
    srv.listen()
    srv.settimeout(20)
    conn, _ = srv.accept()
    f = conn.makefile("rw")
    answer(f, f)
else:
    answer(sys.stdin, sys.stdout)
"""


def _old_helper(env):
    old = env.tmp / 'old-hostlock'
    old.write_text('#!%s\n' % sys.executable + OLD_HELPER)
    old.chmod(old.stat().st_mode | stat.S_IXUSR)
    return old


@pytest.mark.nohelper
def test_incompatible_protocol_action(env):
    old = _old_helper(env)
    pb = env.playbook(
        'old.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: lock
              hostlock.core.lock:
    """,
    )
    code, out = env.run(pb, env={'HOSTLOCK_HELPER': str(old)})
    assert code == 2, out
    msg = env.record('run', 'lock')['result']['msg']
    assert 'speaks protocol 0, this collection needs 2' in msg and 'npm install -g ./hostlock-<version>.tgz' in msg


@pytest.mark.nohelper
def test_incompatible_protocol_lock(env, tmp_path):
    old = _old_helper(env)
    script = tmp_path / 'use_lock.py'
    script.write_text("""
import sys
from ansible_collections.hostlock.core.plugins.plugin_utils.lock import Lock, HelperError
try:
    with Lock(sys.argv[1]):
        pass
except HelperError as e:
    print(e)
    sys.exit(3)
""")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / 'x.lock')],
        capture_output=True,
        text=True,
        env=dict(env.vars, HOSTLOCK_HELPER=str(old), PYTHONPATH=env.vars['ANSIBLE_COLLECTIONS_PATH']),
        timeout=30,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert 'speaks protocol 0, this collection needs 2' in proc.stdout


def test_runtime_dir_open_to_others_is_refused(env):
    """The shim trusts the agent's directory only as the helper does: ours and mode 0700."""
    env.runtime_dir.chmod(0o755)
    pb = env.playbook(
        'opendir.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: lock
              hostlock.core.lock:
    """,
    )
    code, out = env.run(pb)
    assert code == 2, out
    msg = env.record('run', 'lock')['result']['msg']
    assert (
        '%s must be owned by uid %d with mode 0700 (it is uid %d, mode 755)'
        % (
            env.runtime_dir,
            os.getuid(),
            os.getuid(),
        )
        in msg
    ), msg
    assert msg.count('must be owned by') == 1, 'the message is said once: %s' % msg
    assert not list(env.runtime_dir.glob('agent-*.sock')), 'an agent started in an open directory'
