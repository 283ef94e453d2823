// The etcd store's coordination features against a real 3-member cluster:
// slots (a counting semaphore across controllers), the history kept in etcd,
// and breaking a hold from another controller.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Requester, StoreAcquire } from '../src/store';
import { EtcdStore } from '../src/stores/etcd';
import { sleep, until } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';

const TTL = 2;
let cluster: EtcdCluster;
let prefix = '';
let testNo = 0;
const stores: EtcdStore[] = [];
const fresh = () => (prefix = `coord${process.pid}-${++testNo}/`);

type Store = EtcdStore & { who: Requester };

function store(controller: string, pid = process.pid): Store {
  const s = new EtcdStore(`${cluster.url}?ttl=${TTL}&prefix=${encodeURIComponent(prefix)}`) as Store;
  s.who = { pid, user: 'tester', controller, run: `run-${controller}-${pid}`, host: 'web1', task: 'deploy' };
  stores.push(s);
  return s;
}

const take = (s: Store, id: string, opts: Partial<StoreAcquire> = {}) =>
  s.acquire({ key: { id, name: id }, mode: 'exclusive', requester: s.who, wait: true, ...opts });

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
      st.holders.map((h) => [h.controller, h.pid, h.slot]),
      [
        ['ctl-b', process.pid, 2],
        ['ctl-a', process.pid + 1, 1],
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
