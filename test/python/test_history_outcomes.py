"""What the history says about a wait that the playbook bounded."""

from __future__ import annotations

import json

import pytest
from conftest import HOLDER

# Run B waits for "x", held by A, bounded by the task's keyword or the module's argument.
BOUNDED = """
- name: bounded play
  hosts: h2
  gather_facts: false
  tasks:
    - name: acquire x bounded
      hostlock.core.lock:
        name: x
{bound}
      ignore_errors: true
"""


def _events(env):
    res = env.cli('history', '--dir', str(env.lock_dir), '--json')
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)['events']


@pytest.mark.parametrize(
    'bound',
    [
        pytest.param('      timeout: 2', id='task-keyword'),
        pytest.param('        timeout: 1.5', id='module-argument'),
    ],
)
def test_expired_wait_is_recorded_as_timeout(env, bound):
    holder = env.start(env.playbook('holder.yml', HOLDER), tag='A')
    env.wait_for_file(env.out / 'held', proc=holder)
    code, out = env.run(env.playbook('bounded.yml', BOUNDED.format(bound=bound)), tag='B')
    assert code == 0, out
    (env.out / 'go').touch()
    holder.communicate(timeout=60)
    rec = env.record('B', 'acquire x bounded', 'h2')
    assert rec['status'] == 'failed', rec
    ends = [e for e in _events(env) if e.get('host') == 'h2' and e['event'] != 'wait']
    assert [e['event'] for e in ends] == ['timeout'], ends
    # The task's clock also counts starting the helper, so its wait can be shorter.
    assert 0 < ends[0]['waited'] < 2.5, ends
    if bound.startswith('      timeout'):
        assert "at the task's timeout of 2s" in rec['result']['msg'], rec
