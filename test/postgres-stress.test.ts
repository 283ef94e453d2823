// Two simulated controllers, each a stream of separate processes with its own
// store object, hammer one name on a private PostgreSQL server: a
// non-atomic counter and an independent journal show that no two sections
// ever overlapped (no writer beside anyone), through random SIGKILLs of
// holders and of waiters; every exclusive grant's token is above the last;
// and a killed holder's name passes on within 2 s.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setup } from '../src/stores/postgres/store';
import { checkJournal } from './journal';
import { tempDir } from './rpc';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

const WORKER = join(__dirname, 'fixtures', 'pg-stress-worker.js');
const LONG = process.env.HOSTLOCK_STRESS === 'long';
let pg: PgServer;
let tmp: { dir: string; cleanup: () => void };

before(async () => {
  pg = await startPostgres();
  await setup(pg.url(), { grantTo: LOCK_ROLE });
  tmp = tempDir('hl-pgstress');
});

after(async () => {
  await pg?.stop();
  tmp?.cleanup();
});

test(
  'two controllers, random SIGKILLs: no overlap, no lost update, tokens only increase',
  { timeout: 300_000 },
  async () => {
    const counter = join(tmp.dir, 'counter');
    const journal = join(tmp.dir, 'journal');
    const tokens = join(tmp.dir, 'tokens');
    writeFileSync(counter, '0');
    writeFileSync(journal, '');
    writeFileSync(tokens, '');
    const url = pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable');
    const perController = LONG ? 600 : 150; // sections each controller completes or dies in
    const concurrent = 3; // processes per controller at once
    let killed = 0;
    const runController = async (name: string) => {
      let left = perController;
      const lane = async () => {
        while (left > 0) {
          const n = Math.min(left, 10);
          left -= n;
          const child = spawn(
            process.execPath,
            [WORKER, url, name, counter, journal, tokens, String(n), '0.08', '0.3'],
            {
              stdio: ['ignore', 'ignore', 'pipe'],
            },
          );
          let err = '';
          child.stderr.on('data', (d) => (err += d));
          // A wait that never ends would hang the test: fail it instead.
          const stuck = setTimeout(() => {
            err += `worker ${child.pid} of ${name} still running after 60 s: a wait never ended`;
            child.kill('SIGKILL');
          }, 60_000);
          child.once('exit', () => clearTimeout(stuck));
          const [code, signal] = await new Promise<[number | null, string | null]>((r) =>
            child.once('exit', (c, s) => r([c, s])),
          );
          assert.ok(!err.includes('still running'), err);
          if (signal === 'SIGKILL') killed++;
          else assert.equal(code, 0, `worker of ${name} failed: ${err}`);
        }
      };
      await Promise.all(Array.from({ length: concurrent }, lane));
    };
    await Promise.all([runController('ctl-a'), runController('ctl-b')]);
    const verdict = checkJournal(readFileSync(journal, 'utf8'), Number(readFileSync(counter, 'utf8')));
    const toks = readFileSync(tokens, 'utf8')
      .trim()
      .split('\n')
      .map((l) => Number(l.split(' ')[1]));
    for (let i = 1; i < toks.length; i++) assert.ok(toks[i]! > toks[i - 1]!, `token ${toks[i]} after ${toks[i - 1]}`);
    process.stderr.write(
      `[pg-stress] ${verdict.sections} exclusive + ${verdict.readSections} shared sections, ${killed} processes killed ` +
        `(${verdict.kills} while holding); release after a killed holder: max ${Math.max(0, ...verdict.killLatenciesMs).toFixed(0)} ms\n`,
    );
    assert.ok(verdict.kills > 0, 'some holders were killed');
    for (const ms of verdict.killLatenciesMs) assert.ok(ms < 2000, `a killed holder's lock passed on after ${ms} ms`);
    const [{ n } = {}] = await pg.query(
      `SELECT count(*)::int AS n FROM hostlock.queue q WHERE q.key = 'stress' AND q.run_id IN (SELECT objid::bigint::integer FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted)`,
    );
    assert.equal(n, 0, 'no live row is left behind');
  },
);
