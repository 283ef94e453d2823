// The journal replay (test/journal.ts) can fail, and it agrees with
// molecule/shared/journal.py on the same journals: the shared samples in
// test/fixtures/journals, and a journal written here and checked there.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { checkJournal, checkTokens, journalAppend, stressEvent } from './journal';
import { FIXTURES, JOURNAL_PY, tempDir } from './rpc';

// Journal lines of lock "ctr" from compact specs: [ev, pid, mode, value?, point?].
type Spec = [string, number, 'x' | 's', number?, string?];
function lines(...specs: Spec[]): string {
  const n = new Map<number, number>();
  return specs
    .map(([ev, pid, m, value, point], i) => {
      if (ev === 'enter') n.set(pid, (n.get(pid) ?? 0) + 1);
      const id = `${pid}-${n.get(pid) ?? 0}`;
      const mode = m === 's' ? 'shared' : 'exclusive';
      return JSON.stringify({ ev, id, pid, lock_name: 'ctr', mode, value, point, t: i, wall: i });
    })
    .join('\n');
}

describe('journal replay', { timeout: 30000 }, () => {
  test('rejects two writers inside, a lost update, a writer beside a reader; accepts kills and readers together', () => {
    const both = lines(['enter', 1, 'x', 0], ['enter', 2, 'x', 0], ['exit', 1, 'x', 1], ['exit', 2, 'x', 1]);
    assert.throws(() => checkJournal(both, 1), /entered exclusive while writer 1 inside/);
    const lost = lines(['enter', 1, 'x', 0], ['exit', 1, 'x', 1], ['enter', 2, 'x', 0], ['exit', 2, 'x', 1]);
    assert.throws(() => checkJournal(lost, 1), /lost update/);
    const killed = lines(
      ['enter', 1, 'x', 0],
      ['abort', 1, 'x', undefined, 'after-write'],
      ['enter', 2, 'x', 1],
      ['exit', 2, 'x', 2],
    );
    assert.equal(checkJournal(killed, 2).kills, 1);
    const writerBesideReader = lines(
      ['enter', 1, 's', 0],
      ['enter', 2, 'x', 0],
      ['exit', 2, 'x', 1],
      ['exit', 1, 's', 1],
    );
    assert.throws(() => checkJournal(writerBesideReader, 1), /entered exclusive while reader 1 inside/);
    const readerBesideWriter = lines(
      ['enter', 2, 'x', 0],
      ['enter', 1, 's', 0],
      ['exit', 2, 'x', 1],
      ['exit', 1, 's', 1],
    );
    assert.throws(() => checkJournal(readerBesideWriter, 1), /entered shared while writer 2 inside/);
    const readers = lines(
      ['enter', 1, 's', 0],
      ['enter', 2, 's', 0],
      ['exit', 1, 's', 0],
      ['exit', 2, 's', 0],
      ['enter', 3, 'x', 0],
      ['exit', 3, 'x', 1],
    );
    assert.equal(checkJournal(readers, 1).readSections, 2);
  });

  // Python's side of the same samples is test/python/test_journal.py.
  for (const name of readdirSync(join(FIXTURES, 'journals')).filter((f) => f.endsWith('.jsonl'))) {
    test(`shared sample ${name}: ${name.startsWith('good-') ? 'accepted' : 'rejected'}`, () => {
      const text = readFileSync(join(FIXTURES, 'journals', name), 'utf8');
      const final = Math.max(
        0,
        ...text
          .split('\n')
          .filter(Boolean)
          .map((l) => Number(JSON.parse(l).value)),
      );
      if (name.startsWith('good-')) checkJournal(text, final);
      else assert.throws(() => checkJournal(text, final), /entered .* while .* inside/);
    });
  }

  test('token check: rejects a writer not above earlier grants, a token granted twice, a reader below the last writer', () => {
    const j = (...events: Array<[string, string, 'exclusive' | 'shared', number?]>) =>
      events
        .map(([ev, id, mode, token]) => JSON.stringify({ ev, id, pid: 1, lock_name: 'ctr', mode, wall: 0, token }))
        .join('\n');
    assert.throws(
      () => checkTokens(j(['enter', 'a', 'exclusive', 5], ['exit', 'a', 'exclusive'], ['enter', 'b', 'exclusive', 4])),
      /not above 5/,
    );
    assert.throws(() => checkTokens(j(['enter', 'a', 'shared', 5], ['enter', 'b', 'shared', 5])), /granted twice/);
    assert.throws(
      () => checkTokens(j(['enter', 'a', 'exclusive', 7], ['exit', 'a', 'exclusive'], ['enter', 'b', 'shared', 6])),
      /reader's token 6/,
    );
    assert.deepEqual(
      checkTokens(
        j(
          ['enter', 'a', 'shared', 2],
          ['enter', 'b', 'shared', 1],
          ['exit', 'a', 'shared'],
          ['exit', 'b', 'shared'],
          ['enter', 'c', 'exclusive', 3],
        ),
      ),
      { max: 3, count: 3 },
    );
  });

  test("a journal written here passes journal.py's exclusive check, and fails it once two sections overlap", () => {
    const t = tempDir('journal');
    try {
      const journal = join(t.dir, 'journal.jsonl');
      writeFileSync(journal, '');
      journalAppend(journal, stressEvent('enter', 'a', { mode: 'shared', value: 0 }));
      journalAppend(journal, stressEvent('enter', 'b', { mode: 'shared', value: 0 }));
      journalAppend(journal, stressEvent('exit', 'a', { mode: 'shared', value: 0 }));
      journalAppend(journal, stressEvent('exit', 'b', { mode: 'shared', value: 0 }));
      journalAppend(journal, stressEvent('enter', 'c', { value: 0 }));
      journalAppend(journal, stressEvent('exit', 'c', { value: 1 }));
      checkJournal(readFileSync(journal, 'utf8'), 1);
      const check = () =>
        spawnSync('python3', [join(JOURNAL_PY, 'journal_cli.py'), 'check', 'exclusive', journal], {
          encoding: 'utf8',
          timeout: 20000,
        });
      const ok = check();
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stdout, /^ok exclusive: 3 sections under 1 locks/);
      journalAppend(journal, stressEvent('enter', 'd', { value: 1 }));
      journalAppend(journal, stressEvent('enter', 'e', { value: 1 }));
      journalAppend(journal, stressEvent('exit', 'd', { value: 2 }));
      journalAppend(journal, stressEvent('exit', 'e', { value: 2 }));
      assert.throws(() => checkJournal(readFileSync(journal, 'utf8'), 2), /entered exclusive while writer/);
      const bad = check();
      assert.equal(bad.status, 1, bad.stdout);
      assert.match(bad.stderr, /FAILED exclusive: overlapping sections under one lock/);
    } finally {
      t.cleanup();
    }
  });
});
