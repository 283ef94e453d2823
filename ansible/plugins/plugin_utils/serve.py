# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""A private ``hostlock serve`` child over pipes, for code outside an ansible-playbook run."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile

from ansible_collections.hostlock.core.plugins.plugin_utils.discovery import (
    INSTALL_HINT,
    START_TIMEOUT,
    HelperError,
    check_hello,
)
from ansible_collections.hostlock.core.plugins.plugin_utils.rpc import HelperGone, RpcConnection

__all__ = ['ServeProcess', 'start_serve']


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
