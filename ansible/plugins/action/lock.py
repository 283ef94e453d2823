# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Action hostlock.core.lock: take, try, release or inspect a run-wide flock through the run's agent."""

from __future__ import annotations

import os
import shlex
import time

from ansible.errors import AnsibleActionFail
from ansible.utils.display import Display

from ansible.plugins.action import ActionBase
from ansible_collections.hostlock.core.plugins.plugin_utils.agent import (
    LOCK_LOST,
    agent_helper,
    check_refusal,
    connect_agent,
)
from ansible_collections.hostlock.core.plugins.plugin_utils.batch import batch_id, batch_members
from ansible_collections.hostlock.core.plugins.plugin_utils.discovery import PROTOCOL, HelperError, find_helper
from ansible_collections.hostlock.core.plugins.plugin_utils.holders import holders_text
from ansible_collections.hostlock.core.plugins.plugin_utils.owner import owner_metadata
from ansible_collections.hostlock.core.plugins.plugin_utils.procinfo import run_owner_pid
from ansible_collections.hostlock.core.plugins.plugin_utils.rpc import NOTIFY_EVERY, HelperGone, RpcError

display = Display()

ARGUMENT_SPEC = dict(
    name=dict(type='str'),
    state=dict(type='str', default='acquired', choices=['acquired', 'try', 'released', 'status']),
    timeout=dict(type='float'),
    shared=dict(type='bool', default=False),
    lock_dir=dict(type='path'),
    backend=dict(type='str', no_log=True),
    slots=dict(type='int'),
    helper=dict(type='raw'),
)

# The helper's longest wait, in seconds (365 days).
MAX_TIMEOUT = 31536000

# How long before the task's own `timeout:` a wait for the lock ends, in seconds: enough
# for the helper's reply to arrive before Ansible interrupts the task.
TASK_TIMEOUT_MARGIN = 0.3

# The member a run_once lock belongs to: the run itself, not the host that happened to run it.
RUN_MEMBER = '(run)'


# Why a hold was lost, when the helper does not say (its store or its agent ended it).
_LOST_UNSAID = "this run's hostlock agent stopped or its store ended the hold"


def _lost_text(lost):
    parts = []
    for item in lost:
        if isinstance(item, dict):
            parts.append(
                "'%s' (%s, %s, held since %s): %s"
                % (
                    item.get('name') or item.get('path'),
                    item.get('path', '?'),
                    item.get('mode', 'exclusive'),
                    item.get('since', '?'),
                    item.get('reason') or _LOST_UNSAID,
                )
            )
        else:
            parts.append(str(item))
    return '; '.join(parts)


def _lost_failure(host, lost):
    """The one message of a task whose host's holds were lost: "lock lost" once, then each
    hold with the helper's reason (which carries no "lock lost" of its own)."""
    return (
        'lock lost: host %s held %s; another run may have entered the guarded section. '
        'Stopping instead of continuing unprotected.' % (host, _lost_text(lost) or 'its locks')
    )


def _unset(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _ordinal(n):
    if 10 <= n % 100 <= 20:
        return '%dth' % n
    return '%d%s' % (n, {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th'))


def _seconds(value):
    return int(value) if float(value).is_integer() else value


def _behind_text(behind):
    if not behind:
        return ''
    return " (queued behind lock '%s', which this run takes first so that runs never deadlock)" % behind


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        # The task's own `timeout:` keyword is counted from about now.
        self._task_started = time.monotonic()
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
        if args['slots'] is not None and not 1 <= args['slots'] <= 64:
            raise AnsibleActionFail('slots must be a whole number from 1 to 64 (got %r)' % args['slots'])
        if args['slots'] is not None and args['shared']:
            raise AnsibleActionFail('slots and shared do not combine: each slot is exclusive; drop one of them')
        timeout = args['timeout']
        if timeout is not None and not (0 <= timeout <= MAX_TIMEOUT):
            raise AnsibleActionFail(
                'timeout must be a number of seconds from 0 to %d (365 days) (got %r); omit it to wait forever'
                % (MAX_TIMEOUT, self._task.args.get('timeout'))
            )

        backend = args['backend'] or self._var(task_vars, 'hostlock_backend') or os.environ.get('HOSTLOCK_BACKEND')
        backend = str(backend) if backend and str(backend) != 'local' else None
        if backend and args['lock_dir']:
            raise AnsibleActionFail(
                'lock_dir applies to the local store only; with backend the locks live in the server: drop one of them'
            )
        lock_dir = None
        if not backend:
            lock_dir = args['lock_dir'] or self._var(task_vars, 'hostlock_lock_dir') or os.environ.get('HOSTLOCK_DIR')
        if lock_dir:
            lock_dir = os.path.abspath(os.path.expanduser(str(lock_dir)))

        # A helper this task names must exist even when the run's agent, already up, will serve
        # the task: a wrong one fails here rather than being silently passed over.
        named_var = self._var(task_vars, 'hostlock_helper')
        named = None
        if not _unset(args['helper']) or not _unset(named_var):
            try:
                named = find_helper(arg=args['helper'], var=named_var)
            except HelperError as e:
                raise AnsibleActionFail(str(e)) from None
        used = []

        def find_cmd():
            cmd = named or find_helper(arg=args['helper'], var=named_var)
            used.append(cmd)
            return cmd

        # Taking and releasing need no hello: their requests name the protocol, and the
        # agent refuses them for a host whose holds were lost. One round trip per task.
        greet = state == 'status' or self._task.check_mode
        try:
            owner_pid = run_owner_pid()
            owner = owner_metadata(self._task, host, owner_pid, task_vars.get('ansible_play_name'))
            conn, hello = connect_agent(find_cmd, owner_pid, client='hostlock.core.lock', member=host, greet=greet)
        except HelperError as e:
            # Every failure is raised `from None`: its message already says all there is, and
            # ansible-core would append the cause's own message to it a second time.
            raise AnsibleActionFail(str(e)) from None

        if named and not used:
            self._unused_helper(
                host, named, 'helper argument' if not _unset(args['helper']) else 'hostlock_helper variable', owner_pid
            )
        with conn:
            display.vvv(
                'hostlock: %s: %s for run %s, state=%s name=%s dir=%s'
                % (host, conn.describe, owner.get('run'), state, name, lock_dir or '(helper default)')
            )
            if hello and hello.get('lost'):
                raise AnsibleActionFail(_lost_failure(host, hello['lost']))
            target = {'name': name}
            if lock_dir:
                target['dir'] = lock_dir
            if backend:
                target['backend'] = backend
            # run_once: the lock is the run's, whichever host the task lands on.
            member = RUN_MEMBER if self._task.run_once else host
            try:
                if state == 'status' or self._task.check_mode:
                    out = self._status(conn, target, state, args['shared'], owner, host)
                elif state == 'released':
                    out = self._release(conn, target, member, self._batch(task_vars, host, name, with_members=False))
                else:
                    batch = self._batch(task_vars, host, name, with_members=state == 'acquired')
                    out = self._acquire(
                        conn, target, state, args['shared'], timeout, owner, member, batch, args['slots']
                    )
            except RpcError as e:
                if e.code == LOCK_LOST:
                    raise AnsibleActionFail(_lost_failure(host, e.data.get('lost') or [])) from None
                try:
                    check_refusal(conn, find_cmd, e)
                except HelperError as mismatch:
                    raise AnsibleActionFail(str(mismatch)) from None
                verb = {'acquired': 'acquire', 'try': 'try', 'released': 'release', 'status': 'read the status of'}[
                    state
                ]
                raise AnsibleActionFail("hostlock could not %s lock '%s': %s" % (verb, name, e)) from None
            except HelperGone as e:
                raise AnsibleActionFail(
                    'lock lost or not taken: the hostlock agent of this run went away during '
                    "state=%s of lock '%s' (%s)" % (state, name, e)
                ) from None

        result.update(out)
        return result

    @staticmethod
    def _unused_helper(host, named, source, owner_pid):
        """The run's agent was up: say at -v when the helper this task names is not the agent's."""
        started = agent_helper(owner_pid)
        if started == shlex.join(named):
            return
        display.v(
            "hostlock: %s: helper %s (%s) not used: this run's agent is already up, started with %s by an "
            'earlier task, and serves the whole run; a helper takes effect when a run starts its agent'
            % (host, shlex.join(named), source, started or 'another helper')
        )

    def _batch(self, task_vars, host, name, with_members):
        """The batch parameter: its id tells the agent when a batch is over; its members let the
        agent take the batch's names in one order (see plugin_utils/batch.py)."""
        if self._task.run_once:
            return None
        bid = batch_id(self._task, task_vars)
        if bid is None:
            return None
        batch = {'id': bid}
        if with_members:
            members = batch_members(self._task, task_vars, self._templar, host, name)
            if members:
                batch['members'] = members
        return batch

    def _var(self, task_vars, key):
        value = task_vars.get(key)
        if value is None:
            return None
        return self._templar.template(value)

    def _base(self, name, res, shared):
        out = {
            'name': res.get('name', name),
            'path': res.get('path'),
            'mode': res.get('mode') or ('shared' if shared else 'exclusive'),
            'waited': round(float(res.get('waited') or 0), 3),
            'holders': res.get('holders') or [],
        }
        if res.get('token') is not None:
            out['token'] = res['token']
        return out

    def _acquire(self, conn, target, state, shared, timeout, owner, member, batch, slots=None):
        name = target['name']
        host = owner['host']
        params = dict(
            target, shared=shared, owner=owner, scope='run', member=member, notify=NOTIFY_EVERY, protocol=PROTOCOL
        )
        if slots is not None:
            params['slots'] = slots
        if batch:
            params['batch'] = batch
        started = time.monotonic()
        by_task = False
        res = first = conn.call('try', params)
        if not res.get('acquired') and state == 'acquired':
            behind = res.get('behind')
            # Say at once who is in the way; the helper's notifications repeat it while we wait.
            self._show_wait(host, name, 0, res.get('holders'), timeout, behind)

            def on_notify(method, p):
                if method == 'waiting':
                    self._show_wait(host, name, p.get('waited'), p.get('holders'), timeout, behind, p.get('position'))

            wait = {'handle': res['handle']}
            limit, by_task = self._wait_limit(timeout)
            if limit is not None:
                wait['timeout'] = limit
            res = conn.call('block', wait, on_notify=on_notify)
        out = self._base(name, res, shared)
        if state == 'acquired' and res is not first:
            # Count the failed try too: the user wants the time from task start to the lock.
            out['waited'] = round(time.monotonic() - started, 3)
        out['acquired'] = bool(res.get('acquired'))
        out['changed'] = bool(res.get('acquired') and res.get('changed', True))
        for key in ('slot', 'slots'):
            if res.get(key) is not None:
                out[key] = res[key]
        if out['acquired']:
            return out
        if state == 'try':
            if res.get('handle'):
                # Drop the pending handle of the failed try: nobody will block on it.
                conn.call('release', {'handle': res['handle']}, timeout=30)
            out['msg'] = "lock '%s' is busy, held by %s" % (name, holders_text(out['holders']))
            return out
        out['failed'] = True
        if res.get('reason') == 'deadlock':
            # Waiting would close a cycle of runs waiting for each other: fail now, naming it.
            out['cycle'] = res.get('cycle') or []
            msg = res.get('message') or "waiting for lock '%s' would close a cycle of runs" % name
            out['msg'] = msg if msg.startswith('deadlock') else 'deadlock: %s' % msg
            return out
        out['msg'] = "timed out after %.1fs waiting for lock '%s' (%s)%s%s: held by %s" % (
            out['waited'],
            name,
            out['path'],
            _behind_text(res.get('behind')),
            " at the task's timeout of %ss" % _seconds(self._task.timeout) if by_task else '',
            holders_text(out['holders']),
        )
        return out

    def _wait_limit(self, timeout):
        """How long the helper may wait, and whether the task's `timeout:` keyword is what bounds it.

        Ansible ends a task that outlives its `timeout:` by interrupting it; the helper would
        only see its client leave and record a cancel. Ending the wait a little before that
        lets the helper record it as the timeout it is."""
        try:
            task_limit = float(getattr(self._task, 'timeout', None) or 0)
        except (TypeError, ValueError):
            task_limit = 0
        if task_limit <= 0:
            return timeout, False
        left = max(0.0, task_limit - (time.monotonic() - self._task_started) - TASK_TIMEOUT_MARGIN)
        if timeout is not None and timeout <= left:
            return timeout, False
        return round(left, 3), True

    def _show_wait(self, host, name, waited, holders, timeout, behind=None, position=None):
        limit = '' if timeout is None else ' of %ss' % _seconds(timeout)
        place = ', %s in queue' % _ordinal(int(position)) if position else ''
        display.display(
            "hostlock: [%s] waiting (%ds%s%s) for lock '%s'%s held by %s"
            % (host, round(float(waited or 0)), limit, place, name, _behind_text(behind), holders_text(holders))
        )

    def _release(self, conn, target, member, batch):
        params = dict(target, scope='run', protocol=PROTOCOL)
        if member != RUN_MEMBER:
            # run_once releases the run's whole hold: whichever host took it, and every host's share.
            params['member'] = member
        if batch:
            params['batch'] = batch
        res = conn.call('release', params, timeout=30)
        if res.get('released'):
            # No status read after a real release: reading /proc/locks can stall every flock on
            # the machine for an RCU grace period, and who holds the lock next is stale at once anyway.
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
