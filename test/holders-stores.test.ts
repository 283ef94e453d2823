// Who holds a lock on a server store, as the waiting notices and the
// waiting lines of `hostlock run --backend` say it: every notice names the
// holder from the other controller (user, controller, pid, task and
// playbook), and a lock nobody holds is taken without any waiting notice.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { startAgent } from './agents';
import { CLI, cli, twoControllers } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

let pg: PgServer;
let etcd: EtcdCluster;

const backends: Array<{ label: string; url: () => string }> = [
  { label: 'postgresql', url: () => pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable') },
  { label: 'etcd', url: () => `${etcd.url}?ttl=5` },
];

before(async () => {
  [pg, etcd] = await Promise.all([startPostgres(), etcdForTests()]);
  const setup = cli(['setup', '--backend', pg.url(), '--grant', LOCK_ROLE]);
  assert.equal(setup.status, 0, setup.stderr);
});
after(async () => {
  await Promise.allSettled([pg?.stop(), etcd?.stop()]);
});

for (const b of backends) {
  describe(`${b.label}: who holds it`, () => {
    const { envB, a, c } = twoControllers(`hl-who-${b.label}`);

    test('every waiting notice names the holder', { timeout: 60_000 }, async () => {
      const backend = b.url();
      const owner = { host: 'web1', task: 'deploy', playbook: 'site.yml' };
      const held = await a().rpc.call('acquire', { name: 'who', backend, owner });
      assert.equal(held.acquired, true);
      const busy = await c().rpc.call('try', { name: 'who', backend });
      assert.equal(busy.acquired, false);
      const waiting = c().rpc.call('block', { handle: busy.handle, timeout: 30, notify: 0.1 });
      const notices = () =>
        c().rpc.notifications.filter((n) => n.method === 'waiting' && n.params.handle === busy.handle);
      while (notices().length < 12) await new Promise((r) => setTimeout(r, 50));
      await a().rpc.call('release', { handle: held.handle });
      const got = await waiting;
      assert.equal(got.acquired, true);
      await c().rpc.call('release', { handle: got.handle });
      for (const n of notices()) {
        const h = n.params.holders?.[0];
        assert.ok(h, `a notice without its holder: ${JSON.stringify(n.params)}`);
        assert.equal(h.controller, 'ctl-a');
        assert.equal(h.pid, a().proc.pid);
        assert.equal(h.task, 'deploy');
        assert.equal(h.playbook, 'site.yml');
        assert.equal(typeof h.user, 'string');
      }
    });

    test('a lock nobody holds is taken without a waiting notice', { timeout: 60_000 }, async () => {
      const backend = b.url();
      for (let i = 0; i < 5; i++) {
        const before = c().rpc.notifications.length;
        const first = await c().rpc.call('try', { name: `free-${i}`, backend, notify: 0.05 });
        assert.equal(first.acquired, true, `try on a free lock: ${JSON.stringify(first)}`);
        await c().rpc.call('release', { handle: first.handle });
        const got = await c().rpc.call('acquire', { name: `free2-${i}`, backend, timeout: 10, notify: 0.05 });
        assert.equal(got.acquired, true);
        await new Promise((r) => setTimeout(r, 100));
        await c().rpc.call('release', { handle: got.handle });
        const waits = c()
          .rpc.notifications.slice(before)
          .filter((n) => n.method === 'waiting');
        assert.deepEqual(waits, [], 'no waiting notice for a lock nobody holds');
      }
    });

    test('a batch try on a lock nobody holds takes it, naming no holder', { timeout: 60_000 }, async () => {
      const backend = b.url();
      const agent = await startAgent(envB);
      try {
        const { sock, rpc } = await agent.connect();
        for (let i = 0; i < 5; i++) {
          const name = `batch-${i}`;
          const got = await rpc.call('try', {
            name,
            backend,
            scope: 'run',
            member: 'h1',
            owner: { host: 'h1', run: 'r1' },
            batch: { id: `b${i}`, members: [{ member: 'h1', name }] },
          });
          assert.equal(got.acquired, true, `a free lock is taken by the try: ${JSON.stringify(got)}`);
          await rpc.call('release', { name, backend, scope: 'run', member: 'h1', batch: { id: `b${i}` } });
        }
        sock.destroy();
      } finally {
        await agent.stop();
      }
    });

    test('`hostlock run --backend` says who it waits for', { timeout: 60_000 }, async () => {
      const backend = b.url();
      const owner = { host: 'db1', task: 'migrate', playbook: 'db.yml' };
      const held = await a().rpc.call('acquire', { name: 'runwho', backend, owner });
      const run = spawn(process.execPath, [CLI, 'run', '--backend', backend, 'runwho', '--', 'true'], {
        env: { ...process.env, ...envB },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      run.stderr.on('data', (d) => (err += d));
      while (!/waiting \d+s/.test(err)) await new Promise((r) => setTimeout(r, 100));
      await a().rpc.call('release', { handle: held.handle });
      const code = await new Promise((r) => run.on('exit', r));
      assert.equal(code, 0, err);
      const line = err.split('\n').find((l) => /waiting \d+s/.test(l))!;
      assert.match(line, new RegExp(`held by \\S+@ctl-a pid ${a().proc.pid}`), line);
      assert.match(line, /db\.yml/, line);
    });
  });
}
