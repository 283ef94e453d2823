// Record cutting: a history record fits a journal line or a store's value,
// whatever its fields hold, and a record that fits is kept as it is.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeadlockLink, HistoryRecord } from '../src/store/types';
import { fitRecord, MAX_RECORD } from '../src/store/records';

const base: HistoryRecord = {
  t: '2026-01-01T12:00:00.000Z',
  event: 'grant',
  name: 'web1',
  path: '/locks/web1.lock',
  mode: 'exclusive',
  token: 42,
  wait: '123-0000000001',
  waited: 1.5,
  pid: 4242,
  helper_pid: 4243,
  user: 'deploy',
  controller: 'ctl-a',
  run: 'run-1',
  playbook: 'site.yml',
  play: 'deploy',
  task: 'Lock the host',
  host: 'web1',
};

const link = (i: number): DeadlockLink => ({ run: `r${i}`, name: `lock-${i}`, heldBy: `r${i + 1}`, task: 'x' });
const bytes = (s: string) => Buffer.byteLength(s);

test('a record that fits is kept whole', () => {
  assert.deepEqual(JSON.parse(fitRecord(base)), base);
  const deadlock = { ...base, event: 'deadlock' as const, cycle: [link(1), link(2)], reason: 'deadlock: …' };
  assert.deepEqual(JSON.parse(fitRecord(deadlock)), deadlock);
});

test('long text fields are cut, the rest kept, and the result fits', () => {
  const long = { ...base, task: 't'.repeat(5000), play: 'p'.repeat(3000), reason: 'r'.repeat(300) };
  const text = fitRecord(long);
  assert.ok(bytes(text) <= MAX_RECORD, `${bytes(text)} bytes`);
  const got = JSON.parse(text) as HistoryRecord;
  assert.equal(got.task, 't'.repeat(200) + '…');
  assert.equal(got.play, 'p'.repeat(200) + '…');
  assert.equal(got.reason, 'r'.repeat(200) + '…');
  for (const k of ['t', 'event', 'name', 'path', 'mode', 'token', 'wait', 'waited', 'pid', 'run', 'host'] as const)
    assert.equal(got[k], base[k], k);
});

test('a long cycle is capped at 8 links and a victim dropped', () => {
  const rec = {
    ...base,
    event: 'deadlock' as const,
    cycle: Array.from({ length: 60 }, (_, i) => link(i)),
    victim: { pid: 1, user: 'u', controller: 'c', task: 'v'.repeat(3000) },
  };
  const text = fitRecord(rec);
  assert.ok(bytes(text) <= MAX_RECORD, `${bytes(text)} bytes`);
  const got = JSON.parse(text) as HistoryRecord;
  assert.deepEqual(got.cycle, rec.cycle.slice(0, 8));
  assert.equal(got.victim, undefined);
});

// Every text field of a record filled with `s`.
const filled = (s: string): Partial<HistoryRecord> => {
  const text = s.repeat(Math.ceil(3000 / s.length));
  const out: Record<string, string> = {};
  for (const k of ['name', 'path', 'wait', 'reason', 'user', 'controller', 'run', 'playbook', 'play', 'task', 'host'])
    out[k] = text;
  return out;
};

test('the result fits the bounds the stores give, also for multi-byte and escaped text', () => {
  const cases: Array<[string, Partial<HistoryRecord>]> = [
    ['ascii', filled('x')],
    ['multi-byte', filled('日本')],
    ['astral', filled('🔒')],
    ['escaped', filled('\u0001"\n')],
  ];
  // The journal's line (MAX_RECORD) and an etcd value (8000).
  for (const max of [MAX_RECORD, 8000]) {
    for (const [what, fields] of cases) {
      const text = fitRecord({ ...base, ...fields }, max);
      assert.ok(bytes(text) <= max, `${what} at ${max}: ${bytes(text)} bytes`);
      const got = JSON.parse(text) as HistoryRecord;
      assert.equal(got.event, 'grant', `${what} at ${max}: the event is kept`);
      assert.equal(got.token, 42, `${what} at ${max}: the token is kept`);
    }
  }
});
