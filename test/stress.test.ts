// Mutual exclusion under load, between every kind of client at once: hostlock
// helpers over stdio, connections to a run agent, util-linux flock(1) and
// Python fcntl.flock, all doing a non-atomic read-modify-write of one counter
// file. An independent journal (lines appended by the clients while they hold
// the lock, see fixtures/stress-worker.ts) must show no two sections
// overlapping, no lost update, and a counter equal to the completed sections.
// The kill variant SIGKILLs about 10% of the hostlock holders inside their
// section; each kill must free the lock for the next waiter within 100 ms.
// Every hostlock grant's fencing token goes into the journal too: tokens must
// strictly increase in the order the sections ran, and keep increasing for a
// fresh helper once every process of the test is gone.
// Short by default; HOSTLOCK_STRESS=long (make stress) runs 16 x 300.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { checkJournal, checkTokens } from './journal';
import { startAgent } from './agents';
import { FIXTURES, FLOCK_APIS, JOURNAL_PY, startServe, tempDir } from './rpc';

const LONG = process.env.HOSTLOCK_STRESS === 'long';
const WORKERS = LONG ? 16 : 6;
const SECTIONS = LONG ? 300 : 40;
const KINDS = ['serve', 'agent', 'flock', 'python'] as const;
type Kind = (typeof KINDS)[number];
const WORKER_JS = join(__dirname, 'fixtures', 'stress-worker.js');

async function stress(apiEnv: NodeJS.ProcessEnv, killP: number, sharedP = 0) {
  const t = tempDir('stress');
  const dir = t.dir;
  const lock = join(dir, 'ctr.lock');
  const counter = join(dir, 'counter');
  const journal = join(dir, 'journal');
  writeFileSync(counter, '0');
  writeFileSync(journal, '');
  const env = { ...process.env, ...apiEnv, HOSTLOCK_DIR: dir, HOSTLOCK_RUNTIME_DIR: join(dir, 'rt') };

  const agent = await startAgent(env);
  const socket = agent.socket;

  const attempted = { n: 0 };
  const running = new Set<ChildProcess>();
  const start = (kind: Kind, n: number): ChildProcess => {
    switch (kind) {
      case 'flock':
        return spawn(
          'bash',
          [
            join(FIXTURES, 'stress-flock-worker.sh'),
            lock,
            counter,
            journal,
            String(n),
            String(Math.round(sharedP * 100)),
          ],
          { stdio: ['ignore', 'pipe', 'inherit'] },
        );
      case 'python':
        return spawn(
          'python3',
          [join(FIXTURES, 'stress-worker.py'), lock, counter, journal, String(n), String(sharedP)],
          {
            env: { ...process.env, PYTHONPATH: JOURNAL_PY },
            stdio: ['ignore', 'pipe', 'inherit'],
          },
        );
      default:
        return spawn(
          process.execPath,
          [WORKER_JS, kind, dir, counter, journal, String(n), String(killP), socket, String(sharedP)],
          {
            env,
            stdio: ['ignore', 'pipe', 'inherit'],
            detached: kind === 'serve', // a serve worker kills its own group
          },
        );
    }
  };
  // A worker slot does SECTIONS sections; a killed worker is replaced by a
  // fresh one for what is left (the killed section counts as attempted).
  const slot = async (kind: Kind): Promise<void> => {
    let left = SECTIONS;
    while (left > 0) {
      const child = start(kind, left);
      running.add(child);
      let done = 0;
      child.stdout!.on('data', (c: Buffer) => {
        done += c.toString().split('.').length - 1;
      });
      const [code, signal] = await new Promise<[number | null, string | null]>((r) =>
        child.on('exit', (c, s) => r([c, s])),
      );
      running.delete(child);
      if (kind === 'flock' || kind === 'python') done = left; // they print nothing; a clean exit did all
      if (signal === 'SIGKILL') {
        left -= done + 1;
        attempted.n += done + 1;
      } else {
        assert.equal(code, 0, `${kind} worker failed (${signal ?? code})`);
        attempted.n += left;
        left = 0;
      }
    }
  };
  const started = performance.now();
  try {
    await Promise.all(Array.from({ length: WORKERS }, (_, i) => slot(KINDS[i % KINDS.length]!)));
  } finally {
    for (const c of running) c.kill('SIGKILL');
    await agent.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  const text = readFileSync(journal, 'utf8');
  const verdict = checkJournal(text, Number(readFileSync(counter, 'utf8')));
  const tokens = checkTokens(text);
  // Every helper and the agent are gone: a fresh helper's grant still gets a larger token.
  const fresh = startServe(env);
  const after = await fresh.rpc.call('acquire', { name: 'ctr' });
  await fresh.close();
  t.cleanup();
  return { ...verdict, tokens, tokenAfterRestart: after.token as number, attempted: attempted.n, seconds };
}

// The lock engine's two ways of taking flock(2), fs-ext and flock(1), under the same load.
for (const [api, apiEnv] of FLOCK_APIS) {
  describe(`stress (${api}): ${WORKERS} processes x ${SECTIONS} sections, mixed clients`, () => {
    before(() => assert.ok(readFileSync(WORKER_JS).length > 0));

    test('no overlap, no lost update: counter == sections', async () => {
      const r = await stress(apiEnv, 0);
      assert.equal(r.kills, 0);
      assert.equal(r.sections, WORKERS * SECTIONS);
      assert.equal(r.completed, WORKERS * SECTIONS);
      assert.ok(r.tokens.count > 0 && r.tokenAfterRestart > r.tokens.max, JSON.stringify(r.tokens));
      process.stderr.write(`# stress (${api}): ${r.completed} sections in ${r.seconds.toFixed(1)} s\n`);
    });

    test('with ~10% of hostlock holders SIGKILLed: counter == completed sections, each kill frees within 100 ms', async () => {
      const r = await stress(apiEnv, 0.1);
      assert.ok(r.kills > 0, 'nothing was killed');
      assert.ok(r.tokenAfterRestart > r.tokens.max, JSON.stringify(r.tokens));
      assert.ok(r.completed <= r.attempted && r.completed >= r.attempted - r.kills, JSON.stringify(r));
      const worst = Math.max(0, ...r.killLatenciesMs);
      process.stderr.write(
        `# stress+kill (${api}): ${r.completed}/${r.attempted} sections, ${r.kills} kills, ` +
          `release after kill: max ${worst.toFixed(1)} ms over ${r.killLatenciesMs.length} measured, ${r.seconds.toFixed(1)} s\n`,
      );
      assert.ok(
        worst < 100,
        `a kill took ${worst.toFixed(1)} ms to free the lock: ${r.killLatenciesMs.map((x) => x.toFixed(0)).join(',')}`,
      );
    });

    test('shared and exclusive mixed: no writer beside a reader, the turnstile deadlocks nobody', async () => {
      const r = await stress(apiEnv, 0, 0.5);
      assert.equal(r.completed + r.readSections, WORKERS * SECTIONS);
      assert.ok(r.readSections > 0 && r.completed > 0);
      assert.ok(r.tokenAfterRestart > r.tokens.max, JSON.stringify(r.tokens));
      process.stderr.write(
        `# stress shared+exclusive (${api}): ${r.completed} writes, ${r.readSections} reads in ${r.seconds.toFixed(1)} s\n`,
      );
    });
  });
}
