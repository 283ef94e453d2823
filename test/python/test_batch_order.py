"""The quick start under `linear` never deadlocks: a run takes its batch's host locks in one order."""

from __future__ import annotations

import pytest
from conftest import HOSTS, journal_sections, overlaps

# README's quick start: lock each host (the name defaults to inventory_hostname), work, release.
# Six runs of 20 hosts take turns: the last one waits for five others' work, minutes on a
# loaded 2-core machine. A deadlock still fails, on the lock's timeout or the run's.
QUICK_START = """
- hosts: all
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        timeout: 200
    - name: work
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ journal_cli }}", section,
               --journal, "{{ out }}/journal-{{ inventory_hostname }}",
               --run, "{{ who }}", --host, "{{ inventory_hostname }}",
               --hold, "{{ hold | default(0.05) }}"]
    - name: unlock
      hostlock.core.lock:
        state: released
"""


def _concurrent(env, playbook, runs, *args, forks=20, limit=None, timeout=240):
    procs = []
    for i in range(runs):
        procs.append(
            (
                'R%d' % i,
                env.start(playbook, '-f', str(forks), '-e', 'who=R%d' % i, *args, limit=limit, tag='R%d' % i),
            )
        )
    outs = {}
    for who, proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        outs[who] = out
        assert proc.returncode == 0, '%s failed:\n%s' % (who, out[-6000:])
        assert 'timed out' not in out, out[-6000:]
    return outs


def _clear_journals(env):
    for f in env.out.glob('journal-*'):
        f.unlink()


def _check_turns(env, hosts, runs):
    for host in hosts:
        spans = journal_sections(env.out / ('journal-%s' % host))
        assert set(spans) == {'R%d' % i for i in range(runs)}, (host, spans)
        assert not overlaps(spans), (host, spans)


@pytest.mark.timeout(1500)
@pytest.mark.parametrize('runs', [2, 6])
def test_quick_start_never_deadlocks(env, runs):
    """20 hosts, forks 20: every run of every round completes, each host's sections take turns."""
    pb = env.playbook('quick.yml', QUICK_START)
    for _ in range(3):
        _clear_journals(env)
        _concurrent(env, pb, runs)
        _check_turns(env, HOSTS, runs)


def test_fewer_forks_than_hosts(env):
    """forks 3 < 20 hosts: the agent takes the names of hosts whose workers have not started yet."""
    pb = env.playbook('quick.yml', QUICK_START)
    _concurrent(env, pb, 3, forks=3)
    _check_turns(env, HOSTS, 3)


def test_inventory_order_differs_from_name_order_and_limit(env):
    """Inventory listed backwards and runs limited to overlapping subsets still never deadlock."""
    lines = env.inventory.read_text().splitlines()
    env.inventory.write_text('\n'.join([lines[0]] + list(reversed(lines[1:]))) + '\n')
    pb = env.playbook('quick.yml', QUICK_START)
    procs = [
        env.start(pb, '-f', '20', '-e', 'who=A', limit='h1:h2:h3:h4:h5:h6:h7:h8:h9:h10:h11:h12', tag='A'),
        env.start(pb, '-f', '20', '-e', 'who=B', limit='h5:h6:h7:h8:h9:h10:h11:h12:h13:h14:h15:h16', tag='B'),
        env.start(pb, '-f', '20', '-e', 'who=C', limit='h9:h10:h11:h12:h13:h14:h15:h16:h17:h18:h19:h20:h1', tag='C'),
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-6000:]
    for host in HOSTS:
        spans = journal_sections(env.out / ('journal-%s' % host))
        assert not overlaps(spans), (host, spans)


# Per-host templated names whose order differs from the hosts' order.
TEMPLATED = """
- hosts: all
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        name: "slot-{{ 100 - (inventory_hostname[1:] | int) }}"
        timeout: 60
    - name: work
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ journal_cli }}", section,
               --journal, "{{ out }}/journal-{{ inventory_hostname }}",
               --run, "{{ who }}", --host, "{{ inventory_hostname }}",
               --hold, '0.05']
    - name: unlock
      hostlock.core.lock:
        name: "slot-{{ 100 - (inventory_hostname[1:] | int) }}"
        state: released
"""


def test_per_host_templated_names(env):
    pb = env.playbook('templated.yml', TEMPLATED)
    for _ in range(2):
        _clear_journals(env)
        _concurrent(env, pb, 3)
        _check_turns(env, HOSTS, 3)


# h3 skips the lock task: its lock must not be taken for it.
SKIPPED = """
- hosts: all
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        timeout: 60
      when: inventory_hostname != 'h3'
    - name: work
      ansible.builtin.shell: |
        touch {{ out }}/working
        for i in $(seq 600); do [ -e {{ out }}/go ] && exit 0; sleep 0.05; done
        exit 1
      when: inventory_hostname == 'h1'
    - name: unlock
      hostlock.core.lock:
        state: released
"""


def test_hosts_skipped_by_when_are_not_locked(env):
    pb = env.playbook('skipped.yml', SKIPPED)
    proc = env.start(pb, '-f', '20', tag='S')
    env.wait_for_file(env.out / 'working', proc=proc)
    free = env.cli('run', 'h3', '--nonblock', '--', 'true')
    taken = env.cli('run', 'h4', '--nonblock', '--', 'true')
    (env.out / 'go').touch()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert free.returncode == 0, 'h3 skipped the lock task but its lock is held: %s' % free.stderr
    assert taken.returncode != 0, 'h4 took its lock, yet another process got it: %s' % taken.stderr


# One name for every host: one run hold, whatever the batch.
CONSTANT = """
- hosts: all
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        name: cluster
        timeout: 60
    - name: work
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ journal_cli }}", section,
               --journal, "{{ out }}/journal-cluster",
               --run, "{{ who }}-{{ inventory_hostname }}", --host, "{{ inventory_hostname }}",
               --hold, '0.05']
      when: inventory_hostname == 'h1'
    - name: unlock
      hostlock.core.lock:
        name: cluster
        state: released
"""


def test_constant_name_is_one_run_hold(env):
    pb = env.playbook('constant.yml', CONSTANT)
    _concurrent(env, pb, 3)
    spans = journal_sections(env.out / 'journal-cluster')
    assert len(spans) == 3 and not overlaps(spans), spans
    assert env.record('R0', 'lock', 'h7')['result']['acquired'] is True


# free: each host goes its own way; two runs on disjoint locks do not wait for each other.
FREE = """
- hosts: all
  gather_facts: false
  strategy: "{{ strategy }}"
  tasks:
    - name: lock
      hostlock.core.lock:
        timeout: 60
    - name: work
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ journal_cli }}", section,
               --journal, "{{ out }}/journal-{{ inventory_hostname }}",
               --run, "{{ who }}", --host, "{{ inventory_hostname }}",
               --hold, "{{ 1 if inventory_hostname == 'h1' else 0.05 }}"]
    - name: unlock
      hostlock.core.lock:
        state: released
"""


@pytest.mark.parametrize('strategy', ['free', 'host_pinned'])
def test_free_strategies_keep_their_parallelism(env, strategy):
    """Under free/host_pinned a host does not wait behind another host of its own run."""
    pb = env.playbook('free.yml', FREE)
    _concurrent(env, pb, 2, '-e', 'strategy=%s' % strategy, limit='h1:h2:h3:h4')
    for host in ['h1', 'h2', 'h3', 'h4']:
        spans = journal_sections(env.out / ('journal-%s' % host))
        assert not overlaps(spans), (host, spans)
    # The run that waited a second for h1 did its h2 meanwhile: h2 never queued behind h1.
    h1 = journal_sections(env.out / 'journal-h1')
    h2 = journal_sections(env.out / 'journal-h2')
    second = max(h1, key=lambda who: h1[who].start)
    assert h2[second].end < h1[second].start, (second, h1, h2)


# serial and throttle under linear: batches stay ordered, the runs still complete and take turns.
SERIAL = """
- hosts: all
  gather_facts: false
  serial: "{{ serial_size | default(0) | int or omit }}"
  tasks:
    - name: lock
      hostlock.core.lock:
        timeout: 60
      throttle: "{{ throttle_size | default(0) | int }}"
    - name: work
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ journal_cli }}", section,
               --journal, "{{ out }}/journal-{{ inventory_hostname }}",
               --run, "{{ who }}", --host, "{{ inventory_hostname }}",
               --hold, '0.05']
    - name: unlock
      hostlock.core.lock:
        state: released
"""


@pytest.mark.parametrize('extra', [('-e', 'serial_size=5'), ('-e', 'throttle_size=3')], ids=['serial', 'throttle'])
def test_serial_and_throttle(env, extra):
    pb = env.playbook('serial.yml', SERIAL)
    _concurrent(env, pb, 3, *extra, limit='h1:h2:h3:h4:h5:h6:h7:h8:h9:h10')
    _check_turns(env, ['h%d' % i for i in range(1, 11)], 3)


# The quick start with the runs meeting before the lock task, so every host of every run asks at
# once; the lock task as README has it, or with a `when:` that holds for every host (the batch is
# then worked out host by host, evaluating the condition for each).
QUICK_START_AT_BARRIER = """
- hosts: all
  gather_facts: false
  tasks:
    - name: meet
      ansible.builtin.shell: |
        touch {{ out }}/{{ barrier }}/{{ who }}-{{ inventory_hostname }}
        for i in $(seq 600); do
          set -- {{ out }}/{{ barrier }}/*-{{ inventory_hostname }}
          [ "$#" -ge {{ runs }} ] && exit 0
          sleep 0.05
        done
        exit 1
      changed_when: false
    - name: lock
      hostlock.core.lock:
        timeout: 30%s
    - name: work
      ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ journal_cli }}", section,
               --journal, "{{ out }}/journal-{{ inventory_hostname }}",
               --run, "{{ who }}", --host, "{{ inventory_hostname }}",
               --hold, '0.05']
    - name: unlock
      hostlock.core.lock:
        state: released
"""
WHEN_EVERY_HOST = '\n      when: inventory_hostname in ansible_play_batch'


@pytest.mark.timeout(600)
@pytest.mark.parametrize('when', [False, True], ids=['no-when', 'when'])
def test_quick_start_at_a_barrier_never_deadlocks(env, when):
    """6 hosts, forks 6, 2 runs meeting at a barrier, 5 rounds: no run times out or hangs."""
    pb = env.playbook('barrier.yml', QUICK_START_AT_BARRIER % (WHEN_EVERY_HOST if when else ''))
    hosts = ['h%d' % i for i in range(1, 7)]
    for rnd in range(5):
        _clear_journals(env)
        (env.out / ('barrier-%d' % rnd)).mkdir()
        # A deadlock ends at the lock task's 30 s timeout; a hang, at communicate()'s deadline.
        _concurrent(
            env, pb, 2, '-e', 'barrier=barrier-%d' % rnd, '-e', 'runs=2', forks=6, limit=':'.join(hosts), timeout=120
        )
        _check_turns(env, hosts, 2)


# h3's condition reads a variable nobody defined: h3's own task fails on it, and the plan of the
# other hosts leaves h3 out, saying so at -v.
BROKEN_WHEN = """
- hosts: all
  gather_facts: false
  tasks:
    - name: lock
      hostlock.core.lock:
        timeout: 30
      when: inventory_hostname != 'h3' or nobody_defined_this
"""


def test_host_whose_condition_fails_is_left_out_and_said(env):
    pb = env.playbook('broken.yml', BROKEN_WHEN)
    code, out = env.run(pb, '-v', '-f', '3', limit='h1:h2:h3', timeout=120)
    assert code != 0, out
    assert env.record('run', 'lock', 'h1')['result']['acquired'] is True
    assert env.record('run', 'lock', 'h2')['result']['acquired'] is True
    assert 'nobody_defined_this' in str(env.record('run', 'lock', 'h3')['result']), out
    assert "hostlock: h3 is left out of the batch of task 'lock'" in out, out
