// The local store against the store contract's seam: a wait ended by its
// signal rejects with the shared AbortError and holds nothing; a grant whose
// fencing token cannot be had fails with an IoError and holds nothing; holder
// records written into reused files read back whole from other processes.
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cli, sleep, startServe, tempDir, type Helper } from './rpc';
import { FlockStore } from '../src/stores/flock/store';
import { AbortError } from '../src/store/errors';
import { ErrorCode, type HostlockError } from '../src/core/errors';

describe('the local store seam', () => {
  const t = tempDir('hl-seam');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  let a: Helper;
  let b: Helper;
  before(() => {
    a = startServe(env);
    b = startServe(env);
  });
  after(async () => {
    await a.close();
    await b.close();
    t.cleanup();
  });

  test('an aborted wait rejects with AbortError and holds nothing', async () => {
    const held = await a.rpc.call('acquire', { name: 'ab' });
    assert.equal(held.acquired, true);
    const store = new FlockStore();
    const key = store.keyForName('ab', t.dir);
    const abort = new AbortController();
    const requester = { pid: process.pid, user: 'test', controller: 'test' };
    const waiting = store.acquire({ key, mode: 'exclusive', requester, wait: true, signal: abort.signal });
    assert.ok(waiting instanceof Promise, 'a wait on a held lock answers later');
    await sleep(100);
    abort.abort();
    await assert.rejects(waiting, (err) => err instanceof AbortError);
    await a.rpc.call('release', { handle: held.handle });
    // Nothing of the aborted wait holds the lock: another helper takes it at once.
    const after = await b.rpc.call('try', { name: 'ab' });
    assert.equal(after.acquired, true, 'the aborted wait left a hold behind');
    await b.rpc.call('release', { handle: after.handle });
    // Aborted before it began: rejected the same way.
    const again = new AbortController();
    again.abort();
    const h2 = await a.rpc.call('acquire', { name: 'ab' });
    await assert.rejects(
      Promise.resolve(store.acquire({ key, mode: 'exclusive', requester, wait: true, signal: again.signal })),
      (err) => err instanceof AbortError,
    );
    await a.rpc.call('release', { handle: h2.handle });
    // Closed while waiting, and used after close: the shared storeClosed error.
    const h3 = await a.rpc.call('acquire', { name: 'ab' });
    const pending = store.acquire({
      key,
      mode: 'exclusive',
      requester,
      wait: true,
      signal: new AbortController().signal,
    });
    await sleep(100);
    store.close();
    await assert.rejects(Promise.resolve(pending), (err: HostlockError) => {
      assert.equal(err.code, ErrorCode.StoreUnavailable);
      assert.match(err.message, /the store was closed while this request waited/);
      return true;
    });
    assert.throws(
      () => store.acquire({ key, mode: 'exclusive', requester, wait: false }),
      (err: HostlockError) => err.code === ErrorCode.StoreUnavailable,
    );
    await a.rpc.call('release', { handle: h3.handle });
    const free = await b.rpc.call('try', { name: 'ab' });
    assert.equal(free.acquired, true, 'the wait ended by close left a hold behind');
    await b.rpc.call('release', { handle: free.handle });
  });

  test('a counter that cannot be used fails the grant with an IoError, and nothing is held', async () => {
    const first = await a.rpc.call('acquire', { name: 'tk' });
    const t1 = first.token as number;
    assert.ok(t1 >= 1);
    await a.rpc.call('release', { handle: first.handle });
    const counter = join(t.dir, '.tk.lock.token');
    rmSync(counter);
    mkdirSync(counter); // a directory where the counter file should be
    try {
      const refused = await a.rpc.raw('acquire', { name: 'tk' });
      assert.equal(refused.error?.code, ErrorCode.IoError);
      assert.match(refused.error.message, /no fencing token for .*tk\.lock, so it was not taken/);
      const st = await b.rpc.call('status', { name: 'tk' });
      assert.equal(st.held, false, `a failed grant left the lock held: ${JSON.stringify(st.holders)}`);
      // A waiter that is handed the lock while the counter is unusable fails the same way.
      rmSync(counter, { recursive: true });
      const holder = await a.rpc.call('acquire', { name: 'tk' });
      const waiting = b.rpc.raw('acquire', { name: 'tk', timeout: 10 });
      await sleep(150);
      rmSync(counter);
      mkdirSync(counter);
      await a.rpc.call('release', { handle: holder.handle });
      const failed = await waiting;
      assert.equal(failed.error?.code, ErrorCode.IoError);
      assert.equal((await a.rpc.call('status', { name: 'tk' })).held, false);
    } finally {
      rmSync(counter, { recursive: true, force: true });
    }
    // A fresh counter starts again from 1: tokens go on increasing only while it is kept.
    const back = await b.rpc.call('acquire', { name: 'tk' });
    assert.equal(back.acquired, true);
    assert.ok((back.token as number) >= 1);
    await b.rpc.call('release', { handle: back.handle });
  });

  test('a counter written as text goes on from its count, and tokens survive a new helper', async () => {
    const counter = join(t.dir, '.legacy.lock.token');
    writeFileSync(counter, '41'.padEnd(20, ' ') + '\n');
    const h1 = await a.rpc.call('acquire', { name: 'legacy' });
    assert.equal(h1.token, 42);
    await a.rpc.call('release', { handle: h1.handle });
    const fresh = startServe(env);
    try {
      const h2 = await fresh.rpc.call('acquire', { name: 'legacy' });
      assert.equal(h2.token, 43, 'a new helper went back on the count');
      await fresh.rpc.call('release', { handle: h2.handle });
    } finally {
      await fresh.close();
    }
    assert.equal(statSync(counter).size, 43, 'the count is the counter file size');
  });

  test('holder records in reused files read whole from another helper, and no spare outlives its helper', async () => {
    for (let i = 0; i < 30; i++) {
      const h = await a.rpc.call('acquire', { name: `r${i % 3}`, owner: { task: `task ${i}` } });
      const st = await b.rpc.call('status', { name: `r${i % 3}` });
      assert.equal(st.holders.length, 1);
      assert.equal(st.holders[0].task, `task ${i}`, 'another helper read a stale or torn record');
      assert.equal(st.holders[0].token, h.token);
      await a.rpc.call('release', { handle: h.handle });
      assert.equal((await b.rpc.call('status', { name: `r${i % 3}` })).held, false);
    }
    const holders = join(t.dir, '.holders');
    assert.deepEqual(
      readdirSync(holders).filter((f) => !f.startsWith('.')),
      [],
      'a released record is still readable',
    );
    const pid = a.proc.pid;
    assert.ok(
      readdirSync(holders).some((f) => f.startsWith(`.spare.${pid}.`)),
      'no record file was kept for reuse',
    );
    await a.close();
    assert.deepEqual(
      readdirSync(holders).filter((f) => f.startsWith(`.spare.${pid}.`)),
      [],
      'spares left behind by a helper that exited',
    );
    a = startServe(env);
  });

  test('the spares of a helper that was killed are swept by the next helper that keeps spares there', async () => {
    const holders = join(t.dir, '.holders');
    const churn = async (h: Helper) => {
      for (let i = 0; i < 3; i++) {
        const held = await h.rpc.call('acquire', { name: 'sw' });
        await h.rpc.call('release', { handle: held.handle });
      }
    };
    const killed = startServe(env);
    await churn(killed);
    const pid = killed.proc.pid;
    killed.proc.kill('SIGKILL');
    await killed.exited;
    assert.ok(
      readdirSync(holders).some((f) => f.startsWith(`.spare.${pid}.`)),
      'the killed helper kept no spare to sweep',
    );
    // A one-shot command with one record keeps no spare, and leaves them be.
    const one = cli(['run', 'sw', '--', 'true'], env);
    assert.equal(one.status, 0, one.stderr);
    assert.ok(readdirSync(holders).some((f) => f.startsWith(`.spare.${pid}.`)));
    const next = startServe(env);
    try {
      await churn(next);
      assert.deepEqual(
        readdirSync(holders).filter((f) => f.startsWith(`.spare.${pid}.`)),
        [],
        'spares of a dead helper outlived the next helper that kept spares',
      );
    } finally {
      await next.close();
    }
  });
});
