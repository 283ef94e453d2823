# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""The batch of a ``linear`` task: every host's lock name, so the run's agent takes them in one order.

Under ``linear`` all hosts of a batch run the lock task at once and the next task starts only when
all of them are done. If each host's worker took its own name, two runs could each get part of the
batch and wait for the rest for ever. Instead every worker hands the agent the names of the whole
batch; the agent takes them one after the other in path order on behalf of all hosts, including
hosts whose workers have not started yet (``forks`` below the batch size), and answers each worker
when its own name is held. Hosts the task will skip (``when``) are left out: each worker evaluates
the task's condition for every other host of the batch as that host's worker will.
"""

from __future__ import annotations

import hashlib

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.ansible_release import __version__ as ansible_version
from ansible.utils.display import Display

__all__ = ['batch_id', 'batch_members']

display = Display()

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

    Returns None when the batch cannot be worked out (a loop: each item may name another lock), and
    says so at ``-v``. A host whose condition or lock name cannot be worked out for a reason its own
    worker meets too (an undefined variable, a template error) is left out, also said at ``-v``: its
    task fails on the same error and never waits. Any other failure to tell whether a host runs the
    task, or under which name, fails the task: a batch planned without a host that then waits for its
    lock on its own can deadlock against another run.
    """
    if task.loop is not None or task.loop_with:
        _not_planned(task, host, 'the task has a loop, and each item may name another lock')
        return None
    batch = [str(h) for h in task_vars.get('ansible_play_batch') or []]
    if host not in batch:
        _not_planned(task, host, 'the host is not in ansible_play_batch %s' % batch)
        return None
    if 'name' not in task.args:
        # The quick start: every host's lock is named after the host.
        raw = None
    else:
        try:
            raw = _raw_name(task)
        except Exception as e:
            _not_planned(task, host, 'its name argument could not be read as written (%s)' % _why(e))
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
            if conditional and not _runs_task(task, templar, other_vars):
                continue
            if raw is None:
                other_name = other
            elif per_host_name:
                other_name = templar.copy_with_new_env(available_variables=other_vars).template(raw)
            else:
                other_name = raw
        except AnsibleError as e:
            display.v(
                "hostlock: %s is left out of the batch of task '%s' (asked by %s): %s; "
                'its own run of the task fails on the same error' % (other, task.get_name(), host, _why(e))
            )
            continue
        except Exception as e:
            raise AnsibleActionFail(
                "hostlock cannot plan the batch of task '%s' on ansible-core %s: it cannot tell whether %s "
                'runs the task, or under which lock name (%s). Without the plan the hosts of two runs can '
                'wait for each other for ever, so the task fails instead.'
                % (task.get_name(), ansible_version, other, _why(e))
            ) from e
        if isinstance(other_name, str) and other_name and '\0' not in other_name:
            members.append({'member': other, 'name': other_name})
        else:
            display.v(
                "hostlock: %s is left out of the batch of task '%s' (asked by %s): its lock name %r is not "
                'a name; its own run of the task fails on it' % (other, task.get_name(), host, other_name)
            )
    return members


def _runs_task(task, templar, variables):
    """Whether the task's ``when`` holds for a host with these variables, decided as its worker does."""
    host_templar = templar.copy_with_new_env(available_variables=variables)
    if hasattr(host_templar, 'evaluate_conditional'):
        # ansible-core 2.19 and later: the templar evaluates one condition at a time.
        return all(host_templar.evaluate_conditional(c) for c in task.when)
    # ansible-core 2.18 and earlier: the task's Conditional evaluates its whole ``when``.
    return task.evaluate_conditional(host_templar, variables)


def _not_planned(task, host, why):
    display.v(
        "hostlock: task '%s' on %s takes its lock on its own, outside its batch's one order: %s"
        % (task.get_name(), host, why)
    )


def _why(e):
    return '%s: %s' % (type(e).__name__, e)


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
