# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Find the hostlock helper, start a private ``serve``, or reach the run's agent."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

from ansible_collections.hostlock.core.plugins.plugin_utils.rpc import (
    HelperGone,
    RpcConnection,
    RpcError,
)

__all__ = [
    'HelperError',
    'HelperGone',
    'RpcError',
    'PROTOCOL',
    'find_helper',
    'start_serve',
    'connect_agent',
    'default_runtime_dir',
    'process_start_time',
    'run_id',
    'run_owner_pid',
    'holder_text',
    'holders_text',
]

# Protocol version of docs/PROTOCOL.md this client speaks.
PROTOCOL = 1

INSTALL_HINT = (
    'Install the helper (needs Node.js >= 20) from its packed tarball with '
    '`npm install -g ./hostlock-<version>.tgz` (`npm pack` in a hostlock checkout makes it), '
    'or run `make install` in a hostlock checkout, or point to a checkout: task argument `helper`, '
    "variable `hostlock_helper`, or HOSTLOCK_HELPER='node /path/to/hostlock/dist/cli.js'."
)

# Seconds to wait for a helper to start and say hello.
START_TIMEOUT = 10.0


class HelperError(Exception):
    """The helper cannot be found, started or spoken to."""


def find_helper(arg=None, var=None, environ=None):
    """Return the helper command line as a list, first found of:
    task argument, variable ``hostlock_helper``, env ``HOSTLOCK_HELPER``, ``hostlock`` on PATH."""
    environ = os.environ if environ is None else environ
    for source, value in (
        ('helper argument', arg),
        ('hostlock_helper variable', var),
        ('HOSTLOCK_HELPER', environ.get('HOSTLOCK_HELPER')),
    ):
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        cmd = [str(v) for v in value] if isinstance(value, (list, tuple)) else shlex.split(str(value))
        if not cmd:
            continue
        _check_runnable(cmd, source)
        return cmd
    found = shutil.which('hostlock', path=environ.get('PATH'))
    if found:
        return [found]
    raise HelperError(
        'hostlock helper not found: no helper argument, no hostlock_helper '
        'variable, no HOSTLOCK_HELPER and no `hostlock` on PATH. ' + INSTALL_HINT
    )


def _check_runnable(cmd, source):
    """Fail early, naming the source, when the program or the script it runs is missing."""
    prog = cmd[0]
    if os.sep in prog:
        if not os.access(prog, os.X_OK):
            raise HelperError(
                'hostlock helper from %s: %s is not an executable file. %s' % (source, prog, INSTALL_HINT)
            )
    elif shutil.which(prog) is None:
        what = 'Node.js (`node`)' if prog in ('node', 'nodejs') else '`%s`' % prog
        raise HelperError(
            'hostlock helper from %s (%s): %s is not installed or not on PATH. %s'
            % (source, shlex.join(cmd), what, INSTALL_HINT)
        )
    # `node script.js`: a missing script would only show up as a crash at start.
    if os.path.basename(prog) in ('node', 'nodejs') and len(cmd) > 1 and not cmd[1].startswith('-'):
        if not os.path.isfile(cmd[1]):
            raise HelperError(
                'hostlock helper from %s (%s): %s does not exist (not built? run '
                '`make build`). %s' % (source, shlex.join(cmd), cmd[1], INSTALL_HINT)
            )


def check_hello(result, cmd):
    """Refuse a helper that speaks another protocol version."""
    proto = (result or {}).get('protocol')
    if proto != PROTOCOL:
        raise HelperError(
            'hostlock helper %s speaks protocol %r, this collection needs %d: '
            'install matching versions of the hostlock npm package and the '
            'hostlock.core collection. %s' % (shlex.join(cmd), proto, PROTOCOL, INSTALL_HINT)
        )
    return result


def _tail(fileobj, limit=2000):
    try:
        fileobj.seek(0)
        data = fileobj.read()
    except (OSError, ValueError):
        return ''
    if isinstance(data, bytes):
        data = data.decode('utf-8', 'replace')
    return data[-limit:].strip()


class ServeProcess:
    """A private ``hostlock serve`` child; closing its stdin makes it release everything and exit."""

    def __init__(self, cmd, client='python'):
        self.cmd = cmd
        # A forked child must not reuse or shut down its parent's helper.
        self.owner_pid = os.getpid()
        # stderr to a file: a pipe nobody reads would stall the helper once full.
        self._log = tempfile.TemporaryFile(prefix='hostlock-serve-')
        try:
            self.proc = subprocess.Popen(
                cmd + ['serve'],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                close_fds=True,
                bufsize=0,
            )
        except OSError as e:
            self._log.close()
            raise HelperError('cannot start hostlock helper %s: %s. %s' % (shlex.join(cmd), e, INSTALL_HINT)) from e
        self.conn = RpcConnection(
            self.proc.stdout.fileno(),
            self.proc.stdin.fileno(),
            closer=self._shutdown,
            describe='hostlock helper (pid %d)' % self.proc.pid,
        )
        try:
            self.hello = check_hello(self.conn.call('hello', {'client': client}, timeout=START_TIMEOUT), cmd)
        except HelperGone as e:
            self.conn.close()
            raise HelperError(
                'hostlock helper %s failed to start: %s%s. %s'
                % (shlex.join(cmd), e, self.stderr_tail(' Its output: '), INSTALL_HINT)
            ) from e
        except BaseException:
            self.conn.close()
            raise

    def stderr_tail(self, lead=''):
        text = _tail(self._log)
        return lead + text if text else ''

    def _shutdown(self):
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def start_serve(cmd, client='python'):
    """Start a private helper and return its ServeProcess (``.conn`` is the connection)."""
    return ServeProcess(cmd, client=client)


def process_start_time(pid):
    """Field 22 of /proc/PID/stat: tells a process from a later one with the same PID."""
    with open('/proc/%d/stat' % pid, 'rb') as f:
        data = f.read().decode('ascii', 'replace')
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    return data[data.rindex(')') + 2 :].split()[19]


def run_owner_pid():
    """PID of the ansible-playbook process that forked this worker.

    A worker orphaned by a killed ansible-playbook has a new parent (init or a
    subreaper); an agent owned by that one would keep the run's locks for ever.
    """
    ppid = os.getppid()
    forked_by = getattr(multiprocessing.current_process(), '_parent_pid', None)
    if forked_by is not None and forked_by != ppid:
        raise HelperError(
            'the ansible-playbook process (pid %d) that started this task is gone; '
            'not taking a lock for an orphaned worker' % forked_by
        )
    return ppid


def run_id(pid):
    return '%d-%s' % (pid, process_start_time(pid))


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


def _private_dirs(path):
    """Create ``path`` and its missing parents 0700, as the helper's own mkdir does."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass


def _start_lock(run_dir):
    """flock the runtime directory so one worker starts the agent while the others wait.

    Every fork of a run's first task finds no agent; without this each would start
    Node only to lose the agent's own pid-file race, all on the same few cores.
    """
    try:
        _private_dirs(run_dir)
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return None
    return fd


def connect_agent(cmd, owner_pid, client='ansible', member=None):
    """Connect to the agent of the run owned by ``owner_pid``, starting it if needed.

    Returns ``(connection, hello_result)``. Many workers may race here: one starts
    the agent under a flock of the runtime directory, the others then connect.
    """
    # The socket path follows the documented rule; asking the helper costs a Node start.
    sock_path = _guess_socket(owner_pid)
    conn = _try_connect(sock_path)
    if conn is None and sock_path is None:
        sock_path = _ask_socket(cmd, owner_pid)
        conn = _try_connect(sock_path)
    start_lock = None
    try:
        if conn is None:
            start_lock = _start_lock(os.path.dirname(sock_path))
            # Whoever held the start lock before us may have started the agent already.
            conn = _try_connect(sock_path)
        if conn is None:
            conn = _start_agent(cmd, owner_pid, sock_path)
    finally:
        if start_lock is not None:
            os.close(start_lock)
    try:
        params = {'client': client}
        if member is not None:
            # With a member, hello also reports (and clears) that member's lost holds.
            params['member'] = member
        hello = check_hello(conn.call('hello', params, timeout=START_TIMEOUT), cmd)
    except HelperGone as e:
        conn.close()
        raise HelperError('hostlock agent does not answer: %s' % e) from e
    except BaseException:
        conn.close()
        raise
    return conn, hello


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


def holder_text(holder):
    """One line naming a holder: playbook, task, host, user, pid and since."""
    if not isinstance(holder, dict):
        return str(holder)
    if holder.get('foreign'):
        return 'a process outside hostlock (pid %s, user %s, %s)' % (
            holder.get('pid', '?'),
            holder.get('user', '?'),
            holder.get('mode', 'exclusive'),
        )
    parts = []
    if holder.get('playbook'):
        parts.append('playbook %s' % holder['playbook'])
    if holder.get('play'):
        parts.append("play '%s'" % holder['play'])
    if holder.get('task'):
        parts.append("task '%s'" % holder['task'])
    if holder.get('host'):
        parts.append('host %s' % holder['host'])
    parts.append('user %s' % holder.get('user', '?'))
    if holder.get('controller'):
        parts.append('on %s' % holder['controller'])
    parts.append('pid %s' % holder.get('pid', '?'))
    if holder.get('mode') == 'shared':
        parts.append('shared')
    text = ', '.join(parts)
    if holder.get('since'):
        text += ' since %s' % holder['since']
    return text


def holders_text(holders):
    if not holders:
        return 'an unknown holder'
    return '; '.join(holder_text(h) for h in holders)
