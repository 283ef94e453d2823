# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""One line of text per lock holder, for waiting and timeout messages."""

from __future__ import annotations

__all__ = ['holder_text', 'holders_text']


def holder_text(holder):
    """One line naming a holder: playbook, task, host, user, pid and since."""
    if not isinstance(holder, dict):
        return str(holder)
    if holder.get('foreign'):
        return 'a process outside hostlock (pid %s%s, user %s, %s)' % (
            holder.get('pid', '?'),
            ' %s' % holder['command'] if holder.get('command') else '',
            holder.get('user', '?'),
            holder.get('mode', 'exclusive'),
        )
    parts = []
    if holder.get('playbook'):
        parts.append('playbook %s' % holder['playbook'])
    if holder.get('play'):
        parts.append("play '%s'" % holder['play'])
    if holder.get('task'):
        parts.append("task '%s'" % holder['task'])
    if holder.get('host'):
        parts.append('host %s' % holder['host'])
    parts.append('user %s' % holder.get('user', '?'))
    if holder.get('controller'):
        parts.append('on %s' % holder['controller'])
    parts.append('pid %s' % holder.get('pid', '?'))
    if holder.get('mode') == 'shared':
        parts.append('shared')
    text = ', '.join(parts)
    if holder.get('since'):
        text += ' since %s' % holder['since']
    return text


def holders_text(holders):
    if not holders:
        return 'an unknown holder'
    return '; '.join(holder_text(h) for h in holders)
