# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Reach the run's agent (``hostlock agent``), starting it when the run has none yet."""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import stat
import subprocess
import time

from ansible_collections.hostlock.core.plugins.plugin_utils.discovery import (
    INSTALL_HINT,
    PROTOCOL,
    START_TIMEOUT,
    HelperError,
    check_hello,
)
from ansible_collections.hostlock.core.plugins.plugin_utils.procinfo import run_id
from ansible_collections.hostlock.core.plugins.plugin_utils.rpc import HelperGone, RpcConnection, RpcError

__all__ = ['agent_helper', 'connect_agent', 'check_refusal', 'default_runtime_dir', 'LOCK_LOST']

# Error codes of docs/PROTOCOL.md the shim acts on.
INVALID_PARAMS = -32602
LOCK_LOST = -32003
PROTOCOL_MISMATCH = -32009


def default_runtime_dir(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get('HOSTLOCK_RUNTIME_DIR') or '/tmp/hostlock-%d/run' % os.getuid()


def _guess_socket(owner_pid):
    """The socket path by the documented naming rule, to skip a Node start when the agent is up."""
    try:
        return os.path.join(default_runtime_dir(), 'agent-%s.sock' % run_id(owner_pid))
    except (OSError, ValueError, IndexError):
        return None


def _ask_socket(cmd, owner_pid):
    try:
        out = subprocess.run(
            cmd + ['agent', '--owner-pid', str(owner_pid), '--print-socket'],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT,
            close_fds=True,
            check=False,  # the exit code is reported below, with the helper's own words
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HelperError('cannot run hostlock helper %s: %s. %s' % (shlex.join(cmd), e, INSTALL_HINT)) from e
    path = out.stdout.decode('utf-8', 'replace').strip()
    if out.returncode != 0 or not path:
        err = out.stderr.decode('utf-8', 'replace').strip()[-1500:]
        raise HelperError(
            'hostlock helper %s agent --print-socket failed (exit %d): %s. %s'
            % (shlex.join(cmd), out.returncode, err or 'no output', INSTALL_HINT)
        )
    return path.splitlines()[-1]


def _try_connect(path):
    if not path:
        return None
    try:
        return RpcConnection.connect_unix(path)
    except (FileNotFoundError, ConnectionRefusedError, socket.timeout, OSError):
        return None


def _spawn_agent(cmd, owner_pid, sock_path):
    log_fd = None
    log_path = None
    run_dir = os.path.dirname(sock_path)
    try:
        if os.stat(run_dir).st_uid == os.getuid():
            # One append-only log for all agents: a file per run would pile up in the runtime dir.
            log_path = os.path.join(run_dir, 'agents.log')
            log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        log_path = None
    try:
        # Own session: the agent outlives this worker and ignores the terminal's Ctrl-C.
        # --runtime-dir: the agent listens exactly where this client looks.
        proc = subprocess.Popen(
            cmd + ['agent', '--owner-pid', str(owner_pid), '--runtime-dir', run_dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if log_fd is None else log_fd,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        raise HelperError('cannot start hostlock agent %s: %s. %s' % (shlex.join(cmd), e, INSTALL_HINT)) from e
    finally:
        if log_fd is not None:
            os.close(log_fd)
    return proc, log_path


def _start_agent(cmd, owner_pid, sock_path):
    proc, log_path = _spawn_agent(cmd, owner_pid, sock_path)
    deadline = time.monotonic() + START_TIMEOUT
    # A refused connect costs microseconds and the agent listens ~0.1 s after its spawn:
    # poll finely at first rather than sleeping past the moment it is ready.
    delay = 0.005
    while True:
        conn = _try_connect(sock_path)
        if conn is not None:
            return conn
        code = proc.poll()
        # Exit 0 means another agent won the race; anything else is a failure to report.
        if code not in (None, 0):
            raise HelperError(
                'hostlock agent %s exited with code %d before listening on %s%s. %s'
                % (shlex.join(cmd), code, sock_path, _log_hint(log_path), INSTALL_HINT)
            )
        if time.monotonic() > deadline:
            raise HelperError(
                'hostlock agent did not listen on %s within %ds%s. %s'
                % (sock_path, START_TIMEOUT, _log_hint(log_path), INSTALL_HINT)
            )
        time.sleep(delay)
        if time.monotonic() - deadline + START_TIMEOUT > 1:
            delay = min(delay * 1.5, 0.2)


def _helper_record(sock_path):
    return sock_path + '.helper'


def _record_helper(sock_path, cmd):
    """Beside the socket, the helper command line the agent was started with (the agent
    removes it with its socket), so that a later task naming another helper can say so."""
    path = _helper_record(sock_path)
    try:
        tmp = '%s.%d' % (path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(shlex.join(cmd))
        os.replace(tmp, path)
    except OSError:
        pass  # only a -v remark depends on it


def agent_helper(owner_pid):
    """The helper command line (a string) the run's agent was started with, or None if unknown."""
    sock_path = _guess_socket(owner_pid)
    if sock_path is None:
        return None
    try:
        with open(_helper_record(sock_path), encoding='utf-8') as f:
            return f.read().strip() or None
    except OSError:
        return None


def _base_dir():
    return '/tmp/hostlock-%d' % os.getuid()


def _private_dirs(path):
    """Create ``path`` and its missing parents 0700, and trust it only if it is ours and closed to
    others, as the helper does: whoever owns the directory could swap the agent's socket."""
    base = _base_dir()
    if path.startswith(base + os.sep):
        _private_dirs(base)
    missing = []
    d = path
    while d and not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise HelperError('%s is not a directory; remove it or set another directory' % path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise HelperError(
            '%s must be owned by uid %d with mode 0700 (it is uid %d, mode %o); fix it with chown/chmod or remove it'
            % (path, os.getuid(), st.st_uid, stat.S_IMODE(st.st_mode))
        )


def _start_lock(run_dir):
    """flock the runtime directory so one worker starts the agent while the others wait.

    Every fork of a run's first task finds no agent; without this each would start
    Node only to lose the agent's own pid-file race, all on the same few cores.
    """
    try:
        _private_dirs(run_dir)
    except OSError:
        return None
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return None
    return fd


def connect_agent(find_cmd, owner_pid, client='ansible', member=None, greet=True):
    """Connect to the agent of the run owned by ``owner_pid``, starting it if needed.

    ``find_cmd()`` returns the helper's command line; it is called only when the agent must be
    started or refuses us, so a task that finds the run's agent up never searches for the helper.
    Returns ``(connection, hello_result)``. Many workers may race here: one starts
    the agent under a flock of the runtime directory, the others then connect.

    ``greet=False`` skips ``hello`` (the result is then None): the caller's requests name
    the protocol and a member's lost holds fail them, so one round trip does a task's work;
    see ``check_refusal`` for the errors that may mean another protocol.
    """
    found = []

    def cmd():
        if not found:
            found.append(find_cmd())
        return found[0]

    # The socket path follows the documented rule; asking the helper costs a Node start.
    sock_path = _guess_socket(owner_pid)
    conn = _try_connect(sock_path)
    if conn is None and sock_path is None:
        sock_path = _ask_socket(cmd(), owner_pid)
        conn = _try_connect(sock_path)
    start_lock = None
    try:
        if conn is None:
            helper = cmd()
            start_lock = _start_lock(os.path.dirname(sock_path))
            # Whoever held the start lock before us may have started the agent already.
            conn = _try_connect(sock_path)
            if conn is None:
                conn = _start_agent(helper, owner_pid, sock_path)
                _record_helper(sock_path, helper)
    finally:
        if start_lock is not None:
            os.close(start_lock)
    if not greet:
        return conn, None
    try:
        params = {'client': client}
        if member is not None:
            # With a member, hello also reports (and clears) that member's lost holds.
            params['member'] = member
        hello = conn.call('hello', params, timeout=START_TIMEOUT)
        if (hello or {}).get('protocol') != PROTOCOL:
            check_hello(hello, cmd())
    except HelperGone as e:
        conn.close()
        raise HelperError('hostlock agent does not answer: %s' % e) from e
    except BaseException:
        conn.close()
        raise
    return conn, hello


def check_refusal(conn, find_cmd, err):
    """After an agent refused a request that named the protocol (``err``): raise HelperError
    if the agent speaks another protocol (an older one refuses the unknown parameter as
    invalid), else return so that the caller reports ``err`` itself."""
    if err.code not in (INVALID_PARAMS, PROTOCOL_MISMATCH):
        return
    try:
        hello = conn.call('hello', {}, timeout=START_TIMEOUT)
    except (HelperGone, RpcError):
        return
    if (hello or {}).get('protocol') != PROTOCOL:
        check_hello(hello, find_cmd())


def _log_hint(log_path):
    if not log_path:
        return ''
    try:
        with open(log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 1500))
            text = f.read().decode('utf-8', 'replace').strip()
    except OSError:
        return ''
    return ' (agent log %s: %s)' % (log_path, text) if text else ' (agent log: %s)' % log_path
