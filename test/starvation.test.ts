// Writer starvation across processes: flock(2) alone lets a stream of
// overlapping shared holders keep an exclusive waiter out forever. hostlock's
// turnstile (a hidden `.<file>.turnstile` beside each lock file, taken
// exclusive by a waiting writer) closes the door to new readers until the
// writer is in. Inside one helper the FIFO queue already does this; here every
// reader is a separate `serve` process, so only the turnstile can help.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cli, lockedByOthers, sleep, startServe, tempDir, type Helper } from './rpc';

const HOLD_MS = 150;

// Three reader helpers take the lock shared, hold it, release and at once ask
// again; started a third of a hold apart, their holds always overlap. Returns
// what a writer in a fourth helper saw.
async function contend(env: NodeJS.ProcessEnv, writerTimeout: number) {
  const readers = [0, 1, 2].map(() => startServe(env));
  const writer = startServe(env);
  let stop = false;
  const grants: number[] = [];
  const readerLoop = async (h: Helper, delay: number) => {
    await sleep(delay);
    while (!stop) {
      const r = await h.rpc.call('acquire', { name: 'res', shared: true, timeout: 20 });
      assert.equal(r.acquired, true);
      grants.push(Date.now());
      await sleep(HOLD_MS);
      await h.rpc.call('release', { handle: r.handle });
    }
  };
  try {
    // Staggered only once every helper answers, or slow starts would line them up.
    await Promise.all([...readers, writer].map((h) => h.rpc.call('hello', {})));
    const loops = readers.map((h, i) => readerLoop(h, (i * HOLD_MS) / 3));
    await sleep(500);
    assert.ok(lockedByOthers(join(env.HOSTLOCK_DIR!, 'res.lock')), 'the readers hold the lock');
    const asked = Date.now();
    const w = await writer.rpc.call('acquire', { name: 'res', timeout: writerTimeout });
    const waited = Date.now() - asked;
    let readersDuring = 0;
    let readersAfter = 0;
    if (w.acquired) {
      const during = grants.length;
      await sleep(2 * HOLD_MS);
      readersDuring = grants.length - during;
      await writer.rpc.call('release', { handle: w.handle });
      const after = grants.length;
      await sleep(2 * HOLD_MS);
      readersAfter = grants.length - after;
    }
    stop = true;
    await Promise.all(loops);
    return { acquired: w.acquired as boolean, waited, readersDuring, readersAfter };
  } finally {
    stop = true;
    await Promise.all([...readers, writer].map((h) => h.close()));
  }
}

describe('writer starvation', () => {
  const t = tempDir('starve');
  after(() => t.cleanup());

  test('control: with the turnstile off, plain flock starves the writer', async () => {
    const dir = join(t.dir, 'off');
    mkdirSync(dir);
    const r = await contend({ HOSTLOCK_DIR: dir, HOSTLOCK_TURNSTILE: 'off' }, 1.5);
    assert.equal(r.acquired, false, 'the writer got in without a turnstile: this test no longer shows starvation');
  });

  test('an exclusive waiter gets in despite overlapping shared holders of other processes', async () => {
    const r = await contend({ HOSTLOCK_DIR: t.dir }, 3);
    assert.equal(r.acquired, true, 'the writer was starved');
    // It waits for the holds in progress to end, not for the stream to stop.
    assert.ok(r.waited < 4 * HOLD_MS + 300, `writer waited ${r.waited} ms`);
    assert.equal(r.readersDuring, 0, 'a reader got in while the writer held the lock');
    assert.ok(r.readersAfter > 0, 'readers did not resume after the writer released');
  });

  test('inside one helper, waiters are served in FIFO order: a later reader never overtakes a queued writer', async () => {
    const dir = join(t.dir, 'fifo');
    mkdirSync(dir);
    const h = startServe({ HOSTLOCK_DIR: dir });
    try {
      const order: string[] = [];
      const r1 = await h.rpc.call('acquire', { name: 'fifo', shared: true });
      const w = h.rpc.call('acquire', { name: 'fifo', timeout: 5 }).then((r) => {
        order.push('writer');
        return r;
      });
      await sleep(50);
      const r2 = h.rpc.call('acquire', { name: 'fifo', shared: true, timeout: 5 }).then((r) => {
        order.push('reader2');
        return r;
      });
      const w2 = h.rpc.call('acquire', { name: 'fifo', timeout: 5 }).then((r) => {
        order.push('writer2');
        return r;
      });
      await sleep(200);
      assert.deepEqual(order, [], 'a later request overtook the queued writer while the first reader held');
      await h.rpc.call('release', { handle: r1.handle });
      const got = await w;
      await sleep(100);
      assert.deepEqual(order, ['writer']);
      await h.rpc.call('release', { handle: got.handle });
      const got2 = await r2;
      await sleep(100);
      assert.deepEqual(order, ['writer', 'reader2']);
      await h.rpc.call('release', { handle: got2.handle });
      await h.rpc.call('release', { handle: (await w2).handle });
      assert.deepEqual(order, ['writer', 'reader2', 'writer2']);
    } finally {
      await h.close();
    }
  });

  test('turnstile files are not locks: status and list do not show them', () => {
    assert.ok(
      readdirSync(t.dir).some((f) => f.startsWith('.') && f.includes('turnstile')),
      'a turnstile file exists',
    );
    const r = cli(['status', '--json'], { HOSTLOCK_DIR: t.dir });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      JSON.parse(r.stdout).locks.map((l: { name: string }) => l.name),
      ['res'],
    );
  });
});
