// What only the etcd store has, against a real 3-member cluster (the
// guarantees every store shares are in store-contract.test.ts): writer
// preference in its queue, status and list from another controller, a lease
// kept alive across TTLs, lost holds when an admin revokes a lease or deletes
// a key, one lease and few connections per run, and its URLs and errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, HostlockError } from '../src/core/errors';
import type { Requester } from '../src/store/types';
import type { StoreHold } from '../src/store/contract';
import { EtcdStore } from '../src/stores/etcd/store';
import { maskUrl } from '../src/store/mask';
import { parseEtcdUrl } from '../src/stores/etcd/url';
import { sleep, until } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';

const TTL = 2;
let cluster: EtcdCluster;
let seq = 0;
let prefix = '';
const stores: EtcdStore[] = [];

function store(controller = 'ctl-a'): EtcdStore & { who: Requester } {
  const s = new EtcdStore(`${cluster.url}?ttl=${TTL}&prefix=${encodeURIComponent(prefix)}`) as EtcdStore & {
    who: Requester;
  };
  s.who = { pid: process.pid, user: 'tester', controller, run: `run-${controller}`, host: 'web1' };
  stores.push(s);
  return s;
}

const take = (s: EtcdStore & { who: Requester }, id: string, opts: Partial<Parameters<EtcdStore['acquire']>[0]> = {}) =>
  s.acquire({ key: { id, name: id }, mode: 'exclusive', requester: s.who, wait: true, ...opts });

function etcdctl(...args: string[]) {
  const r = spawnSync('etcdctl', ['--endpoints', cluster.endpoints.join(','), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ETCDCTL_API: '3' },
    timeout: 10_000,
  });
  assert.equal(
    r.status,
    0,
    `etcdctl ${args.join(' ')}: ${r.error?.message ?? r.stderr} (etcdctl comes with etcd-client)`,
  );
  return r.stdout;
}

// Established TCP connections from this process to a local port.
function connectionsTo(port: number): number {
  const mine = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) mine.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 9 && f[2]!.endsWith(`:${hex}`) && f[3] === '01' && mine.has(f[9]!)).length;
}

before(async () => {
  cluster = await etcdForTests();
});
after(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await cluster?.stop();
});

describe('etcd store', { timeout: 120_000 }, () => {
  let testNo = 0;
  const fresh = () => (prefix = `t${process.pid}-${++testNo}-${++seq}/`);

  test('a queued writer blocks later readers; grants follow the queue and tokens increase', async () => {
    fresh();
    const [r1s, ws, r2s] = [store('r1'), store('w'), store('r2')];
    const order: string[] = [];
    const r1 = await take(r1s, 'db', { mode: 'shared' });
    const w = take(ws, 'db').then((h) => (order.push('w'), h));
    await until(async () => (await r1s.status({ id: 'db' })).waiters.length === 1, 5000, 20);
    assert.equal(await take(r2s, 'db', { mode: 'shared', wait: false }), null, 'a reader jumped a queued writer');
    const r2 = take(r2s, 'db', { mode: 'shared' }).then((h) => (order.push('r2'), h));
    await until(async () => (await r1s.status({ id: 'db' })).waiters.length === 2, 5000, 20);
    const st = await store('observer').status({ id: 'db' });
    assert.deepEqual(
      st.waiters.map((x) => [x.controller, x.mode]),
      [
        ['w', 'exclusive'],
        ['r2', 'shared'],
      ],
    );
    assert.equal(st.holders[0]?.controller, 'r1');
    await sleep(200);
    assert.deepEqual(order, []);
    await r1!.release();
    const wh = await w;
    await sleep(200);
    assert.deepEqual(order, ['w']);
    await wh!.release();
    const r2h = await r2;
    assert.deepEqual(order, ['w', 'r2']);
    assert.ok(r1!.token < wh!.token && wh!.token < r2h!.token, `${r1!.token} ${wh!.token} ${r2h!.token}`);
    await r2h!.release();
  });

  test('status and list from another controller: holders and queue in order, with their owners', async () => {
    fresh();
    const a = store('ctl-a');
    const b = store('ctl-b');
    const h = await take(a, 'web/1');
    const w = take(b, 'web/1');
    const h2 = await take(b, 'web/2', { mode: 'shared' });
    const observer = store('ctl-c');
    await until(async () => (await observer.status({ id: 'web/1' })).waiters.length === 1, 5000, 20);
    const st = await observer.status({ id: 'web/1', name: 'web/1' });
    assert.equal(st.held, true);
    assert.equal(st.mode, 'exclusive');
    assert.deepEqual(
      { ...st.holders[0], since: 'x', token: 0 },
      {
        pid: process.pid,
        user: 'tester',
        controller: 'ctl-a',
        run: 'run-ctl-a',
        host: 'web1',
        mode: 'exclusive',
        since: 'x',
        token: 0,
      },
    );
    assert.ok(st.holders[0]!.token! > 0, 'the holder shows its fencing token');
    assert.equal(st.waiters[0]?.controller, 'ctl-b');
    const all = await observer.list('web/');
    assert.deepEqual(
      all.map((k) => [k.key.name, k.mode, k.holders.length, k.waiters.length]),
      [
        ['web/1', 'exclusive', 1, 1],
        ['web/2', 'shared', 1, 0],
      ],
    );
    await h!.release();
    await (await w)!.release();
    await h2!.release();
    assert.deepEqual(await observer.list(''), []);
  });

  test('a hold outlives several TTLs (the lease is kept alive)', async () => {
    fresh();
    const a = store('a');
    let lost = '';
    const h = await take(a, 'long', { onLost: (r) => (lost = r) });
    await sleep(TTL * 1000 * 2.5);
    assert.equal(lost, '');
    assert.equal(h!.lost, false);
    assert.equal(await take(store('b'), 'long', { wait: false }), null);
    await h!.release();
  });

  test('an admin revoking the lease: onLost once, at once; the waits of that run fail; others proceed', async () => {
    fresh();
    const a = store('a');
    const b = store('b');
    const lost: string[] = [];
    const h = await take(a, 'k1', { onLost: (r) => lost.push(r) });
    const other = await take(b, 'k2');
    const aWait = take(a, 'k2');
    aWait.catch(() => {});
    await until(async () => (await b.status({ id: 'k2' })).waiters.length === 1, 5000, 20);
    const revokedAt = Date.now();
    etcdctl('lease', 'revoke', BigInt(a.leaseId!).toString(16));
    await until(() => lost.length > 0, 5000, 10);
    const after = Date.now() - revokedAt;
    assert.ok(after < 1000, `onLost came ${after} ms after the revoke`);
    assert.match(lost[0]!, /^its etcd key .* was deleted \(by an admin, or its lease was revoked\)$/);
    assert.equal(h!.lost, true);
    await assert.rejects(aWait, /lock lost while waiting/);
    assert.ok(await take(b, 'k1', { wait: false }), 'the revoked hold still blocks');
    await sleep(300);
    assert.equal(lost.length, 1, 'onLost called more than once');
    await h!.release(); // a lost hold releases quietly
    await other!.release();
    // The store goes on with a fresh lease.
    const again = await take(a, 'k3');
    assert.ok(again && again.token > h!.token);
  });

  test('an admin deleting the key: onLost at once; the next waiter gets the lock', async () => {
    fresh();
    const a = store('a');
    const b = store('b');
    const lost: string[] = [];
    const h: StoreHold | null = await take(a, 'k', { onLost: (r) => lost.push(r) });
    const bWait = take(b, 'k');
    await until(async () => (await a.status({ id: 'k' })).waiters.length === 1, 5000, 20);
    const holderKey = etcdctl('get', '--prefix', '--keys-only', `${prefix}locks/k/`).split('\n').filter(Boolean)[0]!;
    etcdctl('del', holderKey);
    await until(() => lost.length > 0, 2000, 10);
    assert.match(lost[0]!, /deleted/);
    const bh = await bWait;
    assert.ok(bh!.token > h!.token);
  });

  test('100 holds of one run share one lease, one watch and at most 4 connections per member', async () => {
    fresh();
    // Connections are counted for the whole process: only this store's may be open.
    await Promise.all(stores.splice(0).map((s) => s.close()));
    const a = store('a');
    const holds = await Promise.all(Array.from({ length: 100 }, (_, i) => take(a, `host${i}`)));
    assert.equal(new Set(holds.map((h) => h!.token)).size, 100);
    const leases = etcdctl('get', '--prefix', '--print-value-only=false', '-w', 'json', `${prefix}locks/`);
    const kvs = (JSON.parse(leases) as { kvs: { lease: number }[] }).kvs;
    assert.equal(kvs.length, 100);
    assert.equal(new Set(kvs.map((kv) => kv.lease)).size, 1, 'more than one lease');
    const perMember = cluster.endpoints.map((e) => connectionsTo(Number(e.split(':').pop())));
    assert.ok(
      perMember.every((n) => n <= 5),
      `connections per member: ${perMember.join(', ')}`,
    );
    await Promise.all(holds.map(async (h) => h!.release()));
  });
});

describe('etcd backend URLs and errors', { timeout: 30_000 }, () => {
  test('members, options and credentials are parsed; the password is masked', () => {
    const c = parseEtcdUrl('etcd://alice:p%40ss@h1:2379,h2,[::1]:2400/?prefix=team/&ttl=5&timeout_ms=500');
    assert.deepEqual(c.endpoints, ['http://h1:2379', 'http://h2:2379', 'http://[::1]:2400']);
    assert.equal(c.user, 'alice');
    assert.equal(c.password, 'p@ss');
    assert.equal(c.prefix, 'team/');
    assert.equal(c.ttlSeconds, 5);
    assert.equal(c.timeoutMs, 500);
    assert.equal(c.masked, 'etcd://alice:***@h1:2379,h2,[::1]:2400/?prefix=team/&ttl=5&timeout_ms=500');
    const s = parseEtcdUrl('etcd+https://h1?cacert=/ca.pem&cert=/c.pem&key=/k.pem');
    assert.deepEqual(s.endpoints, ['https://h1:2379']);
    assert.equal(s.cacert, '/ca.pem');
    assert.equal(maskUrl('etcd+https://u:secret@h'), 'etcd+https://u:***@h');
  });

  test('bad URLs are refused with what to write instead, password masked', () => {
    for (const [url, why] of [
      ['etcd://u:hunter2@h1:2379?ttl=1', /at least 2/],
      ['etcd://u:hunter2@h1:99999', /out of range/],
      ['etcd://u:hunter2@h1?bogus=1', /unknown option "bogus"/],
      ['etcd://h1?cacert=/ca.pem', /need etcd\+https/],
      ['etcd+https://h1?cert=/c.pem', /cert and key go together/],
      ['postgresql://u:hunter2@h1', /not an etcd:\/\/ URL/],
    ] as const) {
      assert.throws(
        () => parseEtcdUrl(url),
        (e: Error) => {
          assert.match(e.message, why);
          assert.match(e.message, /expected etcd:\/\//);
          assert.doesNotMatch(e.message, /hunter2/);
          return true;
        },
      );
    }
  });

  test('an unreachable cluster: the error names each member and the cause, never the password', async () => {
    const s = new EtcdStore('etcd://bob:hunter2@127.0.0.1:1,127.0.0.1:2?timeout_ms=500');
    assert.equal(s.describe, 'etcd://bob:***@127.0.0.1:1,127.0.0.1:2?timeout_ms=500');
    const err = await s
      .acquire({
        key: { id: 'x' },
        mode: 'exclusive',
        requester: { pid: 1, user: 'u', controller: 'c' },
        wait: true,
      })
      .then(
        () => null,
        (e: Error) => e,
      );
    assert.ok(err);
    assert.match(err.message, /127\.0\.0\.1:1: connection refused/);
    assert.match(err.message, /127\.0\.0\.1:2: connection refused/);
    assert.doesNotMatch(err.message, /hunter2/);
    await s.close();
  });

  test('a CA file that cannot be read is a store error naming the file', () => {
    assert.throws(
      () => new EtcdStore('etcd+https://u:hunter2@h1?cacert=/nonexistent/ca.pem'),
      (err: unknown) => {
        assert.ok(err instanceof HostlockError, `not a HostlockError: ${String(err)}`);
        assert.equal(err.code, ErrorCode.StoreUnavailable);
        assert.match(err.message, /cannot read the CA file \/nonexistent\/ca\.pem/);
        assert.doesNotMatch(err.message, /hunter2/);
        return true;
      },
    );
  });
});
