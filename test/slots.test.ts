// Slots (a counting semaphore): N+2 concurrent holders of every kind never
// have more than N inside, checked against an independent journal; results
// and `HOSTLOCK_SLOT` say which slot; every user must give the same count;
// slots do not combine with shared; inside one helper waiters are served in
// order; a slot waiter that times out never holds.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { checkSlotJournal, journalAppend } from './journal';
import { CLI, cli, sleep, startServe, tempDir, until, type Helper } from './rpc';

describe('slots', { timeout: 120000 }, () => {
  test('N+2 concurrent holders (helpers and hostlock run) never exceed N slots', async () => {
    const N = 3;
    const t = tempDir('slots');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const journal = join(t.dir, 'journal');
    writeFileSync(journal, '');
    const helpers: Helper[] = Array.from({ length: N }, () => startServe(env));
    try {
      const viaHelper = async (h: Helper) => {
        for (let i = 0; i < 30; i++) {
          const r = await h.rpc.call('acquire', { name: 'pool', slots: N });
          assert.equal(r.acquired, true);
          assert.equal(r.slots, N);
          const id = `${h.proc.pid}-${i}`;
          const at = { pid: h.proc.pid!, lock_name: 'pool', slot: r.slot };
          journalAppend(journal, { ev: 'enter', id, ...at });
          await sleep(Math.random() * 15);
          journalAppend(journal, { ev: 'exit', id, ...at });
          await h.rpc.call('release', { handle: r.handle });
        }
      };
      // Two `hostlock run` loops: the command itself writes the journal lines.
      // Double quotes only: the body runs inside bash -c '...'.
      const event = (ev: string) =>
        `printf "{\\"ev\\":\\"${ev}\\",\\"id\\":\\"%s\\",\\"pid\\":%s,\\"lock_name\\":\\"pool\\",\\"slot\\":%s,\\"wall\\":%s}\\n" "$$" "$$" "$HOSTLOCK_SLOT" "\${EPOCHREALTIME/./}000" >> "$J"`;
      const body = `${event('enter')}; sleep 0.0$((RANDOM % 3)); ${event('exit')}`;
      const viaRun = () =>
        new Promise<void>((resolve, reject) => {
          const loop = spawn(
            'bash',
            ['-c', `for i in $(seq 8); do node "$CLI" run pool --slots ${N} -- bash -c '${body}' || exit 1; done`],
            { env: { ...process.env, ...env, CLI, J: journal }, stdio: ['ignore', 'ignore', 'inherit'] },
          );
          loop.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`hostlock run loop: ${code}`))));
        });
      await Promise.all([...helpers.map(viaHelper), viaRun(), viaRun()]);
      const v = checkSlotJournal(readFileSync(journal, 'utf8'), N);
      assert.equal(v.sections, N * 30 + 16);
      assert.equal(v.most, N, 'the slots were never all in use at once');
      process.stderr.write(`# slots: ${v.sections} sections, at most ${v.most} of ${N} inside\n`);
      // The journal check catches what it must (self-test).
      const enter = (pid: number, slot: number) =>
        JSON.stringify({ ev: 'enter', id: String(pid), pid, lock_name: 'pool', slot, wall: 0 });
      assert.throws(() => checkSlotJournal([enter(1, 1), enter(2, 2), enter(3, 3)].join('\n'), 2), /more than 2 slots/);
      assert.throws(() => checkSlotJournal([enter(1, 1), enter(2, 1)].join('\n'), 2), /slot 1 already held/);
    } finally {
      await Promise.all(helpers.map((h) => h.close()));
      t.cleanup();
    }
  });

  test('status shows the slots; every user must agree; slots and shared do not combine', async () => {
    const t = tempDir('slots');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const a = startServe(env);
    const b = startServe(env);
    try {
      const r1 = await a.rpc.call('acquire', { name: 'pool', slots: 2, owner: { run: 'A', task: 'restart' } });
      const r2 = await b.rpc.call('acquire', { name: 'pool', slots: 2 });
      assert.deepEqual([r1.slot, r2.slot].sort(), [1, 2]);
      assert.ok(r2.token > r1.token);
      const busy = await b.rpc.call('try', { name: 'pool', slots: 2 });
      assert.equal(busy.acquired, false);
      assert.equal(busy.reason, 'busy');

      const s = await a.rpc.call('status', { name: 'pool' });
      assert.equal(s.held, true);
      assert.equal(s.slots, 2);
      assert.deepEqual(s.holders.map((h: any) => h.slot).sort(), [1, 2]);
      assert.match(cli(['status'], env).stdout, /pool +2\/2 slots +slot \d: /);

      const mismatch = await b.rpc.raw('acquire', { name: 'pool', slots: 3 });
      assert.equal(mismatch.error?.code, -32008);
      assert.match(mismatch.error.message, /in use with slots: 2 .*asks with slots: 3/);
      const plain = await b.rpc.raw('acquire', { name: 'pool' });
      assert.equal(plain.error?.code, -32008);
      assert.match(plain.error.message, /in use with slots: 2 .*asks without slots/);
      const shared = await b.rpc.raw('acquire', { name: 'pool', slots: 2, shared: true });
      assert.equal(shared.error?.code, -32602);
      assert.match(shared.error.message, /slots and params.shared do not combine/);
      for (const bad of [0, 65, 1.5, '2'])
        assert.equal((await b.rpc.raw('acquire', { name: 'pool', slots: bad })).error?.code, -32602);
      const run = cli(['run', 'pool', '--slots', '4', '--', 'true'], env);
      assert.notEqual(run.status, 0);
      assert.match(run.stderr, /with slots: 2 .*asks with slots: 4/);

      // Held without slots: a slot request is refused the same way.
      const p = await b.rpc.call('acquire', { name: 'plain' });
      const s2 = await a.rpc.raw('acquire', { name: 'plain', slots: 2 });
      assert.equal(s2.error?.code, -32008);
      assert.match(s2.error.message, /in use without slots .*asks with slots: 2/);
      await b.rpc.call('release', { handle: p.handle });
      // Once every slot holder has gone, the count may change.
      await a.rpc.call('release', { handle: r1.handle });
      await b.rpc.call('release', { handle: r2.handle });
      assert.equal((await a.rpc.call('acquire', { name: 'pool', slots: 5 })).acquired, true);
    } finally {
      await a.close();
      await b.close();
      t.cleanup();
    }
  });

  test('inside one helper a freed slot goes to the longest waiter; a timed-out waiter never holds', async () => {
    const t = tempDir('slots');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const h = startServe(env);
    const other = startServe(env);
    try {
      const held = [
        await h.rpc.call('acquire', { name: 'q', slots: 2 }),
        await other.rpc.call('acquire', { name: 'q', slots: 2 }),
      ];
      const order: number[] = [];
      const waits = [1, 2, 3].map((i) =>
        h.rpc.call('acquire', { name: 'q', slots: 2 }).then((r) => {
          order.push(i);
          return r;
        }),
      );
      const late = await h.rpc.call('acquire', { name: 'q', slots: 2, timeout: 0.2 });
      assert.equal(late.reason, 'timeout');
      await sleep(100);
      assert.equal((await h.rpc.call('status', { name: 'q' })).holders.length, 2, 'a timed-out waiter holds a slot');
      await other.rpc.call('release', { handle: held[1].handle }); // a slot held by another helper frees
      await until(() => order.length === 1, 5000);
      await h.rpc.call('release', { handle: held[0].handle });
      await until(() => order.length === 2, 5000);
      const got = await Promise.all(waits.slice(0, 2));
      await h.rpc.call('release', { handle: got[0].handle });
      await waits[2];
      assert.deepEqual(order, [1, 2, 3]);
    } finally {
      await h.close();
      await other.close();
      t.cleanup();
    }
  });
});
