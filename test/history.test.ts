// History: every grant, release, wait, timeout (and lost hold, deadlock,
// break: see their own tests) lands in the lock directory's journal, whole
// lines only, from many helpers at once, also when holders are SIGKILLed; the
// journal stays within its cap; `hostlock history` and `hostlock timeline`
// read it back.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { cli, sleep, startServe, tempDir, type Helper } from './rpc';

function journalLines(dir: string): string[] {
  const h = join(dir, '.history');
  return readdirSync(h)
    .filter((f) => f.startsWith('journal'))
    .flatMap((f) => readFileSync(join(h, f), 'utf8').split('\n'))
    .filter(Boolean);
}

// Helpers that take a lock in turn, time out now and then, and get SIGKILLed
// while holding; returns what the clients saw.
async function churn(env: NodeJS.ProcessEnv, workers: number, rounds: number, killP: number) {
  const seen = { grants: new Set<number>(), releases: new Set<number>(), timeouts: 0, killed: new Set<number>() };
  const one = async (w: number) => {
    let h: Helper = startServe(env);
    for (let i = 0; i < rounds; i++) {
      const r = await h.rpc.call('acquire', {
        name: 'ctr',
        timeout: Math.random() < 0.2 ? 0.002 : 30,
        owner: { run: `w${w}`, task: `round ${i}` },
      });
      if (!r.acquired) {
        assert.equal(r.reason, 'timeout');
        seen.timeouts++;
        continue;
      }
      seen.grants.add(r.token);
      await sleep(Math.random() * 2);
      if (Math.random() < killP) {
        seen.killed.add(r.token);
        h.proc.kill('SIGKILL');
        await h.exited;
        h = startServe(env);
        continue;
      }
      await h.rpc.call('release', { handle: r.handle });
      seen.releases.add(r.token);
    }
    await h.close();
  };
  await Promise.all(Array.from({ length: workers }, (_, w) => one(w)));
  return seen;
}

describe('history', { timeout: 120000 }, () => {
  test('complete and parseable after concurrent helpers with SIGKILLs', async () => {
    const t = tempDir('hist');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    try {
      const seen = await churn(env, 5, 40, 0.08);
      assert.ok(seen.killed.size > 0 && seen.timeouts > 0, JSON.stringify({ k: seen.killed.size, t: seen.timeouts }));
      const recs = journalLines(t.dir).map((l) => JSON.parse(l)); // every line parses
      const grants = recs.filter((r) => r.event === 'grant');
      assert.deepEqual(
        grants.map((r) => r.token).sort((a, b) => a - b),
        [...seen.grants].sort((a, b) => a - b),
        'one grant record per grant',
      );
      const released = recs.filter((r) => r.event === 'release').map((r) => r.token);
      assert.deepEqual(
        released.sort((a, b) => a - b),
        [...seen.releases].sort((a, b) => a - b),
      );
      for (const k of seen.killed) assert.ok(!released.includes(k), `killed hold ${k} has a release`);
      assert.equal(recs.filter((r) => r.event === 'timeout').length, seen.timeouts);
      // Every wait ends in a grant or a timeout of the same wait id (or its helper was killed).
      const waits = recs.filter((r) => r.event === 'wait');
      const ended = new Set(recs.filter((r) => r.wait && r.event !== 'wait').map((r) => r.wait));
      assert.ok(waits.length > 0);
      for (const w of waits) assert.ok(ended.has(w.wait) || w.helper_pid !== undefined, JSON.stringify(w));
      for (const r of grants) {
        assert.equal(r.name, 'ctr');
        assert.match(r.run, /^w\d$/);
        assert.ok(r.user && r.controller && r.pid && r.t, JSON.stringify(r));
      }

      // The CLI reads the same journal.
      const json = JSON.parse(cli(['history', 'ctr', '--json'], env).stdout);
      assert.equal(json.events.length, recs.length);
      assert.equal(JSON.parse(cli(['history', 'other', '--json'], env).stdout).events.length, 0);
      assert.equal(JSON.parse(cli(['history', '--since', '1h', '--json'], env).stdout).events.length, recs.length);
      assert.equal(
        JSON.parse(cli(['history', '--since', '2000-01-01', '--json'], env).stdout).events.length,
        recs.length,
      );
      assert.equal(JSON.parse(cli(['history', '--since', '2999-01-01', '--json'], env).stdout).events.length, 0);
      const text = cli(['history'], env).stdout;
      assert.match(text, /grant +ctr +run w\d \[round \d+\] .* token \d+/);
      // Nothing to list: said on stderr, stdout stays empty for scripts.
      const none = cli(['history', 'other'], env);
      assert.equal(none.status, 0);
      assert.equal(none.stdout, '');
      assert.match(none.stderr, /no history in .* for other/);
      const bad = cli(['history', '--since', 'yesterday-ish'], env);
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /--since yesterday-ish: give a duration/);

      // The timeline: a row for the lock, the runs, who waited for whom, an SVG.
      const svg = join(t.dir, 'tl.svg');
      const tl = cli(['timeline', '--width', '60', '--svg', svg], env);
      assert.equal(tl.status, 0, tl.stderr);
      assert.match(tl.stdout, /ctr │[A-E·~]+│/);
      assert.match(tl.stdout, /who waited for whom:\n {2}[A-E] w\d: ctr \d+\.\ds( for [A-E]|;|\n)/);
      assert.match(tl.stdout, /: ctr \d+\.\ds for [A-E](, [A-E])*( \(timeout\))?;/);
      const drawing = readFileSync(svg, 'utf8');
      assert.match(drawing, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      assert.match(drawing, /<title>w\d held ctr, token \d+: /);
      assert.match(drawing, /<title>w\d waited for ctr [\d.]+s, for w\d/);
      assert.match(drawing, /<\/svg>$/);
    } finally {
      t.cleanup();
    }
  });

  test('bounded: rotated at its cap, never a torn line, under concurrent writers', async () => {
    const t = tempDir('hist');
    const cap = 16384;
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt'), HOSTLOCK_HISTORY_BYTES: String(cap) };
    try {
      await churn(env, 4, 60, 0);
      const dir = join(t.dir, '.history');
      assert.ok(statSync(join(dir, 'journal.1')).size > 0, 'never rotated');
      for (const f of ['journal', 'journal.1']) {
        const size = statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0; // just rotated: no journal yet
        assert.ok(size <= cap + 4096 * 4, `${f}: ${size} bytes`);
      }
      for (const l of journalLines(t.dir)) JSON.parse(l);
    } finally {
      t.cleanup();
    }
  });
});
