"""States try, status, released, timeouts and check mode while another run holds the lock."""

from __future__ import annotations

import pytest
from conftest import HOLDER, Env

# Run B looks at "x" in every way while A holds it.
CONTENDER = """
- name: contender play
  hosts: h2
  gather_facts: false
  tasks:
    - name: try x
      hostlock.core.lock:
        name: x
        state: try
    - name: status x
      hostlock.core.lock:
        name: x
        state: status
    - name: acquire x with timeout
      hostlock.core.lock:
        name: x
        timeout: 6
      ignore_errors: true
    - name: check mode acquire x
      hostlock.core.lock:
        name: x
      check_mode: true
    - name: check mode acquire free
      hostlock.core.lock:
        name: free
      check_mode: true
    - name: status free
      hostlock.core.lock:
        name: free
        state: status
    - name: release x not held
      hostlock.core.lock:
        name: x
        state: released
"""


@pytest.fixture(scope='module')
def contended(tmp_path_factory, collections_root):
    env = Env(tmp_path_factory.mktemp('contended'), collections_root)
    holder = env.start(env.playbook('holder.yml', HOLDER), tag='A')
    env.wait_for_file(env.out / 'held', proc=holder)
    code, out = env.run(env.playbook('contender.yml', CONTENDER), tag='B')
    env.contender_output = out
    env.contender_code = code
    (env.out / 'go').touch()
    out_a, _ = holder.communicate(timeout=60)
    assert holder.returncode == 0, out_a
    yield env
    env.cleanup()


def _holder_is_a(holder):
    assert holder['playbook'] == 'holder.yml'
    assert holder['play'] == 'holder play'
    assert holder['task'] == 'take x'
    assert holder['host'] == 'h1'
    assert holder['mode'] == 'exclusive'
    assert holder['since'] and holder['user'] and isinstance(holder['pid'], int)


def test_contender_run_completes(contended):
    assert contended.contender_code == 0, contended.contender_output


def test_try_does_not_wait_or_fail(contended):
    rec = contended.record('B', 'try x', 'h2')
    res = rec['result']
    assert rec['status'] == 'ok'
    assert res['acquired'] is False and res['changed'] is False
    assert res['waited'] < 1.0
    assert res['name'] == 'x' and res['path'].endswith('.lock')
    _holder_is_a(res['holders'][0])


def test_status_names_the_holder(contended):
    res = contended.record('B', 'status x', 'h2')['result']
    assert res['changed'] is False and res['acquired'] is False
    assert len(res['holders']) == 1
    _holder_is_a(res['holders'][0])


def test_timeout_fails_naming_holder(contended):
    rec = contended.record('B', 'acquire x with timeout', 'h2')
    res = rec['result']
    assert rec['status'] == 'failed'
    assert res['acquired'] is False
    assert 5.9 <= res['waited'] < 10, res['waited']
    msg = res['msg']
    assert msg.startswith('timed out after 6.')
    assert "waiting for lock 'x'" in msg
    assert "held by playbook holder.yml, play 'holder play', task 'take x', host h1" in msg
    assert 'since ' + res['holders'][0]['since'] in msg
    # While waiting, a line at once and then every few seconds names the holder.
    out = contended.contender_output
    # The first line goes out before the wait is queued; the notices say the place in the queue.
    assert "hostlock: [h2] waiting (0s of 6s) for lock 'x' held by playbook holder.yml" in out, out
    assert "hostlock: [h2] waiting (5s of 6s, 1st in queue) for lock 'x' held by playbook holder.yml" in out, out


def test_check_mode_reports_and_takes_nothing(contended):
    busy = contended.record('B', 'check mode acquire x', 'h2')['result']
    assert busy['changed'] is True and 'would wait' in busy['msg']
    free = contended.record('B', 'check mode acquire free', 'h2')['result']
    assert free['changed'] is True and free['acquired'] is True and 'would acquire' in free['msg']
    after = contended.record('B', 'status free', 'h2')['result']
    assert after['holders'] == []


def test_release_of_what_is_not_held_is_unchanged(contended):
    res = contended.record('B', 'release x not held', 'h2')['result']
    assert res['changed'] is False
    # A still held x when B released: B must not have dropped A's hold.
    _holder_is_a(res['holders'][0])


SHARED_BY_HOSTS = """
- name: hosts share
  hosts: h1,h2,h3
  gather_facts: false
  tasks:
    - name: take cluster
      hostlock.core.lock:
        name: cluster
        timeout: 10
    - name: take cluster again
      hostlock.core.lock:
        name: cluster
        timeout: 10
    - name: release h1
      hostlock.core.lock:
        name: cluster
        state: released
      when: inventory_hostname == 'h1'
    - name: status after h1
      hostlock.core.lock:
        name: cluster
        state: status
      run_once: true
    - name: release rest
      hostlock.core.lock:
        name: cluster
        state: released
      when: inventory_hostname != 'h1'
    - name: status after all
      hostlock.core.lock:
        name: cluster
        state: status
      run_once: true
"""


def test_hosts_of_one_run_share_a_hold(env):
    code, out = env.run(env.playbook('share.yml', SHARED_BY_HOSTS), timeout=60)
    assert code == 0, out
    took = [env.record('run', 'take cluster', h)['result'] for h in ('h1', 'h2', 'h3')]
    assert all(r['acquired'] for r in took)
    assert sorted(r['changed'] for r in took) == [False, False, True]
    again = [env.record('run', 'take cluster again', h)['result'] for h in ('h1', 'h2', 'h3')]
    assert all(r['acquired'] and not r['changed'] for r in again)
    assert env.record('run', 'release h1', 'h1')['result']['changed'] is True
    mid = env.record('run', 'status after h1')['result']
    assert len(mid['holders']) == 1 and sorted(mid['holders'][0]['members']) == ['h2', 'h3']
    assert all(env.record('run', 'release rest', h)['result']['changed'] for h in ('h2', 'h3'))
    assert env.record('run', 'status after all')['result']['holders'] == []


RELEASE = """
- hosts: h1
  gather_facts: false
  tasks:
    - name: take
      hostlock.core.lock:
    - name: release
      hostlock.core.lock:
        state: released
    - name: release again
      hostlock.core.lock:
        state: released
"""


def test_released_lets_another_run_in(env):
    code, out = env.run(env.playbook('release.yml', RELEASE))
    assert code == 0, out
    assert env.record('run', 'take')['result']['changed'] is True
    assert env.record('run', 'release')['result']['changed'] is True
    assert env.record('run', 'release again')['result']['changed'] is False


def test_run_end_releases_its_holds(env):
    # A run that never says released: its end lets the next run in.
    pb = env.playbook(
        'keep.yml',
        """
        - hosts: h1,h2
          gather_facts: false
          tasks:
            - name: take
              hostlock.core.lock:
            - name: take global
              hostlock.core.lock:
                name: global
              run_once: true
    """,
    )
    code, out = env.run(pb, tag='A')
    assert code == 0, out
    code, out = env.run(
        env.playbook(
            'try.yml',
            """
        - hosts: h1,h2
          gather_facts: false
          tasks:
            - name: try
              hostlock.core.lock:
                state: try
            - name: try global
              hostlock.core.lock:
                name: global
                state: try
    """,
        ),
        tag='B',
    )
    assert code == 0, out
    for host in ('h1', 'h2'):
        assert env.record('B', 'try', host)['result']['acquired'] is True
        assert env.record('B', 'try global', host)['result']['acquired'] is True


def test_lock_dir_from_argument_then_variable_then_env(env):
    for d in ('vardir', 'argdir'):
        (env.tmp / d).mkdir(mode=0o700)
    code, out = env.run(
        env.playbook(
            'dirs.yml',
            """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: from env
              hostlock.core.lock:
                name: a
                state: try
            - name: from variable
              hostlock.core.lock:
                name: a
                state: try
              vars:
                hostlock_lock_dir: "{{ playbook_dir }}/vardir"
            - name: from argument
              hostlock.core.lock:
                name: a
                state: try
                lock_dir: "{{ playbook_dir }}/argdir"
              vars:
                hostlock_lock_dir: "{{ playbook_dir }}/vardir"
    """,
        )
    )
    assert code == 0, out
    for task, where in (
        ('from env', env.lock_dir),
        ('from variable', env.tmp / 'vardir'),
        ('from argument', env.tmp / 'argdir'),
    ):
        res = env.record('run', task)['result']
        assert res['acquired'] and res['changed'], res
        assert res['path'].startswith(str(where) + '/'), (task, res['path'])


def test_helper_argument_then_variable_then_env(env):
    code, out = env.run(
        env.playbook(
            'helpers.yml',
            """
        - hosts: h1
          gather_facts: false
          vars:
            hostlock_helper: node /nowhere/cli.js
          tasks:
            - name: variable beats env
              hostlock.core.lock:
                state: status
              ignore_errors: true
            - name: argument beats variable
              hostlock.core.lock:
                state: status
                helper: "{{ lookup('env', 'HOSTLOCK_HELPER') }}"
    """,
        )
    )
    assert code == 0, out
    failed = env.record('run', 'variable beats env')
    assert failed['status'] == 'failed'
    assert 'from hostlock_helper variable' in failed['result']['msg'], failed['result']['msg']
    assert env.record('run', 'argument beats variable')['status'] == 'ok'


def test_symlinked_lock_dir_is_its_real_directory(env):
    """A lock_dir reached through a symlink is followed: the lock is the real directory's file,
    shown under its real path, and held against those who name the directory itself."""
    real = env.tmp / 'real-locks'
    real.mkdir(mode=0o700)
    (env.tmp / 'link-locks').symlink_to('real-locks')
    code, out = env.run(
        env.playbook(
            'linkdir.yml',
            """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: through the link
              hostlock.core.lock:
                name: a
                lock_dir: "{{ playbook_dir }}/link-locks"
            - name: probe the real file
              ansible.builtin.command: flock -n {{ playbook_dir }}/real-locks/a.lock true
              register: probe
              failed_when: false
              changed_when: false
            - name: by the real directory
              hostlock.core.lock:
                name: a
                state: status
                lock_dir: "{{ playbook_dir }}/real-locks"
    """,
        )
    )
    assert code == 0, out
    res = env.record('run', 'through the link')['result']
    assert res['acquired'], res
    assert res['path'] == str(real / 'a.lock'), res['path']
    assert env.record('run', 'probe the real file')['result']['rc'] == 1, 'the real file was not locked'
    status = env.record('run', 'by the real directory')['result']
    assert status['path'] == str(real / 'a.lock')
    assert [h['host'] for h in status['holders']] == ['h1'], status['holders']
