"""crash scenario: SIGKILL a run inside its section; the waiting run must get the lock.

  crash.py converge  --inventory I --out D --journal J --lock-dir L
  crash.py check-status --journal J --lock-dir L

converge: run `killed` takes web1 and stays in its section; run `waiter`
starts and blocks on web1 (seen by its `waiting` line); then `killed`'s
ansible-playbook gets SIGKILL. `hostlock status` is polled until web1 is held
by `waiter`, and that moment is journaled as `acquired-seen`.
check-status: afterwards nothing is held, and the agent of the killed run is gone.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'shared'))
import journal as jl  # noqa: E402 -- imported after the sys.path set-up above
from launch import Run, entered, holder_pids, hostlock_status, prepare_out, wait_journal  # noqa: E402 -- imported after the sys.path set-up above

HOST = 'web1'


def converge(a) -> int:
    prepare_out(a.out, a.journal)
    common = dict(inventory=a.inventory, journal=a.journal, out_dir=a.out, args=['--limit', HOST])
    extra = {'lock_dir': a.lock_dir, 'shared_dir': str(HERE.parent / 'shared')}
    killed = Run('killed', str(HERE / 'hold.yml'), extra_vars={**extra, 'hold': 300}, **common).start()
    try:
        wait_journal(a.journal, entered('killed'), 120, 'section entered by the run to be killed')
        waiter = Run('waiter', str(HERE / 'hold.yml'), extra_vars={**extra, 'hold': 0.3}, **common).start()
        line = waiter.wait_output(r'(?i)\bwaiting\b', 120)
        if line is None:
            raise RuntimeError('the waiting run never reported that it waits:\n' + waiter.output())
        time.sleep(1.0)  # let it wait a while, so the wait (not the first try) is what the kill ends
        before = hostlock_status(a.lock_dir)
        agents = sorted(
            {
                h.get('helper_pid')
                for lk in before['locks']
                for h in lk.get('holders') or []
                if h.get('pid') == killed.pid and h.get('helper_pid')
            }
        )
        jl.append(a.journal, {'ev': 'note', 'kind': 'status-before-kill', 'status': before, 'agents': agents})
        jl.append(a.journal, {'ev': 'note', 'kind': 'kill', 'run': 'killed', 'pid': killed.pid})
        killed.kill(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while waiter.pid not in holder_pids(hostlock_status(a.lock_dir), HOST):
            if time.monotonic() > deadline or waiter.proc.poll() is not None:
                raise RuntimeError(f'{HOST} never showed the waiting run (pid {waiter.pid}) as holder')
            time.sleep(0.05)
        jl.append(a.journal, {'ev': 'note', 'kind': 'acquired-seen', 'run': 'waiter', 'pid': waiter.pid})
        killed.wait(30)
        rc = waiter.wait(120)
        print(f'killed run exit {killed.proc.returncode}, waiting run exit {rc}')
        if rc != 0:
            print(waiter.output())
        return 0
    finally:
        for r in [killed] + ([waiter] if 'waiter' in locals() else []):
            if r.proc and r.proc.poll() is None:
                r.kill()


def check_status(a) -> int:
    status = hostlock_status(a.lock_dir)
    held = [(lk['name'], lk.get('holders')) for lk in status.get('locks', []) if lk.get('held') or lk.get('holders')]
    if held:
        print(f'FAILED: stale holders after the runs ended: {json.dumps(held)}', file=sys.stderr)
        return 1
    agents = jl.notes(jl.load(a.journal), 'status-before-kill')[0]['agents']
    alive = [p for p in agents if jl.pid_alive(p)]
    if not agents or alive:
        print(
            f'FAILED: agent of the killed run {"unknown" if not agents else "still alive: %s" % alive}', file=sys.stderr
        )
        return 1
    print(f"ok: {len(status.get('locks', []))} lock(s) in {a.lock_dir}, none held; killed run's agent {agents} gone")
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('cmd', choices=['converge', 'check-status'])
    p.add_argument('--inventory')
    p.add_argument('--out')
    p.add_argument('--journal', required=True)
    p.add_argument('--lock-dir', required=True)
    a = p.parse_args()
    return converge(a) if a.cmd == 'converge' else check_status(a)


if __name__ == '__main__':
    sys.exit(main())
