# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Floor of the playbook benchmark (bench/playbook.ts, 2b-floor): what any per-run
agent costs before it locks anything.

Each task does what hostlock.core.lock does to reach the run's agent -- check its
arguments, work out the owner and its metadata, connect to the agent (the first
task of the run starts it) and make one round trip (``hello``) -- and nothing
else: no lock is taken. hostlock.core.lock's figure minus this one is the cost
of the locking work itself."""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.hostlock.core.plugins.action.lock import ARGUMENT_SPEC
from ansible_collections.hostlock.core.plugins.plugin_utils.agent import connect_agent
from ansible_collections.hostlock.core.plugins.plugin_utils.discovery import find_helper
from ansible_collections.hostlock.core.plugins.plugin_utils.owner import owner_metadata
from ansible_collections.hostlock.core.plugins.plugin_utils.procinfo import run_owner_pid


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        host = str(task_vars.get('inventory_hostname') or '-')
        owner_pid = run_owner_pid()
        owner_metadata(self._task, host, owner_pid, task_vars.get('ansible_play_name'))
        conn, _hello = connect_agent(lambda: find_helper(arg=args['helper']), owner_pid, member=host, greet=False)
        with conn:
            conn.call('hello', {})
        result.update(name=args['name'] or host, acquired=args['state'] == 'acquired', changed=True, holders=[])
        return result
