# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Action hostlock.core.lock: take, try, release or inspect a run-wide flock through the run's agent."""

from __future__ import annotations

import getpass
import os
import sys
import time

from ansible.errors import AnsibleActionFail
from ansible.utils.display import Display

from ansible.plugins.action import ActionBase
from ansible_collections.hostlock.core.plugins.plugin_utils.helper import (
    HelperError,
    HelperGone,
    RpcError,
    connect_agent,
    find_helper,
    holders_text,
    run_id,
    run_owner_pid,
)

display = Display()

ARGUMENT_SPEC = dict(
    name=dict(type='str'),
    state=dict(type='str', default='acquired', choices=['acquired', 'try', 'released', 'status']),
    timeout=dict(type='float'),
    shared=dict(type='bool', default=False),
    lock_dir=dict(type='path'),
    helper=dict(type='raw'),
)

# Seconds between "still waiting" lines while a lock is busy.
NOTIFY_EVERY = 5


def _playbook_name(task):
    """Basename of the playbook file the task's play comes from."""
    try:
        path = task.get_play().get_path()
        if path:
            return os.path.basename(path.rsplit(':', 1)[0])
    except Exception:
        pass
    # The worker is a fork of ansible-playbook, so argv is the command line that named the playbook.
    for arg in reversed(sys.argv[1:]):
        if arg.endswith(('.yml', '.yaml')):
            return os.path.basename(arg)
    return os.path.basename(sys.argv[0]) if sys.argv else 'ansible'


def _lost_text(lost):
    parts = []
    for item in lost:
        if isinstance(item, dict):
            parts.append(
                "'%s' (%s, %s, held since %s)"
                % (
                    item.get('name') or item.get('path'),
                    item.get('path', '?'),
                    item.get('mode', 'exclusive'),
                    item.get('since', '?'),
                )
            )
        else:
            parts.append(str(item))
    return ', '.join(parts)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp

        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        host = str(task_vars.get('inventory_hostname') or '-')
        state = args['state']
        name = args['name'] if args['name'] is not None else host
        if not name:
            raise AnsibleActionFail('name must be a non-empty string (the lock name); omit it to lock the host itself')
        if '\0' in name:
            raise AnsibleActionFail('name must not contain NUL characters')
        timeout = args['timeout']
        if timeout is not None and not (0 <= timeout < float('inf')):
            raise AnsibleActionFail(
                'timeout must be a number of seconds >= 0 (got %r); omit it to wait forever'
                % self._task.args.get('timeout')
            )

        lock_dir = args['lock_dir'] or self._var(task_vars, 'hostlock_lock_dir') or os.environ.get('HOSTLOCK_DIR')
        if lock_dir:
            lock_dir = os.path.abspath(os.path.expanduser(str(lock_dir)))

        try:
            cmd = find_helper(arg=args['helper'], var=self._var(task_vars, 'hostlock_helper'))
            owner_pid = run_owner_pid()
            owner = self._owner(owner_pid, host, task_vars)
            conn, hello = connect_agent(cmd, owner_pid, client='hostlock.core.lock', member=host)
        except HelperError as e:
            raise AnsibleActionFail(str(e)) from e

        with conn:
            display.vvv(
                'hostlock: %s: agent pid %s (helper %s, protocol %s) for run %s, state=%s name=%s dir=%s'
                % (
                    host,
                    hello.get('pid'),
                    hello.get('version'),
                    hello.get('protocol'),
                    owner.get('run'),
                    state,
                    name,
                    lock_dir or '(helper default)',
                )
            )
            lost = (hello or {}).get('lost') or []
            if lost:
                raise AnsibleActionFail(
                    'lock lost: the hostlock agent of this run stopped while host %s held %s; the kernel '
                    'released those locks, so another run may have entered the guarded section. '
                    'Stopping instead of continuing unprotected.' % (host, _lost_text(lost))
                )
            target = {'name': name}
            if lock_dir:
                target['dir'] = lock_dir
            try:
                if state == 'status' or self._task.check_mode:
                    out = self._status(conn, target, state, args['shared'], owner, host)
                elif state == 'released':
                    out = self._release(conn, target, host)
                else:
                    out = self._acquire(conn, target, state, args['shared'], timeout, owner, host)
            except RpcError as e:
                verb = {'acquired': 'acquire', 'try': 'try', 'released': 'release', 'status': 'read the status of'}[
                    state
                ]
                raise AnsibleActionFail("hostlock could not %s lock '%s': %s" % (verb, name, e)) from e
            except HelperGone as e:
                raise AnsibleActionFail(
                    'lock lost or not taken: the hostlock agent of this run went away during '
                    "state=%s of lock '%s' (%s)" % (state, name, e)
                ) from e

        result.update(out)
        return result

    def _var(self, task_vars, key):
        value = task_vars.get(key)
        if value is None:
            return None
        return self._templar.template(value)

    def _owner(self, owner_pid, host, task_vars):
        owner = {'pid': owner_pid, 'host': host, 'playbook': _playbook_name(self._task)}
        try:
            owner['user'] = getpass.getuser()
        except Exception:
            pass
        try:
            owner['run'] = run_id(owner_pid)
        except (OSError, ValueError, IndexError):
            pass
        play = task_vars.get('ansible_play_name')
        if play is None:
            try:
                play = self._task.get_play().get_name()
            except Exception:
                play = None
        if play:
            owner['play'] = str(play)
        owner['task'] = str(self._task.get_name())
        return owner

    def _base(self, name, res, shared):
        return {
            'name': res.get('name', name),
            'path': res.get('path'),
            'mode': res.get('mode') or ('shared' if shared else 'exclusive'),
            'waited': round(float(res.get('waited') or 0), 3),
            'holders': res.get('holders') or [],
        }

    def _acquire(self, conn, target, state, shared, timeout, owner, host):
        name = target['name']
        params = dict(target, shared=shared, owner=owner, scope='run', member=host, notify=NOTIFY_EVERY)
        started = time.monotonic()
        res = first = conn.call('try', params)
        if not res.get('acquired'):
            res['holders'] = self._fresh_holders(conn, target, res)
        if not res.get('acquired') and state == 'acquired':
            # Say at once who is in the way; the helper's notifications repeat it while we wait.
            self._show_wait(host, name, 0, res.get('holders'), timeout)

            def on_notify(method, p):
                if method == 'waiting':
                    self._show_wait(host, name, p.get('waited'), p.get('holders'), timeout)

            if res.get('handle'):
                wait = ('block', {'handle': res['handle']})
            else:
                # Helpers before a5a21a2 give a failed run-scope try no handle: wait with a fresh acquire.
                wait = ('acquire', dict(params))
            if timeout is not None:
                wait[1]['timeout'] = timeout
            res = conn.call(wait[0], wait[1], on_notify=on_notify)
        out = self._base(name, res, shared)
        if state == 'acquired' and res is not first:
            # Count the failed try too: the user wants the time from task start to the lock.
            out['waited'] = round(time.monotonic() - started, 3)
        out['acquired'] = bool(res.get('acquired'))
        out['changed'] = bool(res.get('acquired') and res.get('changed', True))
        if out['acquired']:
            return out
        if state == 'try':
            if res.get('handle'):
                # Drop the pending handle of the failed try: nobody will block on it.
                conn.call('release', {'handle': res['handle']}, timeout=30)
            out['msg'] = "lock '%s' is busy, held by %s" % (name, holders_text(out['holders']))
            return out
        out['holders'] = self._fresh_holders(conn, target, res)
        out['failed'] = True
        out['msg'] = "timed out after %.1fs waiting for lock '%s' (%s): held by %s" % (
            out['waited'],
            name,
            out['path'],
            holders_text(out['holders']),
        )
        return out

    def _fresh_holders(self, conn, target, res):
        # helper 0.1.0 caches the holders of a busy reply for 250 ms, so right after a
        # handover they can name the previous holder; status reads them afresh.
        try:
            return conn.call('status', target, timeout=30).get('holders') or res.get('holders') or []
        except RpcError:
            return res.get('holders') or []

    def _show_wait(self, host, name, waited, holders, timeout):
        limit = '' if timeout is None else ' of %ss' % (int(timeout) if float(timeout).is_integer() else timeout)
        display.display(
            "hostlock: [%s] waiting (%ds%s) for lock '%s' held by %s"
            % (host, round(float(waited or 0)), limit, name, holders_text(holders))
        )

    def _release(self, conn, target, host):
        res = conn.call('release', dict(target, scope='run', member=host), timeout=30)
        if res.get('released'):
            # No status read after a real release: reading /proc/locks can stall every flock on
            # the machine for an RCU grace period (bench/README.md), and who holds the lock
            # next is stale at once anyway.
            out = self._base(target['name'], dict(res, holders=[]), False)
        else:
            # Nothing was ours to release: say who does hold it.
            out = self._base(target['name'], conn.call('status', target, timeout=30), False)
        out['acquired'] = False
        out['changed'] = bool(res.get('released'))
        return out

    def _status(self, conn, target, state, shared, owner, host):
        """State status, and every state in check mode: look, take nothing."""
        status = conn.call('status', target, timeout=30)
        out = self._base(target['name'], status, shared)
        holders = out['holders']
        ours = [h for h in holders if isinstance(h, dict) and owner.get('run') and h.get('run') == owner['run']]
        mine = [h for h in ours if host in (h.get('members') or [h.get('host')])]
        others = [h for h in holders if h not in ours]
        out['acquired'] = bool(ours)
        out['changed'] = False
        if state == 'status':
            out['mode'] = status.get('mode') or ('shared' if shared else 'exclusive')
            return out
        if not status.get('mode'):
            out['mode'] = 'shared' if shared else 'exclusive'
        if state == 'released':
            out['acquired'] = False
            out['changed'] = bool(mine)
            out['msg'] = 'check mode: would release' if mine else 'check mode: not held by this host'
            return out
        compatible = not others or (shared and all(h.get('mode') == 'shared' for h in others))
        if ours:
            out['msg'] = 'check mode: already held by this run'
        elif compatible:
            out['acquired'] = True
            out['changed'] = True
            out['msg'] = 'check mode: would acquire at once'
        elif state == 'try':
            out['msg'] = 'check mode: busy, would not acquire; held by %s' % holders_text(others)
        else:
            out['changed'] = True
            out['msg'] = 'check mode: would wait for %s' % holders_text(others)
        return out
