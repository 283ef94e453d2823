# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Anchor for the playbook benchmark (bench/playbook.ts): a pure-Python fcntl
lock action with the same arguments and result keys as hostlock.core.lock.

It does what such a plugin can do inside one worker: check its arguments,
open the lock file, flock(2) it. Ansible forks a new worker for every task,
so the lock ends with the task; hostlock's holds last across tasks, which is
why it needs a per-run agent. This is the cost floor, not a working lock."""

from __future__ import annotations

import fcntl
import os

from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = dict(
    name=dict(type='str'),
    state=dict(type='str', default='acquired', choices=['acquired', 'try', 'released', 'status']),
    timeout=dict(type='float'),
    shared=dict(type='bool', default=False),
    lock_dir=dict(type='path'),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        name = args['name'] or str(task_vars.get('inventory_hostname') or '-')
        lock_dir = args['lock_dir'] or os.environ.get('HOSTLOCK_DIR') or '/tmp'
        path = os.path.join(lock_dir, name.replace('/', '%2F') + '.lock')
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            mode = fcntl.LOCK_SH if args['shared'] else fcntl.LOCK_EX
            if args['state'] in ('acquired', 'try'):
                fcntl.flock(fd, mode | (fcntl.LOCK_NB if args['state'] == 'try' else 0))
                acquired = True
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                acquired = False
        finally:
            os.close(fd)
        result.update(
            name=name,
            path=path,
            acquired=acquired,
            changed=args['state'] != 'status',
            mode='shared' if args['shared'] else 'exclusive',
            waited=0.0,
            holders=[],
        )
        return result
