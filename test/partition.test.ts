// A controller cut off from the store while its run holds a lock: its agent
// gives the hold up (and the run's next task fails "lock lost") before the
// other controller is granted the lock, and fencing tokens only increase.
// Controller A runs in a network namespace whose link is cut; B on this side.
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createNetns, type Netns } from './netns';
import { startAgent } from './agents';
import { cli, startServe, tempDir, until, type Helper } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

// The run agent of controller A, inside the namespace, connected.
async function agentIn(ns: Netns, env: NodeJS.ProcessEnv) {
  const agent = await startAgent(env, 'ignore', ns.exec);
  const conn = await agent.connect();
  return {
    rpc: conn.rpc,
    stop: () => {
      conn.sock.destroy();
      void agent.stop();
    },
  };
}

// Cut at t0: A must report the hold lost, and only then B may get it.
async function partition(ns: Netns, a: Awaited<ReturnType<typeof agentIn>>, b: Helper, urlA: string, urlB: string) {
  const held = await a.rpc.call('acquire', { name: 'part', backend: urlA, scope: 'run', member: 'web1' });
  assert.equal(held.acquired, true);
  const waiting = b.rpc.call('acquire', { name: 'part', backend: urlB, timeout: 120 }).then((r) => ({
    r,
    at: performance.now(),
  }));
  await new Promise((r) => setTimeout(r, 300));
  const t0 = performance.now();
  ns.cut();
  let lostAt = 0;
  try {
    // A's agent is reached over its Unix socket, which no cut affects.
    await until(
      async () => {
        const lost = (await a.rpc.call('hello', { member: 'web1' })).lost as Array<{ name: string }>;
        if (lost.some((l) => l.name === 'part')) lostAt = performance.now();
        return lostAt > 0;
      },
      90_000,
      100,
    );
    const got = await waiting;
    assert.equal(got.r.acquired, true, 'the other controller gets the lock');
    assert.ok(
      lostAt <= got.at,
      `A gave the hold up ${((lostAt - t0) / 1000).toFixed(1)} s after the cut, before B got it at ${((got.at - t0) / 1000).toFixed(1)} s`,
    );
    assert.ok(got.r.token > held.token, `token ${got.r.token} after ${held.token}`);
    await b.rpc.call('release', { handle: got.r.handle });
    return { lost: (lostAt - t0) / 1000, granted: (got.at - t0) / 1000 };
  } finally {
    ns.restore();
  }
}

describe('a cut-off controller', () => {
  let ns: Netns;
  const t = tempDir('hl-part');
  const envA = { HOSTLOCK_RUNTIME_DIR: join(t.dir, 'a'), HOSTLOCK_CONTROLLER: 'ctl-a' };
  const envB = { HOSTLOCK_RUNTIME_DIR: join(t.dir, 'b'), HOSTLOCK_CONTROLLER: 'ctl-b' };
  let b: Helper;
  before(() => {
    ns = createNetns('p');
    b = startServe(envB);
  });
  after(async () => {
    await b?.close();
    ns?.remove();
    t.cleanup();
  });

  test('PostgreSQL: A gives up within the keepalive bound, before B is granted', { timeout: 150_000 }, async (ctx) => {
    const pg: PgServer = await startPostgres({ listen: [ns.hostAddr] });
    let a: Awaited<ReturnType<typeof agentIn>> | undefined;
    try {
      const setup = cli(['setup', '--backend', pg.url(), '--grant', LOCK_ROLE]);
      assert.equal(setup.status, 0, setup.stderr);
      const q = '?sslmode=disable&hostlock_keepalive=6';
      const urlA = `postgresql://${LOCK_ROLE}:${LOCK_PASSWORD}@${ns.hostAddr}:${pg.port}/${pg.database}${q}`;
      a = await agentIn(ns, envA);
      const r = await partition(ns, a, b, urlA, pg.url(LOCK_ROLE, LOCK_PASSWORD, q));
      ctx.diagnostic(`A gave up ${r.lost.toFixed(1)} s after the cut, B was granted after ${r.granted.toFixed(1)} s`);
      assert.ok(r.lost <= 6 + 2, `A noticed within the 6 s bound (took ${r.lost.toFixed(1)} s)`);
    } finally {
      a?.stop();
      await pg.stop();
    }
  });

  test('etcd: A gives up within the lease TTL, before B is granted', { timeout: 150_000 }, async (ctx) => {
    const etcd: EtcdCluster = await etcdForTests();
    const relays: Server[] = [];
    const socks = new Set<Socket>();
    let a: Awaited<ReturnType<typeof agentIn>> | undefined;
    try {
      // A reaches each member through a relay on the namespace's link.
      const via: string[] = [];
      for (const e of etcd.endpoints) {
        const u = new URL(e);
        const relay = createServer((s) => {
          const up = connect(Number(u.port), u.hostname);
          for (const x of [s, up]) {
            socks.add(x);
            x.on('error', () => x.destroy());
            x.on('close', () => socks.delete(x));
          }
          s.pipe(up).pipe(s);
        });
        await new Promise<void>((r) => relay.listen(0, ns.hostAddr, r));
        relays.push(relay);
        via.push(`${ns.hostAddr}:${(relay.address() as { port: number }).port}`);
      }
      a = await agentIn(ns, envA);
      const r = await partition(ns, a, b, `etcd://${via.join(',')}?ttl=4`, `${etcd.url}?ttl=4`);
      ctx.diagnostic(`A gave up ${r.lost.toFixed(1)} s after the cut, B was granted after ${r.granted.toFixed(1)} s`);
      assert.ok(r.lost <= 4 + 1, `A noticed within the 4 s TTL (took ${r.lost.toFixed(1)} s)`);
    } finally {
      a?.stop();
      for (const s of socks) s.destroy();
      for (const relay of relays) relay.close();
      await etcd.stop();
    }
  });
});
