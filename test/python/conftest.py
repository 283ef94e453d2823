"""Fixtures for real ansible-playbook runs against the real hostlock helper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import journal as jl
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CLI = REPO / 'dist' / 'cli.js'
JOURNAL_CLI = REPO / 'molecule' / 'shared' / 'journal_cli.py'
HOSTS = ['h%d' % i for i in range(1, 21)]

# Started under nohup or as a shell's background job, the suite would hand SIGHUP or
# SIGINT ignored to every process it starts, and the tests that stop runs with them
# would wait for runs that never stop. Processes started from here get the defaults.
for _sig, _handler in ((signal.SIGHUP, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _handler)


def pytest_configure(config):
    config.addinivalue_line('markers', 'nohelper: the test does not need a built helper')


@pytest.fixture(scope='session')
def collections_root(tmp_path_factory):
    """A collections tree whose hostlock.core is the repo's ansible/ directory."""
    root = tmp_path_factory.mktemp('collections')
    ns = root / 'ansible_collections' / 'hostlock'
    ns.mkdir(parents=True)
    (ns / 'core').symlink_to(REPO / 'ansible')
    return root


class Env:
    """One test's private lock dir, runtime dir, inventory and environment."""

    def __init__(self, tmp: Path, collections_root: Path):
        self.tmp = tmp
        self.lock_dir = tmp / 'locks'
        self.runtime_dir = tmp / 'run'
        self.out = tmp / 'out'
        for d in (self.lock_dir, self.runtime_dir, self.out):
            d.mkdir(mode=0o700)
        self.helper = 'node %s' % CLI
        self.inventory = tmp / 'hosts.ini'
        self.inventory.write_text(
            '[all]\n'
            + ''.join(
                '%s ansible_connection=local ansible_python_interpreter=%s\n' % (h, sys.executable) for h in HOSTS
            )
        )
        home = tmp / 'ansible-home'
        home.mkdir()
        (tmp / 'ansible.cfg').write_text('[defaults]\n')
        self.vars = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(collections_root),
            ANSIBLE_HOME=str(home),
            ANSIBLE_LOCAL_TEMP=str(home / 'tmp'),
            ANSIBLE_NOCOLOR='1',
            ANSIBLE_RETRY_FILES_ENABLED='0',
            ANSIBLE_HOST_KEY_CHECKING='0',
            ANSIBLE_DEPRECATION_WARNINGS='0',
            ANSIBLE_STDOUT_CALLBACK='default',
            ANSIBLE_CONFIG=str(tmp / 'ansible.cfg'),
            ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / 'callbacks'),
            ANSIBLE_CALLBACKS_ENABLED='record',
            HOSTLOCK_HELPER=self.helper,
            HOSTLOCK_DIR=str(self.lock_dir),
            HOSTLOCK_RUNTIME_DIR=str(self.runtime_dir),
            PATH=str(VENV_BIN) + os.pathsep + os.environ.get('PATH', ''),
        )
        self.vars.pop('LOG_LEVEL', None)
        self._procs: list[subprocess.Popen] = []

    def playbook(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(textwrap.dedent(text))
        return path

    def start(self, playbook: Path, *args: str, env: dict | None = None, limit: str | None = None, tag: str = 'run'):
        env = dict(env or {}, HOSTLOCK_TEST_RECORD=str(self.out / ('record-%s.jsonl' % tag)))
        cmd = [
            str(VENV_BIN / 'ansible-playbook'),
            '-i',
            str(self.inventory),
            str(playbook),
            '-e',
            'out=%s' % self.out,
            '-e',
            'journal_cli=%s' % JOURNAL_CLI,
            *args,
        ]
        if limit:
            cmd += ['--limit', limit]
        proc = subprocess.Popen(
            cmd,
            env=dict(self.vars, **(env or {})),
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._procs.append(proc)
        return proc

    def run(
        self,
        playbook: Path,
        *args: str,
        env: dict | None = None,
        limit: str | None = None,
        tag: str = 'run',
        timeout: float = 90,
    ):
        proc = self.start(playbook, *args, env=env, limit=limit, tag=tag)
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out

    def records(self, tag: str = 'run'):
        path = self.out / ('record-%s.jsonl' % tag)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def record(self, tag: str, task: str, host: str = 'h1'):
        """The recorded result of one task on one host."""
        found = [r for r in self.records(tag) if r['task'] == task and r['host'] == host]
        assert found, 'no result for task %r on %s in run %s: %s' % (task, host, tag, self.records(tag))
        return found[-1]

    def wait_for_file(self, path: Path, timeout: float = 30, proc: subprocess.Popen | None = None):
        deadline = time.monotonic() + timeout
        while not path.exists():
            if proc is not None and proc.poll() is not None:
                raise AssertionError('playbook ended before %s appeared:\n%s' % (path, proc.stdout.read()))
            if time.monotonic() > deadline:
                raise AssertionError('%s did not appear within %ss' % (path, timeout))
            time.sleep(0.05)

    def cli(self, *args: str, timeout: float = 30):
        return subprocess.run(['node', str(CLI), *args], env=self.vars, capture_output=True, text=True, timeout=timeout)

    def cleanup(self):
        (self.out / 'go').touch()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except Exception:
                pass


@pytest.fixture
def env(request, tmp_path, collections_root):
    if not CLI.exists() and request.node.get_closest_marker('nohelper') is None:
        pytest.fail('%s is missing: run `make build` first' % CLI)
    e = Env(tmp_path, collections_root)
    yield e
    e.cleanup()


def journal_sections(path: Path) -> dict[str, jl.Section]:
    """{run: its section} from a journal written by `journal_cli.py section --run WHO`."""
    return {s.run: s for s in jl.sections(jl.load(path))}


def overlaps(spans: dict[str, jl.Section]):
    """The pairs of sections that were inside at the same time."""
    return jl.overlapping_pairs(sorted(spans.values(), key=lambda s: s.start), lambda a, b: True)


# A run that takes the lock "x" and keeps it until the test touches out/go (or kills it).
HOLDER = """
- name: holder play
  hosts: h1
  gather_facts: false
  tasks:
    - name: take x
      hostlock.core.lock:
        name: x
    - name: held
      ansible.builtin.file:
        path: "{{ out }}/held"
        state: touch
    - name: wait for go
      ansible.builtin.wait_for:
        path: "{{ out }}/go"
        timeout: 60
"""

# A run that only tries the host's lock (never waits).
TRY_ONLY = """
- hosts: h1
  gather_facts: false
  tasks:
    - name: try
      hostlock.core.lock:
        state: try
"""
