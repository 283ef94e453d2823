"""make demo: concurrent ansible-playbook runs take turns per host.

Starts RUNS runs of demo/deploy.yml at the same moment against HOSTS
inventory names that all live on this machine (ansible_connection: local),
streams the lines in which a run says it is waiting (and errors), then draws
the lock directory's history with `hostlock timeline` (who held which host
when, who waited for whom; on the terminal and as an SVG file) and checks,
from the deploys' own journal, that no two runs were ever inside one host's
critical section at once.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

# journal and launch come from molecule/shared, which demo.sh puts on PYTHONPATH;
# timeline sits next to this script.
import journal as jl
from launch import Run, echo
from timeline import use_colour

HERE = Path(__file__).resolve().parent
SHARED = Path(jl.__file__).resolve().parent


def write_inventory(path: Path, hosts: int) -> list[str]:
    names = [f'node{i + 1}' for i in range(hosts)]
    lines = [
        'all:',
        '  vars:',
        '    ansible_connection: local',
        f'    ansible_python_interpreter: {sys.executable}',
        '  hosts:',
    ]
    lines += [f'    {n}:' for n in names]
    path.write_text('\n'.join(lines) + '\n')
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--runs', type=int, default=4)
    p.add_argument('--hosts', type=int, default=4)
    p.add_argument('--hold', type=float, default=1.5, help="seconds each run stays in a host's section")
    p.add_argument('--stagger', type=float, default=None, help="delay between a run's hosts (default HOLD/2)")
    p.add_argument('--out', default='demo-out')
    a = p.parse_args(argv)
    if not (1 <= a.runs <= 62 and 1 <= a.hosts <= 200 and a.hold >= 0):
        p.error('need 1 <= RUNS <= 62, 1 <= HOSTS <= 200, HOLD >= 0')

    out = Path(a.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / 'runs').mkdir(parents=True)
    (out / 'locks').mkdir(mode=0o700)
    journal = str(out / 'journal.jsonl')
    inventory = out / 'inventory.yml'
    hosts = write_inventory(inventory, a.hosts)
    colour = use_colour()

    echo(
        f'hostlock demo: {a.runs} ansible-playbook runs x {a.hosts} hosts ({", ".join(hosts)}), '
        f'{a.hold:g}s per host and run; locks in {out / "locks"}'
    )
    echo('Each run locks each host, deploys, unlocks. Lines from runs that wait:')
    runs = []
    for i in range(a.runs):
        rid = f'r{i + 1}'
        runs.append(
            Run(
                rid,
                str(HERE / 'deploy.yml'),
                inventory=str(inventory),
                journal=journal,
                out_dir=str(out / 'runs'),
                extra_vars={
                    'lock_dir': str(out / 'locks'),
                    'shared_dir': str(SHARED),
                    'hold': a.hold,
                    'run_index': i,
                    'stagger': a.hold / 2 if a.stagger is None else a.stagger,
                },
                show=r'(?i)hostlock:.*waiting|fatal|error|failed!',
                prefix=f'[{rid}] ',
            )
        )
    t0 = time.monotonic()
    for r in runs:  # back to back: all start within a few milliseconds
        r.start()
    rcs = {}
    for r in runs:
        rcs[r.id] = r.wait()
    echo(f'all {a.runs} runs finished in {time.monotonic() - t0:.1f}s; logs in {out / "runs"}\n')

    # The picture comes from the lock directory's own history, drawn by the
    # same `hostlock timeline` a user runs after an incident: a host is drawn
    # held from its grant to its release, the whole time it was locked.
    pids = ', '.join(f'{r.id} = pid {r.pid}' for r in runs)
    echo(f'Who held each host when (from the history in {out / "locks"}; ansible-playbook {pids}):\n')
    svg = out / 'timeline.svg'
    helper = shlex.split(os.environ.get('HOSTLOCK_HELPER') or 'hostlock')
    width = max(40, min(110, shutil.get_terminal_size((100, 24)).columns - 12))
    env = dict(os.environ, **({'FORCE_COLOR': '1'} if colour else {'NO_COLOR': '1'}))
    drawn = subprocess.run(
        [*helper, 'timeline', '--dir', str(out / 'locks'), '--svg', str(svg), '--width', str(width)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if drawn.returncode == 0:
        echo(drawn.stdout.rstrip('\n').replace(f'SVG timeline: {svg}', '').rstrip('\n'))
    else:
        echo(f'hostlock timeline failed: {drawn.stderr.strip()}')

    # Independent of hostlock: the deploys stamped their own start and end.
    secs = [s for s in jl.sections(jl.load(journal)) if s.sec == 'deploy']
    bad = jl.exclusion_violations(secs)
    par = jl.overlapping_pairs(secs, lambda x, y: x.host != y.host)
    echo('')
    inside = 'never two runs inside one host at once' if not bad else f'{len(bad)} OVERLAPS'
    echo(f'deploys (from their own journal): {inside}; across hosts: {len(par)} pairs of deploys ran at the same time')
    if drawn.returncode == 0:
        echo(f'timeline written to {svg} (hostlock timeline --dir {out / "locks"} --svg {svg.name})')
    failed = {k: v for k, v in rcs.items() if v != 0}
    if failed:
        echo(f'runs that failed: {failed} (see {out / "runs"})')
    return 1 if failed or bad else 0


if __name__ == '__main__':
    sys.exit(main())
