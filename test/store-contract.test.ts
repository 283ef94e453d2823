// The guarantees of the lock-store seam (src/store/contract.ts), written once
// and run against every store: the local flock store, PostgreSQL and etcd,
// each on a private server of its own. Each case reads as the guarantee it
// checks; what only one store can have (partitions, member loss, sslmode,
// the schema) is tested beside its store.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, HostlockError } from '../src/core/errors';
import { AbortError } from '../src/store/errors';
import type { HistoryEvent, HistoryEventKind } from '../src/store/types';
import { sleep, until } from './rpc';
import { STORE_KINDS, storeServer, storesFor, type StoreServer } from './support/fixtures';

// The owner fields every holder and waiter record names.
const OWNER = ['pid', 'user', 'controller', 'run', 'playbook', 'play', 'task', 'host'] as const;

function isAbort(err: unknown): boolean {
  assert.ok(err instanceof AbortError, `not the stores' AbortError: ${String(err)}`);
  return true;
}

function isStoreClosed(err: unknown): boolean {
  assert.ok(err instanceof HostlockError, `not a HostlockError: ${String(err)}`);
  assert.equal(err.code, ErrorCode.StoreUnavailable);
  assert.match(err.message, /the store was closed/);
  return true;
}

for (const kind of STORE_KINDS) {
  describe(`store contract: ${kind}`, { timeout: 120_000 }, () => {
    let server: StoreServer;
    before(async () => {
      server = await storeServer(kind);
    });
    after(async () => {
      await server?.stop();
    });

    test('an exclusive hold excludes every other requester until it is released', async (t) => {
      const s = storesFor(t, server);
      const [a, b] = [s.open('ctl-a'), s.open('ctl-b')];
      const h = await a.try('x');
      assert.ok(h, 'a free key is granted');
      assert.equal(h.mode, 'exclusive');
      assert.equal(h.lost, false);
      assert.equal(await b.try('x'), null, 'a try on a held key answers null');
      assert.equal(await b.try('x', { mode: 'shared' }), null, 'shared beside exclusive');
      const waiting = b.wait('x');
      assert.equal(await waiting.settledWithin(300), false, 'granted while held');
      await h.release();
      const hb = await waiting.result;
      assert.ok(hb, 'the waiter is granted once released');
      const st = await a.store.status(s.key('x'));
      assert.equal(st.held, true);
      assert.equal(st.mode, 'exclusive');
      assert.deepEqual(
        st.holders.map((x) => x.controller),
        ['ctl-b'],
      );
      await hb.release();
      assert.equal((await a.store.status(s.key('x'))).held, false);
    });

    test('shared holds share with each other, never with an exclusive one', async (t) => {
      const s = storesFor(t, server);
      const [a, b, c] = [s.open('ctl-a'), s.open('ctl-b'), s.open('ctl-c')];
      const s1 = await a.try('x', { mode: 'shared' });
      const s2 = await b.try('x', { mode: 'shared' });
      assert.ok(s1 && s2, 'two shared holds at once');
      const st = await c.store.status(s.key('x'));
      assert.equal(st.mode, 'shared');
      assert.deepEqual(st.holders.map((x) => x.controller).sort(), ['ctl-a', 'ctl-b']);
      assert.equal(await c.try('x'), null, 'exclusive beside shared');
      const writer = c.wait('x');
      await s1.release();
      assert.equal(await writer.settledWithin(300), false, 'exclusive granted beside the other shared hold');
      await s2.release();
      const w = await writer.result;
      assert.ok(w);
      assert.equal(await a.try('x', { mode: 'shared' }), null, 'shared beside exclusive');
      await w.release();
    });

    test('holder and waiter records name their owner', async (t) => {
      const s = storesFor(t, server);
      const [a, b, observer] = [s.open('ctl-a'), s.open('ctl-b'), s.open('ctl-c')];
      const h = await a.try('x');
      assert.ok(h);
      const waiting = b.wait('x');
      await until(async () => (await observer.store.status(s.key('x'))).waiters.length === 1, 5000, 20);
      const st = await observer.store.status(s.key('x'));
      const [holder] = st.holders;
      const [waiter] = st.waiters;
      assert.ok(holder && waiter);
      for (const f of OWNER) {
        assert.equal(holder[f], a.who[f], `holder's ${f}`);
        assert.equal(waiter[f], b.who[f], `waiter's ${f}`);
      }
      assert.equal(holder.mode, 'exclusive');
      assert.equal(holder.token, h.token);
      assert.ok(!Number.isNaN(Date.parse(holder.since)), `holder since ${holder.since}`);
      assert.ok(!Number.isNaN(Date.parse(waiter.since)), `waiter since ${waiter.since}`);
      await h.release();
      await (await waiting.result)?.release();
    });

    test('slots: at most N holders, each in a slot of its own', async (t) => {
      const s = storesFor(t, server);
      const [a, b, c] = [s.open('ctl-a'), s.open('ctl-b'), s.open('ctl-c')];
      const ha = await a.try('pool', { slots: 2 });
      const hb = await b.try('pool', { slots: 2 });
      assert.ok(ha && hb, 'two holders of two slots');
      assert.deepEqual([ha.slot, hb.slot].sort(), [1, 2]);
      assert.equal(await c.try('pool', { slots: 2 }), null, 'a third holder of two slots');
      const st = await c.store.status(s.key('pool'));
      assert.equal(st.held, true);
      assert.equal(st.slots, 2);
      assert.deepEqual(st.holders.map((x) => x.slot).sort(), [1, 2]);
      const third = c.wait('pool', { slots: 2 });
      assert.equal(await third.settledWithin(300), false, 'granted with both slots taken');
      const freed = ha.slot;
      await ha.release();
      const hc = await third.result;
      assert.ok(hc);
      assert.equal(hc.slot, freed, 'the waiter takes the slot that was freed');
      assert.ok(hc.token > Math.max(ha.token, hb.token), 'slot holds get increasing tokens too');
      await hb.release();
      await hc.release();
    });

    test('a slot count that disagrees is refused with SlotsMismatch naming both values', async (t) => {
      const s = storesFor(t, server);
      const [a, b] = [s.open('ctl-a'), s.open('ctl-b')];
      const mismatch = (asked: number | null, found: number | null) => (err: unknown) => {
        assert.ok(err instanceof HostlockError, `not a HostlockError: ${String(err)}`);
        assert.equal(err.code, ErrorCode.SlotsMismatch);
        const say = (n: number | null) => (n === null ? 'without slots' : `slots: ${n}`);
        assert.ok(err.message.includes(say(asked)), `${err.message} names ${say(asked)}`);
        assert.ok(err.message.includes(say(found)), `${err.message} names ${say(found)}`);
        assert.deepEqual({ asked: err.data?.asked, found: err.data?.found }, { asked, found });
        return true;
      };
      const slotted = await a.try('pool', { slots: 2 });
      assert.ok(slotted);
      await assert.rejects(b.try('pool', { slots: 3 }), mismatch(3, 2));
      await assert.rejects(b.try('pool'), mismatch(null, 2));
      await assert.rejects(b.wait('pool', { slots: 3 }).result, mismatch(3, 2));
      await slotted.release();
      const plain = await a.try('plain');
      assert.ok(plain);
      await assert.rejects(b.try('plain', { slots: 2 }), mismatch(2, null));
      await plain.release();
      // Nothing of the refused requests stays behind.
      const st = await a.store.status(s.key('pool'));
      assert.deepEqual([st.held, st.holders.length, st.waiters.length], [false, 0, 0]);
    });

    test('an aborted wait rejects with AbortError, holds nothing, and leaves the queue', async (t) => {
      const s = storesFor(t, server);
      const [a, b, c] = [s.open('ctl-a'), s.open('ctl-b'), s.open('ctl-c')];
      const h = await a.try('x');
      assert.ok(h);
      const ac = new AbortController();
      const waiting = b.wait('x', { signal: ac.signal });
      await until(async () => (await a.store.status(s.key('x'))).waiters.length === 1, 5000, 20);
      ac.abort();
      await assert.rejects(waiting.result, isAbort);
      assert.deepEqual((await a.store.status(s.key('x'))).waiters, [], 'the aborted waiter is still listed');
      const next = c.wait('x');
      await h.release();
      const hc = await next.result;
      assert.ok(hc, 'the next waiter is granted');
      const st = await a.store.status(s.key('x'));
      assert.deepEqual(
        st.holders.map((x) => x.controller),
        ['ctl-c'],
        'the aborted waiter holds it',
      );
      await hc.release();
      assert.ok(await b.try('x'), 'free once released: the aborted wait left no ghost');
    });

    test('a wait whose timeout fires as the lock is released holds nothing, then or later', async (t) => {
      const s = storesFor(t, server);
      const [a, b] = [s.open('ctl-a'), s.open('ctl-b')];
      for (let round = 0; round < 3; round++) {
        const h = await a.try('x');
        assert.ok(h);
        const ac = new AbortController();
        const waiting = b.wait('x', { signal: ac.signal });
        await until(async () => (await a.store.status(s.key('x'))).waiters.length === 1, 5000, 20);
        // The grant may land first: it must not stick.
        const released = h.release();
        ac.abort();
        const got = await waiting.result.catch(() => null);
        await released;
        await got?.release();
        await sleep(200);
        const st = await a.store.status(s.key('x'));
        assert.deepEqual([st.held, st.holders.length, st.waiters.length], [false, 0, 0], JSON.stringify(st));
        const again = await a.try('x');
        assert.ok(again, 'free for the next');
        await again.release();
      }
    });

    test('a timed-out wait holds nothing and leaves the queue; a busy try leaves nothing either', async (t) => {
      const s = storesFor(t, server);
      const [a, b, c] = [s.open('ctl-a'), s.open('ctl-b'), s.open('ctl-c')];
      const h = await a.try('x');
      assert.ok(h);
      assert.equal(await c.try('x'), null);
      const t0 = Date.now();
      const waiting = b.wait('x', { signal: AbortSignal.timeout(400) });
      await assert.rejects(waiting.result, isAbort);
      assert.ok(Date.now() - t0 >= 350, `ended after ${Date.now() - t0} ms`);
      const st = await c.store.status(s.key('x'));
      assert.deepEqual(
        st.holders.map((x) => x.controller),
        ['ctl-a'],
      );
      assert.deepEqual(st.waiters, []);
      await h.release();
      await sleep(200);
      assert.equal((await c.store.status(s.key('x'))).held, false, 'a ghost holds the key');
    });

    test('tokens strictly increase per key across holders, store objects and restarts', async (t) => {
      const s = storesFor(t, server);
      let last = 0;
      for (let i = 0; i < 4; i++) {
        const c = s.open(`run${i}`);
        const h = await c.try('fence');
        assert.ok(h);
        assert.ok(Number.isInteger(h.token) && h.token > last, `token ${h.token} after ${last}`);
        last = h.token;
        if (i % 2) await c.store.close();
        else await h.release();
      }
      const [a, b] = [s.open('ctl-a'), s.open('ctl-b')];
      const [s1, s2] = [await a.try('fence', { mode: 'shared' }), await b.try('fence', { mode: 'shared' })];
      assert.ok(s1 && s2);
      assert.ok(s1.token > last && s2.token > s1.token, `shared tokens ${s1.token}, ${s2.token} after ${last}`);
      await s1.release();
      await s2.release();
      const other = await a.try('other');
      assert.ok(other && Number.isInteger(other.token) && other.token > 0);
      await other.release();
    });

    test('a hold lost under its holder is reported once, at once, and stays lost', async (t) => {
      const s = storesFor(t, server);
      const a = s.open('ctl-a');
      const reasons: string[] = [];
      const h = await a.try('x', { onLost: (r) => reasons.push(r) });
      assert.ok(h);
      // Timed from the fault's effect, once the admin's command has returned
      // (etcdctl's own start can take a second on a loaded machine).
      await s.admin.lose(a.store, h);
      const t0 = Date.now();
      await until(() => reasons.length > 0, s.admin.lostWithinMs + 2000, 10);
      const took = Date.now() - t0;
      assert.ok(took <= s.admin.lostWithinMs, `onLost after ${took} ms`);
      assert.ok(reasons[0]!.length > 10, `a reason the user can read: ${reasons[0]}`);
      assert.equal(h.lost, true);
      await sleep(s.admin.lostWithinMs + 500);
      assert.equal(reasons.length, 1, `onLost called ${reasons.length} times`);
      assert.equal(h.lost, true, 'the hold stays lost');
      await h.release(); // a lost hold releases quietly
      await until(async () => (await s.admin.history(a.store, s.key('x'))).some((r) => r.event === 'lost'), 5000, 50);
      const lost = (await s.admin.history(a.store, s.key('x'))).filter((r) => r.event === 'lost');
      assert.equal(lost.length, 1, JSON.stringify(lost));
      assert.equal(lost[0]!.token, h.token);
      assert.equal(lost[0]!.reason, reasons[0]);
      assert.equal(lost[0]!.controller, 'ctl-a');
    });

    test('a dead owner is never reported as a holder or a waiter', async (t) => {
      const s = storesFor(t, server);
      const a = s.open('ctl-a');
      const mine = await a.try('w');
      assert.ok(mine);
      const child = await s.child('doomed', 'h', 'w');
      let st = await a.store.status(s.key('h'));
      assert.deepEqual(
        st.holders.map((x) => x.pid),
        [child.pid],
      );
      assert.deepEqual(
        (await a.store.status(s.key('w'))).waiters.map((x) => x.pid),
        [child.pid],
      );
      await child.kill();
      const gone = async () => {
        const [h, w] = [await a.store.status(s.key('h')), await a.store.status(s.key('w'))];
        return !h.held && !h.holders.some((x) => x.pid === child.pid) && !w.waiters.some((x) => x.pid === child.pid);
      };
      const t0 = Date.now();
      await until(gone, s.admin.deadWithinMs + 3000, 50);
      assert.ok(Date.now() - t0 <= s.admin.deadWithinMs, `still reported ${Date.now() - t0} ms after its death`);
      assert.ok(await a.try('h'), "free for others once its owner's gone");
      await sleep(500);
      st = await a.store.status(s.key('w'));
      assert.ok(!st.waiters.some((x) => x.pid === child.pid), 'the dead waiter came back');
      await mine.release();
    });

    test('passwords never leave the store: describe and errors mask them', async (t) => {
      const s = storesFor(t, server);
      const secret = 'Sup3r-s3cret-pw';
      const store = s.admin.secretStore(secret);
      t.after(() => store.close());
      assert.ok(!store.describe.includes(secret), store.describe);
      if (kind !== 'flock') assert.match(store.describe, /\*\*\*/, 'the password is shown masked');
      const err = await Promise.resolve()
        .then(() =>
          store.acquire({
            key: s.key('x'),
            mode: 'exclusive',
            requester: { pid: process.pid, user: 'tester', controller: 'secret' },
            wait: false,
          }),
        )
        .then(
          async (h) => {
            await h?.release();
            return null;
          },
          (e: unknown) => e as Error,
        );
      if (kind !== 'flock') assert.ok(err instanceof HostlockError, `not a HostlockError: ${err?.message}`);
      if (err) {
        const text = [err.message, err.stack, JSON.stringify(err), JSON.stringify((err as HostlockError).data)];
        for (const x of text) assert.ok(!x?.includes(secret), `the password in: ${x}`);
      }
    });

    test('close releases every hold and abandons every wait at once', async (t) => {
      const s = storesFor(t, server);
      const [a, b] = [s.open('ctl-a'), s.open('ctl-b')];
      assert.ok(await a.try('c1'));
      assert.ok(await a.try('c2', { mode: 'shared' }));
      const hb = await b.try('c3');
      assert.ok(hb);
      const aWait = a.wait('c3');
      await until(async () => (await b.store.status(s.key('c3'))).waiters.length === 1, 5000, 20);
      await a.store.close();
      const other = s.open('ctl-c');
      assert.ok(await other.try('c1'), 'an exclusive hold outlived close');
      assert.ok(await other.try('c2'), 'a shared hold outlived close');
      assert.ok(await aWait.settledWithin(2000), 'the wait outlived close');
      await assert.rejects(aWait.result, isStoreClosed);
      await hb.release();
      await sleep(200);
      const st = await b.store.status(s.key('c3'));
      assert.ok(!st.holders.some((x) => x.controller === 'ctl-a'), 'the abandoned wait was granted');
      assert.deepEqual(st.waiters, []);
    });

    test('a closed store refuses new requests with "the store was closed"', async (t) => {
      const s = storesFor(t, server);
      const a = s.open('ctl-a');
      const h = await a.try('x');
      assert.ok(h);
      await a.store.close();
      await assert.rejects(a.try('y'), isStoreClosed);
      await assert.rejects(a.wait('y').result, isStoreClosed);
      assert.ok(await s.open('ctl-b').try('y'), 'a refused request left a ghost');
      // Recording stays best effort: never a throw.
      a.store.record?.({ event: 'release', key: s.key('x'), mode: 'exclusive', who: a.who, token: h.token });
    });

    test('history keeps every event with its owner, oldest first', async (t) => {
      const s = storesFor(t, server);
      const a = s.open('ctl-a');
      const key = s.key('hist');
      const at = Date.now() - 10_000;
      const events: Array<Omit<HistoryEvent, 'key' | 'who'> & { event: HistoryEventKind }> = [
        { event: 'wait', mode: 'exclusive', wait: 'w1' },
        { event: 'grant', mode: 'exclusive', token: 7, wait: 'w1', waited: 1.5 },
        { event: 'release', mode: 'exclusive', token: 7 },
        { event: 'wait', mode: 'shared', wait: 'w2' },
        { event: 'timeout', mode: 'shared', wait: 'w2', waited: 3 },
        { event: 'wait', mode: 'shared', wait: 'w3' },
        { event: 'cancel', mode: 'shared', wait: 'w3', waited: 0.25 },
        { event: 'lost', mode: 'exclusive', token: 8, reason: 'the session ended' },
      ];
      assert.equal(typeof a.store.record, 'function', 'every store records history');
      for (const [i, e] of events.entries()) a.store.record?.({ ...e, key, who: a.who, at: new Date(at + i * 1000) });
      await until(async () => (await s.admin.history(a.store, key)).length >= events.length, 10_000, 50);
      const got = await s.admin.history(a.store, key);
      assert.equal(got.length, events.length, JSON.stringify(got));
      for (const [i, e] of events.entries()) {
        const r = got[i]!;
        assert.equal(r.t, new Date(at + i * 1000).toISOString());
        assert.equal(r.event, e.event);
        assert.equal(r.name, key.name);
        assert.equal(r.path, key.id);
        assert.equal(r.mode, e.mode);
        assert.equal(r.token, e.token);
        assert.equal(r.wait, e.wait);
        assert.equal(r.waited, e.waited);
        assert.equal(r.reason, e.reason);
        assert.equal(r.helper_pid, process.pid);
        for (const f of OWNER) assert.equal(r[f], a.who[f], `${e.event}'s ${f}`);
      }
    });
  });
}
