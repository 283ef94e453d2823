"""The Python Lock (a drop-in for cli2.Lock) with real processes and the real helper."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time

import pytest


def _script(env, name, body):
    path = env.tmp / name
    path.write_text(
        'import os, sys, time\n'
        'from ansible_collections.hostlock.core.plugins.plugin_utils.lock import Lock\n' + textwrap.dedent(body)
    )
    return path


def _py(env, script, *args, log_level='INFO', **kw):
    e = dict(env.vars, PYTHONPATH=env.vars['ANSIBLE_COLLECTIONS_PATH'], LOG_LEVEL=log_level)
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        env=e,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def _in_process(env):
    """Import Lock in this process, with the test's helper and directories."""
    root = env.vars['ANSIBLE_COLLECTIONS_PATH']
    if root not in sys.path:
        sys.path.insert(0, root)
    for key in ('HOSTLOCK_HELPER', 'HOSTLOCK_DIR', 'HOSTLOCK_RUNTIME_DIR'):
        os.environ[key] = env.vars[key]
    from ansible_collections.hostlock.core.plugins.plugin_utils import lock

    return lock


BLOCKING = """
with Lock(sys.argv[1], prefix=sys.argv[2]) as lock:
    print('in %s' % lock.acquired, flush=True)
    input('say hello')
print('released %f' % time.time(), flush=True)
"""


def test_cli2_blocking_example(env):
    path = env.tmp / 'mylock'
    script = _script(env, 'blocking.py', BLOCKING)
    first = _py(env, script, path, 'first')
    assert first.stdout.readline().strip() == 'in True'
    second = _py(env, script, path, 'second')
    # The second one says it waits, and does not get in while the first is inside.
    deadline = time.monotonic() + 15
    err = ''
    while 'Waiting' not in err and time.monotonic() < deadline:
        err += second.stderr.readline()
    assert 'second Waiting %s' % path in err, err
    time.sleep(1)
    assert second.poll() is None
    first.stdin.write('\n')
    first.stdin.flush()
    out1, err1 = first.communicate(timeout=15)
    released_at = float(out1.split()[-1])
    entered = second.stdout.readline().strip()
    entered_at = time.time()
    assert entered == 'in True'
    assert entered_at >= released_at
    out2, err2 = second.communicate('\n', timeout=15)
    err2 = err + err2
    assert 'first Acquired %s' % path in err1 and 'first Released %s' % path in err1, err1
    assert err2.index('second Waiting') < err2.index('second Acquired') < err2.index('second Released'), err2
    assert first.returncode == 0 and second.returncode == 0


NONBLOCKING = """
journal = sys.argv[2]
def log(event):
    with open(journal, 'a') as f:
        f.write('%s %d %f\\n' % (event, os.getpid(), time.time()))
# All start together: wait for the go file so that they really race.
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
with Lock(sys.argv[1], blocking=False) as lock:
    if lock.acquired:
        log('enter')
        time.sleep(1)
        log('exit')
    else:
        lock.block()
        assert lock.acquired
log('upload')
"""


def test_cli2_nonblocking_example(env):
    path = env.tmp / 'mylock'
    journal = env.tmp / 'journal'
    go = env.tmp / 'go-download'
    script = _script(env, 'nonblocking.py', NONBLOCKING)
    procs = [_py(env, script, path, journal, go) for _ in range(4)]
    time.sleep(0.5)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    lines = [line.split() for line in journal.read_text().splitlines()]
    downloads = [float(t) for e, _, t in lines if e == 'exit']
    uploads = [float(t) for e, _, t in lines if e == 'upload']
    assert len([1 for e, _, _ in lines if e == 'enter']) == 1, lines
    assert len(downloads) == 1 and len(uploads) == 4, lines
    assert min(uploads) >= downloads[0], lines
    # Everything was released on exit, including the locks taken by block().
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_each_lock_object_is_its_own_holder(env):
    lock = _in_process(env)
    path = str(env.tmp / 'own')
    a = lock.Lock(path)
    b = lock.Lock(path, blocking=False)
    try:
        assert a.acquire() is True and a.acquired
        assert b.acquire() is False and not b.acquired
        assert b.holders and b.holders[0]['pid'] == os.getpid()
        a.release()
        assert not a.acquired
        assert b.block() is True and b.acquired
    finally:
        a.release()
        b.release()


def test_timeout_raises_naming_holder(env):
    lock = _in_process(env)
    path = str(env.tmp / 'slow')
    with lock.Lock(path, prefix='holder'):
        waiter = lock.Lock(path, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            waiter.acquire()
        assert 0.4 < time.monotonic() - started < 5
        assert 'timed out after' in str(info.value) and path in str(info.value)
        assert info.value.holders and not waiter.acquired


def test_excludes_and_is_excluded_by_fcntl_flock(env):
    lock = _in_process(env)
    path = env.tmp / 'interop'
    path.write_text('keep me')
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        other = lock.Lock(str(path), blocking=False)
        with other:
            assert not other.acquired
            assert other.holders and other.holders[0].get('foreign')
    with lock.Lock(str(path)) as held:
        assert held.acquired
        with open(path, 'a') as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # Unlike cli2 (w+), the file is never truncated.
    assert path.read_text() == 'keep me'


def test_shared_locks_overlap_and_exclude_writers(env):
    lock = _in_process(env)
    path = str(env.tmp / 'readers')
    with lock.Lock(path, shared=True) as r1, lock.Lock(path, shared=True, blocking=False) as r2:
        assert r1.acquired and r2.acquired
        with lock.Lock(path, blocking=False) as w:
            assert not w.acquired


def test_symlink_refused(env):
    lock = _in_process(env)
    target = env.tmp / 'target'
    target.write_text('')
    link = env.tmp / 'link'
    link.symlink_to(target)
    with pytest.raises(lock.LockError) as info:
        lock.Lock(str(link)).acquire()
    assert 'symlink' in str(info.value).lower()


# A test-only action plugin that uses Lock inside an ansible-playbook worker.
USE_LOCK_ACTION = """
import json
from ansible.plugins.action import ActionBase
from ansible_collections.hostlock.core.plugins.plugin_utils.lock import Lock


class ActionModule(ActionBase):
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        path = self._task.args['path']
        host = task_vars['inventory_hostname']
        with Lock(path, prefix=host) as lock:
            probe = Lock(path, blocking=False, prefix=host)
            probe.acquire()
            result.update(acquired=lock.acquired, probe=probe.acquired, holders=probe.holders)
            probe.release()
        return result
"""


def _use_lock_playbook(env):
    plugins = env.tmp / 'action_plugins'
    plugins.mkdir(exist_ok=True)
    (plugins / 'use_lock.py').write_text(USE_LOCK_ACTION)
    pb = env.playbook(
        'uselock.yml',
        """
        - name: plugin play
          hosts: h1,h2
          gather_facts: false
          tasks:
            - name: use lock
              use_lock:
                path: "{{ out }}/plugin.lock"
    """,
    )
    return pb, {'ANSIBLE_ACTION_PLUGINS': str(plugins)}


def test_lock_inside_ansible_uses_the_run_agent(env):
    pb, extra = _use_lock_playbook(env)
    code, out = env.run(pb, '-v', env=extra)
    assert code == 0, out
    for host in ('h1', 'h2'):
        res = env.record('run', 'use lock', host)['result']
        assert res['acquired'] is True and res['probe'] is False
        holder = res['holders'][0]
        # Held through the run's agent, with the task's metadata, not by a private helper.
        assert holder['task'] == 'use lock' and holder['host'] == host
        assert holder['playbook'] == 'uselock.yml' and holder['run']
        assert holder['pid'] == int(holder['run'].split('-')[0])
        # -v shows INFO lines through Display, with the prefix.
        assert 'hostlock: %s Acquired %s/plugin.lock' % (host, env.out) in out
        assert 'hostlock: %s Released %s/plugin.lock' % (host, env.out) in out
    assert 'Busy' not in out


@pytest.mark.parametrize(
    'args,log_level,shown',
    [
        ((), None, ()),
        (('-vv',), None, ('Acquired', 'Busy', 'Released')),
        (('-vv',), 'WARNING', ()),
        ((), 'DEBUG', ('Acquired', 'Busy', 'Released')),
    ],
    ids=['quiet', 'vv-debug', 'log-level-wins', 'log-level-debug'],
)
def test_lock_logging_levels_inside_ansible(env, args, log_level, shown):
    pb, extra = _use_lock_playbook(env)
    if log_level:
        extra['LOG_LEVEL'] = log_level
    code, out = env.run(pb, *args, env=extra)
    assert code == 0, out
    for word in ('Acquired', 'Busy', 'Released'):
        assert (('hostlock: h1 %s ' % word) in out) == (word in shown), (word, out)


def test_private_helper_is_reused_between_locks(env):
    lock = _in_process(env)
    path = str(env.tmp / 'reuse')
    with lock.Lock(path) as first:
        pid = first._serve.proc.pid
    with lock.Lock(path) as second:
        assert second._serve.proc.pid == pid
        # A concurrent Lock gets its own helper, as it is its own holder.
        third = lock.Lock(path, blocking=False)
        assert third.acquire() is False
        assert third._serve.proc.pid != pid
        third.release()


INTERRUPTED = """
import signal
# Ctrl-C raises KeyboardInterrupt even where SIGINT came ignored from the parent (a background job).
signal.signal(signal.SIGINT, signal.default_int_handler)
lock = Lock(sys.argv[1])
try:
    lock.acquire()
except KeyboardInterrupt:
    print('interrupted %s' % lock.acquired, flush=True)
lock.release()
print('released', flush=True)
input()
"""


def test_ctrl_c_during_a_wait_leaves_no_ghost_holder(env):
    lock = _in_process(env)
    path = env.tmp / 'ctrlc'
    holder = lock.Lock(str(path))
    holder.acquire()
    try:
        waiter = _py(env, _script(env, 'interrupted.py', INTERRUPTED), path)
        deadline = time.monotonic() + 15
        err = ''
        while 'Waiting' not in err and time.monotonic() < deadline:
            err += waiter.stderr.readline()
        waiter.send_signal(2)
        assert waiter.stdout.readline().strip() == 'interrupted False'
        assert waiter.stdout.readline().strip() == 'released'
    finally:
        holder.release()
    # The interrupted process is still alive; it must not have picked the lock up after all.
    time.sleep(0.5)
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    waiter.communicate('\n', timeout=15)


def test_cli2_attributes_and_missing_parent_directory(env):
    lock = _in_process(env)
    path = env.tmp / 'new' / 'dir' / 'mylock'
    with lock.Lock(str(path), blocking=False) as held:
        # As in cli2: lock_path is a Path, prefix defaults to '', the parent directory is created.
        assert held.lock_path == path and held.lock_path.parent.is_dir()
        assert held.prefix == '' and held.acquired and held.blocking is False
    assert not held.acquired
    late = lock.Lock(path, blocking=False)
    late.block()
    assert late.acquired and late.blocking is True
    late.release()


HANDOVER_ACTION = """
import threading
from ansible.plugins.action import ActionBase
from ansible_collections.hostlock.core.plugins.plugin_utils.lock import Lock


class ActionModule(ActionBase):
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        path = self._task.args['path']
        first = Lock(path, prefix='first')
        first.acquire()
        first_since = first.holders[0]['since'] if first.holders else None
        second = Lock(path, blocking=False, prefix='second')
        second.acquire()
        waiter = threading.Thread(target=second.block)
        waiter.start()
        first.release()
        waiter.join()
        probe = Lock(path, blocking=False, prefix='probe')
        probe.acquire()
        result.update(first_since=first_since, second=second.acquired, probe=probe.acquired,
                      holders=probe.holders)
        probe.release()
        second.release()
        return result
"""


def test_holders_right_after_a_handover_in_one_agent(env):
    # All three Locks share the run's agent: the probe must name the new holder, not the old one.
    plugins = env.tmp / 'action_plugins'
    plugins.mkdir()
    (plugins / 'handover.py').write_text(HANDOVER_ACTION)
    pb = env.playbook(
        'handover.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: handover
              handover:
                path: "{{ out }}/handover.lock"
    """,
    )
    code, out = env.run(pb, env={'ANSIBLE_ACTION_PLUGINS': str(plugins)})
    assert code == 0, out
    res = env.record('run', 'handover')['result']
    assert res['second'] is True and res['probe'] is False
    assert len(res['holders']) == 1
    assert res['holders'][0]['since'] != res['first_since'], res


LOG_ATTRIBUTE = """
import logging
lock = Lock(sys.argv[1], prefix='dl')
for level in ('debug', 'info', 'warning', 'error'):
    getattr(lock.log, level)('%s line %d', level, 7, step=level)
with lock:
    lock.log.info('inside')
lock.log.debug('hidden below INFO')
print('logger %s' % lock.log.logger.name, flush=True)
"""


def test_log_attribute_as_in_cli2(env):
    path = env.tmp / 'mylock'
    script = _script(env, 'log.py', LOG_ATTRIBUTE)
    proc = _py(env, script, path, log_level='DEBUG')
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == 'logger hostlock'
    for level in ('debug', 'info', 'warning', 'error'):
        assert 'dl %s line 7 %s step=%s' % (level, path, level) in err, err
    assert err.index('dl Acquired') < err.index('dl inside %s' % path) < err.index('dl Released'), err
    quiet = _py(env, script, path, log_level='WARNING')
    _out, err = quiet.communicate(timeout=30)
    assert 'dl warning line 7' in err and 'dl error line 7' in err, err
    assert 'info line' not in err and 'debug line' not in err and 'inside' not in err, err


def test_a_lock_lost_while_held_raises_on_release(env):
    # The lock file deleted under its holder: the helper sees the hold lost
    # (it looks at its lock files every 2 s) and the release says so loudly.
    lock = _in_process(env)
    path = env.tmp / 'deleted'
    held = lock.Lock(str(path))
    held.acquire()
    path.unlink()
    time.sleep(3)
    with pytest.raises(lock.LockError) as info:
        held.release()
    assert 'lost while held' in str(info.value) and str(path) in str(info.value)
    assert not held.acquired
    # Nothing is left held: the next holder gets the path at once.
    with lock.Lock(str(path), blocking=False) as again:
        assert again.acquired
