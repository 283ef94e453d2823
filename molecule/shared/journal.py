"""The journal of a concurrency test: who was inside which section, and when.

Every process that takes part (launchers, critical sections, action plugins,
stress workers) appends one JSON object per line to a shared file:

  ev        enter | exit | abort (a section), note, run-start | run-end
  t         CLOCK_MONOTONIC nanoseconds, shared by every process on one Linux
            machine, so stamps written by different runs compare directly
  wall      wall-clock nanoseconds, for people
  id        pairs a section's enter with its exit or abort
  run, host, sec, lock_name, mode, pid   who was inside what, under which lock
            (mode exclusive or shared; no lock_name: unguarded work)

Stress journals (test/journal.ts) add the counter `value` a section read or
wrote and may lack `t` where the writer has no monotonic clock (bash); they
are replayed in line order, which is event order since every line is
written under the lock.

This module is the format (append, load), the reading of sections out of it
and the checks; journal_cli.py is the command line the playbooks call, and
test/journal.ts writes and checks the same format from TypeScript.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------- writing


def stamp() -> dict:
    return {'t': time.monotonic_ns(), 'wall': time.time_ns()}


def append(journal: str | os.PathLike, event: dict) -> dict:
    """Append one event; a single O_APPEND write keeps lines whole."""
    record = {**stamp(), **event}
    line = (json.dumps(record, sort_keys=True) + '\n').encode()
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return record


# --------------------------------------------------------------------- reading


def load(journal: str | os.PathLike) -> list[dict]:
    try:
        text = Path(journal).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes: its locks are gone.
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != 'Z'


def count_entered(journal: str, sec: str) -> int:
    """Sections of kind `sec` entered so far, read while others append.

    A read beside an append can see the first part of its line: only lines that
    end in a newline are whole, and the last piece is left for the next look.
    """
    try:
        text = Path(journal).read_text()
    except FileNotFoundError:
        return 0
    whole = (json.loads(line) for line in text.split('\n')[:-1] if line.strip())
    return sum(1 for e in whole if e.get('ev') == 'enter' and e.get('sec') == sec)


@dataclass
class Section:
    """One stay inside a section: [start, end) in monotonic ns."""

    id: str
    run: str
    host: str
    sec: str
    lock_name: str | None
    mode: str
    start: int
    end: int | None = None
    how: str | None = None  # "exit", "abort" or None (still inside / lost)
    lock: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def waited(self) -> float:
        return float((self.lock or {}).get('waited') or 0.0)

    def overlaps(self, other: Section) -> bool:
        end_a = self.end if self.end is not None else float('inf')
        end_b = other.end if other.end is not None else float('inf')
        return self.start < end_b and other.start < end_a

    def label(self) -> str:
        return f'{self.run}@{self.host}/{self.sec}'


def sections(events: list[dict]) -> list[Section]:
    by_id: dict[str, Section] = {}
    for e in events:
        if e.get('ev') == 'enter':
            by_id[e['id']] = Section(
                id=e['id'],
                run=e.get('run') or str(e.get('pid')),
                host=e.get('host') or '',
                sec=e.get('sec') or '',
                lock_name=e.get('lock_name'),
                mode=e.get('mode') or 'exclusive',
                start=e['t'],
                lock=e.get('lock'),
            )
        elif e.get('ev') in ('exit', 'abort') and e.get('id') in by_id:
            s = by_id[e['id']]
            s.end, s.how = e['t'], e['ev']
            if e.get('gate'):
                s.extra['gate'] = e['gate']
    return sorted(by_id.values(), key=lambda s: s.start)


def notes(events: list[dict], kind: str | None = None) -> list[dict]:
    return [e for e in events if e.get('ev') == 'note' and (kind is None or e.get('kind') == kind)]


def runs(events: list[dict]) -> dict[str, dict]:
    """run id -> {pid, playbook, start, end, rc} from launch.py's events."""
    out: dict[str, dict] = {}
    for e in events:
        if e.get('ev') == 'run-start':
            out[e['run']] = {'pid': e['pid'], 'playbook': e.get('playbook'), 'start': e['t'], 'end': None, 'rc': None}
        elif e.get('ev') == 'run-end' and e.get('run') in out:
            out[e['run']].update(end=e['t'], rc=e.get('rc'))
    return out


def exclusion_violations(secs: list[Section]) -> list[tuple[Section, Section]]:
    """Pairs under the same lock that were inside together though one was exclusive."""
    bad = []
    locked = [s for s in secs if s.lock_name]
    for i, a in enumerate(locked):
        for b in locked[i + 1 :]:
            if a.lock_name != b.lock_name or not a.overlaps(b):
                continue
            if a.mode == 'shared' and b.mode == 'shared':
                continue
            bad.append((a, b))
    return bad


def overlapping_pairs(secs: list[Section], differ) -> list[tuple[Section, Section]]:
    """Pairs that overlapped in time and for which differ(a, b) is true."""
    out = []
    for i, a in enumerate(secs):
        for b in secs[i + 1 :]:
            if differ(a, b) and a.overlaps(b):
                out.append((a, b))
    return out


def waited_for(sec: Section, secs: list[Section]) -> list[Section]:
    """Sections under the same lock that kept `sec` waiting.

    The wait began `waited` seconds before the section's lock was granted
    (approximately its enter stamp); whoever was inside the same lock in that
    window was in the way.
    """
    if not sec.lock_name or sec.waited <= 0:
        return []
    begin = sec.start - int(sec.waited * 1e9)
    before = [
        o
        for o in secs
        if o is not sec
        and o.lock_name == sec.lock_name
        and o.run != sec.run
        and o.start < sec.start
        and not (o.mode == 'shared' and sec.mode == 'shared')
    ]
    inside = [o for o in before if (o.end or sec.start) > begin]
    # A holder keeps the lock a little after its section (its unlock task);
    # a short wait may fall entirely into that tail of the last one inside.
    return inside or sorted(before, key=lambda o: o.end or 0)[-1:]


# ---------------------------------------------------------------------- checks


class CheckFailed(Exception):
    pass


def _ns(ns: int) -> str:
    return f'{ns / 1e9:.3f}s'


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def _select(secs, sec=None, lock_name=None):
    return [s for s in secs if (sec is None or s.sec == sec) and (lock_name is None or s.lock_name == lock_name)]


def check_complete(ev, a) -> str:
    """Every run finished as expected and was inside `sec` once per host."""
    rs = runs(ev)
    _expect(len(rs) == a.runs, f'expected {a.runs} runs in the journal, found {len(rs)}: {sorted(rs)}')
    failed = {r: v['rc'] for r, v in rs.items() if v['rc'] != 0}
    _expect(not failed, f'runs did not exit 0: {failed}')
    secs = _select(sections(ev), a.sec)
    open_ = [s.label() for s in secs if s.how != 'exit']
    _expect(not open_, f'sections never exited normally: {open_}')
    per = {}
    for s in secs:
        per.setdefault((s.run, s.host), []).append(s)
    hosts = {s.host for s in secs}
    _expect(len(hosts) == a.hosts, f'expected sections on {a.hosts} hosts, found {sorted(hosts)}')
    for r in rs:
        for h in hosts:
            n = len(per.get((r, h), []))
            _expect(n == a.per_host, f'run {r} entered {a.sec!r} on {h} {n} times, expected {a.per_host}')
    return f'{len(rs)} runs exited 0; {len(secs)} {a.sec!r} sections, {a.per_host} per run and host'


def check_once_per_run(ev, a) -> str:
    """Each run entered `sec` exactly once (run_once), and completed it."""
    secs = _select(sections(ev), a.sec)
    per: dict[str, int] = {}
    for s in secs:
        per[s.run] = per.get(s.run, 0) + 1
    _expect(
        len(per) == a.runs and all(n == 1 for n in per.values()),
        f'expected one {a.sec!r} section in each of {a.runs} runs, got {per}',
    )
    open_ = [s.label() for s in secs if s.how != 'exit']
    _expect(not open_, f'sections never exited normally: {open_}')
    return f'{a.runs} runs entered {a.sec!r} once each: ' + ', '.join(s.label() for s in secs)


def check_exclusive(ev, a) -> str:
    """No two holders inside one lock at once, unless both were shared."""
    secs = _select(sections(ev), a.sec)
    _expect(secs, f'no {a.sec!r} sections in the journal')
    bad = exclusion_violations(secs)
    _expect(
        not bad,
        'overlapping sections under one lock: '
        + '; '.join(f'{x.label()} [{_ns(x.start)}..] with {y.label()} [{_ns(y.start)}..]' for x, y in bad[:5]),
    )
    names = sorted({s.lock_name for s in secs if s.lock_name})
    return f'{len(secs)} sections under {len(names)} locks ({", ".join(names)}): never two inside one lock'


def check_at_most(ev, a) -> str:
    """Never more than --slots sections inside one lock at once, and that many at some moment."""
    secs = _select(sections(ev), a.sec)
    _expect(secs, f'no {a.sec!r} sections in the journal')
    most = 0
    for lock in {s.lock_name for s in secs}:
        # Sweep the enters and exits of one lock in time order (an exit before an enter at the same instant).
        edges = sorted(
            [(s.start, 1) for s in secs if s.lock_name == lock]
            + [(s.end if s.end is not None else float('inf'), -1) for s in secs if s.lock_name == lock],
            key=lambda x: (x[0], x[1]),
        )
        inside = 0
        for _, step in edges:
            inside += step
            _expect(inside <= a.slots, f'{inside} sections inside lock {lock!r} at once, more than {a.slots} slots')
            most = max(most, inside)
    _expect(most == a.slots, f'at most {most} sections were inside at once: the {a.slots} slots were never all used')
    return f'{len(secs)} sections, never more than {a.slots} inside one lock, {most} at once'


def check_parallel(ev, a) -> str:
    """Different runs were inside different hosts' sections at the same moment."""
    secs = _select(sections(ev), a.sec)
    gated = [s.label() for s in secs if s.extra.get('gate') == 'timeout']
    _expect(not gated, f'sections gave up waiting for the other runs to get in beside them: {gated}')
    pairs = overlapping_pairs(secs, lambda x, y: x.host != y.host and x.run != y.run)
    _expect(pairs, f'no two {a.sec!r} sections of different hosts and runs overlapped: serialised, not parallel')
    if a.runs:
        latest_start = max(s.start for s in secs)
        earliest_end = min(s.end or latest_start + 1 for s in secs)
        _expect(
            len({s.run for s in secs}) == a.runs and latest_start < earliest_end,
            f'the {a.runs} runs were never all inside {a.sec!r} sections at the same moment',
        )
    x, y = pairs[0]
    return f'{len(pairs)} overlapping pairs of different runs on different hosts, e.g. {x.label()} with {y.label()}'


def check_outside_parallel(ev, a) -> str:
    """Work of one run went on while another run was inside the global section."""
    secs = sections(ev)
    inside = _select(secs, a.sec)
    outside = _select(secs, a.other)
    pairs = [(o, i) for o in outside for i in inside if o.run != i.run and o.overlaps(i)]
    _expect(pairs, f"no {a.other!r} section overlapped another run's {a.sec!r} section")
    same_host = overlapping_pairs(outside, lambda x, y: x.host == y.host and x.run != y.run)
    _expect(same_host, f'no two runs did {a.other!r} on the same host at the same time')
    o, i = pairs[0]
    return (
        f"{len(pairs)} {a.other!r} sections ran during another run's {a.sec!r} section, e.g. "
        f'{o.label()} during {i.label()}; {len(same_host)} same-host pairs of {a.other!r} overlapped'
    )


def check_shared_overlap(ev, a) -> str:
    """All shared holders were inside together; exclusive ones alone."""
    secs = _select(sections(ev), a.sec)
    shared = [s for s in secs if s.mode == 'shared']
    excl = [s for s in secs if s.mode != 'shared']
    _expect(len(shared) >= 2, f'expected several shared sections, found {len(shared)}')
    _expect(excl, 'expected an exclusive section too')
    gated = [s.label() for s in shared if s.extra.get('gate') == 'timeout']
    _expect(not gated, f'shared sections gave up waiting for each other: {gated}')
    latest_start = max(s.start for s in shared)
    earliest_end = min(s.end for s in shared)
    _expect(latest_start < earliest_end, 'the shared sections were never all inside at the same moment')
    bad = [(x, s) for x in excl for s in secs if s is not x and x.overlaps(s)]
    _expect(not bad, 'exclusive section overlapped: ' + '; '.join(f'{x.label()} with {s.label()}' for x, s in bad))
    return f'{len(shared)} shared sections all inside together; {len(excl)} exclusive sections overlapped nothing'


def check_timeout_named(ev, a) -> str:
    """The waiter with a timeout failed, and its message names the holder."""
    rs = runs(ev)
    holder = rs.get(a.holder)
    _expect(holder is not None, f'holder run {a.holder} not in the journal')
    results = [n for n in notes(ev, 'lock-result') if n.get('run') == a.waiter]
    _expect(results, f'waiter run {a.waiter} recorded no lock result')
    res = results[0]['result']
    _expect(res.get('failed') is True, f"waiter's lock task did not fail: {res}")
    _expect(res.get('acquired') is False, f"waiter's result should say acquired: false: {res}")
    msg = str(res.get('msg', ''))
    playbook = os.path.basename(holder['playbook'])
    _expect(
        str(holder['pid']) in msg and playbook in msg,
        f'timeout message should name the holder (pid {holder["pid"]}, {playbook}): {msg!r}',
    )
    waited = float(res.get('waited') or 0)
    _expect(waited >= a.timeout - 0.01, f'waiter gave up after {waited}s, before its timeout {a.timeout}s')
    pids = [h.get('pid') for h in res.get('holders') or []]
    _expect(holder['pid'] in pids, f'holders in the result {pids} do not include the holder run {holder["pid"]}')
    return f'waiter failed after {waited:.2f}s: {msg}'


def check_crash(ev, a) -> str:
    """A killed holder's lock passed to the waiter within the limit."""
    rs = runs(ev)
    killed = rs.get(a.killed)
    waiter = rs.get(a.waiter)
    _expect(killed and waiter, f'runs {a.killed}, {a.waiter} missing from the journal')
    _expect(killed['rc'] == -9, f'run {a.killed} should have died of SIGKILL, rc={killed["rc"]}')
    _expect(waiter['rc'] == 0, f'waiting run {a.waiter} exited {waiter["rc"]}')
    kill = notes(ev, 'kill')
    seen = notes(ev, 'acquired-seen')
    _expect(kill and seen, 'converge recorded no kill / acquired-seen note')
    secs = sections(ev)
    ks = [s for s in secs if s.run == a.killed]
    ws = [s for s in secs if s.run == a.waiter]
    _expect(len(ks) == 1 and ks[0].start < kill[0]['t'], 'the killed run was not inside its section when killed')
    _expect(len(ws) == 1 and ws[0].how == 'exit', f"the waiter's section did not complete: {ws}")
    _expect(ws[0].start > kill[0]['t'], 'the waiter entered before the holder was killed')
    _expect(ws[0].waited > 0.5, f'the waiter should have been waiting when the holder died (waited {ws[0].waited}s)')
    delay = (seen[0]['t'] - kill[0]['t']) / 1e9
    _expect(delay <= a.limit, f'lock reached the waiter {delay:.2f}s after SIGKILL, limit {a.limit}s')
    return f'lock passed to {a.waiter} {delay:.2f}s after SIGKILL of {a.killed} (limit {a.limit}s)'


def check_download_once(ev, a) -> str:
    """cli2's pattern: one download, then every host uploads the finished file."""
    starts = notes(ev, 'download-start')
    ends = notes(ev, 'download-end')
    _expect(len(starts) == 1 and len(ends) == 1, f'expected exactly one download, saw {len(starts)} starts')
    tries = notes(ev, 'try')
    _expect(len(tries) == a.hosts, f'expected {a.hosts} tries, saw {len(tries)}')
    won = [t for t in tries if t['acquired']]
    _expect(
        len(won) == 1 and won[0]['host'] == starts[0]['host'],
        'the one that downloaded must be the one that won the try',
    )
    blocked = notes(ev, 'blocked')
    _expect(
        len(blocked) == a.hosts - 1,
        f'the {a.hosts - 1} others should have found the lock busy and blocked, saw {len(blocked)}',
    )
    _expect(all(b['acquired_after_block'] for b in blocked), 'after block() the lock must count as acquired')
    _expect(all(b['t'] >= ends[0]['t'] for b in blocked), 'a blocked fork got the lock before the download ended')
    ups = notes(ev, 'upload-end')
    _expect(len(ups) == a.hosts, f'expected {a.hosts} uploads, saw {len(ups)}')
    up_starts = notes(ev, 'upload-start')
    early = [u['host'] for u in up_starts if u['t'] < ends[0]['t']]
    _expect(not early, f'uploads started before the download finished: {early}')
    still = [u['host'] for u in up_starts if u['acquired_after_with']]
    _expect(not still, f'the lock still counted as acquired after its with block: {still}')
    bad = [u['host'] for u in ups if u['sha256'] != ends[0]['sha256']]
    _expect(not bad, f'uploaded files differ from the download: {bad}')
    return (
        f'1 download by {starts[0]["host"]}; {len(blocked)} forks blocked; {len(ups)} uploads after it, all identical'
    )


CHECKS = {
    'complete': check_complete,
    'once-per-run': check_once_per_run,
    'exclusive': check_exclusive,
    'parallel': check_parallel,
    'at-most': check_at_most,
    'outside-parallel': check_outside_parallel,
    'shared-overlap': check_shared_overlap,
    'timeout-named': check_timeout_named,
    'crash': check_crash,
    'download-once': check_download_once,
}
