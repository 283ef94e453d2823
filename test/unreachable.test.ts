// A server store that cannot be reached: every request says so, as the
// store's own error (-32007, exit 73), naming the backend without its
// password. Nothing claims the lock is held by someone, and a wait's timeout
// shorter than the store's connection budget still ends at the timeout.
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ErrorCode } from '../src/core/errors';
import { startAgent, type TestAgent } from './agents';
import { cli, startServe, tempDir, type Helper } from './rpc';

// Nothing listens on port 1 of the loopback: every connection is refused at once.
const stores = [
  { label: 'postgresql', url: 'postgresql://bob:hunter2@127.0.0.1:1/locks', says: /cannot reach the server/ },
  { label: 'etcd', url: 'etcd://bob:hunter2@127.0.0.1:1', says: /no etcd member answered.*connection refused/ },
];

interface Reply {
  error?: { code: number; message: string };
  result?: Record<string, unknown>;
}

function assertUnavailable(reply: Reply, says: RegExp, what: string): void {
  assert.ok(reply.error, `${what}: expected an error, got ${JSON.stringify(reply.result)}`);
  assert.equal(reply.error.code, ErrorCode.StoreUnavailable, `${what}: ${reply.error.message}`);
  assert.match(reply.error.message, says);
  assert.match(reply.error.message, /bob:\*\*\*@127\.0\.0\.1:1/);
  assert.doesNotMatch(reply.error.message, /hunter2|internal error/);
}

for (const s of stores) {
  describe(`an unreachable ${s.label} store`, () => {
    let h: Helper;
    let agent: TestAgent | undefined;
    const t = tempDir(`hl-unreachable-${s.label}`);
    after(async () => {
      await h?.close();
      await agent?.stop();
      t.cleanup();
    });

    test('try, acquire and status fail with the store error', { timeout: 60000 }, async () => {
      h = startServe();
      const target = { name: 'x', backend: s.url };
      assertUnavailable(await h.rpc.raw('try', target), s.says, 'try');
      assertUnavailable(await h.rpc.raw('acquire', { ...target, timeout: 30 }), s.says, 'acquire');
      assertUnavailable(await h.rpc.raw('status', target), s.says, 'status');
    });

    test(
      'a wait with a timeout shorter than the connection budget ends at its timeout, with the store error',
      {
        timeout: 60000,
      },
      async () => {
        const started = performance.now();
        const reply = await h.rpc.raw('acquire', { name: 'y', backend: s.url, timeout: 0.5 });
        const took = (performance.now() - started) / 1000;
        assertUnavailable(reply, s.says, 'acquire with timeout 0.5');
        assert.ok(took < 2, `answered after ${took.toFixed(2)} s`);
      },
    );

    test('hostlock run exits 73 with the store error', { timeout: 60000 }, () => {
      const r = cli(['run', 'x', '--backend', s.url, '--timeout', '0.5', '--', 'true']);
      assert.equal(r.status, 73, r.stderr);
      assert.match(r.stderr, s.says);
      assert.doesNotMatch(r.stderr, /held by|hunter2/);
    });

    test(
      'a run on its agent: the take that the store never answered fails with its error at the timeout',
      {
        timeout: 60000,
      },
      async () => {
        agent = await startAgent({ HOSTLOCK_RUNTIME_DIR: join(t.dir, 'run') });
        const { sock, rpc } = await agent.connect();
        try {
          // As the action sends it under `linear`: the batch's names, taken by one plan.
          const params = {
            name: 'z',
            backend: s.url,
            scope: 'run',
            member: 'h1',
            owner: { run: 'r1', host: 'h1' },
            batch: { id: 'b1', members: [{ member: 'h1', name: 'z' }] },
          };
          const first = await rpc.raw('try', params);
          // The store's answer may come first (an error) or not yet (busy, with a handle to block on).
          let reply = first;
          const started = performance.now();
          if (first.result && !first.result.acquired) {
            reply = await rpc.raw('block', { handle: first.result.handle, timeout: 0.5 });
            const took = (performance.now() - started) / 1000;
            assert.ok(took < 2, `answered after ${took.toFixed(2)} s`);
          }
          assertUnavailable(reply, s.says, 'run-scope try, then block with timeout 0.5');
          // Without a timeout, the store's own failure ends the wait.
          const again = await rpc.raw('try', {
            ...params,
            name: 'w',
            batch: { id: 'b2', members: [{ member: 'h1', name: 'w' }] },
          });
          if (again.result && !again.result.acquired) {
            assertUnavailable(await rpc.raw('block', { handle: again.result.handle }), s.says, 'block');
          } else assertUnavailable(again, s.says, 'run-scope try');
        } finally {
          sock.destroy();
        }
      },
    );
  });
}

// A server that accepts connections and never answers (a hung host, a
// firewall that swallows packets): a wait's timeout still ends the wait.
describe('a server store that accepts and never answers', () => {
  let silent: Server;
  const held: Socket[] = [];
  let port = 0;
  let h: Helper;
  after(async () => {
    await h?.close();
    for (const c of held) c.destroy();
    silent?.close();
  });

  test('a wait with a timeout ends at its timeout with the store error', { timeout: 60000 }, async () => {
    silent = createServer((c) => held.push(c));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    port = (silent.address() as { port: number }).port;
    h = startServe();
    const cases = [
      {
        url: `postgresql://bob:hunter2@127.0.0.1:${port}/locks`,
        says: /no answer from the server before the wait ended/,
      },
      { url: `etcd://bob:hunter2@127.0.0.1:${port}`, says: /no etcd member answered before the wait ended/ },
    ];
    for (const c of cases) {
      const started = performance.now();
      const reply = await h.rpc.raw('acquire', { name: 'x', backend: c.url, timeout: 0.5 });
      const took = (performance.now() - started) / 1000;
      assert.ok(reply.error, `${c.url}: expected an error, got ${JSON.stringify(reply.result)}`);
      assert.equal(reply.error.code, ErrorCode.StoreUnavailable, reply.error.message);
      assert.match(reply.error.message, c.says);
      assert.match(reply.error.message, new RegExp(`bob:\\*\\*\\*@127\\.0\\.0\\.1:${port}`));
      assert.doesNotMatch(reply.error.message, /hunter2/);
      assert.ok(took < 2, `${c.url}: answered after ${took.toFixed(2)} s`);
    }
  });
});
