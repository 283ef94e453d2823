"""timeout_and_shared scenario: who gets in while an exclusive run holds the host.

  contend.py --inventory I --out D --journal J --lock-dir L

1. `holder` takes web1 exclusively and stays until gate 1 opens.
2. `waiter` asks for web1 with timeout 1: it must fail, naming the holder.
3. `shared1..3` (shared: true) ask for web1 and wait (each says `waiting`).
   Gate 1 opens, `holder` leaves; all three must then get inside together
   (they stay until gate 2): if shared holders excluded each other, fewer
   than three would ever be inside and converge fails.
4. `excl` asks for web1 while the three are inside and must wait (it says
   `waiting`); gate 2 opens, the shared runs leave, `excl` gets in.
A writer waiting does keep new readers out (the helper's turnstile), so no
shared run is started after `excl`: the test does not depend on that policy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'shared'))
import journal as jl  # noqa: E402 -- imported after the sys.path set-up above
from launch import Run, echo, entered, prepare_out, wait_journal  # noqa: E402 -- imported after the sys.path set-up above

HOST = 'web1'


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('--inventory', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--journal', required=True)
    p.add_argument('--lock-dir', required=True)
    a = p.parse_args()
    prepare_out(a.out, a.journal)
    gate = Path(a.out) / 'holder-may-leave'
    gate2 = Path(a.out) / 'shared-may-leave'
    for g in (gate, gate2):
        g.unlink(missing_ok=True)
    base = {'lock_dir': a.lock_dir, 'shared_dir': str(HERE.parent / 'shared')}

    def run(run_id, **extra):
        return Run(
            run_id,
            str(HERE / 'contend.yml'),
            inventory=a.inventory,
            journal=a.journal,
            out_dir=a.out,
            extra_vars={**base, **extra},
            args=['--limit', HOST],
        ).start()

    started = []

    def must_wait(r):
        if r.wait_output(r'(?i)\bwaiting\b', 120) is None:
            raise RuntimeError(f'run {r.id} never reported waiting:\n{r.output()}')

    try:
        holder = run('holder', sec='hold', until_file=str(gate))
        started.append(holder)
        wait_journal(a.journal, entered('holder'), 120, "holder's section")

        waiter = run('waiter', sec='never', timeout=1, may_time_out=True)
        started.append(waiter)
        echo(f'[waiter] exited {waiter.wait(120)}')

        readers = [run(f'shared{i}', sec='shared', shared=True, until_file=str(gate2)) for i in (1, 2, 3)]
        started += readers
        for r in readers:
            must_wait(r)
        gate.touch()
        deadline = time.monotonic() + 60
        while jl.count_entered(a.journal, 'shared') < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f'the three shared runs were never inside together: {jl.count_entered(a.journal, "shared")} got in'
                )
            time.sleep(0.05)

        writer = run('excl', sec='excl')
        started.append(writer)
        must_wait(writer)
        time.sleep(0.5)
        gate2.touch()
        bad = {}
        for r in [holder] + readers + [writer]:
            rc = r.wait(180)
            echo(f'[{r.id}] exited {rc}')
            if rc != 0:
                bad[r.id] = rc
                echo(r.output())
        return 1 if bad else 0
    finally:
        gate.touch()
        gate2.touch()
        for r in started:
            if r.proc and r.proc.poll() is None:
                r.kill()


if __name__ == '__main__':
    sys.exit(main())
