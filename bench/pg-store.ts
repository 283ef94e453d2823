// The PostgreSQL store on a private local server (test/servers/postgres.ts,
// or HOSTLOCK_TEST_POSTGRES):
//  - pg-1: handoff, holder's release called → waiter's acquire resolves, two
//    store objects (two runs); anchor: the same handoff between two plain `pg`
//    sessions with pg_advisory_lock / pg_advisory_unlock. p50, interleaved.
//  - pg-2: 200 names locked at once by one run: time until all held; anchor:
//    200 pg_try_advisory_lock calls on one plain session.
//  - pg-3: status (list) p99 while 5 runs wait for 100 names each (500
//    waiters); anchor: the same list with no waiters.
//  - pg-4 (info): 19 runs queued one after the other for the same 200 names
//    behind one holder, then drained: drain time; anchor: the queueing time.
import { Client } from 'pg';
import type { StoreHold } from '../src/store/contract';
import { PostgresStore, setup } from '../src/stores/postgres/store';
import { startPostgres } from '../test/servers/postgres';
import { note, quantile, report, size, sleep } from './lib';

const IDLE_MS = 2;
const requester = (controller: string) => ({ pid: process.pid, user: 'bench', controller });

async function until(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error('timed out waiting for a condition');
    await sleep(1);
  }
}

async function rawHandoffs(url: string, n: number): Promise<number[]> {
  const [a, b, watch] = [new Client(url), new Client(url), new Client(url)];
  await Promise.all([a.connect(), b.connect(), watch.connect()]);
  const out: number[] = [];
  try {
    const [{ pid }] = (await b.query('SELECT pg_backend_pid() AS pid')).rows;
    for (let i = 0; i < n; i++) {
      await a.query('SELECT pg_advisory_lock(42)');
      let arrived = 0;
      const waiting = b.query('SELECT pg_advisory_lock(42)').then(() => (arrived = performance.now()));
      await until(async () => {
        const r = await watch.query(`SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted`, [
          pid,
        ]);
        return r.rowCount === 1;
      });
      await sleep(IDLE_MS);
      const t0 = performance.now();
      await a.query('SELECT pg_advisory_unlock(42)');
      await waiting;
      out.push(arrived - t0);
      await b.query('SELECT pg_advisory_unlock(42)');
    }
  } finally {
    await Promise.all([a.end(), b.end(), watch.end()]);
  }
  return out;
}

async function storeHandoffs(a: PostgresStore, b: PostgresStore, n: number): Promise<number[]> {
  const key = { id: 'bench-handoff', name: 'bench-handoff' };
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const held = (await a.acquire({ key, mode: 'exclusive', requester: requester('a'), wait: true }))!;
    let arrived = 0;
    const waiting = b
      .acquire({ key, mode: 'exclusive', requester: requester('b'), wait: true })
      .then((h) => ((arrived = performance.now()), h));
    await until(async () => (await a.status(key)).waiters.length === 1);
    await sleep(IDLE_MS);
    const t0 = performance.now();
    await held.release();
    const got = (await waiting)!;
    out.push(arrived - t0);
    await got.release();
  }
  return out;
}

async function main(): Promise<void> {
  const pg = await startPostgres();
  const url = pg.url(undefined, undefined, '?sslmode=disable');
  const stores: PostgresStore[] = [];
  const store = (c: string) => {
    const s = new PostgresStore(url, { controller: c, log: (m) => note(m) });
    stores.push(s);
    return s;
  };
  try {
    await setup(url);
    // pg-1, interleaved in batches.
    const n = size(300, 5);
    const raw: number[] = [];
    const ours: number[] = [];
    const [a, b] = [store('bench-a'), store('bench-b')];
    for (let done = 0; done < n; done += 25) {
      const k = Math.min(25, n - done);
      raw.push(...(await rawHandoffs(url, k)));
      ours.push(...(await storeHandoffs(a, b, k)));
    }
    const r50 = quantile(raw, 0.5);
    const o50 = quantile(ours, 0.5);
    note(`raw advisory handoff p50 ${r50.toFixed(3)} ms p99 ${quantile(raw, 0.99).toFixed(3)} ms`);
    note(`store handoff p50 ${o50.toFixed(3)} ms p99 ${quantile(ours, 0.99).toFixed(3)} ms`);
    report({
      goal: 'pg-1',
      what: 'PostgreSQL store handoff p50, 2 runs',
      figure: o50,
      unit: 'ms',
      anchor: r50,
      anchorWhat: 'pg_advisory_lock handoff p50, 2 pg sessions',
      target: '≤ 1.5×',
      met: o50 <= 1.5 * r50,
    });

    // pg-2
    const names = size(200, 5);
    const times: number[] = [];
    const anchors: number[] = [];
    for (let round = 0; round < size(3, 1); round++) {
      const raw = new Client(url);
      await raw.connect();
      let t0 = performance.now();
      for (let i = 0; i < names; i++) await raw.query('SELECT pg_try_advisory_lock($1)', [1000 + i]);
      anchors.push(performance.now() - t0);
      await raw.end();
      const s = store(`bench-many-${round}`);
      await s.status({ id: 'warm' }); // the session is opened outside the timing, as an agent opens it once
      t0 = performance.now();
      const held = await Promise.all(
        Array.from({ length: names }, (_, i) =>
          s.acquire({ key: { id: `many-${i}` }, mode: 'exclusive', requester: requester('many'), wait: true }),
        ),
      );
      times.push(performance.now() - t0);
      await Promise.all(held.map(async (h) => h!.release()));
      await s.close();
    }
    const t = quantile(times, 0.5);
    report({
      goal: 'pg-2',
      what: `${names} names locked at once by one run, all held`,
      figure: t,
      unit: 'ms',
      anchor: quantile(anchors, 0.5),
      anchorWhat: `${names} pg_try_advisory_lock on one session`,
      target: '≤ 2000 ms',
      met: t <= 2000,
    });

    // pg-3
    const keys = size(100, 5);
    const holder = store('bench-holder');
    const held: StoreHold[] = [];
    for (let i = 0; i < keys; i++) {
      held.push(
        (await holder.acquire({ key: { id: `w-${i}` }, mode: 'exclusive', requester: requester('h'), wait: true }))!,
      );
    }
    const reps = size(200, 5);
    const sample = async () => {
      const out: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        await holder.list('w-');
        out.push(performance.now() - t0);
      }
      return out;
    };
    const idle = await sample();
    // One waiter run after the other, so every queue has them in the same
    // order (interleaved, two runs would each wait for the other: a deadlock).
    const waits: Promise<StoreHold | null>[] = [];
    for (let w = 0; w < 5; w++) {
      const run = store(`bench-waiter-${w}`);
      for (let i = 0; i < keys; i++) {
        waits.push(run.acquire({ key: { id: `w-${i}` }, mode: 'exclusive', requester: requester('w'), wait: true }));
      }
      const want = (w + 1) * keys;
      await until(async () => (await holder.list('w-')).reduce((n, s) => n + s.waiters.length, 0) === want, 30_000);
    }
    const busy = await sample();
    const p99 = quantile(busy, 0.99);
    report({
      goal: 'pg-3',
      what: `status (list) p99 with ${5 * keys} waiters`,
      figure: p99,
      unit: 'ms',
      anchor: quantile(idle, 0.99),
      anchorWhat: 'the same list with no waiters',
      target: '≤ 50 ms',
      met: p99 <= 50,
    });
    await holder.close();
    for (const w of waits) await w.then((h) => h?.release());

    // pg-4 (info): many runs queued one after the other behind one holder of
    // many names, then drained: the deadlock check and polls at scale.
    const qNames = size(200, 5);
    const qRuns = size(19, 3);
    const qHolder = store('bench-q-holder');
    const qHeld = await Promise.all(
      Array.from({ length: qNames }, (_, i) =>
        qHolder.acquire({ key: { id: `q-${i}` }, mode: 'exclusive', requester: requester('q'), wait: true }),
      ),
    );
    const t0 = performance.now();
    const qWaits: Promise<StoreHold | null>[] = [];
    for (let r = 0; r < qRuns; r++) {
      const run = store(`bench-q-${r}`);
      for (let i = 0; i < qNames; i++) {
        qWaits.push(run.acquire({ key: { id: `q-${i}` }, mode: 'exclusive', requester: requester('q'), wait: true }));
      }
      const want = (r + 1) * qNames;
      await until(async () => (await qHolder.list('q-')).reduce((n, s) => n + s.waiters.length, 0) === want, 120_000);
    }
    const queued = performance.now() - t0;
    const t1 = performance.now();
    await Promise.all(qHeld.map(async (h) => h!.release()));
    for (const w of qWaits) await (await w)!.release();
    const drained = performance.now() - t1;
    note(`${qRuns} runs x ${qNames} names: queued in ${queued.toFixed(0)} ms, drained in ${drained.toFixed(0)} ms`);
    report({
      goal: 'pg-4',
      what: `${qRuns} runs queued for ${qNames} names each behind one holder, then drained: drain time`,
      figure: drained,
      unit: 'ms',
      anchor: queued,
      anchorWhat: 'time to queue them, one run after the other',
      target: 'info',
      met: true,
      info: true,
    });
  } finally {
    await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
    await pg.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`pg-store benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
