# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""``Lock``: a drop-in for ``cli2.Lock`` backed by the hostlock helper.

    with Lock('/tmp/mylock') as lock:          # blocking
        ...
    with Lock('/tmp/mylock', blocking=False) as lock:
        if not lock.acquired:
            lock.block()                       # turn the failed try into a wait

Each ``Lock`` object is its own holder (its own helper connection and handle),
like an open file description. Inside an ansible-playbook worker it uses the
run's agent; elsewhere it starts a private ``hostlock serve`` while it holds.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import sys
from pathlib import Path

from ansible_collections.hostlock.core.plugins.plugin_utils.agent import connect_agent
from ansible_collections.hostlock.core.plugins.plugin_utils.discovery import HelperError, find_helper
from ansible_collections.hostlock.core.plugins.plugin_utils.holders import holders_text
from ansible_collections.hostlock.core.plugins.plugin_utils.owner import owner_metadata
from ansible_collections.hostlock.core.plugins.plugin_utils.procinfo import run_owner_pid
from ansible_collections.hostlock.core.plugins.plugin_utils.rpc import NOTIFY_EVERY, HelperGone, RpcError
from ansible_collections.hostlock.core.plugins.plugin_utils.serve import start_serve

__all__ = ['Lock', 'LockLog', 'LockTimeout', 'LockError', 'HelperError', 'logger']

logger = logging.getLogger('hostlock')


class LockError(Exception):
    """The helper refused or lost the lock."""


class LockTimeout(LockError, TimeoutError):
    """A blocking wait ran out of ``timeout`` seconds."""

    def __init__(self, message, holders=None, waited=None):
        super().__init__(message)
        self.holders = holders or []
        self.waited = waited


def _ansible_worker():
    """The running Ansible WorkerProcess, or None outside an ansible-playbook worker."""
    mod = sys.modules.get('ansible.executor.process.worker')
    if mod is None:
        return None
    proc = multiprocessing.current_process()
    worker_cls = getattr(mod, 'WorkerProcess', None)
    if worker_cls is not None and isinstance(proc, worker_cls):
        return proc
    return getattr(mod, 'current_worker', None)


class _DisplayHandler(logging.Handler):
    """Log records to Ansible's Display: a 2.19 worker's stderr is /dev/null."""

    def emit(self, record):
        try:
            from ansible.utils.display import Display

            Display().display(self.format(record))
        except Exception:
            self.handleError(record)


def _level_from_env():
    value = os.environ.get('LOG_LEVEL')
    if not value:
        # cli2 users know DEBUG=1 as a shortcut for LOG_LEVEL=DEBUG.
        return logging.DEBUG if os.environ.get('DEBUG') else None
    value = value.strip().upper()
    if value.isdigit():
        return int(value)
    level = logging.getLevelName(value)
    return level if isinstance(level, int) else None


_configured = False

# Idle private helpers of this process, reused by the next Lock: a Node start costs ~90 ms.
_idle_serves = []
MAX_IDLE_SERVES = 2


def _take_idle_serve(cmd):
    while _idle_serves:
        serve = _idle_serves.pop()
        if serve.owner_pid == os.getpid() and serve.cmd == cmd and serve.proc.poll() is None:
            return serve
        if serve.owner_pid == os.getpid():
            serve.conn.close()
    return None


def _park_serve(serve):
    """Keep a helper that holds nothing for the next Lock; False when there is no room."""
    if serve.owner_pid != os.getpid() or len(_idle_serves) >= MAX_IDLE_SERVES:
        return False
    if not _idle_serves:
        atexit.register(_close_idle_serves)
    _idle_serves.append(serve)
    return True


def _close_idle_serves():
    while _idle_serves:
        serve = _idle_serves.pop()
        if serve.owner_pid == os.getpid():
            serve.conn.close()


def configure_logging():
    """Give the 'hostlock' logger a level and a handler once, unless the application did."""
    global _configured
    if _configured:
        return
    _configured = True
    level = _level_from_env()
    if _ansible_worker() is not None:
        if level is None:
            try:
                from ansible.utils.display import Display

                verbosity = Display().verbosity
            except Exception:
                verbosity = 0
            level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING
        handler = _DisplayHandler()
        handler.setFormatter(logging.Formatter('hostlock: %(message)s'))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(level)
        return
    if level is not None:
        logger.setLevel(level)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
        logger.addHandler(handler)
        if level is None:
            logger.setLevel(logging.WARNING)


def _owner():
    """Metadata other waiters see about this holder."""
    worker = _ansible_worker()
    if worker is None:
        return owner_metadata()
    # Inside a worker: name the run, task and host so `hostlock status` shows who holds a plugin's lock.
    host = getattr(worker, '_host', None)
    return owner_metadata(
        getattr(worker, '_task', None), None if host is None else getattr(host, 'name', host), os.getppid()
    )


class LockLog:
    """``lock.log``: the ``hostlock`` logger, each line naming the lock (and its prefix).

    Takes what cli2 code passes to a lock's ``log``: a message, %-style arguments, and
    keyword values, which are appended as ``key=value``.
    """

    def __init__(self, lock):
        self._lock = lock
        self.logger = logger

    def log(self, level, msg, *args, **kw):
        if not self.logger.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        extra = ''.join(' %s=%s' % (k, v) for k, v in kw.items())
        self._lock._log(level, text, extra)

    def debug(self, msg, *args, **kw):
        self.log(logging.DEBUG, msg, *args, **kw)

    def info(self, msg, *args, **kw):
        self.log(logging.INFO, msg, *args, **kw)

    def warning(self, msg, *args, **kw):
        self.log(logging.WARNING, msg, *args, **kw)

    warn = warning

    def error(self, msg, *args, **kw):
        self.log(logging.ERROR, msg, *args, **kw)

    def exception(self, msg, *args, **kw):
        self.log(logging.ERROR, msg, *args, **kw)

    def critical(self, msg, *args, **kw):
        self.log(logging.CRITICAL, msg, *args, **kw)


class Lock:
    """An flock(2) lock on ``lock_path`` held through the hostlock helper.

    ``blocking=False`` tries once on enter; ``acquired`` tells the outcome and
    ``block()`` waits for it. ``timeout`` (seconds) bounds every wait and raises
    ``LockTimeout``; ``shared=True`` takes a shared (read) lock.
    ``backend`` (a ``postgresql://`` or ``etcd://`` URL, default ``$HOSTLOCK_BACKEND``) keeps the
    lock in a server store shared by several controllers, named by ``lock_path``.
    ``token`` is the fencing token of the current grant. ``slots=N`` makes the lock a
    counting semaphore (at most N holders); ``slot`` is the one held.
    ``log`` logs to the ``hostlock`` logger, naming the lock, as cli2's ``Lock.log`` does.
    """

    def __init__(
        self,
        lock_path,
        blocking=True,
        prefix=None,
        *,
        timeout=None,
        shared=False,
        helper=None,
        backend=None,
        slots=None,
    ):
        # A Path and an empty prefix, as cli2 has them: callers use lock.lock_path.parent and the like.
        self.lock_path = Path(os.path.abspath(os.fspath(lock_path)))
        self.blocking = blocking
        self.prefix = prefix or ''
        self.timeout = timeout
        self.shared = shared
        self.slots = slots
        self.slot = None
        self.helper = helper
        # A server store (postgresql://…, etcd://…): the path string names the lock there.
        backend = os.environ.get('HOSTLOCK_BACKEND') if backend is None else backend
        self.backend = backend if backend is None else str(backend)
        if self.backend in ('', 'local'):
            self.backend = None
        self.token = None
        self.acquired = False
        self.holders = []
        self.waited = 0.0
        self._conn = None
        self._serve = None
        self._handle = None
        self.log = LockLog(self)
        configure_logging()

    def __repr__(self):
        return '<hostlock Lock %s %s>' % (self.lock_path, 'acquired' if self.acquired else 'not acquired')

    def _log(self, level, event, extra=''):
        lead = '%s ' % self.prefix if self.prefix else ''
        logger.log(level, '%s%s %s%s', lead, event, self.lock_path, extra)

    def _connect(self):
        if self._conn is not None:
            return self._conn
        if _ansible_worker() is not None:
            self._conn, _hello = connect_agent(
                lambda: find_helper(arg=self.helper), run_owner_pid(), client='hostlock.core Lock'
            )
        else:
            cmd = find_helper(arg=self.helper)
            self._serve = _take_idle_serve(cmd) or start_serve(cmd, client='hostlock.core Lock')
            self._conn = self._serve.conn
        return self._conn

    def _disconnect(self):
        conn, self._conn, self._serve, self._handle = self._conn, None, None, None
        if conn is not None:
            conn.close()

    def _params(self):
        where = (
            {'name': str(self.lock_path), 'backend': self.backend} if self.backend else {'path': str(self.lock_path)}
        )
        params = dict(where, shared=bool(self.shared), owner=_owner(), notify=NOTIFY_EVERY)
        if self.prefix:
            params['prefix'] = str(self.prefix)
        if self.slots is not None:
            params['slots'] = int(self.slots)
        return params

    def _on_notify(self, method, params):
        if method == 'waiting':
            self._log(
                logging.DEBUG,
                'Still waiting',
                ' (%ss) for %s' % (int(params.get('waited') or 0), holders_text(params.get('holders'))),
            )

    def _call(self, method, params):
        try:
            return self._connect().call(method, params, on_notify=self._on_notify)
        except RpcError as e:
            self._disconnect()
            raise LockError('hostlock: %s %s: %s' % (method, self.lock_path, e)) from e
        except HelperGone as e:
            self._disconnect()
            self.acquired = False
            raise LockError('hostlock: lost the helper while locking %s: %s' % (self.lock_path, e)) from e
        except BaseException:
            # Ctrl-C mid-wait: the request is still pending in the helper; only closing the
            # connection cancels it, else the lock could be taken later with nobody to release it.
            self._disconnect()
            self.acquired = False
            raise

    def _took(self, result):
        self.holders = result.get('holders') or []
        self.waited += float(result.get('waited') or 0)
        if result.get('acquired'):
            self._handle = result.get('handle')
            self.token = result.get('token')
            self.slot = result.get('slot')
            self.acquired = True
            self._log(logging.INFO, 'Acquired')
            return True
        return False

    def acquire(self):
        """Take the lock: wait when ``blocking``, else try once. Returns ``acquired``."""
        if self.acquired:
            return True
        self.waited = 0.0
        # cli2 creates missing parent directories of the lock file.
        if not self.backend:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        if self.blocking:
            return self.block()
        result = self._call('try', self._params())
        if not self._took(result):
            # Keep the pending handle: block() turns this failed try into a wait.
            self._handle = result.get('handle')
            self._log(logging.DEBUG, 'Busy', ' (held by %s)' % holders_text(self.holders))
        return self.acquired

    def block(self):
        """Wait until the lock is held (after a failed try, or instead of acquire)."""
        if self.acquired:
            return True
        # As in cli2, a blocked lock is a blocking one from now on.
        self.blocking = True
        pending = self._handle
        if pending is None:
            if not self.backend:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            # Say who is in the way before waiting, as cli2 logs "Waiting" first.
            result = self._call('try', self._params())
            if self._took(result):
                return True
            pending = result.get('handle')
        self._log(logging.INFO, 'Waiting', ' (held by %s)' % holders_text(self.holders))
        params = {'handle': pending}
        if self.timeout is not None:
            params['timeout'] = self.timeout
        result = self._call('block', params)
        if self._took(result):
            return True
        # A timed-out wait holds nothing; drop its connection so no ghost can linger.
        self._disconnect()
        raise LockTimeout(
            'hostlock: timed out after %.1fs waiting for %s, held by %s'
            % (self.waited, self.lock_path, holders_text(self.holders)),
            holders=self.holders,
            waited=self.waited,
        )

    def release(self):
        """Drop the lock (or a pending try); safe to call when nothing is held.

        Raises ``LockError`` when the helper lost the lock while it was held
        (its file deleted or replaced, its server session or lease ended).
        """
        was = self.acquired
        self.acquired = False
        if self._conn is None:
            return False
        released = False
        clean = False
        lost = None
        try:
            if self._handle is not None:
                result = self._conn.call('release', {'handle': self._handle}, timeout=30)
                released = bool(result.get('released'))
                if result.get('lost'):
                    lost = result.get('reason') or 'the store lost it'
            clean = True
        except (RpcError, HelperGone) as e:
            logger.warning('%s release of %s failed: %s', self.prefix or '', self.lock_path, e)
        finally:
            if clean and self._serve is not None and _park_serve(self._serve):
                self._conn = self._serve = self._handle = None
            else:
                # Closing the connection drops anything it still holds, whatever the reply was.
                self._disconnect()
        if lost is not None:
            self._log(logging.ERROR, 'Lost', ' while held: %s' % lost)
            raise LockError(
                'hostlock: the lock %s was lost while held (%s); another holder may have been inside'
                % (self.lock_path, lost)
            )
        if was:
            self._log(logging.INFO, 'Released')
        return released or was

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()

    def __del__(self):
        # A Lock dropped while holding behaves like a closed file: the lock goes with it.
        try:
            if self._conn is not None and (self._serve is None or self._serve.owner_pid == os.getpid()):
                self._conn.close()
        except Exception:
            pass
