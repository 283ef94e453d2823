// The visible queue: every waiter has a record beside the holder records, so
// `status` (protocol and `hostlock status`) lists the waiters in queue order
// with their owner, waiting notices say the waiter's place in the queue, and a
// waiter whose process died is never listed.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { ordinal } from '../src/cli/run';
import { CLI, cli, sleep, startServe, tempDir, until, type Helper } from './rpc';

describe('visible queue', { timeout: 60000 }, () => {
  test('five runs waiting: status lists them in order with their owners, notices give the place', async () => {
    const t = tempDir('queue');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const holder = startServe(env);
    const waiters: Helper[] = [];
    try {
      await holder.rpc.call('acquire', { name: 'web1', owner: { run: 'r0', playbook: 'site.yml', task: 'Lock' } });
      for (let i = 1; i <= 5; i++) {
        const h = startServe(env);
        waiters.push(h);
        // Never answered for the waiter killed below; the others are released with their helpers.
        h.rpc
          .call('acquire', {
            name: 'web1',
            notify: 0.1,
            owner: { run: `r${i}`, playbook: `deploy${i}.yml`, task: `Lock ${i}`, host: 'web1' },
          })
          .catch(() => undefined);
        // Each one is queued before the next comes, so that the order is known.
        await until(async () => (await holder.rpc.call('status', { name: 'web1' })).waiters.length === i, 5000, 10);
      }
      const s = await holder.rpc.call('status', { name: 'web1' });
      assert.deepEqual(
        s.waiters.map((w: any) => [w.run, w.playbook, w.task, w.host, w.mode]),
        [1, 2, 3, 4, 5].map((i) => [`r${i}`, `deploy${i}.yml`, `Lock ${i}`, 'web1', 'exclusive']),
      );
      for (const [i, w] of s.waiters.entries()) {
        assert.equal(w.pid, waiters[i]?.proc.pid);
        assert.ok(w.user && w.controller && !Number.isNaN(Date.parse(w.since)), JSON.stringify(w));
      }
      // Waiting notices: the place in the queue.
      const lastNotice = (h: Helper) => h.rpc.notifications.filter((n) => n.method === 'waiting').at(-1)?.params;
      await until(() => waiters.every((h) => lastNotice(h)?.queued === 5), 5000);
      for (const [i, h] of waiters.entries()) {
        const last = lastNotice(h);
        assert.equal(last.position, i + 1, `waiter ${i + 1}: ${JSON.stringify(last)}`);
      }
      // The CLI shows the same queue, as a table and as JSON.
      const json = JSON.parse(cli(['status', '--json'], env).stdout);
      const lock = json.locks.find((l: any) => l.name === 'web1');
      assert.deepEqual(
        lock.waiters.map((w: any) => w.run),
        ['r1', 'r2', 'r3', 'r4', 'r5'],
      );
      const table = cli(['status'], env).stdout;
      assert.match(table, /web1/);
      for (let i = 1; i <= 5; i++) assert.match(table, new RegExp(`${i}\\. .*run r${i}.*deploy${i}\\.yml`), table);

      // A waiter that dies leaves the queue; the others move up.
      waiters[1]!.proc.kill('SIGKILL');
      await waiters[1]!.exited;
      const after = await holder.rpc.call('status', { name: 'web1' });
      assert.deepEqual(
        after.waiters.map((w: any) => w.run),
        ['r1', 'r3', 'r4', 'r5'],
      );
      await until(() => lastNotice(waiters[2]!)?.position === 2 && lastNotice(waiters[4]!)?.queued === 4, 5000);
      // A waiter that gives up leaves it too.
      waiters[4]!.proc.stdin!.end();
      await waiters[4]!.exited;
      await sleep(50);
      assert.deepEqual(
        (await holder.rpc.call('status', { name: 'web1' })).waiters.map((w: any) => w.run),
        ['r1', 'r3', 'r4'],
      );
    } finally {
      await holder.close();
      for (const h of waiters) h.proc.kill('SIGKILL');
      await Promise.all(waiters.map((h) => h.exited));
      t.cleanup();
    }
  });

  test("hostlock run's waiting line says its place in the queue", async () => {
    const t = tempDir('queue');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const holder = startServe(env);
    const runs: ChildProcess[] = [];
    try {
      const r = await holder.rpc.call('acquire', { name: 'q' });
      const errs: [string, string] = ['', ''];
      for (const i of [0, 1]) {
        const p = spawn(process.execPath, [CLI, 'run', 'q', '--', 'true'], {
          env: { ...process.env, ...env },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        p.stderr.on('data', (c) => (errs[i] += c));
        runs.push(p);
        await until(async () => (await holder.rpc.call('status', { name: 'q' })).waiters.length === i + 1, 10000);
      }
      await until(() => /waiting \d+s \(2nd in queue\) for q held by/.test(errs[1]), 15000, 50);
      assert.match(errs[0], /waiting \d+s \(1st in queue\) for q/);
      await holder.rpc.call('release', { handle: r.handle });
      await Promise.all(runs.map((p) => new Promise((res) => (p.exitCode !== null ? res(0) : p.on('exit', res)))));
      assert.deepEqual([1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(ordinal), [
        '1st',
        '2nd',
        '3rd',
        '4th',
        '11th',
        '12th',
        '13th',
        '21st',
        '22nd',
        '101st',
        '111th',
      ]);
    } finally {
      for (const p of runs) p.kill('SIGKILL');
      await holder.close();
      t.cleanup();
    }
  });

  test('a granted waiter leaves the queue at once', async () => {
    const t = tempDir('queue');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const a = startServe(env);
    const b = startServe(env);
    try {
      const r = await a.rpc.call('acquire', { name: 'x' });
      const waiting = b.rpc.call('acquire', { name: 'x', owner: { run: 'rb' } });
      await until(async () => (await a.rpc.call('status', { name: 'x' })).waiters.length === 1);
      await a.rpc.call('release', { handle: r.handle });
      assert.equal((await waiting).acquired, true);
      const s = await a.rpc.call('status', { name: 'x' });
      assert.deepEqual(s.waiters, []);
      assert.equal(s.holders[0].run, 'rb');
    } finally {
      await a.close();
      await b.close();
      t.cleanup();
    }
  });
});
