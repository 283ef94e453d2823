# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""The metadata other waiters see about a holder: who, and inside a run which run, playbook, play, task, host."""

from __future__ import annotations

import getpass
import os
import sys

from ansible_collections.hostlock.core.plugins.plugin_utils.procinfo import run_id

__all__ = ['owner_metadata', 'playbook_name']


def playbook_name(task):
    """Basename of the playbook file the task's play comes from, or "ad-hoc" for `ansible -m`."""
    if sys.argv and os.path.basename(sys.argv[0]) == 'ansible':
        return 'ad-hoc'
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


def owner_metadata(task=None, host=None, owner_pid=None, play=None):
    """Owner of a lock taken by ``task`` for ``host`` in the run of ``owner_pid``; without a task,
    the current process (a script using ``Lock``)."""
    owner = {'pid': owner_pid or os.getpid()}
    try:
        owner['user'] = getpass.getuser()
    except Exception:
        pass
    if task is None and owner_pid is None:
        owner['playbook'] = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'python'
        return owner
    if task is not None:
        owner['playbook'] = playbook_name(task)
    if host is not None:
        owner['host'] = str(host)
    if owner_pid:
        try:
            owner['run'] = run_id(owner_pid)
        except (OSError, ValueError, IndexError):
            pass
    if play is None and task is not None:
        try:
            play = task.get_play().get_name()
        except Exception:
            play = None
    if play:
        owner['play'] = str(play)
    if task is not None:
        try:
            owner['task'] = str(task.get_name())
        except Exception:
            pass
    return owner
