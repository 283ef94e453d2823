# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Find the hostlock helper and check that it speaks this collection's protocol."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

__all__ = [
    'HelperError',
    'PROTOCOL',
    'INSTALL_HINT',
    'NODE_HINT',
    'MIN_NODE',
    'START_TIMEOUT',
    'BUNDLED_HELPER',
    'find_helper',
    'check_hello',
]

# Protocol version of docs/PROTOCOL.md this client speaks.
PROTOCOL = 2

INSTALL_HINT = (
    'The hostlock.core collection built with `make collection` carries the helper and needs only '
    'Node.js >= 20 on PATH; or install the helper from its packed tarball with '
    '`npm install -g ./hostlock-<version>.tgz` (`npm pack` in a hostlock checkout makes it), '
    'or point to one: task argument `helper`, '
    "variable `hostlock_helper`, or HOSTLOCK_HELPER='node /path/to/hostlock/dist/cli.js'."
)

# The oldest Node.js major the helper runs on (package.json "engines").
MIN_NODE = 20

NODE_HINT = (
    'Install Node.js %d or newer and put `node` on PATH: on RHEL/UBI 8 and 9 '
    '`dnf module enable -y nodejs:%d && dnf install -y nodejs` (microdnf on UBI minimal); '
    'on Debian 13 or Ubuntu 24.04 and newer `apt-get install nodejs`; elsewhere an official '
    'tarball from nodejs.org with its bin/ on PATH. '
    'Or give another helper: task argument `helper`, variable `hostlock_helper` or HOSTLOCK_HELPER.'
) % (MIN_NODE, MIN_NODE)

# The helper the collection carries (helper/ beside plugins/, put there by `make collection`).
BUNDLED_HELPER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'helper', 'cli.js'
)

# Seconds to wait for a helper to start and say hello.
START_TIMEOUT = 10.0


class HelperError(Exception):
    """The helper cannot be found, started or spoken to."""


def find_helper(arg=None, var=None, environ=None, bundled=BUNDLED_HELPER):
    """Return the helper command line as a list, first found of: task argument,
    variable ``hostlock_helper``, env ``HOSTLOCK_HELPER``, ``hostlock`` on PATH,
    the helper this collection carries (run by ``node`` from PATH)."""
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
    if bundled and os.path.isfile(bundled):
        return [_suitable_node(environ), bundled]
    raise HelperError(
        'hostlock helper not found: no helper argument, no hostlock_helper '
        'variable, no HOSTLOCK_HELPER, no `hostlock` on PATH, and this hostlock.core '
        'collection carries no helper (it was built without `make collection`). ' + INSTALL_HINT
    )


# node's path -> (its identity, its major version): checked once per process.
_node_checked = {}


def _suitable_node(environ):
    """The `node` on PATH, if it is recent enough for the bundled helper."""
    node = shutil.which('node', path=environ.get('PATH')) or shutil.which('nodejs', path=environ.get('PATH'))
    if node is None:
        raise HelperError(
            "hostlock.core's bundled helper needs Node.js >= %d, and no `node` is on PATH (%s). %s"
            % (MIN_NODE, environ.get('PATH', ''), NODE_HINT)
        )
    try:
        st = os.stat(node)
        ident = (st.st_dev, st.st_ino, st.st_mtime_ns)
    except OSError:
        ident = None
    cached = _node_checked.get(node)
    if cached is None or cached[0] != ident:
        cached = (ident, _node_version(node))
        _node_checked[node] = cached
    version = cached[1]
    major = re.match(r'v?(\d+)\.', version or '')
    if major is None or int(major.group(1)) < MIN_NODE:
        raise HelperError(
            "hostlock.core's bundled helper needs Node.js >= %d; %s is %s. %s"
            % (MIN_NODE, node, version or 'a program that does not say its version', NODE_HINT)
        )
    return node


def _node_version(node):
    try:
        res = subprocess.run(
            [node, '--version'],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


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
