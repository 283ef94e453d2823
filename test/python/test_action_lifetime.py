"""A run's holds end with the run (even SIGKILL), one agent per run, and a lost lock stops the run."""

from __future__ import annotations

import datetime
import os
import re
import signal
import time

from conftest import HOLDER, TRY_ONLY

WAITER = """
- name: waiter play
  hosts: h2
  gather_facts: false
  tasks:
    - name: take x
      hostlock.core.lock:
        name: x
        timeout: 30
    - name: status x
      hostlock.core.lock:
        name: x
        state: status
"""


def _since(holder):
    return datetime.datetime.fromisoformat(holder['since'].replace('Z', '+00:00')).timestamp()


def _kill_holder_while_other_waits(env, sig):
    holder = env.start(env.playbook('holder.yml', HOLDER), tag='A')
    env.wait_for_file(env.out / 'held', proc=holder)
    waiter = env.start(env.playbook('waiter.yml', WAITER), tag='B')
    # Kill only once B is really waiting (it printed the holder line).
    deadline = time.monotonic() + 30
    seen = ''
    while 'waiting (' not in seen:
        line = waiter.stdout.readline()
        assert line or time.monotonic() < deadline, seen
        seen += line
    killed_at = time.time()
    holder.send_signal(sig)
    # The run's task (wait for go) may outlive ansible-playbook: the hold lasts until it ends.
    (env.out / 'go').touch()
    out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, seen + out
    holders = env.record('B', 'status x', 'h2')['result']['holders']
    assert len(holders) == 1 and holders[0]['playbook'] == 'waiter.yml'
    return _since(holders[0]) - killed_at


def test_sigkill_of_ansible_playbook_releases_once_its_task_ends(env):
    # wait_for looks for the go file once a second; then its worker ends and the hold goes.
    delay = _kill_holder_while_other_waits(env, signal.SIGKILL)
    assert delay < 4.0, delay


def test_ctrl_c_of_ansible_playbook_releases(env):
    delay = _kill_holder_while_other_waits(env, signal.SIGINT)
    assert delay < 5.0, delay


def test_failed_run_releases_its_holds(env):
    code, out = env.run(
        env.playbook(
            'fail.yml',
            """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: take
              hostlock.core.lock:
            - name: boom
              ansible.builtin.fail:
                msg: boom
    """,
        ),
        tag='A',
    )
    assert code == 2, out
    code, out = env.run(env.playbook('try.yml', TRY_ONLY), tag='B')
    assert code == 0, out
    assert env.record('B', 'try')['result']['acquired'] is True


def test_many_workers_start_one_agent(env):
    hosts = ','.join('h%d' % i for i in range(1, 21))
    code, out = env.run(
        env.playbook(
            'many.yml',
            """
        - hosts: %s
          gather_facts: false
          tasks:
            - name: take
              hostlock.core.lock:
    """
            % hosts,
        ),
        '-f',
        '20',
        timeout=120,
    )
    assert code == 0, out
    helper_pids = {env.record('run', 'take', 'h%d' % i)['result']['holders'][0]['helper_pid'] for i in range(1, 21)}
    assert len(helper_pids) == 1, helper_pids


LOSER = """
- name: loser play
  hosts: h1
  gather_facts: false
  tasks:
    - name: take x
      hostlock.core.lock:
        name: x
    - name: status x
      hostlock.core.lock:
        name: x
        state: status
    - name: wait for go
      ansible.builtin.wait_for:
        path: "{{ out }}/go"
        timeout: 60
    - name: after agent death
      hostlock.core.lock:
        name: x
"""


def test_agent_death_is_lock_lost(env):
    run = env.start(env.playbook('loser.yml', LOSER), tag='A')
    deadline = time.monotonic() + 30
    while not [r for r in env.records('A') if r['task'] == 'status x']:
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
        time.sleep(0.05)
    agent_pid = env.record('A', 'status x')['result']['holders'][0]['helper_pid']
    os.kill(agent_pid, signal.SIGKILL)
    time.sleep(0.3)
    (env.out / 'go').touch()
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 2, out
    rec = env.record('A', 'after agent death')
    assert rec['status'] == 'failed'
    msg = rec['result']['msg']
    path = re.escape(str(env.lock_dir / 'x.lock'))
    assert re.fullmatch(
        r"lock lost: host h1 held 'x' \(%s, exclusive, held since [0-9T:.Z-]+\): "
        r"this run's hostlock agent died holding it; another run may have entered the guarded section\. "
        r'Stopping instead of continuing unprotected\.' % path,
        msg,
    ), msg
    assert msg.count('lock lost') == 1, msg


GIVES_UP = """
- name: gives up play
  hosts: h2
  gather_facts: false
  tasks:
    - name: take x under a task timeout
      hostlock.core.lock:
        name: x
      timeout: 2
      ignore_errors: true
    - name: gave up
      ansible.builtin.file:
        path: "{{ out }}/gave-up"
        state: touch
    - name: wait for holder to finish
      ansible.builtin.wait_for:
        path: "{{ out }}/holder-done"
        timeout: 60
    - name: status x
      hostlock.core.lock:
        name: x
        state: status
"""


def test_abandoned_wait_leaves_no_ghost_hold(env):
    # Ansible's task timeout kills the wait; the run must not get the lock later behind our back.
    holder = env.start(env.playbook('holder.yml', HOLDER), tag='A')
    env.wait_for_file(env.out / 'held', proc=holder)
    gives_up = env.start(env.playbook('givesup.yml', GIVES_UP), tag='B')
    env.wait_for_file(env.out / 'gave-up', proc=gives_up)
    (env.out / 'go').touch()
    out_a, _ = holder.communicate(timeout=60)
    assert holder.returncode == 0, out_a
    time.sleep(0.5)
    (env.out / 'holder-done').touch()
    out_b, _ = gives_up.communicate(timeout=60)
    assert gives_up.returncode == 0, out_b
    assert env.record('B', 'take x under a task timeout', 'h2')['status'] == 'failed'
    assert env.record('B', 'status x', 'h2')['result']['holders'] == []
