// Every grant of the local store carries a fencing token that strictly
// increases per lock, and a backend the helper does not know is refused
// clearly without printing the URL's password.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { join } from 'node:path';
import { startServe, tempDir, type Helper } from './rpc';

describe('fencing tokens and backends', () => {
  let h: Helper;
  let g: Helper;
  const t = tempDir();
  before(() => {
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    h = startServe(env);
    g = startServe(env);
  });
  after(async () => {
    await h.close();
    await g.close();
    t.cleanup();
  });

  test('tokens increase per name across helpers, shared holders included', async () => {
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) {
      const who = i % 2 ? h : g;
      const a = await who.rpc.call('acquire', { name: 'fenced', shared: i % 3 === 0 });
      seen.push(a.token);
      await who.rpc.call('release', { handle: a.handle });
    }
    const s1 = await h.rpc.call('acquire', { name: 'fenced', shared: true });
    const s2 = await g.rpc.call('acquire', { name: 'fenced', shared: true });
    seen.push(s1.token, s2.token);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `token ${seen[i]} after ${seen[i - 1]}`);
    const other = await h.rpc.call('acquire', { name: 'other' });
    assert.equal(other.token, 1, 'each name counts on its own');
  });

  test('an unknown backend is refused without its password', async () => {
    const err = await h.rpc.call('acquire', { name: 'x', backend: 'redis://admin:s3cret@db.example/0' }).then(
      () => null,
      (e: { code: number; message: string }) => e,
    );
    assert.ok(err, 'refused');
    assert.equal(err.code, -32602);
    assert.match(err.message, /unknown backend redis:/);
    assert.doesNotMatch(err.message, /s3cret/);
    assert.equal((await h.rpc.call('hello', {})).protocol, 2, 'still serving');
  });

  test('local-only parameters with a backend are refused', async () => {
    await assert.rejects(h.rpc.call('acquire', { path: '/tmp/x.lock', backend: 'local' }), { code: -32602 });
    const a = await h.rpc.call('acquire', { name: 'plain', backend: 'local' });
    assert.equal(a.acquired, true);
    assert.equal(a.path, join(t.dir, 'plain.lock'));
  });
});
