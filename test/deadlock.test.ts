// Deadlock detection: a wait that closes a cycle among runs (each run holds a
// lock the next one waits for) fails at once on the run that closes it, with
// reason "deadlock" and the cycle named; the other runs keep waiting and go on
// once it lets go. Waits that close no cycle are never refused.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { startAgent, type TestAgent } from './agents';
import { cli, sleep, startServe, tempDir, until, type Helper } from './rpc';

describe('deadlock detection', { timeout: 120000 }, () => {
  test('two runs, opposite order: the closing run fails within 1 s naming the cycle, the other completes', async () => {
    const t = tempDir('dl');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const a = startServe(env);
    const b = startServe(env);
    try {
      // Each run works on one host (a play on localhost), taking two locks in turn.
      const own = (run: string, task: string) => ({ run, task, host: 'localhost', playbook: `${run}.yml` });
      const ax = await a.rpc.call('acquire', { name: 'web1', owner: own('A', 'Lock web1') });
      const by = await b.rpc.call('acquire', { name: 'web3', owner: own('B', 'Lock web3') });
      const aWaits = a.rpc.call('acquire', { name: 'web3', owner: own('A', 'Lock web3') });
      await until(async () => (await a.rpc.call('status', { name: 'web3' })).waiters.length === 1);
      const t0 = performance.now();
      const closing = await b.rpc.call('acquire', { name: 'web1', owner: own('B', 'Lock web1') });
      const took = performance.now() - t0;
      assert.equal(closing.acquired, false);
      assert.equal(closing.reason, 'deadlock');
      assert.ok(took < 1000, `detected after ${took.toFixed(0)} ms`);
      assert.match(
        closing.message,
        /run B \(task 'Lock web1', host localhost\) waits for 'web1' held by run A \(host localhost\)/,
      );
      assert.match(
        closing.message,
        /run A \(task 'Lock web3', host localhost\) waits for 'web3' held by run B \(host localhost\)/,
      );
      assert.deepEqual(
        closing.cycle.map((l: any) => [l.run, l.name, l.heldBy]),
        [
          ['B', 'web1', 'A'],
          ['A', 'web3', 'B'],
        ],
      );
      // On the record, with the cycle.
      const hist = JSON.parse(cli(['history', 'web1', '--json'], env).stdout).events;
      const dl = hist.find((e: any) => e.event === 'deadlock');
      assert.equal(dl?.run, 'B', JSON.stringify(hist));
      assert.equal(dl.cycle.length, 2);
      assert.match(dl.reason, /^deadlock: run B/);
      // B's failed wait left no record; once B gives up web3, A completes.
      assert.deepEqual((await a.rpc.call('status', { name: 'web1' })).waiters, []);
      await b.rpc.call('release', { handle: by.handle });
      const got = await aWaits;
      assert.equal(got.acquired, true, JSON.stringify(got));
      await a.rpc.call('release', { handle: got.handle });
      await a.rpc.call('release', { handle: ax.handle });
    } finally {
      await a.close();
      await b.close();
      t.cleanup();
    }
  });

  test('three runs through their agents (run holds): the third wait fails at once naming all three', async () => {
    const t = tempDir('dl');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const agents: TestAgent[] = [];
    try {
      for (let i = 0; i < 3; i++) agents.push(await startAgent(env));
      const [c0, c1, c2] = await Promise.all(agents.map((a) => a.connect()));
      assert.ok(c0 && c1 && c2);
      const conns = [c0, c1, c2];
      const names = ['n1', 'n2', 'n3'] as const;
      const run = (i: number, name: string) => ({
        name,
        dir: t.dir,
        scope: 'run',
        member: name,
        owner: { run: `R${i}`, task: `Lock ${name}`, host: 'localhost' },
      });
      for (const [i, c] of conns.entries())
        assert.equal((await c.rpc.call('acquire', run(i, names[i]!))).acquired, true);
      // R0 waits for n2 (R1), R1 waits for n3 (R2): a chain, not yet a cycle.
      const w0 = c0.rpc.call('acquire', run(0, names[1]));
      const w1 = c1.rpc.call('acquire', run(1, names[2]));
      await until(async () => {
        const s = await c0.rpc.call('list', { dir: t.dir });
        return s.locks.filter((l: any) => l.waiters.length === 1).length === 2;
      });
      await sleep(100);
      // R2 waiting for n1 (R0) closes it.
      const t0 = performance.now();
      const closing = await c2.rpc.call('acquire', run(2, names[0]));
      const took = performance.now() - t0;
      assert.equal(closing.reason, 'deadlock', JSON.stringify(closing));
      assert.ok(took < 1000, `detected after ${took.toFixed(0)} ms`);
      assert.deepEqual(
        closing.cycle.map((l: any) => `${l.run}>${l.name}>${l.heldBy}`),
        ['R2>n1>R0', 'R0>n2>R1', 'R1>n3>R2'],
      );
      // Nobody else failed: R2 releases, R1 then R0 complete.
      await c2.rpc.call('release', { name: 'n3', dir: t.dir, scope: 'run', member: 'n3' });
      assert.equal((await w1).acquired, true);
      await c1.rpc.call('release', { name: 'n2', dir: t.dir, scope: 'run', member: 'n2' });
      assert.equal((await w0).acquired, true);
      for (const c of conns) c.sock.destroy();
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
      await Promise.all(
        agents.map((a) =>
          a.agent.exitCode === null ? new Promise((r) => a.agent.once('exit', r)) : Promise.resolve(),
        ),
      );
      t.cleanup();
    }
  });

  test('hosts of a run go on independently (strategy free): a run-level cycle between different hosts is no deadlock', async () => {
    const t = tempDir('dl');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const a = startServe(env);
    const b = startServe(env);
    try {
      // A's host h1 holds x while A's host h2 waits for y; B's host h2 holds y while B's host h1 waits for x.
      const ax = await a.rpc.call('acquire', { name: 'x', owner: { run: 'A', host: 'h1' } });
      const by = await b.rpc.call('acquire', { name: 'y', owner: { run: 'B', host: 'h2' } });
      const aWaits = a.rpc.call('acquire', { name: 'y', owner: { run: 'A', host: 'h2' } });
      const bWaits = b.rpc.call('acquire', { name: 'x', owner: { run: 'B', host: 'h1' } });
      await sleep(1500); // past the re-check of an older wait
      assert.equal((await a.rpc.call('status', { name: 'x' })).waiters.length, 1, 'a wait was refused');
      assert.equal((await a.rpc.call('status', { name: 'y' })).waiters.length, 1, 'a wait was refused');
      // Each host finishes its own work and lets go: both waits are granted.
      await a.rpc.call('release', { handle: ax.handle });
      await b.rpc.call('release', { handle: by.handle });
      assert.equal((await aWaits).acquired, true);
      assert.equal((await bWaits).acquired, true);
    } finally {
      await a.close();
      await b.close();
      t.cleanup();
    }
  });

  test('two runs closing one cycle at the same moment: exactly one fails, the other completes', async () => {
    const t = tempDir('dl');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    try {
      for (let round = 0; round < 5; round++) {
        const a = startServe(env);
        const b = startServe(env);
        try {
          const ax = await a.rpc.call('acquire', { name: 'x', owner: { run: 'A' } });
          const by = await b.rpc.call('acquire', { name: 'y', owner: { run: 'B' } });
          // Both ask at once: whichever wait is newer closes the cycle.
          const [ra, rb] = await Promise.all([
            a.rpc.call('acquire', { name: 'y', owner: { run: 'A' } }).then(async (r) => {
              if (r.acquired) await a.rpc.call('release', { handle: r.handle });
              else await a.rpc.call('release', { handle: ax.handle });
              return r;
            }),
            b.rpc.call('acquire', { name: 'x', owner: { run: 'B' } }).then(async (r) => {
              if (r.acquired) await b.rpc.call('release', { handle: r.handle });
              else await b.rpc.call('release', { handle: by.handle });
              return r;
            }),
          ]);
          const failed = [ra, rb].filter((r) => r.reason === 'deadlock');
          assert.equal(failed.length, 1, `round ${round}: ${JSON.stringify([ra, rb])}`);
          assert.equal([ra, rb].filter((r) => r.acquired).length, 1);
        } finally {
          await a.close();
          await b.close();
        }
      }
    } finally {
      t.cleanup();
    }
  });

  test('1,000 waits in a fixed lock order (never a cycle): no false deadlock', async () => {
    const t = tempDir('dl');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const RUNS = 5;
    const LOCKS = 6;
    const helpers: Helper[] = Array.from({ length: RUNS }, () => startServe(env));
    let waits = 0;
    let rounds = 0;
    try {
      // Each run takes a random subset of the locks in ascending order, holds
      // them a moment, and lets go: runs wait on each other all the time, in
      // every combination a consistent order allows, but never in a cycle.
      const worker = async (h: Helper, i: number) => {
        let seen = 0;
        h.rpc.onNotification = () => {};
        while (waits < 1000) {
          rounds++;
          const pick = Array.from({ length: LOCKS }, (_, k) => k).filter(() => Math.random() < 0.5);
          const held: string[] = [];
          for (const k of pick) {
            const r = await h.rpc.call('acquire', {
              name: `l${k}`,
              notify: 0.05,
              owner: { run: `run${i}`, task: `l${k}` },
            });
            assert.equal(r.acquired, true, `run${i} refused l${k}: ${JSON.stringify(r)}`);
            if (r.waited > 0.001) waits++;
            held.push(r.handle);
            seen++;
          }
          await sleep(Math.random() * 3);
          for (const handle of held.reverse()) await h.rpc.call('release', { handle });
        }
        return seen;
      };
      await Promise.all(helpers.map((h, i) => worker(h, i)));
      assert.ok(waits >= 1000, `only ${waits} waits in ${rounds} rounds`);
      process.stderr.write(`# deadlock: ${waits} contended waits in ${rounds} rounds, none refused\n`);
    } finally {
      await Promise.all(helpers.map((h) => h.close()));
      t.cleanup();
    }
  });
});
