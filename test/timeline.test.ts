// The timeline draws what the history means: a release stamped just after the
// grant it enabled still ends its hold, and only a hold that no record ends is
// drawn as having no release.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { HistoryRecord } from '../src/store/types';
import { bars } from '../src/cli/commands/timeline/model';
import { cli, startServe, tempDir } from './rpc';

const at = (ms: number) => new Date(Date.UTC(2026, 0, 1, 12, 0, 40) + ms).toISOString();

function rec(ms: number, event: string, run: string, token: number, extra: Partial<HistoryRecord> = {}): HistoryRecord {
  return {
    t: at(ms),
    event,
    name: 'x',
    path: '/locks/x.lock',
    mode: 'exclusive',
    token,
    run,
    ...extra,
  } as HistoryRecord;
}

// Three runs in turn; each release is stamped a millisecond after the next grant.
const handOffs: HistoryRecord[] = [
  rec(0, 'grant', 'r1', 1),
  rec(6075, 'grant', 'r2', 2),
  rec(6076, 'release', 'r1', 1),
  rec(8000, 'grant', 'r3', 3),
  rec(8001, 'release', 'r2', 2),
  rec(9000, 'release', 'r3', 3),
];

describe('timeline', { timeout: 60000 }, () => {
  test('a release recorded just after the next grant still ends its hold', () => {
    const holds = bars(handOffs, Date.parse(at(10000))).filter((b) => b.kind === 'hold');
    assert.deepEqual(
      holds.map((b) => [b.run, b.open]),
      [
        ['r1', false],
        ['r2', false],
        ['r3', false],
      ],
    );
    // Each hold ends where the next begins: the bars never overlap.
    assert.equal(holds[0]!.end, Date.parse(at(6075)));
    assert.equal(holds[1]!.end, Date.parse(at(8000)));
  });

  test('a holder that left no release is still drawn so', () => {
    const killed = [rec(0, 'grant', 'r1', 1), rec(5000, 'grant', 'r2', 2), rec(6000, 'release', 'r2', 2)];
    const holds = bars(killed, Date.parse(at(10000))).filter((b) => b.kind === 'hold');
    assert.deepEqual(
      holds.map((b) => [b.run, b.open, b.end]),
      [
        ['r1', true, Date.parse(at(5000))],
        ['r2', false, Date.parse(at(6000))],
      ],
    );
  });

  test('from a history file: no hold that was released is marked unreleased', () => {
    const t = tempDir('tl');
    try {
      mkdirSync(join(t.dir, '.history'));
      const lines = handOffs.map((r) => JSON.stringify({ ...r, path: join(t.dir, 'x.lock') }));
      writeFileSync(join(t.dir, '.history', 'journal'), lines.join('\n') + '\n');
      const svg = join(t.dir, 'tl.svg');
      const res = cli(['timeline', '--dir', t.dir, '--svg', svg]);
      assert.equal(res.status, 0, res.stderr);
      const drawing = readFileSync(svg, 'utf8');
      assert.equal((drawing.match(/<title>r\d held x/g) ?? []).length, 3, drawing);
      assert.doesNotMatch(drawing, /no release recorded/);
      assert.doesNotMatch(drawing, /fill-opacity/);
    } finally {
      t.cleanup();
    }
  });

  test('a real contended sequence: every released hold is drawn as released', async () => {
    const t = tempDir('tl');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const helpers = [startServe(env), startServe(env), startServe(env)];
    try {
      for (let round = 0; round < 5; round++) {
        const first = await helpers[0]!.rpc.call('acquire', { name: 'x', owner: { run: 'a' } });
        // The others queue behind it; each release hands the lock straight to the next.
        const rest = helpers.slice(1).map(async (h, i) => {
          const got = await h.rpc.call('acquire', { name: 'x', owner: { run: `w${i}` } });
          await h.rpc.call('release', { handle: got.handle });
        });
        await new Promise((r) => setTimeout(r, 50));
        await helpers[0]!.rpc.call('release', { handle: first.handle });
        await Promise.all(rest);
      }
    } finally {
      await Promise.all(helpers.map((h) => h.close()));
    }
    try {
      const svg = join(t.dir, 'tl.svg');
      const res = cli(['timeline', '--svg', svg], env);
      assert.equal(res.status, 0, res.stderr);
      const drawing = readFileSync(svg, 'utf8');
      assert.equal((drawing.match(/<title>(a|w\d) held x/g) ?? []).length, 15, drawing);
      assert.doesNotMatch(drawing, /no release recorded/);
    } finally {
      t.cleanup();
    }
  });
});
