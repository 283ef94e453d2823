// The timeline draws what the history means: a release stamped just after the
// grant it enabled still ends its hold, and only a hold that no record ends is
// drawn as having no release. Both drawings give a run the same letter and
// colour, say who each run is, and start the axis at the first event.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { HistoryRecord } from '../src/store/types';
import { bars } from '../src/cli/commands/timeline/model';
import { distance } from '../src/cli/commands/timeline/palette';
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

// `runs` runs each taking every lock of `locks` in turn, first come first
// served, as the history of a lock directory records them (times from `t0`).
function contended(runs: number, locks: string[], t0: number): HistoryRecord[] {
  const out: HistoryRecord[] = [];
  let wait = 0;
  for (const [h, lock] of locks.entries()) {
    let free = t0;
    let token = 0;
    const asks = [...Array(runs).keys()].map((i) => ({ i, at: t0 + ((i + h) % runs) * 50 + h * 20 }));
    for (const { i, at: arrive } of asks.sort((a, b) => a.at - b.at)) {
      const who = {
        name: lock,
        path: `/locks/${lock}.lock`,
        mode: 'exclusive' as const,
        run: `r${i + 1}`,
        pid: 5000 + i,
        user: i % 2 ? 'deploy' : 'root',
        controller: `ctl${i % 3}`,
        playbook: `site-${i % 4}.yml`,
        task: `Lock for step ${i % 5}`,
      };
      const grant = Math.max(arrive, free);
      const id = `w${++wait}`;
      if (grant > arrive) out.push({ ...who, t: new Date(arrive).toISOString(), event: 'wait', wait: id });
      token++;
      out.push({
        ...who,
        t: new Date(grant).toISOString(),
        event: 'grant',
        token,
        wait: grant > arrive ? id : undefined,
        waited: (grant - arrive) / 1000,
      });
      free = grant + 300 + ((i * 7 + h) % 4) * 100;
      out.push({ ...who, t: new Date(free).toISOString(), event: 'release', token });
    }
  }
  return out.sort((a, b) => Date.parse(a.t) - Date.parse(b.t));
}

function historyDir(records: HistoryRecord[]): { dir: string; cleanup: () => void } {
  const t = tempDir('tl');
  mkdirSync(join(t.dir, '.history'));
  writeFileSync(join(t.dir, '.history', 'journal'), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return t;
}

// Both drawings of one history: the terminal's text and the SVG's.
function draw(records: HistoryRecord[], ...args: string[]): { text: string; svg: string } {
  const t = historyDir(records);
  try {
    const svg = join(t.dir, 'tl.svg');
    const res = cli(['timeline', '--dir', t.dir, '--svg', svg, '--width', '100', ...args], { NO_COLOR: '1' });
    assert.equal(res.status, 0, res.stderr);
    return { text: res.stdout, svg: readFileSync(svg, 'utf8') };
  } finally {
    t.cleanup();
  }
}

const unescape = (s: string) => s.replace(/&#(\d+);/g, (_, c: string) => String.fromCharCode(+c));

// The SVG's legend: per run, its letter, the colour of its swatch, and its line.
function svgLegend(svg: string): { label: string; colour: string; line: string }[] {
  const re = /<g><rect [^>]*fill="(#[0-9a-f]{6})"[^>]*\/><text [^>]*>([^<]+)<\/text><text [^>]*>([^<]+)<\/text>/g;
  return [...svg.matchAll(re)].map((m) => ({ colour: m[1]!, label: unescape(m[2]!), line: unescape(m[3]!) }));
}

// The terminal's legend: letter to run id.
function textLegend(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^ {2}(\S+) +(r\d+) /gm)].map((m) => [m[1]!, m[2]!]));
}

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
      // No hold is drawn faded.
      assert.doesNotMatch(drawing, /fill-opacity[^>]*><title>r\d held/);
      assert.equal((drawing.match(/<rect [^>]*><title>r\d held/g) ?? []).length, 3);
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

  test('the SVG legend names each run: letter, run, playbook, task, user@controller, pid', () => {
    const records = contended(4, ['web1', 'web2'], Date.UTC(2026, 0, 1, 3));
    const { svg } = draw(records);
    const legend = svgLegend(svg);
    assert.equal(legend.length, 4, svg);
    // Letters in the order the runs first appear in the history.
    const order = [...new Set(records.map((r) => r.run))];
    assert.deepEqual(
      legend.map((l) => [l.label, l.line.split(/ +/)[0]]),
      order.map((run, i) => ['ABCD'[i], run]),
    );
    for (const l of legend) {
      const i = +l.line.split(/ +/)[0]!.slice(1) - 1;
      const [user, playbook, task] = [i % 2 ? 'deploy' : 'root', `site-${i % 4}.yml`, `Lock for step ${i % 5}`];
      assert.match(l.line, new RegExp(`^r${i + 1} +${playbook} +\\[${task}\\] +${user}@ctl${i % 3} +pid ${5000 + i}`));
    }
    // Every hold's bar carries its run's letter and colour.
    for (const l of legend) {
      const run = l.line.split(/ +/)[0]!;
      const holds = [...svg.matchAll(new RegExp(`<rect [^>]*fill="(#[0-9a-f]{6})"[^>]*><title>${run} held `, 'g'))];
      assert.equal(holds.length, 2);
      for (const h of holds) assert.equal(h[1], l.colour);
    }
    const letter = new Map(legend.map((l) => [l.line.split(/ +/)[0]!, l.label]));
    const labels = [...svg.matchAll(/font-weight="bold" pointer-events="none">(\S+) (r\d) site-\d\.yml<\/text>/g)];
    assert.equal(labels.length, 8, svg);
    for (const [, label, run] of labels) assert.equal(label, letter.get(run!));
  });

  test('the terminal and the SVG give each run the same letter', () => {
    // Runs whose ids sort unlike the order they appear in.
    const records = contended(12, ['db', 'web'], Date.UTC(2026, 0, 1, 3)).map((r) => ({
      ...r,
      run: `r${(+r.run!.slice(1) * 7) % 13}`,
    }));
    const { text, svg } = draw(records);
    const fromText = textLegend(text);
    const fromSvg = new Map(svgLegend(svg).map((l) => [l.label, l.line.split(/ +/)[0]!]));
    assert.equal(fromText.size, 12, text);
    assert.deepEqual([...fromText], [...fromSvg]);
    // The cells of the chart use the same letters: db's first holder is the first run.
    const first = records.find((r) => r.event === 'grant' && r.name === 'db')!.run;
    const letter = [...fromText].find(([, run]) => run === first)![0];
    assert.match(text, new RegExp(`^ +db │${letter}`, 'm'));
  });

  test('the legend says what each glyph means; a hold is drawn held for as long as it lasted', () => {
    // r1 holds node1 from 0.96 s to 6.80 s, for a deploy of about a second.
    const rec = (ms: number, event: string, run: string, extra: Partial<HistoryRecord> = {}) =>
      ({ t: at(ms), event, name: 'node1', path: '/l/node1.lock', mode: 'exclusive', run, ...extra }) as HistoryRecord;
    const records = [
      rec(0, 'wait', 'r2', { wait: 'a' }),
      rec(960, 'grant', 'r1', { token: 1 }),
      rec(6800, 'release', 'r1', { token: 1 }),
      rec(6800, 'grant', 'r2', { token: 2, wait: 'a' }),
      rec(8000, 'release', 'r2', { token: 2 }),
    ];
    const { text } = draw(records);
    assert.match(text, /letter = the run holding the lock .*· = free/);
    const row = /node1 │(.*)│/.exec(text)![1]!;
    assert.equal(row.length, 100);
    // 0 to 0.96 s: r2 waits, nobody is recorded holding; then r1's letter until 6.8 s, then r2's.
    const [waitCells, r1, r2] = [Math.round(96 / 8), Math.round((6800 - 960) / 80), Math.round(1200 / 80)];
    assert.equal(row, '~'.repeat(waitCells) + 'B'.repeat(r1) + 'A'.repeat(r2));
  });

  test('--since: the axis starts at the first event in range, not at the start of the range', () => {
    const t0 = Date.now() - 60_000;
    const records = contended(3, ['web1'], t0);
    const { text, svg } = draw(records, '--since', '10m');
    assert.match(text, new RegExp(`^time 0 = ${new Date(t0).toISOString()}, the first event`, 'm'));
    // The first run holds from the first cell on.
    assert.match(text, /web1 │A/);
    const left = +/<text x="([\d.]+)" y="\d+" text-anchor="middle" fill="#555">0s<\/text>/.exec(svg)![1]!;
    const firstHold = /<rect x="([\d.]+)" [^>]*><title>r1 held web1/.exec(svg)!;
    assert.ok(Math.abs(+firstHold[1]! - left) < 1, `first hold at ${firstHold[1]}, axis at ${left}`);
    // The last event ends the axis: the last release is at the right edge.
    const end = Math.max(...records.map((r) => Date.parse(r.t)));
    assert.match(svg, new RegExp(`to ${new Date(end).toISOString()} \\(`));
  });

  test('a long lock name keeps its start: cut at the end, whole in a tooltip', () => {
    const name = 'nightly-backup-of-the-production-database-eu-west-1';
    const records = contended(2, [name], Date.UTC(2026, 0, 1, 3));
    const { text, svg } = draw(records);
    assert.match(text, /^nightly-backup-of-the-p… │/m);
    assert.match(text, /r\d: nightly-backup-of-the-p… \d/);
    assert.match(svg, new RegExp(`>nightly-backup-of-the-produ…<title>${name}</title></text>`));
    assert.doesNotMatch(text + svg, /(^|[^n])ightly-backup/m);
  });

  test('40 runs get 40 colours, far apart', () => {
    const { svg } = draw(contended(40, ['db'], Date.UTC(2026, 0, 1, 3)));
    const colours = svgLegend(svg).map((l) => l.colour);
    assert.equal(colours.length, 40);
    assert.equal(new Set(colours).size, 40);
    let nearest = Infinity;
    for (const [i, a] of colours.entries())
      for (const b of colours.slice(0, i)) nearest = Math.min(nearest, distance(a, b));
    // CIELAB distance: about 2 is barely seen, 20 is a different colour.
    assert.ok(nearest >= 20, `two of the colours are ${nearest.toFixed(1)} apart`);
    // And each bar carries its letter too (62 glyphs before any repeats).
    assert.deepEqual(
      svgLegend(svg).map((l) => l.label),
      [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn'],
    );
  });

  test('a wait granted at once names the holder before it, or no one', () => {
    const rec = (ms: number, event: string, run: string, extra: Partial<HistoryRecord> = {}) =>
      ({ t: at(ms), event, name: 'x', path: '/l/x.lock', mode: 'exclusive', run, ...extra }) as HistoryRecord;
    const records = [
      rec(0, 'grant', 'r1', { token: 1 }),
      // r2 asks as r1 lets go: its wait and grant are stamped in the same millisecond.
      rec(1000, 'wait', 'r2', { wait: 'a' }),
      rec(1000, 'release', 'r1', { token: 1 }),
      rec(1000, 'grant', 'r2', { token: 2, wait: 'a', waited: 0 }),
      rec(2000, 'release', 'r2', { token: 2 }),
      // r3 waits on a free lock (its grant follows at once): nobody to name.
      rec(3000, 'wait', 'r3', { wait: 'b' }),
      rec(3000, 'grant', 'r3', { token: 3, wait: 'b', waited: 0 }),
      rec(4000, 'release', 'r3', { token: 3 }),
    ];
    const { text, svg } = draw(records);
    assert.match(text, /^ {2}B r2: x 0\.0s for A$/m);
    assert.match(text, /^ {2}C r3: x 0\.0s$/m);
    assert.doesNotMatch(text, /\?/);
    assert.match(svg, /<title>r2 waited for x 0\.00s, for r1<\/title>/);
    assert.match(svg, /<title>r3 waited for x 0\.00s<\/title>/);
  });

  test('timeouts, deadlocks, breaks and lost holds: each its own symbol, in the key and in words', () => {
    const rec = (ms: number, event: string, run: string, extra: Partial<HistoryRecord> = {}) =>
      ({ t: at(ms), event, name: 'x', path: '/l/x.lock', mode: 'exclusive', run, ...extra }) as HistoryRecord;
    const records = [
      rec(0, 'grant', 'r1', { token: 1 }),
      rec(100, 'wait', 'r2', { wait: 'a' }),
      rec(1100, 'timeout', 'r2', { wait: 'a', waited: 1 }),
      rec(1200, 'deadlock', 'r3', { wait: 'b', waited: 0, reason: 'r3 and r1 wait for each other' }),
      rec(2000, 'break', 'r4', { token: 1, reason: 'stuck deploy', victim: { run: 'r1', pid: 7 } }),
      rec(2100, 'grant', 'r4', { token: 2 }),
      rec(3000, 'lost', 'r4', { token: 2, reason: 'lock file deleted' }),
    ];
    const { text, svg } = draw(records);
    assert.match(text, /timeouts, deadlocks, breaks and lost holds:/);
    assert.match(text, /1\.1s {2}x {2}timed out waiting: B r2 after 1\.0s for A/);
    assert.match(text, /1\.2s {2}x {2}refused: deadlock: C r3 .*\(r3 and r1 wait for each other\)/);
    assert.match(text, /2\.0s {2}x {2}hold broken: A r1 by D r4 \(stuck deploy\)/);
    assert.match(text, /3\.0s {2}x {2}hold lost: D r4 \(lock file deleted\)/);
    // One shape per kind in the chart (with its sentence as tooltip), and one in the key.
    const shapes: [string, RegExp][] = [
      ['timed out waiting', /<path [^>]*stroke="#d00000"/g],
      ['refused: deadlock', /<path d="[^"]*Z" fill="#6a1b9a"/g],
      ['hold broken', /<path d="[^"]*Z" fill="black"/g],
      ['hold lost', /<circle [^>]*fill="#ff8f00"/g],
    ];
    for (const [words, shape] of shapes) {
      assert.equal((svg.match(shape) ?? []).length, 3, `${words}: ${svg}`);
      assert.match(svg, new RegExp(`<title>[^<]*${words}[^<]*</title>`));
      assert.match(svg, new RegExp(`>${words}[^<]*</text>`));
    }
  });
});
