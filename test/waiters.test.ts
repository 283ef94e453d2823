// Many blocked waiters in one helper: fs-ext's blocking flock would pin one
// of libuv's four pool threads per wait; hostlock's waits must not, so other
// requests keep being answered and every waiter gets its turn.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { lockedByOthers, startServe, tempDir, until } from './rpc';

test('256 waiters on one lock held elsewhere, and 64 on distinct locks: hello and status still answer', async () => {
  const t = tempDir();
  const h = startServe({ HOSTLOCK_DIR: t.dir });
  try {
    // Holders outside the helper: flock(1) on one shared lock and on 64 distinct ones.
    const outside = [spawn('flock', ['-o', '-x', join(t.dir, 'one.lock'), 'sleep', '30'], { stdio: 'ignore' })];
    for (let i = 0; i < 64; i++)
      outside.push(spawn('flock', ['-o', '-x', join(t.dir, `d${i}.lock`), 'sleep', '30'], { stdio: 'ignore' }));
    await until(() => lockedByOthers(join(t.dir, 'one.lock')) && lockedByOthers(join(t.dir, 'd63.lock')), 10000);

    let inside = 0;
    let maxInside = 0;
    const waits = Array.from({ length: 256 }, () =>
      h.rpc.call('acquire', { name: 'one', timeout: 120 }).then(async (r) => {
        assert.equal(r.acquired, true);
        inside++;
        maxInside = Math.max(maxInside, inside);
        await new Promise((res) => setImmediate(res));
        inside--;
        await h.rpc.call('release', { handle: r.handle });
      }),
    );
    const distinct = Array.from({ length: 64 }, (_, i) => h.rpc.call('acquire', { name: `d${i}`, timeout: 120 }));

    // While 320 requests wait, the helper still answers at once.
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      assert.equal((await h.rpc.call('hello')).protocol, 2);
      const s = await h.rpc.call('status', { name: 'one' });
      assert.equal(s.held, true);
      assert.ok(performance.now() - t0 < 2000, 'hello/status stalled behind the waiters');
    }
    for (const p of outside) p.kill();
    await Promise.all(waits);
    const got = await Promise.all(distinct);
    assert.ok(got.every((r) => r.acquired));
    assert.equal(maxInside, 1, 'two waiters held the exclusive lock at once');
  } finally {
    await h.close();
    t.cleanup();
  }
});
