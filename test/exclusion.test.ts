// Mutual exclusion between real processes: hostlock helpers, util-linux
// flock(1) and Python's fcntl.flock on the same files.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FIXTURES, FLOCK_APIS, lockedByOthers, sleep, startServe, tempDir, until, type Helper } from './rpc';

// Every case runs on both ways of taking flock(2): fs-ext and flock(1) on our descriptor.
for (const [api, apiEnv] of FLOCK_APIS) {
  describe(`exclusion across processes (${api})`, () => {
    const t = tempDir();
    const env = { ...apiEnv, HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    let a: Helper;
    let b: Helper;
    before(async () => {
      a = startServe(env);
      b = startServe(env);
      assert.equal((await a.rpc.call('hello', {})).flock, api);
    });
    after(async () => {
      await a.close();
      await b.close();
      t.cleanup();
    });

    test('an exclusive hold in one helper excludes another helper until released', async () => {
      const h1 = await a.rpc.call('acquire', { name: 'x' });
      const tried = await b.rpc.call('try', { name: 'x' });
      assert.equal(tried.acquired, false);
      assert.equal(tried.holders[0].pid, a.proc.pid);
      let got = false;
      const waiting = b.rpc.call('block', { handle: tried.handle }).then((r) => {
        got = true;
        return r;
      });
      await sleep(150);
      assert.equal(got, false, 'waiter got the lock while it was held');
      await a.rpc.call('release', { handle: h1.handle });
      const r = await waiting;
      assert.equal(r.acquired, true);
      assert.ok(r.waited >= 0.1);
      await b.rpc.call('release', { handle: r.handle });
    });

    test('shared holders in two helpers overlap; exclusive waits for both', async () => {
      const s1 = await a.rpc.call('acquire', { name: 'sh', shared: true });
      const s2 = await b.rpc.call('try', { name: 'sh', shared: true });
      assert.equal(s2.acquired, true);
      const x = await a.rpc.call('acquire', { name: 'sh', timeout: 0.2 });
      assert.equal(x.acquired, false);
      assert.equal(x.reason, 'timeout');
      await a.rpc.call('release', { handle: s1.handle });
      await b.rpc.call('release', { handle: s2.handle });
      const y = await a.rpc.call('acquire', { name: 'sh', timeout: 2 });
      assert.equal(y.acquired, true);
      await a.rpc.call('release', { handle: y.handle });
    });

    test('SIGKILL of a holding helper frees its locks at once', async () => {
      const c = startServe(env);
      await c.rpc.call('acquire', { name: 'k' });
      const waiting = a.rpc.call('acquire', { name: 'k', timeout: 5 });
      await sleep(100);
      const killedAt = performance.now();
      c.proc.kill('SIGKILL');
      const r = await waiting;
      assert.equal(r.acquired, true);
      assert.ok(performance.now() - killedAt < 1000, 'took too long after the kill');
      const s = await a.rpc.call('status', { name: 'k' });
      assert.deepEqual(
        s.holders.map((h: any) => h.pid),
        [a.proc.pid],
        'a dead holder is still reported',
      );
      await a.rpc.call('release', { handle: r.handle });
    });

    test('a timed-out waiter never holds the lock afterwards (no ghost)', async () => {
      const h1 = await a.rpc.call('acquire', { name: 'g' });
      const r = await b.rpc.call('acquire', { name: 'g', timeout: 0.2 });
      assert.equal(r.acquired, false);
      await a.rpc.call('release', { handle: h1.handle });
      await sleep(100);
      assert.equal(lockedByOthers(join(t.dir, 'g.lock')), false, 'the timed-out waiter became a ghost holder');
      const s = await a.rpc.call('status', { name: 'g' });
      assert.equal(s.held, false);
    });
  });

  describe(`interop with flock(1) and fcntl.flock (${api})`, () => {
    const t = tempDir();
    let h: Helper;
    before(async () => {
      h = startServe({ ...apiEnv, HOSTLOCK_DIR: t.dir });
      assert.equal((await h.rpc.call('hello', {})).flock, api);
    });
    after(async () => {
      await h.close();
      t.cleanup();
    });

    test('flock(1) excludes hostlock, and hostlock waits for it', async () => {
      const p = join(t.dir, 'f1.lock');
      const started = performance.now();
      spawn('flock', ['-x', p, 'sleep', '0.6']);
      await until(() => lockedByOthers(p));
      const r = await h.rpc.call('try', { name: 'f1' });
      assert.equal(r.acquired, false);
      assert.ok(
        r.holders.some((x: any) => x.foreign && x.mode === 'exclusive'),
        JSON.stringify(r.holders),
      );
      const w = await h.rpc.call('block', { handle: r.handle, timeout: 5 });
      assert.equal(w.acquired, true);
      assert.ok(performance.now() - started >= 550, 'hostlock got the lock while flock(1) still held it');
      await h.rpc.call('release', { handle: w.handle });
    });

    test('hostlock excludes flock(1)', async () => {
      const a = await h.rpc.call('acquire', { name: 'f2' });
      assert.equal(spawnSync('flock', ['-n', join(t.dir, 'f2.lock'), 'true']).status, 1);
      assert.equal(spawnSync('flock', ['-s', '-n', join(t.dir, 'f2.lock'), 'true']).status, 1);
      await h.rpc.call('release', { handle: a.handle });
      assert.equal(spawnSync('flock', ['-n', join(t.dir, 'f2.lock'), 'true']).status, 0);
    });

    test('Python fcntl.flock and hostlock exclude each other', async () => {
      const p = join(t.dir, 'py.lock');
      const started = performance.now();
      const py = spawn('python3', [join(FIXTURES, 'flock.py'), 'hold', p, '0.5']);
      await new Promise<void>((r) => py.stdout.once('data', () => r()));
      const r = await h.rpc.call('try', { name: 'py' });
      assert.equal(r.acquired, false);
      const w = await h.rpc.call('block', { handle: r.handle, timeout: 5 });
      assert.equal(w.acquired, true);
      assert.ok(performance.now() - started >= 500, 'hostlock got the lock while Python held it');
      const probe = spawnSync('python3', [join(FIXTURES, 'flock.py'), 'probe', p]);
      assert.equal(probe.status, 3, 'Python got the lock hostlock holds');
      await h.rpc.call('release', { handle: w.handle });
    });
  });
}

describe('deleting lock files', () => {
  test('a cleaner that unlinks while holding cannot let two holders in', async () => {
    const t = tempDir();
    const env = { HOSTLOCK_DIR: t.dir };
    const clients = [startServe(env), startServe(env), startServe(env)];
    const path = join(t.dir, 'del.lock');
    let inside = 0;
    let maxInside = 0;
    let sections = 0;
    const worker = async (h: Helper) => {
      for (let i = 0; i < 25; i++) {
        const r = await h.rpc.call('acquire', { name: 'del', timeout: 10 });
        assert.equal(r.acquired, true);
        inside++;
        maxInside = Math.max(maxInside, inside);
        await sleep(1);
        inside--;
        sections++;
        await h.rpc.call('release', { handle: r.handle });
      }
    };
    // The cleaner: flock(1) takes the lock, deletes the file while holding it, lets go.
    let cleaning = true;
    let deletions = 0;
    const cleaner = (async () => {
      while (cleaning) {
        // Asynchronous: a synchronous spawn would block the releases it waits for.
        const code = await new Promise<number | null>((r) =>
          spawn('flock', ['-x', path, 'rm', '-f', path]).on('exit', r),
        );
        if (code === 0) deletions++;
        await sleep(3);
      }
    })();
    await Promise.all(clients.map(worker));
    cleaning = false;
    await cleaner;
    for (const c of clients) await c.close();
    t.cleanup();
    assert.equal(sections, 75);
    assert.equal(maxInside, 1, 'two holders at once');
    assert.ok(deletions > 3, `the cleaner ran only ${deletions} times`);
  });
});

describe('the polling fallback (no flock(1) to wait in)', () => {
  test('waits for a flock(1) holder, times out without a ghost, then gets the lock', async () => {
    const t = tempDir();
    const h = startServe({ HOSTLOCK_DIR: t.dir, HOSTLOCK_WAIT: 'poll' });
    try {
      const p = join(t.dir, 'poll.lock');
      const holder = spawn('flock', ['-o', '-x', p, 'sleep', '30'], { stdio: 'ignore' });
      await until(() => lockedByOthers(p));
      const r = await h.rpc.call('acquire', { name: 'poll', timeout: 0.2 });
      assert.equal(r.acquired, false);
      assert.equal(r.reason, 'timeout');
      const waiting = h.rpc.call('acquire', { name: 'poll', timeout: 10 });
      await sleep(100);
      holder.kill();
      const got = await waiting;
      assert.equal(got.acquired, true);
      await h.rpc.call('release', { handle: got.handle });
      assert.equal(lockedByOthers(p), false, 'the timed-out polling waiter holds the lock');
    } finally {
      await h.close();
      t.cleanup();
    }
  });
});
