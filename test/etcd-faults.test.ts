// The etcd store when cluster members die. Always on a private cluster (it
// kills members), even when HOSTLOCK_TEST_ETCD names one.
//  - One member of three killed (the one the stores talk to first) while runs
//    hold and wait: no hold is lost, the waits go on and are granted.
//  - Two killed (no quorum): holds are reported lost before the cluster could
//    expire their unrenewed lease, waits fail "lock lost while waiting", new acquires
//    fail naming each member and its cause; nobody is granted meanwhile.
//    With the members back, work resumes and the stale keys are gone.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { Requester } from '../src/store/types';
import { EtcdStore } from '../src/stores/etcd/store';
import { sleep, until } from './rpc';
import { healthy, startEtcdCluster, type EtcdCluster } from './servers/etcd';

const TTL = 2;
let cluster: EtcdCluster;
let n = 0;
const stores: EtcdStore[] = [];

function store(controller: string, prefix: string) {
  const s = new EtcdStore(`${cluster.url}?ttl=${TTL}&timeout_ms=500&prefix=${prefix}`);
  stores.push(s);
  const who: Requester = { pid: process.pid, user: 'tester', controller };
  return {
    s,
    take: (id: string, opts: { wait?: boolean; onLost?: (r: string) => void } = {}) =>
      s.acquire({ key: { id }, mode: 'exclusive', requester: who, wait: opts.wait ?? true, onLost: opts.onLost }),
  };
}

before(async () => {
  cluster = await startEtcdCluster();
});
after(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await cluster?.stop();
});

describe('etcd store under member failures', { timeout: 120_000 }, () => {
  test('one member of three killed: nothing lost, waits go on', async () => {
    const prefix = `f${++n}/`;
    const a = store('a', prefix);
    const b = store('b', prefix);
    const lost: string[] = [];
    const h = await a.take('m', { onLost: (r) => lost.push(r) });
    let bGot = false;
    const bWait = b.take('m').then((x) => ((bGot = true), x));
    await until(async () => (await a.s.status({ id: 'm' })).waiters.length === 1, 5000, 20);
    await cluster.kill(0);
    await sleep(TTL * 1000 * 2);
    assert.deepEqual(lost, [], 'a hold was lost with one member of three down');
    assert.equal(bGot, false, 'granted while the lock was held');
    const c = store('c', prefix);
    const other = await c.take('other');
    assert.ok(other, 'a new acquire failed with one member down');
    await h!.release();
    const bh = await bWait;
    assert.ok(bh!.token > h!.token);
    await bh!.release();
    await other.release();
    await cluster.restart(0);
    await until(() => healthy(cluster.endpoints[0]!), 20_000, 100);
  });

  test('two of three killed: holds lost after the TTL, waits and acquires fail clearly, no grant; restart resumes', async () => {
    const prefix = `f${++n}/`;
    const a = store('a', prefix);
    const b = store('b', prefix);
    const lost: string[] = [];
    const h = await a.take('q', { onLost: (r) => lost.push(r) });
    let bGot = false;
    const bWait = b.take('q').then((x) => ((bGot = true), x));
    bWait.catch(() => {});
    await until(async () => (await a.s.status({ id: 'q' })).waiters.length === 1, 5000, 20);
    const killedAt = Date.now();
    await cluster.kill(0);
    await cluster.kill(1);
    await until(() => lost.length > 0, (TTL + 3) * 1000, 20);
    const lostAfter = Date.now() - killedAt;
    process.stderr.write(`# etcd: hold reported lost ${lostAfter} ms after quorum loss: ${lost[0]}\n`);
    // Given up a sixth of the TTL before the cluster could expire the lease,
    // counted from the last renewal (at most TTL/3 before the kill).
    assert.ok(lostAfter >= TTL * 1000 * (1 - 1 / 6 - 1 / 3) - 100, `lost too early (${lostAfter} ms)`);
    assert.match(lost[0]!, /^no etcd member renewed its lease within its 2 s TTL/);
    await assert.rejects(bWait, /lock lost while waiting/);
    assert.equal(bGot, false, 'granted without quorum');
    const c = store('c', prefix);
    await assert.rejects(c.take('q'), (e: Error) => {
      assert.match(e.message, /no etcd member answered/);
      assert.match(e.message, new RegExp(`${cluster.endpoints[0]!.slice(7)}: connection refused`));
      assert.match(e.message, new RegExp(cluster.endpoints[2]!.slice(7)));
      return true;
    });
    await cluster.restart(0);
    await cluster.restart(1);
    for (const e of cluster.endpoints) await until(() => healthy(e), 20_000, 100);
    // The stale key of the lost hold goes (revoked by its store, or with its
    // lease): the lock is free again within a TTL, and tokens go on increasing.
    const startedAt = Date.now();
    const d = store('d', prefix);
    const again = await d.take('q');
    process.stderr.write(`# etcd: after the restart, granted in ${Date.now() - startedAt} ms\n`);
    assert.ok(Date.now() - startedAt < (TTL + 2) * 1000);
    assert.ok(again!.token > h!.token);
    assert.equal(lost.length, 1);
    await again!.release();
  });
});

describe('etcd store with authentication', { timeout: 60_000 }, () => {
  let solo: EtcdCluster;
  before(async () => {
    solo = await startEtcdCluster(1);
  });
  after(async () => {
    await solo?.stop();
  });

  function etcdctl(...args: string[]) {
    const r = spawnSync('etcdctl', ['--endpoints', solo.endpoints[0]!, ...args], {
      encoding: 'utf8',
      env: { ...process.env, ETCDCTL_API: '3' },
      timeout: 10_000,
    });
    assert.equal(
      r.status,
      0,
      `etcdctl ${args.join(' ')}: ${r.error?.message ?? r.stderr} (etcdctl comes with etcd-client)`,
    );
  }

  test('user and password: locks work, watch and keepalive included; a wrong password fails masked', async (t) => {
    etcdctl('user', 'add', 'root:rootpw');
    etcdctl('user', 'add', 'alice:s3cr3t');
    etcdctl('role', 'add', 'locks');
    etcdctl('role', 'grant-permission', 'locks', 'readwrite', '--prefix=true', 'team/');
    etcdctl('user', 'grant-role', 'alice', 'locks');
    etcdctl('auth', 'enable');
    const host = solo.endpoints[0]!.slice('http://'.length);
    const url = `etcd://alice:s3cr3t@${host}?ttl=${TTL}&prefix=team/`;
    const a = new EtcdStore(url);
    const b = new EtcdStore(url);
    const bad = new EtcdStore(`etcd://alice:wrong@${host}?prefix=team/`);
    t.after(() => Promise.all([a.close(), b.close(), bad.close()]));
    assert.equal(a.describe, `etcd://alice:***@${host}?ttl=${TTL}&prefix=team/`);
    const who: Requester = { pid: process.pid, user: 'alice', controller: 'a' };
    const h = await a.acquire({ key: { id: 'db' }, mode: 'exclusive', requester: who, wait: true });
    const w = b.acquire({ key: { id: 'db' }, mode: 'exclusive', requester: who, wait: true });
    await until(async () => (await a.status({ id: 'db' })).waiters.length === 1, 5000, 20);
    await sleep(TTL * 1000 * 1.5); // keepalives with the token
    assert.equal(h!.lost, false);
    await h!.release();
    const bh = await w;
    assert.ok(bh!.token > h!.token);
    await bh!.release();
    await assert.rejects(
      bad.acquire({ key: { id: 'db' }, mode: 'exclusive', requester: who, wait: false }),
      (e: Error) => {
        assert.match(e.message, /authentication failed/);
        assert.match(e.message, new RegExp(host));
        assert.doesNotMatch(e.message, /wrong|s3cr3t/);
        return true;
      },
    );
  });
});

describe('etcd store over TLS with a client certificate', { timeout: 60_000 }, () => {
  let secure: EtcdCluster;
  before(async () => {
    secure = await startEtcdCluster(1, { tls: true });
  });
  after(async () => {
    await secure?.stop();
  });

  test('etcd+https:// with cacert, cert and key: locks, watch and keepalive work; without the client certificate, a clear error', async (t) => {
    const { cacert, cert, key } = secure.tls!;
    const url = `${secure.url}?ttl=${TTL}&cacert=${cacert}&cert=${cert}&key=${key}`;
    const a = new EtcdStore(url);
    const b = new EtcdStore(url);
    const anonymous = new EtcdStore(`${secure.url}?cacert=${cacert}&timeout_ms=500`);
    t.after(() => Promise.all([a.close(), b.close(), anonymous.close()]));
    const who: Requester = { pid: process.pid, user: 'tester', controller: 'a' };
    const h = await a.acquire({ key: { id: 'db' }, mode: 'exclusive', requester: who, wait: true });
    const w = b.acquire({ key: { id: 'db' }, mode: 'exclusive', requester: who, wait: true });
    await until(async () => (await a.status({ id: 'db' })).waiters.length === 1, 5000, 20);
    await sleep(TTL * 1000 * 1.5);
    assert.equal(h!.lost, false);
    await h!.release();
    const bh = await w;
    assert.ok(bh!.token > h!.token);
    await bh!.release();
    await assert.rejects(
      anonymous.acquire({ key: { id: 'db' }, mode: 'exclusive', requester: who, wait: false }),
      (e: Error) => {
        assert.match(
          e.message,
          new RegExp(
            `etcd ${secure.endpoints[0]!.slice('https://'.length)}: the server refused our client certificate`,
          ),
        );
        return true;
      },
    );
  });
});
