"""Start real ansible-playbook runs side by side and watch them.

Each run gets an id (r1, r2, ...), its own log file, and the extra vars
`run_id` and `journal`; its output is streamed line by line, prefixed with the
run id, so `waiting` lines of blocked runs show as they happen. The run's
ansible-playbook PID is exported to it as HL_RUN_PID (the shell that starts it
exec()s, keeping the PID), so its critical sections can tell when it died.

CLI: start N copies of one playbook at the same moment, wait for all, exit 1
unless every run exited with the expected code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import journal as jl

_print_lock = threading.Lock()


def echo(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line if line.endswith('\n') else line + '\n')
        sys.stdout.flush()


class Run:
    """One ansible-playbook process."""

    def __init__(
        self,
        run_id: str,
        playbook: str,
        *,
        inventory: str,
        journal: str,
        out_dir: str,
        extra_vars: dict | None = None,
        args: list[str] | None = None,
        show: str | None = '',
        prefix: str | None = None,
        env: dict | None = None,
    ):
        self.id = run_id
        self.playbook = str(Path(playbook).resolve())
        self.inventory = inventory
        self.journal = journal
        self.log_path = Path(out_dir) / f'{run_id}.log'
        self.extra_vars = {'run_id': run_id, 'journal': journal, **(extra_vars or {})}
        self.args = args or []
        self.env = env or {}
        self.show = re.compile(show) if show else None  # None: show nothing; "" shows everything
        self.show_all = show == ''
        self.prefix = prefix if prefix is not None else f'[{run_id}] '
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Run:
        vars_file = self.log_path.with_suffix('.vars.json')
        vars_file.write_text(json.dumps(self.extra_vars))
        cmd = ['ansible-playbook', '-i', self.inventory, '-e', f'@{vars_file}', *self.args, self.playbook]
        env = dict(os.environ, PYTHONUNBUFFERED='1', ANSIBLE_NOCOLOR='1', **self.env)
        env.pop('ANSIBLE_FORCE_COLOR', None)
        # `exec` keeps the shell's PID, so HL_RUN_PID is ansible-playbook's own PID.
        self.proc = subprocess.Popen(
            ['/bin/sh', '-c', 'HL_RUN_PID=$$; export HL_RUN_PID; exec "$@"', 'sh', *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            bufsize=1,
        )
        jl.append(self.journal, {'ev': 'run-start', 'run': self.id, 'pid': self.proc.pid, 'playbook': self.playbook})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        with open(self.log_path, 'w') as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
                if line.strip() and (self.show_all or (self.show and self.show.search(line))):
                    echo(self.prefix + line.rstrip('\n'))

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        if self._reader:
            self._reader.join()
        jl.append(self.journal, {'ev': 'run-end', 'run': self.id, 'rc': rc})
        return rc

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait_output(self, pattern: str, timeout: float) -> str | None:
        """Block until a line of this run's output matches; None after timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if rx.search(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def output(self) -> str:
        return ''.join(self.lines)


def wait_journal(journal: str, pred, timeout: float, what: str) -> dict:
    """Poll the journal until an event satisfies pred; raise after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in jl.load(journal):
            if pred(e):
                return e
        time.sleep(0.05)
    raise TimeoutError(f'no {what} in {journal} after {timeout}s')


def entered(run_id: str, sec: str | None = None):
    return lambda e: e.get('ev') == 'enter' and e.get('run') == run_id and (sec is None or e.get('sec') == sec)


def hostlock_status(lock_dir: str) -> dict:
    """`hostlock status --dir D --json`, through the same helper the runs use."""
    default = f'node {Path(__file__).resolve().parents[2] / "dist" / "cli.js"}'
    helper = shlex.split(os.environ.get('HOSTLOCK_HELPER') or default)
    out = subprocess.run([*helper, 'status', '--dir', lock_dir, '--json'], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f'hostlock status failed ({out.returncode}): {out.stderr.strip()}')
    return json.loads(out.stdout)


def holder_pids(status: dict, name: str) -> list[int]:
    return [h.get('pid') for lk in status.get('locks', []) if lk.get('name') == name for h in lk.get('holders') or []]


def prepare_out(out_dir: str, journal: str) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(journal).unlink(missing_ok=True)


def parse_vars(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        k, _, v = p.partition('=')
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def controller_env(out_dir: str, n: int) -> dict:
    """A simulated controller: its own name in holder records and its own agents."""
    runtime = Path(out_dir) / f'ctl-{n}'
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {'HOSTLOCK_CONTROLLER': f'ctl-{n}', 'HOSTLOCK_RUNTIME_DIR': str(runtime)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='launch.py', description=__doc__.splitlines()[0])
    p.add_argument('playbook')
    p.add_argument('--runs', type=int, default=4)
    p.add_argument('--inventory', '-i', required=True)
    p.add_argument('--out', required=True, help='directory for run logs')
    p.add_argument('--journal', required=True)
    p.add_argument('--var', '-e', action='append', default=[], help='extra var k=v (v parsed as JSON if it can be)')
    p.add_argument('--show', default='(?i)waiting|fatal|failed!|error', help="regex of output lines to echo ('' = all)")
    p.add_argument('--expect-rc', type=int, default=0)
    p.add_argument('--timeout', type=float, default=300)
    p.add_argument(
        '--controllers',
        type=int,
        default=1,
        help='simulate N controllers: run i is on controller ctl-(i mod N + 1), with its own runtime directory',
    )
    a = p.parse_args(argv)

    prepare_out(a.out, a.journal)
    extra = parse_vars(a.var)
    runs = [
        Run(
            f'r{i + 1}',
            a.playbook,
            inventory=a.inventory,
            journal=a.journal,
            out_dir=a.out,
            extra_vars={**extra, 'run_index': i, 'runs': a.runs},
            show=a.show,
            env=controller_env(a.out, i % a.controllers + 1) if a.controllers > 1 else None,
        )
        for i in range(a.runs)
    ]
    t0 = time.monotonic()
    for r in runs:  # back to back: "the same moment" up to fork/exec time
        r.start()
        echo(f'[{r.id}] started pid {r.pid}: ansible-playbook {Path(a.playbook).name}')
    bad = {}
    for r in runs:
        try:
            rc = r.wait(max(1.0, a.timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            r.kill()
            rc = r.wait()
            bad[r.id] = 'timeout'
        echo(f'[{r.id}] exited {rc} after {time.monotonic() - t0:.1f}s (log {r.log_path})')
        if rc != a.expect_rc:
            bad.setdefault(r.id, rc)
    if bad:
        for r in runs:
            if r.id in bad:
                echo(f'----- {r.id} output (exit {bad[r.id]}) -----\n{r.output()}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
