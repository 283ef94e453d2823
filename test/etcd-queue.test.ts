// The etcd store's queue rules, on keys as the gateway returns them: who
// waits behind whom (etcd's RWMutex rule), who holds with slots, which slot
// a new holder takes, tokens, waiter ids, and which other user of a name a
// slots mismatch names. No cluster: these are pure functions of a snapshot.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { b64 } from '../src/stores/etcd/gateway';
import {
  blockersOf,
  freeSlot,
  holds,
  parseRecord,
  slotsConflict,
  statusOf,
  tokenOf,
  waitId,
  waitingRecord,
  type KeyRecord,
  type Kv,
} from '../src/stores/etcd/queue';

const who = { pid: 100, user: 'u', controller: 'ctl' };

// A key of name "n" created at `create` (and last written at `mod`).
function kv(create: number, record: Partial<KeyRecord> | string, mod = create): Kv {
  const value =
    typeof record === 'string'
      ? record
      : JSON.stringify({ ...waitingRecord(who, 'exclusive', undefined), ...record, pid: create });
  return {
    key: b64(`hostlock/locks/n/k${create}`),
    create_revision: String(create),
    mod_revision: String(mod),
    value: b64(value),
  };
}

const names = (s: Set<string>) => [...s].map((k) => k.replace('hostlock/locks/n/', '')).sort();

describe('etcd queue rules', () => {
  test('an exclusive request waits behind every earlier key, a shared one behind earlier exclusive keys', () => {
    const q = [kv(10, { mode: 'shared' }), kv(11, { mode: 'exclusive' }), kv(12, { mode: 'shared' })];
    const late = kv(13, { mode: 'shared' });
    const all = [...q, late];
    assert.deepEqual(names(blockersOf(all, q[0]!, 'shared')), []);
    assert.deepEqual(names(blockersOf(all, q[1]!, 'exclusive')), ['k10']);
    assert.deepEqual(names(blockersOf(all, q[2]!, 'shared')), ['k11'], 'writer preference: a later reader waits');
    assert.deepEqual(names(blockersOf(all, late, 'exclusive')), ['k10', 'k11', 'k12']);
    assert.deepEqual(names(blockersOf(all, late, 'shared')), ['k11']);
  });

  test('an unreadable record blocks like an exclusive one, and is no holder or waiter', () => {
    const q = [kv(5, 'not json'), kv(6, { mode: 'shared' })];
    assert.deepEqual(names(blockersOf(q, q[1]!, 'shared')), ['k5']);
    assert.equal(parseRecord(q[0]!), null);
    const st = statusOf({ id: 'n' }, q);
    assert.deepEqual(st.holders, []);
    assert.deepEqual(
      st.waiters.map((w) => w.pid),
      [6],
    );
  });

  test('status: holders by the queue rule, waiters in queue order with padded ids, tries never waiting', () => {
    const q = [
      kv(7, { mode: 'shared', held: true, run: 'r1', host: 'web1' }),
      kv(8, { mode: 'shared', held: false }),
      kv(9, { mode: 'exclusive' }),
      kv(10, { mode: 'exclusive', trying: true }),
      kv(11, { mode: 'shared' }),
    ];
    const st = statusOf({ id: 'n', name: 'n' }, q);
    assert.equal(st.held, true);
    assert.equal(st.mode, 'shared');
    assert.deepEqual(
      st.holders.map((h) => [h.pid, h.token, h.run, h.host]),
      [
        [7, 7, 'r1', 'web1'],
        [8, 8, undefined, undefined],
      ],
      'a key that holds by the rule is a holder before its held mark is written',
    );
    assert.deepEqual(
      st.waiters.map((w) => [w.pid, w.id]),
      [
        [9, '00000000000000000009'],
        [11, '00000000000000000011'],
      ],
    );
    assert.ok(
      waitId(kv(9, {})) < waitId(kv(10, {})) && waitId(kv(99, {})) < waitId(kv(100, {})),
      'ids sort as numbers',
    );
    assert.equal(st.slots, undefined);
    assert.deepEqual(statusOf({ id: 'n' }, []), {
      key: { id: 'n' },
      held: false,
      mode: null,
      holders: [],
      waiters: [],
    });
  });

  test('with slots: as many holders as slots, each with its slot, tokens from the slot write', () => {
    const q = [
      kv(20, { slots: 2, held: true, slot: 2 }, 31),
      kv(21, { slots: 2, held: true, slot: 1 }, 30),
      kv(22, { slots: 2 }),
    ];
    assert.ok(holds(q, q[0]!, parseRecord(q[0]!)!));
    assert.ok(holds(q, q[1]!, parseRecord(q[1]!)!));
    assert.ok(!holds(q, q[2]!, parseRecord(q[2]!)!));
    const st = statusOf({ id: 'n' }, q);
    assert.equal(st.slots, 2);
    assert.deepEqual(
      st.holders.map((h) => [h.pid, h.slot, h.token]),
      [
        [20, 2, 31],
        [21, 1, 30],
      ],
    );
    assert.deepEqual(
      st.waiters.map((w) => w.pid),
      [22],
    );
    assert.equal(freeSlot(q.slice(0, 2), q[0]!), 2, 'its own slot is free to it');
    assert.equal(freeSlot(q.slice(0, 2), q[1]!), 1);
    assert.equal(freeSlot([kv(40, { slots: 3 }), kv(41, { slots: 3, slot: 1 })], kv(40, { slots: 3 })), 2);
    assert.equal(freeSlot([kv(50, { slots: 3, slot: 2 }), kv(51, { slots: 3 })], kv(51, { slots: 3 })), 1);
  });

  test('tokens: the create revision, the slot write with slots, the kept one once a break marks the key', () => {
    assert.equal(tokenOf(kv(5, {}, 9), parseRecord(kv(5, {}, 9))), 5);
    const slotted = kv(5, { slots: 2, slot: 1, held: true }, 9);
    assert.equal(tokenOf(slotted, parseRecord(slotted)), 9);
    const waiting = kv(5, { slots: 2, slot: 1, held: false }, 9);
    assert.equal(tokenOf(waiting, parseRecord(waiting)), 5);
    const marked = kv(5, { slots: 2, slot: 1, held: true, token: 9, broken: { by: 'x', reason: 'y' } }, 12);
    assert.equal(tokenOf(marked, parseRecord(marked)), 9);
    assert.equal(tokenOf(kv(6, 'garbage', 8), null), 6);
  });

  test('a slots mismatch names the first other user that disagrees, holding or waiting', () => {
    const holder = kv(1, { slots: 2, held: true, slot: 1, run: 'A', task: 'restart' });
    const mine = kv(2, { slots: 3 });
    assert.deepEqual(slotsConflict([holder, mine], mine, 3), {
      found: 2,
      by: { pid: 1, controller: 'ctl', run: 'A', task: 'restart' },
      held: true,
    });
    assert.equal(slotsConflict([holder, kv(2, { slots: 2 })], kv(2, { slots: 2 }), 2), null);
    // Held without slots, asked with: the plain holder is named.
    const plain = kv(3, {});
    const asks = kv(4, { slots: 2 });
    assert.equal(slotsConflict([plain, asks], asks, 2)?.found, undefined);
    assert.equal(slotsConflict([plain, asks], asks, 2)?.held, true);
    // The other user only waits (behind two keys, with one slot).
    const q = [kv(5, {}), kv(6, {}), kv(7, { slots: 1 }), kv(8, {})];
    const c = slotsConflict(q, q[3]!, undefined);
    assert.equal(c?.found, 1);
    assert.equal(c?.held, false);
    assert.equal(c?.by?.pid, 7);
  });

  test('the record a request writes: its owner, not held, slots only when asked', () => {
    const r = waitingRecord({ ...who, run: 'r', playbook: 'p', play: 'pl', task: 't', host: 'h' }, 'shared', undefined);
    assert.equal(r.held, false);
    assert.equal(r.mode, 'shared');
    assert.deepEqual([r.run, r.playbook, r.play, r.task, r.host], ['r', 'p', 'pl', 't', 'h']);
    assert.ok(!('slots' in r));
    assert.equal(waitingRecord(who, 'exclusive', 4).slots, 4);
    assert.ok(Math.abs(Date.parse(r.since) - Date.now()) < 5000);
  });
});
