// What only the PostgreSQL store has, against a private server (the
// guarantees every store shares are in store-contract.test.ts): FIFO and
// writer preference across controllers, deadlock found in the server, bounded
// connections, lost sessions and rows, and the schema's first use.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, HostlockError } from '../src/core/errors';
import { SCHEMA, SCHEMA_VERSION } from '../src/stores/postgres/schema';
import { PostgresStore, setup } from '../src/stores/postgres/store';
import type { LockKey, Requester } from '../src/store/types';
import type { StoreHold } from '../src/store/contract';
import type { Mode } from '../src/core/mode';
import { sleep, until } from './rpc';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

let pg: PgServer;
const stores: PostgresStore[] = [];

function store(controller: string, url = pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable')): PostgresStore {
  const s = new PostgresStore(url, { controller, log: () => undefined });
  stores.push(s);
  return s;
}

const key = (name: string): LockKey => ({ id: name, name });
const who = (controller: string, task = 't'): Requester => ({ pid: process.pid, user: 'tester', controller, task });

function take(s: PostgresStore, name: string, mode: Mode = 'exclusive', wait = true, signal?: AbortSignal) {
  return s.acquire({ key: key(name), mode, requester: who(s.controller), wait, signal });
}

async function settled<T>(p: Promise<T>, ms = 300): Promise<boolean> {
  return Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    sleep(ms).then(() => false),
  ]);
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what}: not within ${ms} ms`)))]);
}

before(async () => {
  pg = await startPostgres();
  await setup(pg.url(), { grantTo: LOCK_ROLE });
});

after(async () => {
  await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
  await pg?.stop();
});

describe('postgresql store', { timeout: 120_000 }, () => {
  test('waiters are served in FIFO order across controllers; status lists them with their controller', async () => {
    const a = store('ctl-a');
    const b = store('ctl-b');
    const c = store('ctl-c');
    const order: string[] = [];
    const h = await take(a, 'fifo');
    assert.ok(h);
    const pb = take(b, 'fifo').then((x) => (order.push('b'), x));
    await until(async () => (await a.status(key('fifo'))).waiters.length === 1);
    const pc = take(c, 'fifo').then((x) => (order.push('c'), x));
    await until(async () => (await a.status(key('fifo'))).waiters.length === 2);
    const st = await c.status(key('fifo'));
    assert.deepEqual(
      st.holders.map((x) => x.controller),
      ['ctl-a'],
    );
    assert.deepEqual(
      st.waiters.map((x) => x.controller),
      ['ctl-b', 'ctl-c'],
    );
    await h.release();
    const hb = await pb;
    assert.equal(await settled(pc), false, 'c waits behind b');
    await hb!.release();
    const hc = await pc;
    assert.deepEqual(order, ['b', 'c']);
    await hc!.release();
  });

  test('a waiting writer is not starved by later readers', async () => {
    const r1 = store('reader-1');
    const w = store('writer');
    const r2 = store('reader-2');
    const h1 = await take(r1, 'rw', 'shared');
    const pw = take(w, 'rw', 'exclusive');
    await until(async () => (await r1.status(key('rw'))).waiters.length === 1);
    const p2 = take(r2, 'rw', 'shared');
    assert.equal(await settled(p2), false, 'a reader queues behind the waiting writer');
    await h1!.release();
    const hw = await pw;
    assert.equal(await settled(p2), false);
    await hw!.release();
    await (await p2)!.release();
  });

  test('a wait that closes a cycle fails at once with "deadlock" naming the cycle', async () => {
    const a = store('ctl-a');
    const b = store('ctl-b');
    const ax = await take(a, 'dl-x');
    const by = await take(b, 'dl-y');
    const pa = take(a, 'dl-y');
    await until(async () => (await a.status(key('dl-y'))).waiters.length === 1);
    const t0 = Date.now();
    await assert.rejects(take(b, 'dl-x'), (err: unknown) => {
      assert.ok(err instanceof HostlockError && err.code === ErrorCode.Deadlock, String(err));
      assert.match(err.message, /deadlock/);
      assert.match(err.message, /dl-x/);
      assert.match(err.message, /dl-y/);
      assert.match(err.message, /ctl-a/);
      return true;
    });
    assert.ok(Date.now() - t0 < 1000, `detected in ${Date.now() - t0} ms`);
    assert.equal((await a.status(key('dl-x'))).waiters.length, 0, 'nothing was queued');
    await by!.release();
    await (await pa)!.release();
    await ax!.release();
  });

  test('a cycle of three runs, and a run waiting for itself, are deadlocks too', async () => {
    const [a, b, c] = [store('tri-a'), store('tri-b'), store('tri-c')];
    const held = [await take(a, 'tri-1'), await take(b, 'tri-2'), await take(c, 'tri-3')];
    const pa = take(a, 'tri-2');
    const pb = take(b, 'tri-3');
    await until(async () => (await a.status(key('tri-3'))).waiters.length === 1);
    await assert.rejects(take(c, 'tri-1'), (err: Error) => {
      assert.match(err.message, /deadlock/);
      for (const n of ['tri-a', 'tri-b', 'tri-1', 'tri-2', 'tri-3']) assert.ok(err.message.includes(n), err.message);
      return true;
    });
    await assert.rejects(take(a, 'tri-1'), /deadlock: this run already holds or waits for "tri-1"/);
    // Shared beside its own shared hold is no wait at all.
    const s1 = await take(a, 'tri-s', 'shared');
    const s2 = await take(a, 'tri-s', 'shared');
    assert.ok(s1 && s2);
    await Promise.all([s1.release(), s2.release()]);
    await held[2]!.release();
    await (await pb)!.release();
    await held[1]!.release();
    await (await pa)!.release();
    await held[0]!.release();
  });

  test('200 names held and 200 waited for by one run use one connection', async () => {
    const a = store('many-a');
    const b = store('many-b');
    const names = Array.from({ length: 200 }, (_, i) => `many-${i}`);
    const t0 = Date.now();
    const held = await Promise.all(names.map((n) => take(a, n)));
    const grantMs = Date.now() - t0;
    const waits = names.map((n) => take(b, n));
    await until(async () => (await a.list('many-')).every((s) => s.waiters.length === 1), 10_000);
    const rows = await pg.query(
      `SELECT application_name, count(*)::int AS n FROM pg_stat_activity WHERE pid IN ($1, $2) OR application_name LIKE 'hostlock many-%' GROUP BY 1`,
      [a.backendPid, b.backendPid],
    );
    for (const r of rows) assert.ok((r.n as number) <= 4, `${String(r.application_name)}: ${String(r.n)} connections`);
    assert.equal(rows.length, 2, JSON.stringify(rows));
    assert.equal(a.connections, 1);
    assert.equal(b.connections, 1);
    await Promise.all(held.map(async (h) => h!.release()));
    const got = await Promise.all(waits);
    await Promise.all(got.map(async (h) => h!.release()));
    process.stderr.write(`[pg] 200 names granted in ${grantMs} ms\n`);
  });

  test('20 runs at once against max_connections=100, each on its own session', async () => {
    const runs = Array.from({ length: 20 }, (_, i) => store(`crowd-${i}`));
    const holds = await Promise.all(runs.map((r, i) => take(r, `crowd-${i % 5}`, 'shared')));
    assert.ok(holds.every(Boolean));
    const [{ n } = {}] = await pg.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'hostlock crowd-%'`,
    );
    assert.equal(n, 20);
    await Promise.all(runs.map((r) => r.close()));
  });

  test(
    '20 runs queued behind one holder for the same 50 names all get them, in order',
    { timeout: 120_000 },
    async () => {
      const names = Array.from({ length: 50 }, (_, i) => `queue-${i}`);
      const holder = store('queue-holder');
      const held = await Promise.all(names.map((n) => take(holder, n)));
      const runs = Array.from({ length: 20 }, (_, i) => store(`queue-${i}`));
      const got: string[][] = names.map(() => []);
      const waits: Promise<void>[] = [];
      for (const r of runs) {
        // One run after the other: queued in different orders, two runs would be a deadlock.
        for (const [i, n] of names.entries()) {
          waits.push(
            take(r, n).then(async (h) => {
              got[i]!.push(r.controller);
              await h!.release();
            }),
          );
        }
        const want = (runs.indexOf(r) + 1) * names.length;
        await until(
          async () => (await holder.list('queue-')).reduce((a, s) => a + s.waiters.length, 0) === want,
          30_000,
        );
      }
      await Promise.all(held.map(async (h) => h!.release()));
      await Promise.all(waits);
      for (const g of got)
        assert.deepEqual(
          g,
          runs.map((r) => r.controller),
        );
      assert.ok(runs.every((r) => r.connections === 1));
    },
  );

  test('pg_terminate_backend under a holder: onLost at once, and the name is free for others', async () => {
    const a = store('lost-a');
    const b = store('lost-b');
    let lostAt = 0;
    let reason = '';
    let calls = 0;
    const h = (await a.acquire({
      key: key('lost'),
      mode: 'exclusive',
      requester: who('lost-a'),
      wait: true,
      onLost: (r) => {
        calls++;
        lostAt = Date.now();
        reason = r;
      },
    })) as StoreHold;
    const pb = take(b, 'lost');
    await until(async () => (await b.status(key('lost'))).waiters.length === 1);
    const t0 = Date.now();
    await pg.query('SELECT pg_terminate_backend($1)', [a.backendPid]);
    await until(() => lostAt > 0, 5000);
    assert.ok(lostAt - t0 < 1000, `onLost after ${lostAt - t0} ms`);
    assert.equal(h.lost, true);
    assert.match(reason, /session/);
    const hb = await pb;
    assert.ok(hb && hb.token > h.token);
    await sleep(200);
    assert.equal(calls, 1, 'onLost once');
    await hb.release();
    // The store opens a new session for the next request.
    const again = await take(a, 'lost', 'exclusive', false);
    assert.ok(again);
    await again.release();
  });

  test('a server that stops answering: the hold is given up within half the keepalive bound', async () => {
    // hostlock_keepalive=4: heartbeat every 0.67 s, each answered within 1.33 s, so given up by 2 s.
    const a = new PostgresStore(pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable&hostlock_keepalive=4'), {
      controller: 'silent',
      log: () => undefined,
    });
    stores.push(a);
    let lostAt = 0;
    let reason = '';
    await a.acquire({
      key: key('silent'),
      mode: 'exclusive',
      requester: who('silent'),
      wait: true,
      onLost: (r) => ((lostAt = Date.now()), (reason = r)),
    });
    const backend = a.backendPid!;
    const t0 = Date.now();
    process.kill(backend, 'SIGSTOP'); // the server side goes silent, as behind a cut link
    try {
      await until(() => lostAt > 0, 5000);
    } finally {
      process.kill(backend, 'SIGCONT');
    }
    assert.ok(lostAt - t0 <= 2000 + 300, `given up after ${lostAt - t0} ms`);
    assert.match(reason, /did not answer/);
    const b = store('silent-b');
    const hb = await take(b, 'silent');
    assert.ok(hb, 'the server frees it once the session ends');
    await hb.release();
  });

  test('a dead holder swept by a newcomer still hands over to the first waiter', async () => {
    const [a, b, c] = [store('sweep-a'), store('sweep-b'), store('sweep-c')];
    const h = await take(a, 'sweep');
    const pb = take(b, 'sweep');
    await until(async () => (await c.status(key('sweep'))).waiters.length === 1);
    await c.status(key('sweep')); // c's session is open: its enqueue below is one statement
    await pg.query('SELECT pg_terminate_backend($1)', [a.backendPid]);
    await until(() => h!.lost);
    const pc = take(c, 'sweep'); // its enqueue removes a's dead row
    const hb = await within(pb, 3000, 'b, first in line, is granted');
    assert.ok(hb && hb.token > h!.token);
    assert.equal(await settled(pc), false, 'c waits behind b');
    await hb.release();
    await (await pc)!.release();
  });

  test('a deleted row is a lost hold', async () => {
    const a = new PostgresStore(pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable&hostlock_keepalive=3'), {
      controller: 'del',
      log: () => undefined,
    });
    stores.push(a);
    let lost = '';
    await a.acquire({
      key: key('del'),
      mode: 'exclusive',
      requester: who('del'),
      wait: true,
      onLost: (r) => (lost = r),
    });
    await pg.query(`DELETE FROM ${SCHEMA}.queue WHERE key = 'del'`);
    await until(() => lost !== '', 3000);
    assert.match(lost, /deleted/);
  });
});

describe('postgresql schema', { timeout: 120_000 }, () => {
  test('created once when 20 runs start at once on a fresh database', async () => {
    await pg.query(`DROP SCHEMA ${SCHEMA} CASCADE`);
    const runs = Array.from({ length: 20 }, (_, i) =>
      store(`fresh-${i}`, pg.url(undefined, undefined, '?sslmode=disable')),
    );
    const holds = await Promise.all(runs.map((r, i) => take(r, `fresh-${i}`)));
    assert.ok(holds.every(Boolean));
    const v = await pg.query(`SELECT version FROM ${SCHEMA}.meta`);
    assert.deepEqual(v, [{ version: SCHEMA_VERSION }]);
    await Promise.all(runs.map((r) => r.close()));
    await setup(pg.url(), { grantTo: LOCK_ROLE });
  });

  test('a role without grants gets a clear permission error naming the fix', async () => {
    const s = store('noperm', pg.url('hl_noperm', 'noperm-pw-s3cret', '?sslmode=disable'));
    await assert.rejects(take(s, 'np'), (err: unknown) => {
      assert.ok(err instanceof HostlockError, String(err));
      assert.match(err.message, /permission denied/);
      assert.match(err.message, /hostlock setup/);
      assert.doesNotMatch(err.message, /noperm-pw-s3cret/);
      return true;
    });
  });
});
