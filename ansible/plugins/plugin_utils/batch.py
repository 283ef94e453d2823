# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""The batch of a ``linear`` task: every host's lock name, so the run's agent takes them in one order.

Under ``linear`` all hosts of a batch run the lock task at once and the next task starts only when
all of them are done. If each host's worker took its own name, two runs could each get part of the
batch and wait for the rest for ever. Instead every worker hands the agent the names of the whole
batch; the agent takes them one after the other in path order on behalf of all hosts, including
hosts whose workers have not started yet (``forks`` below the batch size), and answers each worker
when its own name is held. Hosts the task will skip (``when``) are left out.
"""

from __future__ import annotations

import hashlib

__all__ = ['batch_id', 'batch_members']

# Strategies that run a task on every host of the batch before the next task starts.
LOCKSTEP_STRATEGIES = ('linear', 'ansible.builtin.linear', 'debug', 'ansible.builtin.debug')


def _strategy(task):
    try:
        strategy = task.get_play().strategy
    except Exception:
        return None
    if not strategy:
        from ansible import constants as C

        strategy = C.DEFAULT_STRATEGY
    return str(strategy)


def batch_id(task, task_vars):
    """An id shared by the hosts of this task's batch under a lockstep strategy, else None."""
    if _strategy(task) not in LOCKSTEP_STRATEGIES:
        return None
    batch = task_vars.get('ansible_play_batch')
    if not isinstance(batch, (list, tuple)) or not batch:
        return None
    digest = hashlib.sha1('\0'.join(str(h) for h in batch).encode('utf-8', 'surrogateescape')).hexdigest()[:16]
    return '%s:%s' % (getattr(task, '_uuid', '?'), digest)


def _raw_name(task):
    """The task's ``name`` argument as written (before templating for this host); None when omitted."""
    from ansible.parsing.mod_args import ModuleArgsParser

    _action, args, _delegate = ModuleArgsParser(task_ds=task._ds, collection_list=task.collections).parse()
    return args.get('name')


def batch_members(task, task_vars, templar, host, name):
    """``[{'member': host, 'name': lock name}]`` for the hosts of the batch that will run this task.

    Returns None when the batch cannot be worked out (a loop: each item may name another lock).
    """
    if task.loop is not None or task.loop_with:
        return None
    batch = [str(h) for h in task_vars.get('ansible_play_batch') or []]
    if host not in batch:
        return None
    if 'name' not in task.args:
        # The quick start: every host's lock is named after the host.
        raw = None
    else:
        try:
            raw = _raw_name(task)
        except Exception:
            return None
    per_host_name = raw is not None and templar.is_possibly_template(raw)
    if raw is not None and not per_host_name:
        raw = str(raw)
    conditional = [c for c in (task.when or []) if c is not True]
    members = []
    for other in batch:
        if other == host:
            members.append({'member': host, 'name': name})
            continue
        if not per_host_name and not conditional:
            members.append({'member': other, 'name': other if raw is None else raw})
            continue
        try:
            other_vars = _host_vars(task, task_vars, other)
            if conditional and not task._resolve_conditional(conditional, other_vars):
                continue
            if raw is None:
                other_name = other
            elif per_host_name:
                other_name = templar.copy_with_new_env(available_variables=other_vars).template(raw)
            else:
                other_name = raw
        except Exception:
            # Its worker will find the same problem, or ask on its own.
            continue
        if isinstance(other_name, str) and other_name and '\0' not in other_name:
            members.append({'member': other, 'name': other_name})
    return members


def _host_vars(task, task_vars, other):
    """Another host's variables for this task, as its own worker will see them."""
    hostvars = task_vars['hostvars']
    manager = hostvars._variable_manager
    other_host = hostvars._inventory.get_host(other)
    return manager.get_vars(
        play=task.get_play(),
        host=other_host,
        task=task,
        _hosts=list(task_vars.get('ansible_play_batch') or []),
        _hosts_all=list(task_vars.get('ansible_play_hosts_all') or []),
    )
