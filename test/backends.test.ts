// The server stores behind the helper, end to end: two simulated controllers
// (separate helpers and runtime directories, HOSTLOCK_CONTROLLER) take turns
// on one name through the protocol and `hostlock run`, fencing tokens only
// increase, `hostlock status --backend` shows the holder from the other
// controller, and a run hold the server loses fails the run's next task.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startAgent, type TestAgent } from './agents';
import { CLI, cli, sleep, twoControllers, until } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

interface Backend {
  label: string;
  url: () => string;
  // Ends every session or lease the lock role holds, as an admin or an outage would.
  cutSessions: () => Promise<void>;
}

let pg: PgServer;
let etcd: EtcdCluster;

function etcdPost(path: string, body: object): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request(`${etcd.endpoints[0]}${path}`, { method: 'POST' }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve(JSON.parse(data || '{}') as Record<string, unknown>));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const backends: Backend[] = [
  {
    label: 'postgresql',
    url: () => pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable'),
    cutSessions: async () => {
      await pg.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [LOCK_ROLE]);
    },
  },
  {
    label: 'etcd',
    url: () => `${etcd.url}?ttl=3`,
    cutSessions: async () => {
      const r = (await etcdPost('/v3/lease/leases', {})) as { leases?: Array<{ ID: string }> };
      for (const l of r.leases ?? []) await etcdPost('/v3/lease/revoke', { ID: l.ID });
    },
  },
];

before(async () => {
  [pg, etcd] = await Promise.all([startPostgres(), etcdForTests()]);
  // A DBA prepares the schema once and lets the lock-only role lock.
  const setup = cli(['setup', '--backend', pg.url(), '--grant', LOCK_ROLE]);
  assert.equal(setup.status, 0, setup.stderr);
  assert.match(setup.stdout, /schema hostlock \(version \d+\) ready .*role hl_lock may lock/);
});
after(async () => {
  await Promise.allSettled([pg?.stop(), etcd?.stop()]);
});

for (const b of backends) {
  describe(`${b.label} store through the helper`, () => {
    const { dir, envA, envB, a, c } = twoControllers(`hl-${b.label}`);

    test('two controllers take turns; the waiter sees the holder; tokens increase', { timeout: 60_000 }, async () => {
      const backend = b.url();
      const first = await a().rpc.call('acquire', { name: 'web1', backend, owner: { host: 'web1', task: 'deploy' } });
      assert.equal(first.acquired, true);
      assert.equal(typeof first.token, 'number');
      assert.doesNotMatch(JSON.stringify(first), /pw-s3cret/);
      const busy = await c().rpc.call('try', { name: 'web1', backend });
      assert.equal(busy.acquired, false);
      assert.equal(busy.reason, 'busy');
      assert.equal(busy.holders[0]?.controller, 'ctl-a', `the busy reply names the holder: ${JSON.stringify(busy)}`);
      const st = await c().rpc.call('status', { name: 'web1', backend });
      assert.equal(st.held, true);
      assert.equal(st.holders[0].controller, 'ctl-a');
      assert.equal(st.holders[0].task, 'deploy');
      const waiting = c().rpc.call('block', { handle: busy.handle, timeout: 30 });
      await a().rpc.call('release', { handle: first.handle });
      const second = await waiting;
      assert.equal(second.acquired, true);
      assert.ok(second.token > first.token, `token ${second.token} after ${first.token}`);
      await c().rpc.call('release', { handle: second.handle });
    });

    test('`hostlock run --backend` from two controllers never overlaps', { timeout: 90_000 }, async () => {
      const backend = b.url();
      const journal = join(dir, 'journal');
      const script = `echo "in $HOSTLOCK_TOKEN" >> ${journal}; sleep 0.2; echo "out $HOSTLOCK_TOKEN" >> ${journal}`;
      const runs = [envA, envB, envA, envB].map(
        (env) =>
          new Promise<number | null>((resolve) => {
            const p = spawn(process.execPath, [CLI, 'run', 'deploy', '--backend', backend, '--', 'sh', '-c', script], {
              env: { ...process.env, ...env },
              stdio: 'ignore',
            });
            p.on('exit', (code) => resolve(code));
          }),
      );
      assert.deepEqual(await Promise.all(runs), [0, 0, 0, 0]);
      const lines = readFileSync(journal, 'utf8').trim().split('\n');
      assert.equal(lines.length, 8);
      let last = 0;
      for (let i = 0; i < lines.length; i += 2) {
        const [, tokIn] = lines[i]!.split(' ');
        assert.equal(lines[i], `in ${tokIn}`);
        assert.equal(lines[i + 1], `out ${tokIn}`, 'each section ends before the next begins');
        assert.ok(Number(tokIn) > last, 'tokens increase in section order');
        last = Number(tokIn);
      }
      // Any controller lists the holders of the store.
      const held = await a().rpc.call('acquire', { name: 'deploy', backend, owner: { task: 'hold' } });
      const st = cli(['status', '--backend', backend, '--json'], envB);
      await a().rpc.call('release', { handle: held.handle });
      assert.equal(st.status, 0, st.stderr);
      type Listed = { locks: Array<{ key: { name: string }; holders: Array<{ controller: string; task: string }> }> };
      const lock = (JSON.parse(st.stdout) as Listed).locks.find((l) => l.key.name === 'deploy');
      assert.equal(lock?.holders[0]?.controller, 'ctl-a');
      assert.equal(lock?.holders[0]?.task, 'hold');
      assert.doesNotMatch(st.stdout + st.stderr, /pw-s3cret/);
    });

    test('slots, break and history from the command line, across controllers', { timeout: 90_000 }, async () => {
      const backend = b.url();
      // Slots: two holders of a 2-slot name, one per controller; a third count is refused.
      const s1 = await a().rpc.call('acquire', { name: 'pool', backend, slots: 2, timeout: 10 });
      const s2 = await c().rpc.call('acquire', { name: 'pool', backend, slots: 2, timeout: 10 });
      assert.equal(s1.acquired && s2.acquired, true);
      assert.deepEqual([s1.slot, s2.slot].sort(), [1, 2]);
      const mismatch = await c().rpc.raw('try', { name: 'pool', backend, slots: 3 });
      assert.equal(mismatch.error?.code, -32008, JSON.stringify(mismatch));
      assert.match(mismatch.error.message, /2.*3|3.*2/);
      const listed = cli(['status', '--backend', backend], envB);
      assert.match(listed.stdout, /pool +2\/2 slots/);
      await a().rpc.call('release', { handle: s1.handle });
      await c().rpc.call('release', { handle: s2.handle });

      // Break: controller A's run holds `stuck`; B waits; B breaks A's hold.
      let agent: TestAgent | undefined;
      try {
        agent = await startAgent(envA);
        const { sock, rpc } = await agent.connect();
        const held = await rpc.call('acquire', {
          name: 'stuck',
          backend,
          scope: 'run',
          member: 'web1',
          owner: { host: 'web1', task: 'hangs' },
        });
        assert.equal(held.acquired, true);
        const waiting = c().rpc.call('acquire', { name: 'stuck', backend, timeout: 30 });
        await sleep(300);
        const unconfirmed = cli(['break', 'stuck', '--backend', backend, '--reason', 'stuck deploy'], envB);
        assert.equal(unconfirmed.status, 64, 'not on a terminal, --yes is needed');
        const t0 = performance.now();
        const broke = cli(['break', 'stuck', '--backend', backend, '--reason', 'stuck deploy', '--yes'], envB);
        assert.equal(broke.status, 0, broke.stderr);
        assert.match(broke.stderr, /broke stuck/);
        assert.doesNotMatch(broke.stdout + broke.stderr, /pw-s3cret/);
        const got = await waiting;
        assert.equal(got.acquired, true);
        assert.ok(performance.now() - t0 < 5000, 'the waiter got the broken hold at once');
        await c().rpc.call('release', { handle: got.handle });
        // The broken run's next request for that host fails "lock lost".
        await until(
          async () =>
            (await rpc.raw('try', { name: 'next', backend, scope: 'run', member: 'web1', protocol: 2 })).error?.code ===
            -32003,
          10_000,
          100,
        );
        sock.destroy();
      } finally {
        await agent?.stop();
      }

      // History: any controller reads the grants, the wait and the break.
      type Ev = { event: string; name: string; reason?: string; controller?: string };
      let events: Ev[] = [];
      await until(
        () => {
          const h = cli(['history', 'stuck', '--backend', backend, '--json'], envB);
          assert.equal(h.status, 0, h.stderr);
          events = (JSON.parse(h.stdout) as { events: Ev[] }).events;
          return events.some((e) => e.event === 'break') && events.some((e) => e.event === 'wait');
        },
        10_000,
        200,
      ).catch(() => assert.fail(`history of stuck: ${JSON.stringify(events)}`));
      const brk = events.find((e) => e.event === 'break');
      assert.equal(brk?.reason, 'stuck deploy');
      assert.ok(events.some((e) => e.event === 'grant' && e.controller === 'ctl-a'));
      assert.ok(events.every((e) => e.name === 'stuck'));
      const tl = cli(['timeline', '--backend', backend], envB);
      assert.equal(tl.status, 0, tl.stderr);
      assert.match(tl.stdout, /stuck/);
    });

    test(
      'two runs on two controllers in opposite order: the wait that closes the cycle is refused at once',
      { timeout: 90_000 },
      async () => {
        const backend = b.url();
        let runA: TestAgent | undefined;
        let runB: TestAgent | undefined;
        try {
          runA = await startAgent(envA);
          runB = await startAgent(envB);
          const a1 = await runA.connect();
          const b1 = await runB.connect();
          const own = (run: string) => ({ run, host: 'h1', task: 'cross' });
          const take = (c: typeof a1, name: string, run: string, timeout?: number) =>
            c.rpc.raw('acquire', {
              name,
              backend,
              scope: 'run',
              member: 'h1',
              owner: own(run),
              ...(timeout !== undefined && { timeout }),
            });
          assert.equal((await take(a1, 'db', 'run-a')).result?.acquired, true);
          assert.equal((await take(b1, 'web', 'run-b')).result?.acquired, true);
          const aWaits = take(a1, 'web', 'run-a', 60);
          await sleep(500);
          const t0 = performance.now();
          const closing = await take(b1, 'db', 'run-b', 60);
          const secs = (performance.now() - t0) / 1000;
          const refused = closing.error?.code === -32006 || closing.result?.reason === 'deadlock';
          assert.ok(refused, `the closing wait is refused as a deadlock: ${JSON.stringify(closing)}`);
          assert.ok(secs < 5, `refused after ${secs.toFixed(2)} s, not at its timeout`);
          const said = closing.error?.message ?? closing.result?.message ?? '';
          assert.match(said, /deadlock/);
          assert.match(said, /db/);
          assert.match(said, /web/);
          // The refused run lets go; the other one then gets what it waited for.
          await b1.rpc.call('release', { name: 'web', backend, scope: 'run' });
          const got = await aWaits;
          assert.equal(got.result?.acquired, true, JSON.stringify(got));
          await a1.rpc.call('release', { name: 'web', backend, scope: 'run' });
          await a1.rpc.call('release', { name: 'db', backend, scope: 'run' });

          // Both close the cycle at the same moment: exactly one is refused.
          assert.equal((await take(a1, 'db2', 'run-a')).result?.acquired, true);
          assert.equal((await take(b1, 'web2', 'run-b')).result?.acquired, true);
          const both = [take(a1, 'web2', 'run-a', 60), take(b1, 'db2', 'run-b', 60)];
          const first = await Promise.race(both.map((p, i) => p.then((r) => ({ i, r }))));
          const isRefusal = (r: Awaited<(typeof both)[0]>) =>
            r.error?.code === -32006 || r.result?.reason === 'deadlock';
          assert.ok(isRefusal(first.r), `the first answer is a refusal: ${JSON.stringify(first.r)}`);
          const loser = first.i === 0 ? a1 : b1;
          await loser.rpc.call('release', { name: first.i === 0 ? 'db2' : 'web2', backend, scope: 'run' });
          const other = await both[1 - first.i]!;
          assert.equal(other.result?.acquired, true, `the other run gets its lock: ${JSON.stringify(other)}`);
          a1.sock.destroy();
          b1.sock.destroy();
        } finally {
          await Promise.allSettled([runA?.stop(), runB?.stop()]);
        }
      },
    );

    test('a run hold the server loses fails the run’s next task "lock lost"', { timeout: 60_000 }, async () => {
      const backend = b.url();
      let agent: TestAgent | undefined;
      try {
        agent = await startAgent(envA);
        const { sock, rpc } = await agent.connect();
        const got = await rpc.call('acquire', { name: 'db1', backend, scope: 'run', member: 'db1' });
        assert.equal(got.acquired, true);
        await b.cutSessions();
        await until(
          async () => {
            const h = await rpc.call('hello', { member: 'db1' });
            return h.lost.some((l: { name: string }) => l.name === 'db1');
          },
          15_000,
          100,
        );
        const other = await c().rpc.call('acquire', { name: 'db1', backend, timeout: 20 });
        assert.equal(other.acquired, true, 'the other controller gets the lost lock');
        await c().rpc.call('release', { handle: other.handle });
        sock.destroy();
      } finally {
        await agent?.stop();
      }
    });
  });
}
