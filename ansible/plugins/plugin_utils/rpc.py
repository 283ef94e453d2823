# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""JSON-RPC 2.0 client for the hostlock helper: one JSON object per line.

Works over a subprocess's pipes (``hostlock serve``) or a connected AF_UNIX
socket (``hostlock agent``). One request is in flight per connection, so a
``waiting`` notification always belongs to the call being made.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time

__all__ = ['RpcConnection', 'RpcError', 'HelperGone', 'NOTIFY_EVERY']

# Seconds between the helper's "still waiting" notifications that clients ask for.
NOTIFY_EVERY = 5

# The helper refuses lines over 1 MiB; a reply that large means something is wrong.
MAX_LINE = 4 * 1024 * 1024


class RpcError(Exception):
    """An error object returned by the helper."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}

    def __str__(self):
        return '%s (code %s)' % (self.message, self.code)


class HelperGone(Exception):
    """The helper closed the connection, died, or did not answer in time."""


class RpcConnection:
    """A line-delimited JSON-RPC connection over two file descriptors."""

    def __init__(self, read_fd, write_fd, closer=None, describe='hostlock helper'):
        self._rfd = read_fd
        self._wfd = write_fd
        self._closer = closer
        self.describe = describe
        self._buf = b''
        self._next_id = 0
        self.closed = False
        self._poll = select.poll()
        self._poll.register(read_fd, select.POLLIN)

    @classmethod
    def over_socket(cls, sock, describe='hostlock agent'):
        sock.setblocking(True)
        return cls(sock.fileno(), sock.fileno(), closer=sock.close, describe=describe)

    @classmethod
    def connect_unix(cls, path, timeout=5.0):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return cls.over_socket(sock, describe='hostlock agent at %s' % path)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self._closer is not None:
            self._closer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, obj):
        data = json.dumps(obj, separators=(',', ':')).encode('utf-8') + b'\n'
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._wfd, view)
            except (BrokenPipeError, ConnectionError) as e:
                raise HelperGone('%s closed the connection (%s)' % (self.describe, e)) from e
            view = view[n:]

    def _read_line(self, deadline):
        while b'\n' not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise HelperGone('%s sent a line longer than %d bytes' % (self.describe, MAX_LINE))
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise HelperGone('%s did not answer in time' % self.describe)
            if not self._poll.poll(None if remaining is None else max(1, int(remaining * 1000 + 0.999))):
                continue
            try:
                chunk = os.read(self._rfd, 65536)
            except (ConnectionError, OSError) as e:
                raise HelperGone('%s: read failed (%s)' % (self.describe, e)) from e
            if not chunk:
                raise HelperGone('%s closed the connection' % self.describe)
            self._buf += chunk
        line, _sep, self._buf = self._buf.partition(b'\n')
        return line

    def call(self, method, params=None, on_notify=None, timeout=None):
        """Send one request and return its result.

        ``on_notify(method, params)`` is called for every notification that
        arrives before the reply. ``timeout`` (seconds) bounds the whole call;
        None waits as long as the helper takes.
        """
        if self.closed:
            raise HelperGone('%s: connection already closed' % self.describe)
        self._next_id += 1
        req_id = self._next_id
        msg = {'jsonrpc': '2.0', 'id': req_id, 'method': method}
        if params is not None:
            msg['params'] = params
        deadline = None if timeout is None else time.monotonic() + timeout
        self._send(msg)
        while True:
            line = self._read_line(deadline)
            if not line.strip():
                continue
            try:
                reply = json.loads(line.decode('utf-8'))
            except ValueError:
                raise HelperGone('%s sent something that is not JSON: %r' % (self.describe, line[:200])) from None
            if not isinstance(reply, dict):
                continue
            if 'method' in reply and 'id' not in reply:
                if on_notify is not None:
                    on_notify(reply['method'], reply.get('params') or {})
                continue
            if reply.get('id') != req_id:
                # A reply to an earlier, abandoned call; it cannot be ours.
                continue
            if 'error' in reply:
                err = reply['error'] or {}
                raise RpcError(err.get('code'), err.get('message', 'unknown error'), err.get('data'))
            return reply.get('result')
