// The etcd store's coordination features against a real 3-member cluster:
// slots (a counting semaphore across controllers), the history kept in etcd,
// and breaking a hold from another controller.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { HistoryRecord, Requester } from '../src/store/types';
import type { StoreAcquire } from '../src/store/contract';
import { EtcdStore } from '../src/stores/etcd/store';
import { sleep, until } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';

const TTL = 2;
let cluster: EtcdCluster;
let prefix = '';
let testNo = 0;
const stores: EtcdStore[] = [];
const fresh = () => (prefix = `coord${process.pid}-${++testNo}/`);

type Store = EtcdStore & { who: Requester };

function store(controller: string, pid = process.pid, options = ''): Store {
  const s = new EtcdStore(`${cluster.url}?ttl=${TTL}&prefix=${encodeURIComponent(prefix)}${options}`) as Store;
  s.who = { pid, user: 'tester', controller, run: `run-${controller}-${pid}`, host: 'web1', task: 'deploy' };
  stores.push(s);
  return s;
}

const take = (s: Store, id: string, opts: Partial<StoreAcquire> = {}) =>
  s.acquire({ key: { id, name: id }, mode: 'exclusive', requester: s.who, wait: true, ...opts });

function etcdctl(...args: string[]) {
  const r = spawnSync('etcdctl', ['--endpoints', cluster.endpoints.join(','), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ETCDCTL_API: '3' },
    timeout: 10_000,
  });
  assert.equal(r.status, 0, `etcdctl ${args.join(' ')}: ${r.error?.message ?? r.stderr}`);
  return r.stdout;
}

before(async () => {
  cluster = await etcdForTests();
});
after(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await cluster?.stop();
});

describe('etcd slots', { timeout: 120_000 }, () => {
  test('N+2 holders from two controllers: never more than N at once, each in a slot of its own', async () => {
    fresh();
    const N = 3;
    const a = store('ctl-a');
    const b = store('ctl-b');
    const inUse = new Map<number, string>(); // slot -> worker
    let most = 0;
    let statusSeen = false;
    const grants: { token: number; grantedAt: number; releasedAt: number }[] = [];
    const worker = async (w: number) => {
      const s = w % 2 ? b : a;
      for (let round = 0; round < 4; round++) {
        const h = await take(s, 'pool', { slots: N });
        assert.ok(h);
        const grantedAt = performance.now();
        assert.ok(h.slot !== undefined && h.slot >= 1 && h.slot <= N, `slot ${h.slot} out of 1..${N}`);
        assert.equal(
          inUse.get(h.slot),
          undefined,
          `slot ${h.slot} given to worker ${w} while ${inUse.get(h.slot)} has it`,
        );
        inUse.set(h.slot, `worker ${w}`);
        most = Math.max(most, inUse.size);
        assert.ok(inUse.size <= N, `${inUse.size} holders of ${N} slots`);
        if (!statusSeen && inUse.size === N) {
          const st = await store('observer').status({ id: 'pool' });
          if (st.holders.length === N && st.holders.every((x) => x.slot !== undefined)) {
            statusSeen = true;
            assert.equal(st.slots, N);
            assert.deepEqual(st.holders.map((x) => x.slot).sort(), [1, 2, 3]);
            for (const x of st.holders) assert.equal(x.slots, N);
            for (const x of st.waiters) assert.equal(x.slots, N);
          }
        }
        await sleep(20 + Math.random() * 60);
        inUse.delete(h.slot);
        const releasedAt = performance.now();
        await h.release();
        grants.push({ token: h.token, grantedAt, releasedAt });
      }
    };
    await Promise.all(Array.from({ length: N + 2 }, (_, w) => worker(w)));
    assert.equal(most, N, 'the slots were never all used at once');
    assert.ok(statusSeen, 'status never showed every slot held');
    assert.equal(new Set(grants.map((g) => g.token)).size, grants.length, 'two grants with one token');
    for (const x of grants)
      for (const y of grants)
        if (x.releasedAt < y.grantedAt) assert.ok(y.token > x.token, `token ${y.token} granted after ${x.token} ended`);
    const st = await a.status({ id: 'pool' });
    assert.equal(st.held, false);
    assert.equal(st.waiters.length, 0);
  });

  test('a request with other slots, or without, is refused naming both values', async () => {
    fresh();
    const a = store('ctl-a');
    const b = store('ctl-b');
    const h = await take(a, 'pool', { slots: 2 });
    assert.equal(h!.slot, 1);
    const refused = (e: unknown, both: RegExp[]) => {
      const err = e as { code?: number; message: string; data?: { asked: unknown; found: unknown } };
      assert.equal(err.code, -32008, err.message);
      for (const re of both) assert.match(err.message, re);
      assert.match(err.message, /ctl-a/);
      return true;
    };
    await assert.rejects(take(b, 'pool', { slots: 3 }), (e) => refused(e, [/with slots: 2/, /asks with slots: 3/]));
    await assert.rejects(take(b, 'pool', { slots: 3, wait: false }), (e) => refused(e, [/slots: 2/, /slots: 3/]));
    await assert.rejects(take(b, 'pool'), (e) => refused(e, [/with slots: 2/, /asks without slots/]));
    await assert.rejects(take(b, 'pool', { mode: 'shared' }), (e) => refused(e, [/with slots: 2/, /without slots/]));
    // Refused requests leave nothing behind; one that agrees gets the other slot.
    let st = await b.status({ id: 'pool' });
    assert.equal(st.holders.length, 1);
    assert.equal(st.waiters.length, 0);
    const h2 = await take(b, 'pool', { slots: 2, wait: false });
    assert.equal(h2!.slot, 2);
    await h!.release();
    await h2!.release();

    // The reverse: held without slots, asked with them.
    const plain = await take(a, 'plain');
    await assert.rejects(take(b, 'plain', { slots: 2 }), (e) =>
      refused(e, [/in use without slots/, /asks with slots: 2/]),
    );
    st = await b.status({ id: 'plain' });
    assert.equal(st.holders.length, 1);
    assert.equal(st.waiters.length, 0);
    assert.equal(st.slots, undefined);
    await plain!.release();
  });

  test('a closed holder frees its slot for the longest waiter', async () => {
    fresh();
    const [s1, s2, s3, s4] = [
      store('ctl-a'),
      store('ctl-b'),
      store('ctl-a', process.pid + 1),
      store('ctl-b', process.pid + 2),
    ];
    const h1 = await take(s1, 'pool', { slots: 2 });
    const h2 = await take(s2, 'pool', { slots: 2 });
    assert.deepEqual([h1!.slot, h2!.slot], [1, 2]);
    const order: string[] = [];
    const w1 = take(s3, 'pool', { slots: 2 }).then((h) => (order.push('w1'), h));
    await until(async () => (await s1.status({ id: 'pool' })).waiters.length === 1, 5000, 20);
    const w2 = take(s4, 'pool', { slots: 2 }).then((h) => (order.push('w2'), h));
    await until(async () => (await s1.status({ id: 'pool' })).waiters.length === 2, 5000, 20);
    await sleep(200);
    assert.deepEqual(order, []);
    const t0 = performance.now();
    await s1.close();
    const g1 = await w1;
    assert.ok(performance.now() - t0 < 1000, 'the waiter was not let in at once');
    assert.equal(g1!.slot, 1, 'the freed slot');
    assert.ok(g1!.token > h2!.token);
    await sleep(200);
    assert.deepEqual(order, ['w1'], 'the later waiter got in too');
    const st = await s2.status({ id: 'pool' });
    assert.deepEqual(
      st.holders.map((h) => [h.controller, h.pid, h.slot, h.token]),
      [
        ['ctl-b', process.pid, 2, h2!.token],
        ['ctl-a', process.pid + 1, 1, g1!.token],
      ],
    );
    assert.deepEqual(
      st.waiters.map((w) => [w.controller, w.pid]),
      [['ctl-b', process.pid + 2]],
    );
    await h2!.release();
    const g2 = await w2;
    assert.equal(g2!.slot, 2);
    await g1!.release();
    await g2!.release();
  });
});

describe('etcd history', { timeout: 120_000 }, () => {
  test('grants, releases, a timeout and a lost hold from two controllers, in order; since and name filter', async () => {
    fresh();
    const a = store('ctl-a');
    const b = store('ctl-b', process.pid + 1);
    const x = { id: 'x', name: 'x' };
    const t0 = Date.now();
    const ha = (await take(a, 'x'))!;
    a.record({ event: 'grant', key: x, mode: 'exclusive', who: a.who, token: ha.token, at: ha.since, waited: 0 });

    // b times out behind a.
    const abort = new AbortController();
    const started = Date.now();
    const waiting = take(b, 'x', { signal: abort.signal });
    setTimeout(() => abort.abort(), 300);
    await assert.rejects(waiting, { name: 'AbortError' });
    b.record({ event: 'timeout', key: x, mode: 'exclusive', who: b.who, waited: (Date.now() - started) / 1000 });

    // a lets go (recorded as the policy does, as it releases); b gets it.
    const lost: string[] = [];
    const bWait = take(b, 'x', { onLost: (r) => lost.push(r) });
    await until(async () => (await a.status(x)).waiters.length === 1, 5000, 20);
    await sleep(5);
    a.record({ event: 'release', key: x, mode: 'exclusive', who: a.who, token: ha.token });
    await sleep(5);
    await ha.release();
    const hb = (await bWait)!;
    b.record({ event: 'grant', key: x, mode: 'exclusive', who: b.who, token: hb.token, at: hb.since });
    await sleep(20);
    const mid = Date.now();
    await sleep(20);

    // An admin deletes b's key: b's store records the lost hold itself.
    etcdctl('del', '--prefix', `${prefix}locks/x/`);
    await until(() => lost.length === 1, 5000, 10);
    assert.ok(hb.lost);

    // Another name, for the filter.
    const hy = (await take(a, 'y'))!;
    a.record({ event: 'grant', key: { id: 'y', name: 'y' }, mode: 'exclusive', who: a.who, token: hy.token });

    const observer = store('ctl-c');
    let all: HistoryRecord[] = [];
    await until(async () => (all = await observer.history({ since: t0 })).length === 6, 5000, 50);
    assert.deepEqual(
      all.map((r) => [r.event, r.name]),
      [
        ['grant', 'x'],
        ['timeout', 'x'],
        ['release', 'x'],
        ['grant', 'x'],
        ['lost', 'x'],
        ['grant', 'y'],
      ],
    );
    const xs = await observer.history({ name: 'x' });
    assert.deepEqual(
      xs.map((r) => [r.event, r.controller, r.token]),
      [
        ['grant', 'ctl-a', ha.token],
        ['timeout', 'ctl-b', undefined],
        ['release', 'ctl-a', ha.token],
        ['grant', 'ctl-b', hb.token],
        ['lost', 'ctl-b', hb.token],
      ],
    );
    assert.ok(hb.token > ha.token);
    for (const r of xs) {
      assert.equal(r.name, 'x');
      assert.equal(r.user, 'tester');
      assert.equal(r.task, 'deploy');
      assert.equal(r.pid, r.controller === 'ctl-a' ? process.pid : process.pid + 1);
      assert.equal(r.run, r.controller === 'ctl-a' ? a.who.run : b.who.run);
      assert.ok(Date.parse(r.t) >= t0 - 1000, r.t);
    }
    assert.ok(xs[1]!.waited! >= 0.25, `waited ${xs[1]!.waited}`);
    assert.match(xs[4]!.reason!, /^its etcd key .*deleted/);
    assert.deepEqual(
      (await observer.history({ name: 'y' })).map((r) => [r.event, r.name, r.token]),
      [['grant', 'y', hy.token]],
    );
    assert.deepEqual(
      (await observer.history({ since: mid })).map((r) => [r.event, r.name]),
      [
        ['lost', 'x'],
        ['grant', 'y'],
      ],
    );
    assert.deepEqual(await observer.history({ name: 'x', since: Date.now() + 60_000 }), []);
    await hy.release();
  });

  test('the history keeps its newest records up to the cap', async () => {
    fresh();
    const s = store('ctl-a', process.pid, '&history=20');
    const key = { id: 'z', name: 'z' };
    const base = Date.now();
    for (let i = 0; i < 45; i++) {
      s.record({ event: 'grant', key, mode: 'exclusive', who: s.who, token: i, at: new Date(base + i) });
    }
    await until(async () => (await s.history({})).length === 20, 5000, 50);
    assert.deepEqual(
      (await s.history({})).map((r) => r.token),
      Array.from({ length: 20 }, (_, i) => 25 + i),
    );
    const off = store('ctl-a', process.pid, '&history=0');
    off.record({ event: 'grant', key, mode: 'exclusive', who: s.who, token: 99 });
    await sleep(200);
    assert.equal((await s.history({})).length, 20, 'history=0 still recorded');
  });
});

describe('etcd break', { timeout: 120_000 }, () => {
  test("another controller breaks a hold: the waiter gets it within 1 s, the holder hears it lost, the run's other holds stay", async (t) => {
    fresh();
    const a = store('ctl-a');
    const b = store('ctl-b', process.pid + 1);
    const c = store('ctl-c', process.pid + 2);
    const x = { id: 'x', name: 'x' };
    const lostA: string[] = [];
    const ha = (await take(a, 'x', { onLost: (r) => lostA.push(r) }))!;
    const other = (await take(a, 'other'))!;
    const bWait = take(b, 'x');
    await until(async () => (await c.status(x)).waiters.length === 1, 5000, 20);
    await sleep(100);

    const t0 = performance.now();
    const victim = await c.breakHold(x, ha.token, c.who, 'stuck for an hour');
    const hb = (await bWait)!;
    const took = performance.now() - t0;
    assert.ok(took < 1000, `the waiter got the lock ${took.toFixed(0)} ms after the break began`);
    t.diagnostic(`break to the waiter's grant: ${took.toFixed(1)} ms`);
    assert.equal(victim.controller, 'ctl-a');
    assert.equal(victim.token, ha.token);
    assert.equal(victim.run, a.who.run);
    assert.ok(hb.token > ha.token);
    await until(() => lostA.length > 0, 1000, 5);
    assert.equal(lostA.length, 1);
    assert.match(lostA[0]!, /^broken by tester \(pid \d+\) on controller ctl-c: stuck for an hour/);
    assert.ok(ha.lost);

    // Only that hold went: the run's lease and its other hold stay.
    await sleep(TTL * 1000);
    assert.equal(other.lost, false);
    const st = await c.status({ id: 'other', name: 'other' });
    assert.deepEqual(
      st.holders.map((h) => h.controller),
      ['ctl-a'],
    );
    assert.deepEqual(
      (await c.status(x)).holders.map((h) => [h.controller, h.token]),
      [['ctl-b', hb.token]],
    );
    await ha.release(); // a lost hold's release deletes nothing
    assert.equal((await c.status(x)).holders.length, 1);

    // The history shows the break (from c) and the loss (from a).
    let recs: HistoryRecord[] = [];
    await until(async () => (recs = await c.history({ name: 'x' })).length === 2, 5000, 50);
    const brk = recs.find((r) => r.event === 'break')!;
    assert.equal(brk.controller, 'ctl-c');
    assert.equal(brk.pid, process.pid + 2);
    assert.equal(brk.token, ha.token);
    assert.equal(brk.reason, 'stuck for an hour');
    assert.equal(brk.victim?.controller, 'ctl-a');
    assert.equal(brk.victim?.run, a.who.run);
    const lost = recs.find((r) => r.event === 'lost')!;
    assert.equal(lost.controller, 'ctl-a');
    assert.equal(lost.token, ha.token);
    assert.match(lost.reason!, /broken by .* ctl-c: stuck for an hour/);
    await hb.release();
    await other.release();
  });

  test('breaking a hold that is not there is refused saying why', async () => {
    fresh();
    const a = store('ctl-a');
    const b = store('ctl-b', process.pid + 1);
    const x = { id: 'x', name: 'x' };
    const refused = (re: RegExp) => (e: unknown) => {
      const err = e as { code?: number; message: string };
      assert.equal(err.code, -32602, err.message);
      assert.match(err.message, re);
      assert.match(err.message, /cannot break 'x'/);
      return true;
    };
    await assert.rejects(a.breakHold(x, 12345, a.who, 'r'), refused(/no hold of it has token 12345; it is not held/));
    const h = (await take(a, 'x'))!;
    const bWait = take(b, 'x');
    await until(async () => (await a.status(x)).waiters.length === 1, 5000, 20);
    await assert.rejects(
      a.breakHold(x, h.token - 1, a.who, 'r'),
      refused(new RegExp(`no hold of it has token ${h.token - 1}; its holders' tokens: ${h.token}`)),
    );
    // The waiter's key: its create revision is the token it would hold with.
    const queue = JSON.parse(etcdctl('get', '--prefix', `${prefix}locks/x/`, '-w', 'json')) as {
      kvs: { create_revision: number }[];
    };
    const waiterToken = queue.kvs.map((kv) => kv.create_revision).find((r) => r !== h.token)!;
    await assert.rejects(a.breakHold(x, waiterToken, a.who, 'r'), refused(/is a waiter's, not a hold's/));
    assert.equal(h.lost, false);
    await h.release();
    const hb = (await bWait)!;
    assert.equal(hb.token, waiterToken);
    await assert.rejects(a.breakHold(x, h.token, a.who, 'r'), refused(/no hold of it has token/));
    assert.equal(hb.lost, false);
    await hb.release();
  });
});

// A try writes a key and, when the lock is busy, deletes it at once: status
// and the deadlock graph must never count it as a waiter. Another run's
// deadlock check reading that passing key would judge the cycle on a wait
// that is not the one queued next, and two runs closing a cycle together
// could both be refused.
describe('etcd waiters', { timeout: 120_000 }, () => {
  test("a busy try's key never shows as a waiter", async () => {
    fresh();
    const a = store('ctl-a');
    const b = store('ctl-b');
    const c = store('ctl-c');
    const h = await take(a, 'busy');
    assert.ok(h);
    let tries = 0;
    let reads = 0;
    const seen: string[] = [];
    let trying = true;
    const tryer = (async () => {
      for (; tries < 300; tries++) assert.equal(await take(b, 'busy', { wait: false }), null);
      trying = false;
    })();
    while (trying) {
      const [st] = await c.waitGraph();
      reads++;
      for (const w of st?.waiters ?? []) seen.push(JSON.stringify(w));
    }
    await tryer;
    assert.deepEqual(seen, [], `${seen.length} of ${reads} readings listed a try as waiting`);
    await h.release();
  });
});
