"""The journal's command line, for playbooks and verify steps.

  journal_cli.py section ...           a critical section run by a playbook task
  journal_cli.py note ...              append a free-form event
  journal_cli.py check NAME JOURNAL    a verify step (exit 1 on failure)

The format and the checks live in journal.py, next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from journal import CHECKS, CheckFailed, append, count_entered, load, pid_alive


def run_section(args: argparse.Namespace) -> int:
    """Enter, stay `hold` seconds (or until a gate), leave: all stamped.

    If the run that started us dies (HL_RUN_PID, set by launch.py), the section
    ends with an `abort` stamp instead of outliving the run: a SIGKILLed run's
    modules would otherwise keep running as orphans and muddy the journal.
    """
    lock = json.loads(args.lock_json) if args.lock_json else None
    if isinstance(lock, dict):
        lock = {
            k: lock.get(k) for k in ('acquired', 'changed', 'waited', 'mode', 'holders', 'name', 'msg') if k in lock
        }
    base = {
        'id': uuid.uuid4().hex[:12],
        'run': args.run,
        'host': args.host,
        'sec': args.sec,
        'lock_name': args.lock_name,
        'mode': args.mode,
        'pid': os.getpid(),
    }
    append(args.journal, {**base, 'ev': 'enter', 'lock': lock})
    run_pid = int(os.environ.get('HL_RUN_PID') or 0)
    deadline = time.monotonic() + args.hold
    gate_deadline = time.monotonic() + args.gate_timeout
    while True:
        now = time.monotonic()
        if run_pid and not pid_alive(run_pid):
            append(args.journal, {**base, 'ev': 'abort'})
            return 3
        if args.until_file:
            if Path(args.until_file).exists() and now >= deadline:
                break
        elif args.until_entered:
            if count_entered(args.journal, args.entered_sec or args.sec) >= args.until_entered and now >= deadline:
                break
        elif now >= deadline:
            break
        if (args.until_file or args.until_entered) and now >= gate_deadline:
            append(args.journal, {**base, 'ev': 'exit', 'gate': 'timeout'})
            return 4
        time.sleep(0.02)
    append(args.journal, {**base, 'ev': 'exit'})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='journal_cli.py', description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest='cmd', required=True)

    s = sub.add_parser('section', help='stamp enter, stay, stamp exit')
    s.add_argument('--journal', required=True)
    s.add_argument('--run', required=True)
    s.add_argument('--host', required=True)
    s.add_argument('--sec', default='host', help='section kind (host, cluster, work...)')
    s.add_argument('--lock-name', default=None, help='lock guarding it; none for unguarded work')
    s.add_argument('--mode', default='exclusive', choices=['exclusive', 'shared'])
    s.add_argument('--hold', type=float, default=0.5, help='seconds inside (at least)')
    s.add_argument('--lock-json', default=None, help='the registered result of the lock task')
    s.add_argument('--until-file', default=None, help='stay until this file exists')
    s.add_argument('--until-entered', type=int, default=0, help='stay until N sections of this kind (--sec) entered')
    s.add_argument('--entered-sec', default=None, help='count sections of this kind for --until-entered instead')
    s.add_argument('--gate-timeout', type=float, default=60.0)

    n = sub.add_parser('note', help='append a free-form event')
    n.add_argument('--journal', required=True)
    n.add_argument('--kind', required=True)
    n.add_argument('--json', default='{}', help='fields to add (a JSON object)')

    c = sub.add_parser('check', help='verify a property of the journal; exit 1 if it does not hold')
    c.add_argument('name', choices=sorted(CHECKS))
    c.add_argument('journal')
    c.add_argument('--sec', default=None)
    c.add_argument('--other', default='work')
    c.add_argument('--runs', type=int, default=0)
    c.add_argument('--hosts', type=int, default=0)
    c.add_argument('--per-host', type=int, default=1)
    c.add_argument('--holder', default=None)
    c.add_argument('--waiter', default=None)
    c.add_argument('--killed', default=None)
    c.add_argument('--timeout', type=float, default=0.0)
    c.add_argument('--limit', type=float, default=2.0)
    c.add_argument('--slots', type=int, default=1)

    a = p.parse_args(argv)
    if a.cmd == 'section':
        return run_section(a)
    if a.cmd == 'note':
        append(a.journal, {'ev': 'note', 'kind': a.kind, **json.loads(a.json)})
        return 0
    ev = load(a.journal)
    try:
        msg = CHECKS[a.name](ev, a)
    except CheckFailed as exc:
        sys.stderr.write(f'FAILED {a.name}: {exc}\n')
        return 1
    sys.stdout.write(f'ok {a.name}: {msg}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
