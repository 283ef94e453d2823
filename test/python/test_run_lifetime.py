"""A run keeps its holds until every process of the run is gone, and frees them at once after.

ansible-core's workers call setsid() and outlive a SIGKILLed or SIGHUPed ansible-playbook
(and its process group): the task they run goes on on the host. Like flock(1), whose
descriptor the workers would inherit, hostlock must keep the run's holds until that task
has ended, then free them within a second; a waiting run must never enter beside it.
A run that ends normally frees its holds before the next command of a chained step can ask.
"""

from __future__ import annotations

import datetime
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import VENV_BIN

# The holder takes the lock, then runs a task inside the section: it waits for the test's go
# (given once ansible-playbook is killed), then works `secs` more. `marker` names its processes.
HOLDER = """
- hosts: {host}
  gather_facts: false
  tasks:
    - name: take
      hostlock.core.lock:
        name: {name}
    - name: work inside the section
      ansible.builtin.shell: >-
        touch {out}/{tag}.start; while [ ! -e {out}/{tag}.go ]; do sleep 0.1; done;
        sleep {secs}; : {marker}; date +%s.%N > {out}/{tag}.end
"""

WAITER = """
- hosts: {host}
  gather_facts: false
  tasks:
    - name: take
      hostlock.core.lock:
        name: {name}
        timeout: 120
    - name: status
      hostlock.core.lock:
        name: {name}
        state: status
      register: st
    - name: keep the grant time
      ansible.builtin.copy:
        content: "{{{{ st.holders[0].since }}}}"
        dest: "{out}/{tag}.since"
"""


def _since(text):
    return datetime.datetime.fromisoformat(text.strip().replace('Z', '+00:00')).timestamp()


def _pids_matching(needle):
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                cmd = f.read().decode('utf-8', 'replace')
            with open('/proc/%s/stat' % pid) as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd and state != 'Z':
            found.append((int(pid), cmd.replace('\0', ' ')[:200]))
    return found


class Try:
    """One killed holder run and one waiter, on a lock name of their own."""

    def __init__(self, env, tag, sig, group, host='h1', waiter_host='h2', secs=3):
        self.env, self.tag, self.sig, self.group, self.secs = env, tag, sig, group, secs
        self.marker = 'hostlock-life-%s-%d' % (tag, os.getpid())
        self.name = name = 'life-%s' % tag
        fmt = dict(name=name, out=env.out, tag=tag, secs=secs, marker=self.marker)
        self.holder_book = env.playbook('%s-holder.yml' % tag, HOLDER.format(host=host, **fmt))
        self.waiter_book = env.playbook('%s-waiter.yml' % tag, WAITER.format(host=waiter_host, **fmt))
        self.holder = self._start(self.holder_book)
        self.waiter = None

    def _start(self, book):
        # A session of its own: killing its process group must not reach pytest.
        return subprocess.Popen(
            [str(VENV_BIN / 'ansible-playbook'), '-i', str(self.env.inventory), str(book)],
            env=self.env.vars,
            cwd=self.env.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def file(self, suffix):
        return self.env.out / ('%s.%s' % (self.tag, suffix))

    def start_waiter(self):
        self.env.wait_for_file(self.file('start'), timeout=60, proc=self.holder)
        self.waiter = self._start(self.waiter_book)

    def waiter_is_waiting(self):
        deadline = time.monotonic() + 60
        seen = ''
        while 'waiting (' not in seen:
            line = self.waiter.stdout.readline()
            assert line and time.monotonic() < deadline, 'the waiter never waited:\n' + seen
            seen += line
        self.seen = seen

    def kill(self):
        if self.group:
            os.killpg(self.holder.pid, self.sig)
        else:
            self.holder.send_signal(self.sig)
        self.holder.wait(timeout=30)
        # What is left of the run: its workers (ansible-playbook's command line) and every
        # process of their sessions. A thread notes when the last of them exits.
        workers = {pid for pid, _ in _pids_matching(str(self.holder_book))}
        assert workers, '%s: no worker outlived ansible-playbook: nothing tested' % self.tag
        fds = []
        for pid in os.listdir('/proc'):
            try:
                with open('/proc/%s/stat' % pid) as f:
                    sid = int(f.read().rsplit(')', 1)[1].split()[3])
                if int(pid) in workers or sid in workers:
                    fds.append(os.pidfd_open(int(pid)))
            except (OSError, ValueError):
                continue
        self.last_exit = None

        def wait_all():
            pending = list(fds)
            while pending:
                ready, _, _ = select.select(pending, [], [])
                for fd in ready:
                    pending.remove(fd)
                    os.close(fd)
            self.last_exit = time.time()

        self.exits = threading.Thread(target=wait_all, daemon=True)
        self.exits.start()

    def check(self):
        out, _ = self.waiter.communicate(timeout=180)
        assert self.waiter.returncode == 0, self.seen + out
        end = float(self.file('end').read_text())
        since = _since(self.file('since').read_text())
        # `since` has milliseconds: allow for their truncation.
        assert since >= end - 0.002, "%s: the waiter entered %.3fs before the killed run's task ended" % (
            self.tag,
            end - since,
        )
        self.exits.join(timeout=60)
        assert self.last_exit is not None, "%s: the killed run's processes never ended" % self.tag
        assert since >= self.last_exit - 0.002, '%s: the waiter entered before the killed run ended' % self.tag
        assert since - self.last_exit < 1.0, "%s: the hold went %.3fs after the run's last process" % (
            self.tag,
            since - self.last_exit,
        )
        deadline = time.monotonic() + 10
        while True:
            left = _pids_matching(self.marker) + _pids_matching(str(self.holder_book))
            agents = [p for p in _pids_matching('--owner-pid %d' % self.holder.pid) if 'agent' in p[1]]
            if not left and not agents:
                break
            assert time.monotonic() < deadline, '%s: still running after the run: %s' % (self.tag, left + agents)
            time.sleep(0.1)
        return since - end, since - self.last_exit

    def cleanup(self):
        for p in (self.holder, self.waiter):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
        for pid, _ in _pids_matching(self.marker):
            os.kill(pid, signal.SIGKILL)


def _run_tries(env, specs, **kw):
    tries = [Try(env, tag, sig, group, **kw) for tag, sig, group in specs]
    try:
        for t in tries:
            t.start_waiter()
        for t in tries:
            t.waiter_is_waiting()
        for t in tries:
            t.kill()
        # While their tasks run, status shows each hold, saying that its run has ended.
        status = env.cli('status').stdout
        for t in tries:
            line = next((x for x in status.splitlines() if x.startswith(t.name + ' ')), '')
            assert 'run ended' in line, 'status of %s after the kill:\n%s' % (t.name, status)
        # The killed runs' tasks go on; let them end a second apart, so that their wrap-ups
        # and the waiters they let in do not all compete for the CPU at once.
        for t in tries:
            t.file('go').touch()
            time.sleep(1)
        lags = [t.check() for t in tries]
        sys.stderr.write(
            "released %s s after the killed task ended, %s s after the run's last process\n"
            % (', '.join('%.3f' % a for a, _ in lags), ', '.join('%.3f' % b for _, b in lags))
        )
    finally:
        for t in tries:
            t.cleanup()


KILLS = [
    ('kill', signal.SIGKILL, False),
    ('killpg', signal.SIGKILL, True),
    ('hup', signal.SIGHUP, False),
    ('huppg', signal.SIGHUP, True),
]


@pytest.mark.parametrize('round_', [1, 2, 3])
def test_a_killed_run_keeps_its_holds_until_its_task_ends(env, round_):
    """SIGKILL and SIGHUP, of ansible-playbook alone and of its process group, four at once per round."""
    _run_tries(env, [('%s%d' % (tag, round_), sig, group) for tag, sig, group in KILLS])


def test_a_run_ended_normally_frees_its_holds_for_a_chained_step(env):
    book = env.playbook(
        'chained.yml',
        """
        - hosts: h1
          gather_facts: false
          tasks:
            - name: take and keep
              hostlock.core.lock:
                name: chained
        """,
    )
    cmd = [str(VENV_BIN / 'ansible-playbook'), '-i', str(env.inventory), str(book)]
    for i in range(20):
        run = subprocess.run(cmd, env=env.vars, cwd=env.tmp, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        # At once, as a chained step would; 150 ms is far more than the release takes, and less
        # than a 200 ms poll of the run's end would need in 1 try of 4.
        free = subprocess.run(['flock', '-w', '0.15', str(env.lock_dir / 'chained.lock'), 'true'], timeout=30)
        assert free.returncode == 0, 'round %d: the lock was still held 150 ms after the run ended' % i
        step = env.cli('run', 'chained', '--nonblock', '--', 'true')
        assert step.returncode == 0, 'round %d: the next step found the lock held: %s' % (i, step.stderr)


# --- the ssh connection, with a ControlPersist master that outlives the run ------------


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _sshd_binary():
    found = shutil.which('sshd') or next((p for p in ('/usr/sbin/sshd', '/sbin/sshd') if os.path.exists(p)), None)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(
            'sshd is missing: install OpenSSH server (e.g. `sudo apt-get install openssh-server`) '
            'or run the tests as root, which installs it; the test starts its own sshd on 127.0.0.1'
        )
    for args in (['apt-get', 'update', '-q'], ['apt-get', 'install', '-y', '-q', 'openssh-server']):
        r = subprocess.run(
            args, capture_output=True, text=True, timeout=600, env=dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        )
        if r.returncode != 0 and args[1] == 'install':
            pytest.fail('cannot install openssh-server: %s' % (r.stdout + r.stderr)[-2000:])
    return _sshd_binary()


@pytest.fixture(scope='module')
def sshd(tmp_path_factory):
    """A private sshd on a free 127.0.0.1 port, with a throw-away host key and client key."""
    binary = _sshd_binary()
    d = tmp_path_factory.mktemp('sshd')
    os.chmod(d, 0o700)
    for key in ('host_key', 'client_key'):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(d / key)], check=True)
    (d / 'authorized_keys').write_text((d / 'client_key.pub').read_text())
    port = _free_port()
    (d / 'sshd_config').write_text(
        textwrap.dedent(
            """\
            ListenAddress 127.0.0.1
            Port {port}
            HostKey {d}/host_key
            PidFile {d}/sshd.pid
            AuthorizedKeysFile {d}/authorized_keys
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            StrictModes no
            UsePAM no
            MaxStartups 100
            MaxSessions 100
            """
        ).format(port=port, d=d)
    )
    if os.geteuid() == 0:
        os.makedirs('/run/sshd', mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen(
        [binary, '-D', '-e', '-f', str(d / 'sshd_config')], stderr=open(d / 'sshd.log', 'w'), start_new_session=True
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail('sshd did not start: %s' % (d / 'sshd.log').read_text()[-2000:])
            time.sleep(0.1)
    yield dict(port=port, key=d / 'client_key', dir=d)
    proc.terminate()
    proc.wait(timeout=10)


def test_over_ssh_a_killed_run_keeps_its_holds_and_the_controlpersist_master_does_not(env, sshd):
    cp_dir = env.tmp / 'cp'
    cp_dir.mkdir(mode=0o700)
    ssh_vars = (
        'ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=%d ansible_user=%s '
        'ansible_ssh_private_key_file=%s ansible_python_interpreter=%s '
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'"
    ) % (sshd['port'], os.environ.get('USER') or 'root', sshd['key'], sys.executable)
    env.inventory.write_text('[all]\n' + ''.join('%s %s\n' % (h, ssh_vars) for h in ('s1', 's2')))
    env.vars.update(
        ANSIBLE_SSH_ARGS='-o ControlMaster=auto -o ControlPersist=60s',
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp_dir),
        ANSIBLE_PIPELINING='1',
    )
    try:
        _run_tries(
            env,
            [('ssh-kill', signal.SIGKILL, False), ('ssh-huppg', signal.SIGHUP, True)],
            host='s1',
            waiter_host='s2',
        )
        # The master of the killed run still serves its connection, and held nothing.
        masters = _pids_matching(str(cp_dir))
        assert any('[mux]' in cmd for _, cmd in masters), 'no ControlPersist master lingered: %s' % masters
    finally:
        for pid, _ in _pids_matching(str(cp_dir)):
            os.kill(pid, signal.SIGKILL)
