"""The journal checks can fail: each one rejects a journal that breaks its property.

The molecule scenarios only ever show the checks passing; these show they can fail,
and that the exclusion rule accepts what it must (shared beside shared, one after another).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as ns

import journal as jl
import pytest

pytestmark = pytest.mark.nohelper

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / 'test' / 'fixtures' / 'journals'


def sec(run, host, start, end, sec_='host', lock=None, mode='exclusive', waited=0.0, how='exit', gate=None):
    i = f'{run}-{host}-{sec_}-{start}'
    base = {
        'id': i,
        'run': run,
        'host': host,
        'sec': sec_,
        'lock_name': lock if lock is not None else host,
        'mode': mode,
    }
    ev = [{**base, 'ev': 'enter', 't': int(start * 10**9), 'lock': {'waited': waited}}]
    if end is not None:
        ev.append({**base, 'ev': how, 't': int(end * 10**9), **({'gate': gate} if gate else {})})
    return ev


def run(r, pid, rc=0, pb='/x/p.yml'):
    return [
        {'ev': 'run-start', 'run': r, 'pid': pid, 'playbook': pb, 't': 0},
        {'ev': 'run-end', 'run': r, 'rc': rc, 't': 10**12},
    ]


def note(kind, t, **kw):
    return {'ev': 'note', 'kind': kind, 't': t * 10**9, **kw}


BAD = [
    (
        'at-most',
        sec('r1', 'h1', 0, 3, lock='p') + sec('r2', 'h2', 1, 3, lock='p') + sec('r3', 'h3', 2, 3, lock='p'),
        ns(sec=None, slots=2),
    ),
    ('at-most', sec('r1', 'h1', 0, 1, lock='p') + sec('r2', 'h2', 1, 2, lock='p'), ns(sec=None, slots=2)),
    ('exclusive', sec('r1', 'h1', 0, 2) + sec('r2', 'h1', 1, 3), ns(sec=None)),
    ('exclusive', sec('r1', 'h1', 0, 2, mode='shared') + sec('r2', 'h1', 1, 3), ns(sec=None)),
    ('parallel', sec('r1', 'h1', 0, 1) + sec('r2', 'h2', 1, 2), ns(sec=None, runs=0)),
    ('parallel', sec('r1', 'h1', 0, 5) + sec('r2', 'h2', 1, 2) + sec('r3', 'h3', 3, 4), ns(sec=None, runs=3)),
    (
        'complete',
        run('r1', 1) + run('r2', 2, rc=2) + sec('r1', 'h1', 0, 1) + sec('r2', 'h1', 1, 2),
        ns(sec='host', runs=2, hosts=1, per_host=1),
    ),
    ('complete', run('r1', 1) + sec('r1', 'h1', 0, None), ns(sec='host', runs=1, hosts=1, per_host=1)),
    (
        'once-per-run',
        sec('r1', 'c', 0, 1, sec_='cluster') + sec('r1', 'c', 2, 3, sec_='cluster'),
        ns(sec='cluster', runs=1),
    ),
    (
        'outside-parallel',
        sec('r1', 'c', 0, 1, sec_='cluster', lock='cluster') + sec('r2', 'h1', 2, 3, sec_='work', lock=''),
        ns(sec='cluster', other='work'),
    ),
    (
        'shared-overlap',
        sec('r1', 'h', 0, 1, mode='shared') + sec('r2', 'h', 2, 3, mode='shared') + sec('r3', 'h', 4, 5),
        ns(sec=None),
    ),
    (
        'shared-overlap',
        sec('r1', 'h', 0, 2, mode='shared') + sec('r2', 'h', 1, 3, mode='shared') + sec('r3', 'h', 2.5, 5),
        ns(sec=None),
    ),
    (
        'timeout-named',
        run('holder', 42)
        + run('waiter', 43)
        + [
            note(
                'lock-result',
                1,
                run='waiter',
                result={
                    'failed': True,
                    'acquired': False,
                    'waited': 1.0,
                    'msg': 'timed out; held by someone',
                    'holders': [{'pid': 42}],
                },
            )
        ],
        ns(holder='holder', waiter='waiter', timeout=1.0),
    ),
    (
        'crash',
        run('killed', 1, rc=-9)
        + run('waiter', 2)
        + sec('killed', 'h', 0, 5, how='abort')
        + [note('kill', 4), note('acquired-seen', 7)]
        + sec('waiter', 'h', 7, 8, waited=4.0),
        ns(killed='killed', waiter='waiter', limit=2.0),
    ),
    (
        'download-once',
        [
            note('try', 0, host='a', acquired=True),
            note('try', 0, host='b', acquired=True),
            note('download-start', 0, host='a'),
            note('download-start', 0, host='b'),
            note('download-end', 1, host='a', sha256='x'),
        ],
        ns(hosts=2),
    ),
]


@pytest.mark.parametrize(('name', 'events', 'args'), BAD, ids=[f'{c[0]}-{i}' for i, c in enumerate(BAD)])
def test_check_rejects_a_journal_that_breaks_it(name, events, args):
    with pytest.raises(jl.CheckFailed):
        jl.CHECKS[name](events, args)


def test_exclusive_accepts_shared_together_and_exclusive_in_turn():
    events = (
        sec('r1', 'h', 0, 2, mode='shared')
        + sec('r2', 'h', 1, 3, mode='shared')
        + sec('r3', 'h', 3, 4)
        + sec('r4', 'h', 4, 5)
        + sec('r5', 'other', 0, 5)
    )
    assert 'never two inside one lock' in jl.check_exclusive(events, ns(sec=None))


def test_at_most_accepts_n_inside_and_turns_at_the_same_instant():
    events = sec('r1', 'h', 0, 2, lock='p') + sec('r2', 'h', 1, 3, lock='p') + sec('r3', 'h', 2, 4, lock='p')
    assert 'never more than 2 inside' in jl.check_at_most(events, ns(sec=None, slots=2))


@pytest.mark.parametrize('sample', sorted(SAMPLES.glob('*.jsonl')), ids=lambda p: p.name)
def test_shared_sample_journals(sample):
    """The same samples test/journal.ts is checked against: both checkers agree on them."""
    events = jl.load(sample)
    if sample.name.startswith('good-'):
        jl.check_exclusive(events, ns(sec=None))
    else:
        with pytest.raises(jl.CheckFailed, match='overlapping sections under one lock'):
            jl.check_exclusive(events, ns(sec=None))


def test_cli_section_then_check(tmp_path):
    """The command line the playbooks call writes sections that the checks read."""
    cli = REPO / 'molecule' / 'shared' / 'journal_cli.py'
    journal = tmp_path / 'journal.jsonl'
    common = ['--journal', str(journal), '--lock-name', 'x', '--hold', '0']
    for r in ('r1', 'r2'):
        subprocess.run(
            [sys.executable, str(cli), 'section', '--run', r, '--host', 'h1', *common], check=True, timeout=30
        )
    lock = json.dumps({'acquired': True, 'waited': 0.0})
    subprocess.run(
        [sys.executable, str(cli), 'note', '--journal', str(journal), '--kind', 'k', '--json', lock],
        check=True,
        timeout=30,
    )
    ok = subprocess.run(
        [sys.executable, str(cli), 'check', 'exclusive', str(journal)], capture_output=True, text=True, timeout=30
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith('ok exclusive: 2 sections under 1 locks')
    assert [e['ev'] for e in jl.load(journal)] == ['enter', 'exit', 'enter', 'exit', 'note']


def test_gates_count_only_whole_lines(tmp_path):
    """A gate reads the journal while others append: the first part of a line being written is not counted."""
    journal = tmp_path / 'journal.jsonl'
    jl.append(journal, {'ev': 'enter', 'sec': 'work', 'run': 'r1', 'host': 'h1', 'id': 'a'})
    jl.append(journal, {'ev': 'enter', 'sec': 'work', 'run': 'r2', 'host': 'h1', 'id': 'b'})
    with open(journal, 'a') as f:
        f.write('{"ev": "enter", "sec": "wo')
    assert jl.count_entered(str(journal), 'work') == 2
    assert jl.count_entered(str(tmp_path / 'none.jsonl'), 'work') == 0
