"""timeout_and_shared scenario: who gets in while an exclusive run holds the host.

  contend.py --inventory I --out D --journal J --lock-dir L

1. `holder` takes web1 exclusively and stays until a gate file appears.
2. `waiter` asks for web1 with timeout 1: it must fail, naming the holder.
3. `shared1..3` (shared: true) and `excl` (exclusive) ask for web1 and wait;
   once all four said `waiting`, the gate opens and `holder` leaves.
   Each shared section stays until all three shared runs are inside
   (journal.py --until-entered), so if shared holders could not overlap the
   scenario fails instead of passing by luck.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "shared"))
from launch import Run, echo, entered, prepare_out, wait_journal  # noqa: E402

HOST = "web1"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--inventory", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--lock-dir", required=True)
    a = p.parse_args()
    prepare_out(a.out, a.journal)
    gate = Path(a.out) / "holder-may-leave"
    gate.unlink(missing_ok=True)
    base = {"lock_dir": a.lock_dir, "shared_dir": str(HERE.parent / "shared")}

    def run(run_id, **extra):
        return Run(run_id, str(HERE / "contend.yml"), inventory=a.inventory, journal=a.journal, out_dir=a.out,
                   extra_vars={**base, **extra}, args=["--limit", HOST]).start()

    started = []
    try:
        holder = run("holder", sec="hold", until_file=str(gate))
        started.append(holder)
        wait_journal(a.journal, entered("holder"), 120, "holder's section")

        waiter = run("waiter", sec="never", timeout=1, may_time_out=True)
        started.append(waiter)
        rc = waiter.wait(120)
        echo(f"[waiter] exited {rc}")

        others = [run(f"shared{i}", sec="shared", shared=True, until_entered=3) for i in (1, 2, 3)]
        others.append(run("excl", sec="excl"))
        started += others
        for r in others:
            if r.wait_output(r"(?i)\bwaiting\b", 120) is None:
                raise RuntimeError(f"run {r.id} never reported waiting for the holder:\n{r.output()}")
        time.sleep(0.5)
        gate.touch()
        bad = {}
        for r in [holder] + others:
            rc = r.wait(180)
            echo(f"[{r.id}] exited {rc}")
            if rc != 0:
                bad[r.id] = rc
                echo(r.output())
        return 1 if bad else 0
    finally:
        gate.touch()
        for r in started:
            if r.proc and r.proc.poll() is None:
                r.kill()


if __name__ == "__main__":
    sys.exit(main())
