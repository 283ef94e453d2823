// The PostgreSQL store's coordination features, at the store level, against a
// private server: slots (a counting semaphore across controllers), the
// store's history, and breaking another controller's hold.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, HostlockError } from '../src/core/errors';
import type { HistoryRecord, LockKey, Requester } from '../src/store/types';
import {
  HISTORY_PRUNE_EVERY,
  HISTORY_ROWS,
  SCHEMA,
  SCHEMA_VERSION,
  TABLES_V1_SQL,
} from '../src/stores/postgres/schema';
import { PostgresStore, setup } from '../src/stores/postgres/store';
import { sleep, tempDir, until } from './rpc';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

let pg: PgServer;
const stores: PostgresStore[] = [];
const children: ChildProcess[] = [];

// Longer than the store's batching of history records.
const HISTORY_WAIT = 200;

const lockUrl = () => pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable');

function store(controller: string, url = lockUrl()): PostgresStore {
  const s = new PostgresStore(url, { controller, log: () => undefined });
  stores.push(s);
  return s;
}

const key = (name: string): LockKey => ({ id: name, name });
const who = (controller: string, task = 't'): Requester => ({ pid: process.pid, user: 'tester', controller, task });

function slot(s: PostgresStore, name: string, slots: number | undefined, wait = true, onLost?: (r: string) => void) {
  return s.acquire({ key: key(name), mode: 'exclusive', requester: who(s.controller), wait, slots, onLost });
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

// Another process holding one slot of `name` through its own store object;
// resolves once it holds, with the slot and token it printed.
async function slotHolderProcess(name: string, slots: number, controller: string) {
  const src = join(__dirname, '..', 'src', 'stores', 'postgres', 'store');
  const script = `
    const { PostgresStore } = require(${JSON.stringify(src)});
    const s = new PostgresStore(process.argv[1], { controller: ${JSON.stringify(controller)}, log: () => undefined });
    s.acquire({ key: { id: ${JSON.stringify(name)}, name: ${JSON.stringify(name)} }, mode: 'exclusive', wait: true,
      slots: ${slots}, requester: { pid: process.pid, user: 'tester', controller: ${JSON.stringify(controller)} } })
      .then((h) => process.stdout.write('held ' + h.slot + ' ' + h.token + '\\n'),
            (e) => { process.stderr.write(String(e)); process.exit(1); });
    setInterval(() => undefined, 1000);
  `;
  const child = spawn(process.execPath, ['-e', script, lockUrl()], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  await until(() => {
    if (child.exitCode !== null) throw new Error(`slot holder exited: ${err}`);
    return /held \d+ \d+/.test(out);
  }, 10_000);
  const [, s, t] = /held (\d+) (\d+)/.exec(out)!;
  return { child, slot: Number(s), token: Number(t) };
}

before(async () => {
  pg = await startPostgres();
  await setup(pg.url(), { grantTo: LOCK_ROLE });
});

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
  await pg?.stop();
});

describe('postgresql slots', { timeout: 120_000 }, () => {
  test('N+2 holders from two controllers: never more than N at once, each in a slot of its own', async () => {
    const N = 3;
    const a = store('slots-a');
    const b = store('slots-b');
    let inside = 0;
    let most = 0;
    const taken = new Set<number>();
    const tokens = new Map<PostgresStore, number[]>([
      [a, []],
      [b, []],
    ]);
    const worker = async (s: PostgresStore, rounds: number) => {
      for (let i = 0; i < rounds; i++) {
        const h = await slot(s, 'sem', N);
        assert.ok(h, 'a waiting request is granted');
        inside++;
        most = Math.max(most, inside);
        assert.ok(inside <= N, `${inside} holders at once with slots: ${N}`);
        assert.ok(h.slot !== undefined && h.slot >= 1 && h.slot <= N, `slot ${h.slot}`);
        assert.ok(!taken.has(h.slot), `slot ${h.slot} given twice`);
        taken.add(h.slot);
        tokens.get(s)!.push(h.token);
        await sleep(5 + Math.random() * 20);
        taken.delete(h.slot);
        inside--;
        await h.release();
      }
    };
    // Half way through, status from a third controller shows N holders, their slots, and the rest waiting.
    const seen = (async () => {
      const c = store('slots-watch');
      await until(async () => {
        const st = await c.status(key('sem'));
        return st.holders.length === N && st.waiters.length > 0;
      }, 10_000);
      const st = await c.status(key('sem'));
      return st;
    })();
    await Promise.all(Array.from({ length: N + 2 }, (_, i) => worker(i % 2 ? b : a, 15)));
    const st = await seen;
    assert.equal(most, N, `at most ${N} at once, and ${N} reached`);
    assert.equal(st.slots, N);
    assert.deepEqual(st.holders.map((h) => h.slot).sort(), [1, 2, 3].slice(0, N));
    for (const h of st.holders) assert.equal(h.slots, N);
    for (const w of st.waiters) assert.equal(w.slots, N);
    assert.ok(st.holders.every((h) => typeof h.token === 'number' && h.token > 0));
    const all = [...tokens.values()].flat();
    assert.equal(new Set(all).size, all.length, 'every grant took a token of its own');
    for (const ts of tokens.values()) for (let i = 1; i < ts.length; i++) assert.ok(ts[i]! > ts[i - 1]!);
    const done = await a.status(key('sem'));
    assert.equal(done.held, false);
    assert.equal(done.slots, undefined);
  });

  test('N+2 processes of two controllers: a shared journal never shows more than N inside', async () => {
    const N = 2;
    const tmp = tempDir('hl-pgslots');
    try {
      const journal = join(tmp.dir, 'journal');
      writeFileSync(journal, '');
      const src = join(__dirname, '..', 'src', 'stores', 'postgres', 'store');
      // Each process: its own store (one run), rounds of take a slot, journal in, sleep, journal out, release.
      const script = `
        const { appendFileSync } = require('node:fs');
        const { PostgresStore } = require(${JSON.stringify(src)});
        const [url, controller, journal] = process.argv.slice(1);
        const s = new PostgresStore(url, { controller, log: () => undefined });
        (async () => {
          for (let i = 0; i < 12; i++) {
            const h = await s.acquire({ key: { id: 'semproc', name: 'semproc' }, mode: 'exclusive', wait: true,
              slots: ${N}, requester: { pid: process.pid, user: 'tester', controller } });
            appendFileSync(journal, 'in ' + h.slot + ' ' + h.token + ' ' + process.pid + '\\n');
            await new Promise((r) => setTimeout(r, Math.random() * 15));
            appendFileSync(journal, 'out ' + h.slot + ' ' + h.token + ' ' + process.pid + '\\n');
            await h.release();
          }
          await s.close();
        })().catch((e) => { process.stderr.write(String(e)); process.exit(1); });
      `;
      const runs = Array.from({ length: N + 2 }, (_, i) => {
        const child = spawn(process.execPath, ['-e', script, lockUrl(), `proc-${i % 2 ? 'b' : 'a'}`, journal], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        children.push(child);
        let err = '';
        child.stderr.on('data', (d) => (err += d));
        return new Promise<void>((resolve, reject) =>
          child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker failed: ${err}`)))),
        );
      });
      await Promise.all(runs);
      const lines = readFileSync(journal, 'utf8').trim().split('\n');
      assert.equal(lines.length, (N + 2) * 12 * 2);
      const inside = new Map<number, number>(); // slot -> token
      const tokens = new Set<number>();
      let most = 0;
      for (const line of lines) {
        const [ev, slotText, tokenText] = line.split(' ');
        const [sl, tok] = [Number(slotText), Number(tokenText)];
        if (ev === 'in') {
          assert.ok(!inside.has(sl), `slot ${sl} taken twice: ${line}`);
          assert.ok(sl >= 1 && sl <= N, line);
          assert.ok(!tokens.has(tok), `token ${tok} given twice`);
          tokens.add(tok);
          inside.set(sl, tok);
          most = Math.max(most, inside.size);
          assert.ok(inside.size <= N, `${inside.size} inside with slots: ${N}`);
        } else {
          assert.equal(inside.get(sl), tok, line);
          inside.delete(sl);
        }
      }
      assert.equal(most, N, `${N} reached`);
    } finally {
      tmp.cleanup();
    }
  });

  test('waiters for a slot are served in FIFO order across controllers', async () => {
    const [a, b, c, d] = [store('fifo-a'), store('fifo-b'), store('fifo-c'), store('fifo-d')];
    const h1 = await slot(a, 'semfifo', 2);
    const h2 = await slot(a, 'semfifo', 2);
    assert.ok(h1 && h2);
    assert.deepEqual([h1.slot, h2.slot], [1, 2]);
    assert.equal(await slot(b, 'semfifo', 2, false), null, 'a try with every slot taken is refused');
    await assert.rejects(slot(a, 'semfifo', 2), (err: unknown) => {
      assert.ok(err instanceof HostlockError && err.code === ErrorCode.Deadlock, String(err));
      assert.match(err.message, /this run already holds or waits for "semfifo" and would wait for itself/);
      return true;
    });
    const order: string[] = [];
    const pb = slot(b, 'semfifo', 2).then((h) => (order.push('b'), h));
    await until(async () => (await a.status(key('semfifo'))).waiters.length === 1);
    const pc = slot(c, 'semfifo', 2).then((h) => (order.push('c'), h));
    await until(async () => (await a.status(key('semfifo'))).waiters.length === 2);
    const pd = slot(d, 'semfifo', 2).then((h) => (order.push('d'), h));
    await until(async () => (await a.status(key('semfifo'))).waiters.length === 3);
    await h2.release();
    const hb = await pb;
    assert.equal(hb!.slot, 2, 'the freed slot');
    assert.equal(await settled(pc), false);
    await h1.release();
    const hc = await pc;
    assert.equal(hc!.slot, 1);
    assert.ok(hc!.token > hb!.token && hb!.token > h2.token);
    await hb!.release();
    const hd = await pd;
    assert.deepEqual(order, ['b', 'c', 'd']);
    await Promise.all([hc!.release(), hd!.release()]);
  });

  test('a request with other slots, or without them, is refused naming both values', async () => {
    const a = store('mis-a');
    const b = store('mis-b');
    const h = await slot(a, 'semmis', 3);
    assert.ok(h);
    const refused = (asked: string, found: string) => (err: unknown) => {
      assert.ok(err instanceof HostlockError, String(err));
      assert.equal(err.code, ErrorCode.SlotsMismatch);
      assert.equal(err.code, -32008);
      assert.match(err.message, new RegExp(`is in use ${found} \\(controller mis-a, pid ${process.pid}`));
      assert.match(
        err.message,
        new RegExp(`this request asks ${asked}: every user of a lock must give the same slots`),
      );
      return true;
    };
    await assert.rejects(slot(b, 'semmis', 2), refused('with slots: 2', 'with slots: 3'));
    await assert.rejects(slot(b, 'semmis', 2, false), refused('with slots: 2', 'with slots: 3'));
    await assert.rejects(slot(b, 'semmis', undefined), refused('without slots', 'with slots: 3'));
    await assert.rejects(
      b.acquire({ key: key('semmis'), mode: 'shared', requester: who('mis-b'), wait: true }),
      refused('without slots', 'with slots: 3'),
    );
    assert.equal((await b.status(key('semmis'))).waiters.length, 0, 'nothing was queued');
    await h.release();
    const plain = await slot(a, 'semmis', undefined);
    assert.ok(plain);
    await assert.rejects(slot(b, 'semmis', 3), (err: unknown) => {
      assert.ok(err instanceof HostlockError && err.code === ErrorCode.SlotsMismatch, String(err));
      assert.match(err.message, /is in use without slots .*this request asks with slots: 3/);
      assert.deepEqual(err.data, { asked: 3, found: null });
      return true;
    });
    await plain.release();
    const again = await slot(b, 'semmis', 2);
    assert.ok(again, 'once nobody holds it, any count may start');
    await again.release();
  });

  test('a killed holder and a closed one free their slots for waiters', async () => {
    const killed = await slotHolderProcess('semkill', 2, 'kill-ctl');
    const b = store('kill-b');
    const hb = await slot(b, 'semkill', 2);
    assert.ok(hb && hb.slot !== killed.slot);
    const c = store('kill-c');
    const pc = slot(c, 'semkill', 2);
    await until(async () => (await b.status(key('semkill'))).waiters.length === 1);
    const t0 = Date.now();
    killed.child.kill('SIGKILL');
    const hc = await pc;
    const ms = Date.now() - t0;
    assert.ok(ms < 2000, `the killed holder's slot passed on after ${ms} ms`);
    assert.equal(hc!.slot, killed.slot, 'the killed holder’s slot');
    assert.ok(hc!.token > killed.token);
    const d = store('kill-d');
    const pd = slot(d, 'semkill', 2);
    await until(async () => (await c.status(key('semkill'))).waiters.length === 1);
    await b.close();
    const hd = await pd;
    assert.equal(hd!.slot, hb.slot);
    process.stderr.write(`[pg-coord] killed slot holder's slot passed on in ${ms} ms\n`);
    await Promise.all([hc!.release(), hd!.release()]);
  });
});

describe('postgresql history', { timeout: 120_000 }, () => {
  test('grants, releases, a timeout and a lost hold from two controllers, in order; name and since filter', async () => {
    const a = store('hist-a');
    const b = store('hist-b');
    const t0 = Date.now();
    // The policy's records around a store's grants (manager.ts), by hand.
    const ha = await slot(a, 'hist', undefined);
    a.record({ event: 'grant', key: key('hist'), mode: 'exclusive', who: who('hist-a', 'deploy'), token: ha!.token });
    const ac = new AbortController();
    const pb = b.acquire({
      key: key('hist'),
      mode: 'exclusive',
      requester: who('hist-b'),
      wait: true,
      signal: ac.signal,
    });
    await sleep(100);
    ac.abort();
    await assert.rejects(pb, { name: 'AbortError' });
    b.record({
      event: 'timeout',
      key: key('hist'),
      mode: 'exclusive',
      who: who('hist-b', 'migrate'),
      wait: 'w-1',
      waited: 0.1,
    });
    await sleep(20);
    const mid = Date.now();
    await sleep(20);
    await ha!.release();
    a.record({ event: 'release', key: key('hist'), mode: 'exclusive', who: who('hist-a', 'deploy'), token: ha!.token });
    let lostReason = '';
    const hb = await b.acquire({
      key: key('hist'),
      mode: 'exclusive',
      requester: who('hist-b', 'migrate'),
      wait: true,
      onLost: (r) => (lostReason = r),
    });
    b.record({ event: 'grant', key: key('hist'), mode: 'exclusive', who: who('hist-b', 'migrate'), token: hb!.token });
    const other = await slot(a, 'hist-other', undefined);
    a.record({ event: 'grant', key: key('hist-other'), mode: 'exclusive', who: who('hist-a'), token: other!.token });
    await sleep(HISTORY_WAIT); // b's grant is written before its session ends
    await pg.query('SELECT pg_terminate_backend($1)', [b.backendPid]);
    await until(() => lostReason !== '', 5000);

    const c = store('hist-reader');
    let recs: HistoryRecord[] = [];
    await until(async () => (recs = await c.history({ name: 'hist' })).length === 5, 5000);
    assert.deepEqual(
      recs.map((r) => `${r.event} ${r.controller}`),
      ['grant hist-a', 'timeout hist-b', 'release hist-a', 'grant hist-b', 'lost hist-b'],
    );
    for (const r of recs) {
      assert.equal(r.name, 'hist');
      assert.equal(r.path, 'hist');
      assert.equal(r.pid, process.pid);
      assert.equal(r.user, 'tester');
      assert.ok(Date.parse(r.t) >= t0 - 1000);
    }
    const [grantA, timeoutB, releaseA, grantB, lostB] = recs;
    assert.ok(grantA && timeoutB && releaseA && grantB && lostB);
    assert.equal(grantA.token, ha!.token);
    assert.equal(grantA.task, 'deploy');
    assert.equal(timeoutB.wait, 'w-1');
    assert.equal(releaseA.token, ha!.token);
    assert.equal(grantB.token, hb!.token);
    assert.equal(lostB.token, hb!.token);
    assert.equal(lostB.task, 'migrate');
    assert.match(lostB.reason!, /session/);
    for (let i = 1; i < recs.length; i++) assert.ok(recs[i]!.t >= recs[i - 1]!.t, 'oldest first');

    const since = await c.history({ name: 'hist', since: mid });
    assert.deepEqual(
      since.map((r) => r.event),
      ['release', 'grant', 'lost'],
    );
    const all = await c.history({ since: t0 - 1000 });
    assert.ok(all.some((r) => r.name === 'hist-other' && r.event === 'grant' && r.token === other!.token));
    assert.equal(all.filter((r) => r.name === 'hist').length, 5);
    assert.deepEqual(await c.history({ name: 'hist-none' }), []);
    await other!.release();
  });

  test('records are queued at once and written in order; the history keeps the newest rows', async () => {
    const a = store('hist-many');
    const h = await slot(a, 'hist-many', undefined);
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++)
      a.record({ event: 'wait', key: key('hist-many'), mode: 'exclusive', who: who('hist-many'), wait: `w${i}` });
    const ms = performance.now() - t0;
    assert.ok(ms < 200, `1000 records queued in ${ms.toFixed(1)} ms`);
    await h!.release();
    const recs = await a.history({ name: 'hist-many' });
    assert.equal(recs.length, 1000);
    assert.deepEqual(
      recs.slice(0, 3).map((r) => r.wait),
      ['w0', 'w1', 'w2'],
    );
    // The bound: rows past the newest HISTORY_ROWS go when the next thousand is written.
    await pg.query(
      `INSERT INTO ${SCHEMA}.history (at, key, name, rec) SELECT now() - interval '1 day', 'pad', 'pad', '{}'::jsonb ` +
        `FROM generate_series(1, ${HISTORY_ROWS})`,
    );
    for (let i = 0; i < HISTORY_PRUNE_EVERY; i++)
      a.record({ event: 'wait', key: key('hist-bound'), mode: 'exclusive', who: who('hist-many'), wait: `b${i}` });
    await a.history({ name: 'hist-bound' });
    const [{ n } = {}] = await pg.query(`SELECT count(*)::int AS n FROM ${SCHEMA}.history`);
    assert.ok((n as number) <= HISTORY_ROWS, `${String(n)} rows kept`);
    assert.equal((await a.history({ name: 'hist-bound' })).length, HISTORY_PRUNE_EVERY, 'the newest are kept');
    assert.equal((await a.history({ name: 'hist-many' })).length, 0, 'the oldest went');
  });
});

describe('postgresql break', { timeout: 120_000 }, () => {
  test('a hold broken from a third controller: the waiter gets it within 1 s, the holder hears who broke it', async () => {
    const a = store('brk-a');
    const b = store('brk-b');
    const c = store('brk-c');
    let lost = '';
    let lostCalls = 0;
    const ha = await a.acquire({
      key: key('brk'),
      mode: 'exclusive',
      requester: who('brk-a', 'stuck'),
      wait: true,
      onLost: (r) => ((lost = r), lostCalls++),
    });
    const kept = await slot(a, 'brk-kept', undefined);
    const pb = b.acquire({ key: key('brk'), mode: 'exclusive', requester: who('brk-b'), wait: true });
    await until(async () => (await c.status(key('brk'))).waiters.length === 1);
    const [shown] = (await c.status(key('brk'))).holders;
    assert.equal(shown?.token, ha!.token, 'status shows the token to break');
    const t0 = Date.now();
    const breaker: Requester = { pid: 4242, user: 'oncall', controller: 'brk-c' };
    const victim = await c.breakHold(key('brk'), ha!.token, breaker, 'stuck for an hour');
    const hb = await pb;
    const ms = Date.now() - t0;
    assert.ok(ms < 1000, `the waiter got it ${ms} ms after the break`);
    process.stderr.write(`[pg-coord] waiter granted ${ms} ms after the break\n`);
    assert.ok(hb!.token > ha!.token);
    assert.equal(victim.controller, 'brk-a');
    assert.equal(victim.task, 'stuck');
    assert.equal(victim.token, ha!.token);
    await until(() => lost !== '', 2000);
    assert.equal(ha!.lost, true);
    assert.match(lost, /broken by oncall@brk-c pid 4242: stuck for an hour/);
    assert.equal(kept!.lost, false, "the run's other holds stay");
    assert.equal((await c.status(key('brk-kept'))).holders[0]?.controller, 'brk-a');
    await ha!.release(); // the holder's late release touches nothing
    assert.equal((await c.status(key('brk'))).holders[0]?.controller, 'brk-b');
    await sleep(HISTORY_WAIT);
    assert.equal(lostCalls, 1, 'onLost once');

    const recs = await c.history({ name: 'brk' });
    const br = recs.find((r) => r.event === 'break');
    assert.ok(br, JSON.stringify(recs));
    assert.equal(br.controller, 'brk-c');
    assert.equal(br.user, 'oncall');
    assert.equal(br.reason, 'stuck for an hour');
    assert.equal(br.token, ha!.token);
    assert.equal(br.victim?.controller, 'brk-a');
    assert.equal(br.victim?.pid, process.pid);
    assert.equal(br.victim?.task, 'stuck');
    const lr = recs.find((r) => r.event === 'lost');
    assert.ok(lr && lr.controller === 'brk-a' && lr.token === ha!.token, JSON.stringify(recs));
    assert.ok(recs.indexOf(br) < recs.indexOf(lr), 'the break, then the loss it caused');
    await hb!.release();
    await kept!.release();
  });

  test('breaking a hold that is not there is refused, saying what is held', async () => {
    const a = store('brk2-a');
    const c = store('brk2-c');
    const breaker: Requester = { pid: 1, user: 'oncall', controller: 'brk2-c' };
    await assert.rejects(c.breakHold(key('brk-free'), 1, breaker, 'why'), (err: unknown) => {
      assert.ok(err instanceof HostlockError, String(err));
      assert.equal(err.code, ErrorCode.InvalidParams);
      assert.match(err.message, /no hold of 'brk-free' .* has token 1: it is not held/);
      assert.doesNotMatch(err.message, new RegExp(LOCK_PASSWORD));
      return true;
    });
    const h = await slot(a, 'brk-other', undefined);
    await assert.rejects(c.breakHold(key('brk-other'), h!.token + 100, breaker, 'why'), (err: unknown) => {
      assert.ok(err instanceof HostlockError && err.code === ErrorCode.InvalidParams, String(err));
      assert.match(err.message, new RegExp(`it is held with token ${h!.token} \\(tester@brk2-a pid ${process.pid}\\)`));
      assert.match(err.message, /hostlock status --backend/);
      return true;
    });
    assert.equal(h!.lost, false);
    await h!.release();
    await assert.rejects(c.breakHold(key('brk-other'), h!.token, breaker, 'why'), /it is not held/);
    const recs = await c.history({ name: 'brk-other' });
    assert.equal(recs.filter((r) => r.event === 'break').length, 0, 'a refused break records nothing');
  });
});

describe('postgresql schema upgrade', { timeout: 120_000 }, () => {
  test('a version 1 schema is upgraded in place by its owner, keeping tokens and grants', async () => {
    await pg.query(`DROP SCHEMA ${SCHEMA} CASCADE`);
    await pg.query(TABLES_V1_SQL);
    // Version 1 as an owner who limited locking to the lock role left it.
    await pg.query(`INSERT INTO ${SCHEMA}.names (key, name, token) VALUES ('old', 'old', 41)`);
    await pg.query(
      `CREATE FUNCTION ${SCHEMA}.me() RETURNS integer LANGUAGE sql AS 'SELECT 1'; ` +
        `REVOKE EXECUTE ON FUNCTION ${SCHEMA}.me() FROM PUBLIC; ` +
        `GRANT USAGE ON SCHEMA ${SCHEMA} TO ${LOCK_ROLE}, hl_noperm; GRANT EXECUTE ON FUNCTION ${SCHEMA}.me() TO ${LOCK_ROLE}`,
    );
    const locker = store('upg-lock');
    await assert.rejects(slot(locker, 'old', undefined), (err: unknown) => {
      assert.ok(err instanceof HostlockError, String(err));
      assert.match(err.message, /upgrading schema hostlock from version 1 to \d+/);
      assert.match(err.message, /hostlock setup/);
      assert.doesNotMatch(err.message, new RegExp(LOCK_PASSWORD));
      return true;
    });
    const owner = store('upg-owner', pg.url(undefined, undefined, '?sslmode=disable'));
    const h = await slot(owner, 'old', undefined);
    assert.equal(h!.token, 42, 'the token goes on from the version 1 table');
    await h!.release();
    assert.deepEqual(await pg.query(`SELECT version FROM ${SCHEMA}.meta`), [{ version: SCHEMA_VERSION }]);
    const [priv] = await pg.query(
      `SELECT has_function_privilege('${LOCK_ROLE}', '${SCHEMA}.enqueue(text,text,text,boolean,jsonb,integer)', 'EXECUTE') AS lock, ` +
        `has_function_privilege('hl_noperm', '${SCHEMA}.enqueue(text,text,text,boolean,jsonb,integer)', 'EXECUTE') AS other`,
    );
    assert.deepEqual(priv, { lock: true, other: false }, 'EXECUTE stays with the lock role only');
    const again = await slot(locker, 'old', 2);
    assert.ok(again && again.token === 43 && again.slot === 1, 'the lock role locks on the upgraded schema');
    await again.release();
    await pg.query(`DROP SCHEMA ${SCHEMA} CASCADE`);
    await setup(pg.url(), { grantTo: LOCK_ROLE });
  });
});
