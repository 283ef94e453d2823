# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""What /proc says about the run: the ansible-playbook process that owns a worker, and its run id."""

from __future__ import annotations

import multiprocessing
import os

from ansible_collections.hostlock.core.plugins.plugin_utils.discovery import HelperError

__all__ = ['process_start_time', 'run_owner_pid', 'run_id']


def process_start_time(pid):
    """Field 22 of /proc/PID/stat: tells a process from a later one with the same PID."""
    with open('/proc/%d/stat' % pid, 'rb') as f:
        data = f.read().decode('ascii', 'replace')
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    return data[data.rindex(')') + 2 :].split()[19]


def run_owner_pid():
    """PID of the ansible-playbook process that forked this worker.

    A worker orphaned by a killed ansible-playbook has a new parent (init or a
    subreaper); an agent owned by that one would keep the run's locks for ever.
    """
    ppid = os.getppid()
    forked_by = getattr(multiprocessing.current_process(), '_parent_pid', None)
    if forked_by is not None and forked_by != ppid:
        raise HelperError(
            'the ansible-playbook process (pid %d) that started this task is gone; '
            'not taking a lock for an orphaned worker' % forked_by
        )
    return ppid


def run_id(pid):
    return '%d-%s' % (pid, process_start_time(pid))
