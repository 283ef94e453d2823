# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Find the hostlock helper and check that it speaks this collection's protocol."""

from __future__ import annotations

import os
import shlex
import shutil

__all__ = ['HelperError', 'PROTOCOL', 'INSTALL_HINT', 'START_TIMEOUT', 'find_helper', 'check_hello']

# Protocol version of docs/PROTOCOL.md this client speaks.
PROTOCOL = 2

INSTALL_HINT = (
    'Install the helper (needs Node.js >= 20) from its packed tarball with '
    '`npm install -g ./hostlock-<version>.tgz` (`npm pack` in a hostlock checkout makes it), '
    'or run `make install` in a hostlock checkout, or point to a checkout: task argument `helper`, '
    "variable `hostlock_helper`, or HOSTLOCK_HELPER='node /path/to/hostlock/dist/cli.js'."
)

# Seconds to wait for a helper to start and say hello.
START_TIMEOUT = 10.0


class HelperError(Exception):
    """The helper cannot be found, started or spoken to."""


def find_helper(arg=None, var=None, environ=None):
    """Return the helper command line as a list, first found of:
    task argument, variable ``hostlock_helper``, env ``HOSTLOCK_HELPER``, ``hostlock`` on PATH."""
    environ = os.environ if environ is None else environ
    for source, value in (
        ('helper argument', arg),
        ('hostlock_helper variable', var),
        ('HOSTLOCK_HELPER', environ.get('HOSTLOCK_HELPER')),
    ):
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        cmd = [str(v) for v in value] if isinstance(value, (list, tuple)) else shlex.split(str(value))
        if not cmd:
            continue
        _check_runnable(cmd, source)
        return cmd
    found = shutil.which('hostlock', path=environ.get('PATH'))
    if found:
        return [found]
    raise HelperError(
        'hostlock helper not found: no helper argument, no hostlock_helper '
        'variable, no HOSTLOCK_HELPER and no `hostlock` on PATH. ' + INSTALL_HINT
    )


def _check_runnable(cmd, source):
    """Fail early, naming the source, when the program or the script it runs is missing."""
    prog = cmd[0]
    if os.sep in prog:
        if not os.access(prog, os.X_OK):
            raise HelperError(
                'hostlock helper from %s: %s is not an executable file. %s' % (source, prog, INSTALL_HINT)
            )
    elif shutil.which(prog) is None:
        what = 'Node.js (`node`)' if prog in ('node', 'nodejs') else '`%s`' % prog
        raise HelperError(
            'hostlock helper from %s (%s): %s is not installed or not on PATH. %s'
            % (source, shlex.join(cmd), what, INSTALL_HINT)
        )
    # `node script.js`: a missing script would only show up as a crash at start.
    if os.path.basename(prog) in ('node', 'nodejs') and len(cmd) > 1 and not cmd[1].startswith('-'):
        if not os.path.isfile(cmd[1]):
            raise HelperError(
                'hostlock helper from %s (%s): %s does not exist (not built? run '
                '`make build`). %s' % (source, shlex.join(cmd), cmd[1], INSTALL_HINT)
            )


def check_hello(result, cmd):
    """Refuse a helper that speaks another protocol version."""
    proto = (result or {}).get('protocol')
    if proto != PROTOCOL:
        raise HelperError(
            'hostlock helper %s speaks protocol %r, this collection needs %d: '
            'install matching versions of the hostlock npm package and the '
            'hostlock.core collection. %s' % (shlex.join(cmd), proto, PROTOCOL, INSTALL_HINT)
        )
    return result
