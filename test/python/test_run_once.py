"""run_once locks belong to the run; timeout is bounded up front; ad-hoc calls say so."""

from __future__ import annotations

import json
import subprocess

from conftest import VENV_BIN

# h1 takes the cluster lock for the run, then fails: the run_once release lands on h2.
RUN_ONCE_MOVES = """
- hosts: h1:h2:h3
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        name: cluster
      run_once: true
    - name: h1 drops out
      ansible.builtin.fail:
      when: inventory_hostname == 'h1'
    - name: unlock
      hostlock.core.lock:
        name: cluster
        state: released
      run_once: true
    - name: released
      ansible.builtin.file:
        path: "{{ out }}/released"
        state: touch
      run_once: true
    - name: wait for go
      ansible.builtin.wait_for:
        path: "{{ out }}/go"
        timeout: 60
      run_once: true
"""

# Every host takes its share of the cluster lock; one run_once release drops the whole hold.
PER_HOST_THEN_RUN_ONCE = """
- hosts: h1:h2:h3
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        name: cluster
    - name: unlock
      hostlock.core.lock:
        name: cluster
        state: released
      run_once: true
    - name: released
      ansible.builtin.file:
        path: "{{ out }}/released"
        state: touch
      run_once: true
    - name: wait for go
      ansible.builtin.wait_for:
        path: "{{ out }}/go"
        timeout: 60
      run_once: true
"""


def _released_while_run_goes_on(env, text):
    pb = env.playbook('pb.yml', text)
    proc = env.start(pb, tag='R')
    env.wait_for_file(env.out / 'released', proc=proc)
    other = env.cli('run', 'cluster', '--nonblock', '--', 'true')
    (env.out / 'go').touch()
    out, _ = proc.communicate(timeout=90)
    return other, out


def test_run_once_release_after_run_once_acquire_on_another_host(env):
    other, out = _released_while_run_goes_on(env, RUN_ONCE_MOVES)
    assert other.returncode == 0, 'the run still holds cluster after its run_once release: %s\n%s' % (
        other.stderr,
        out,
    )
    unlock = env.record('R', 'unlock', 'h2')['result']
    assert unlock['changed'] is True, unlock


def test_run_once_release_after_per_host_acquire_releases_the_whole_hold(env):
    other, out = _released_while_run_goes_on(env, PER_HOST_THEN_RUN_ONCE)
    assert other.returncode == 0, 'hosts of the run still hold cluster: %s\n%s' % (other.stderr, out)
    assert env.record('R', 'unlock', 'h1')['result']['changed'] is True


TOO_LONG = """
- hosts: h1
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        name: x
        timeout: 31536001
"""


def test_timeout_above_maximum_fails_before_taking_anything(env):
    rc, out = env.run(env.playbook('long.yml', TOO_LONG), tag='L')
    assert rc != 0, out
    assert 'timeout must be a number of seconds from 0 to 31536000' in out, out
    assert env.cli('run', 'x', '--nonblock', '--', 'true').returncode == 0


def test_ad_hoc_call_records_ad_hoc_as_playbook(env):
    proc = subprocess.run(
        [str(VENV_BIN / 'ansible'), 'h1', '-i', str(env.inventory), '-m', 'hostlock.core.lock', '-a', 'name=adhoc'],
        env=dict(env.vars, ANSIBLE_STDOUT_CALLBACK='minimal'),
        cwd=env.tmp,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout[proc.stdout.index('{') :])
    assert result['acquired'] is True, result
    assert result['holders'][0]['playbook'] == 'ad-hoc', result
