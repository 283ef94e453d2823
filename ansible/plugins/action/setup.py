# -*- coding: utf-8 -*-
# Copyright: hostlock contributors; MIT License
"""Action hostlock.core.setup: prepare a PostgreSQL store with the helper's `setup` command."""

from __future__ import annotations

import json
import os
import re
import subprocess

from ansible.errors import AnsibleActionFail
from ansible.utils.display import Display

from ansible.plugins.action import ActionBase
from ansible_collections.hostlock.core.plugins.plugin_utils.discovery import HelperError, find_helper

display = Display()

ARGUMENT_SPEC = dict(
    backend=dict(type='str', no_log=True),
    grant=dict(type='str'),
    helper=dict(type='raw'),
    timeout=dict(type='float', default=120),
)

_URL_PASSWORD = re.compile(r'([a-z][a-z0-9+.-]*://[^:@/\s]*):[^@/\s]*@', re.I)


def _masked(text, secrets):
    """`text` with URL passwords and the given secrets replaced by ***."""
    text = _URL_PASSWORD.sub(r'\1:***@', text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, '***')
    return text


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp

        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        backend = args['backend'] or self._var(task_vars, 'hostlock_backend') or os.environ.get('HOSTLOCK_BACKEND')
        backend = str(backend or '')
        if not re.match(r'postgres(ql)?://', backend, re.I):
            raise AnsibleActionFail(
                'hostlock.core.setup prepares a PostgreSQL store: give backend (or the variable hostlock_backend, '
                'or HOSTLOCK_BACKEND) as postgresql://user@host/dbname, a role that may create the schema; '
                'the local store and etcd need no setup' + ('' if not backend else ' (got %s)' % _masked(backend, []))
            )
        grant = args['grant']
        if grant is not None and not grant.strip():
            raise AnsibleActionFail('grant must name a role; omit it to grant nothing')
        if not args['timeout'] > 0:
            raise AnsibleActionFail('timeout must be a positive number of seconds (got %r)' % args['timeout'])
        try:
            helper = find_helper(arg=args['helper'], var=self._var(task_vars, 'hostlock_helper'))
        except HelperError as e:
            # Every failure is raised `from None`: its message already says all there is, and
            # ansible-core would append the cause's own message to it a second time.
            raise AnsibleActionFail(str(e)) from None

        # The URL goes to the helper in its environment, not on its command line,
        # where any user of the controller could read a password in it.
        cmd = list(helper) + ['setup', '--json']
        if grant:
            cmd += ['--grant', grant]
        if self._task.check_mode:
            cmd.append('--check')
        env = dict(os.environ, HOSTLOCK_BACKEND=backend)
        secrets = [os.environ.get('PGPASSWORD', '')]
        display.vvv('hostlock.core.setup: running %s for %s' % (' '.join(cmd), _masked(backend, secrets)))
        try:
            proc = subprocess.run(
                cmd,
                env=env,
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=args['timeout'],
            )
        except subprocess.TimeoutExpired:
            raise AnsibleActionFail(
                'hostlock setup did not finish within %ss on %s' % (args['timeout'], _masked(backend, secrets))
            ) from None
        except OSError as e:
            raise AnsibleActionFail('cannot start the hostlock helper %s: %s' % (' '.join(helper), e)) from None

        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout or '').strip()
            err = re.sub(r'^hostlock: ', '', err)
            raise AnsibleActionFail(
                'hostlock setup failed (exit %d): %s' % (proc.returncode, _masked(err, secrets) or 'no message')
            )
        try:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AnsibleActionFail(
                'the hostlock helper %s printed no setup result (is it older than this collection?): %s'
                % (' '.join(helper), _masked(proc.stdout.strip(), secrets) or 'no output')
            ) from None

        result.update(
            changed=bool(res.get('changed')),
            backend=_masked(str(res.get('backend', '')), secrets),
            schema=res.get('schema'),
            version=res.get('version'),
            created=bool(res.get('created')),
            upgraded_from=res.get('upgradedFrom'),
            granted=res.get('granted'),
            grant_changed=bool(res.get('grantChanged')),
        )
        if self._task.check_mode:
            result['msg'] = 'would change the store' if result['changed'] else 'nothing to change'
        return result

    def _var(self, task_vars, key):
        value = task_vars.get(key)
        if value is None:
            return None
        return self._templar.template(value)
