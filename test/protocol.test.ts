// Every method of the protocol answers with its documented shape, and every
// kind of bad input gets its JSON-RPC error while the helper keeps serving.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServe, tempDir, type Helper } from './rpc';

describe('serve: methods', () => {
  let h: Helper;
  const t = tempDir();
  before(() => {
    h = startServe({ HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') });
  });
  after(async () => {
    await h.close();
    t.cleanup();
  });

  test('hello', async () => {
    const r = await h.rpc.call('hello', { client: 'test' });
    assert.equal(r.protocol, 2);
    assert.equal(typeof r.version, 'string');
    assert.equal(r.pid, h.proc.pid);
    assert.deepEqual(r.lost, []);
  });

  test('acquire, status, list, release', async () => {
    const a = await h.rpc.call('acquire', { name: 'web1', owner: { host: 'web1', playbook: 'site.yml', task: 't' } });
    assert.equal(a.acquired, true);
    assert.equal(a.changed, true);
    assert.equal(a.mode, 'exclusive');
    assert.equal(a.path, join(t.dir, 'web1.lock'));
    assert.equal(typeof a.waited, 'number');
    assert.equal(a.holders[0].host, 'web1');
    const s = await h.rpc.call('status', { name: 'web1' });
    assert.equal(s.held, true);
    assert.equal(s.holders.length, 1);
    for (const k of ['pid', 'user', 'controller', 'playbook', 'task', 'host', 'mode', 'since'])
      assert.ok(k in s.holders[0], k);
    const l = await h.rpc.call('list', {});
    assert.deepEqual(
      l.locks.map((x: any) => [x.name, x.held]),
      [['web1', true]],
    );
    assert.equal((await h.rpc.call('release', { handle: a.handle })).released, true);
    assert.equal((await h.rpc.call('status', { name: 'web1' })).held, false);
    await assert.rejects(h.rpc.call('release', { handle: a.handle }), { code: -32602 });
  });

  test('try on contention, then block', async () => {
    const a = await h.rpc.call('acquire', { name: 'db' });
    const b = await h.rpc.call('try', { name: 'db' });
    assert.equal(b.acquired, false);
    assert.equal(b.reason, 'busy');
    assert.equal(b.holders.length, 1);
    const blocked = h.rpc.call('block', { handle: b.handle });
    await h.rpc.call('release', { handle: a.handle });
    const got = await blocked;
    assert.equal(got.acquired, true);
    assert.equal(got.handle, b.handle);
    await h.rpc.call('release', { handle: got.handle });
  });

  test('a timeout is a result, with waiting notifications meanwhile', async () => {
    const a = await h.rpc.call('acquire', { name: 'slow' });
    const before = h.rpc.notifications.length;
    const r = await h.rpc.call('acquire', { name: 'slow', timeout: 0.35, notify: 0.1 });
    assert.equal(r.acquired, false);
    assert.equal(r.reason, 'timeout');
    assert.ok(r.waited >= 0.3, `waited ${r.waited}`);
    const notes = h.rpc.notifications.slice(before).filter((n) => n.method === 'waiting');
    assert.ok(notes.length >= 2, `only ${notes.length} waiting notifications`);
    assert.equal(notes[0]!.params.holders.length, 1);
    await h.rpc.call('release', { handle: a.handle });
  });

  test('shared locks overlap, exclusive excludes them', async () => {
    const s1 = await h.rpc.call('acquire', { name: 'ro', shared: true });
    const s2 = await h.rpc.call('try', { name: 'ro', shared: true });
    assert.equal(s2.acquired, true);
    assert.equal(s2.mode, 'shared');
    const x = await h.rpc.call('try', { name: 'ro' });
    assert.equal(x.acquired, false);
    await h.rpc.call('release', { handle: s1.handle });
    await h.rpc.call('release', { handle: s2.handle });
    await h.rpc.call('release', { handle: x.handle }); // frees the failed try
  });

  test('path locks and run holds', async () => {
    const p = join(t.dir, 'mylock');
    const a = await h.rpc.call('acquire', { path: p });
    assert.equal(a.acquired, true);
    assert.equal(a.path, p);
    await h.rpc.call('release', { handle: a.handle });
    const r1 = await h.rpc.call('acquire', { name: 'cluster', scope: 'run', member: 'web1' });
    const r2 = await h.rpc.call('acquire', { name: 'cluster', scope: 'run', member: 'web2' });
    assert.equal(r1.changed, true);
    assert.equal(r2.changed, false);
    assert.equal(r2.acquired, true);
    await assert.rejects(h.rpc.call('acquire', { name: 'cluster', scope: 'run', member: 'web3', shared: true }), {
      code: -32004,
    });
    assert.equal((await h.rpc.call('release', { name: 'cluster', scope: 'run', member: 'web1' })).released, true);
    assert.equal((await h.rpc.call('status', { name: 'cluster' })).held, true);
    assert.equal((await h.rpc.call('release', { name: 'cluster', scope: 'run', member: 'web2' })).released, true);
    assert.equal((await h.rpc.call('status', { name: 'cluster' })).held, false);
    assert.equal((await h.rpc.call('release', { name: 'cluster', scope: 'run', member: 'web2' })).released, false);
  });
});

describe('serve: bad input', () => {
  let h: Helper;
  const t = tempDir();
  before(() => {
    h = startServe({ HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') });
  });
  after(async () => {
    await h.close();
    t.cleanup();
  });

  const cases: Array<[string, string | Buffer, number]> = [
    ['malformed JSON', '{"jsonrpc":\n', -32700],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a]), -32700],
    ['not an object', '[1,2]\n', -32600],
    ['no id', '{"jsonrpc":"2.0","method":"hello"}\n', -32600],
    ['wrong version', '{"jsonrpc":"1.0","id":1,"method":"hello"}\n', -32600],
    ['line over 1 MiB', '{"x":"' + 'a'.repeat(1100 * 1024) + '"}\n', -32600],
  ];
  for (const [what, bytes, code] of cases) {
    test(what, async () => {
      const r = await h.rpc.sendRaw(bytes);
      assert.equal(r.error?.code, code, JSON.stringify(r));
      assert.ok(r.error.message.length > 10);
      assert.equal((await h.rpc.call('hello')).protocol, 2, 'still serving');
    });
  }

  const bad: Array<[string, string, unknown, number]> = [
    ['unknown method', 'explode', {}, -32601],
    ['negative timeout', 'acquire', { name: 'x', timeout: -1 }, -32602],
    ['huge timeout', 'acquire', { name: 'x', timeout: 1e300 }, -32602],
    ['string timeout', 'acquire', { name: 'x', timeout: '5' }, -32602],
    ['empty name', 'acquire', { name: '' }, -32602],
    ['name and path', 'acquire', { name: 'x', path: '/tmp/x' }, -32602],
    ['relative path', 'acquire', { path: 'x.lock' }, -32602],
    ['unknown key', 'acquire', { name: 'x', colour: 'red' }, -32602],
    ['timeout on try', 'try', { name: 'x', timeout: 3 }, -32602],
    ['unknown handle', 'release', { handle: 'h999' }, -32602],
    ['block of a held handle', 'block', { handle: 'nope' }, -32602],
    ['missing directory', 'acquire', { name: 'x', dir: '/nonexistent/hostlock' }, -32001],
    ['another protocol (acquire)', 'acquire', { name: 'x', protocol: 99 }, -32009],
    ['another protocol (release)', 'release', { name: 'x', scope: 'run', protocol: 1 }, -32009],
  ];
  for (const [what, method, params, code] of bad) {
    test(what, async () => {
      const r = await h.rpc.raw(method, params);
      assert.equal(r.error?.code, code, JSON.stringify(r));
      assert.ok(r.error.message.length > 10);
    });
  }

  test('an unwritable directory is refused with its path and reason', async () => {
    if (process.getuid?.() === 0) {
      // root writes anywhere: use a file where a directory is expected instead
      const f = join(t.dir, 'afile');
      writeFileSync(f, '');
      const r = await h.rpc.raw('acquire', { name: 'x', dir: f });
      assert.equal(r.error?.code, -32001);
      assert.match(r.error.message, /not a directory/);
      return;
    }
    const d = join(t.dir, 'ro');
    mkdirSync(d);
    chmodSync(d, 0o500);
    const r = await h.rpc.raw('acquire', { name: 'x', dir: d });
    assert.equal(r.error?.code, -32001);
    assert.match(r.error.message, /not writable/);
  });

  test('a handle of another connection is refused', async () => {
    const other = startServe({ HOSTLOCK_DIR: t.dir });
    try {
      // Handles are per helper; a second connection to one agent is covered in agent.test.ts.
      const a = await h.rpc.call('acquire', { name: 'mine' });
      const r = await other.rpc.raw('release', { handle: a.handle });
      assert.equal(r.error?.code, -32602);
      await h.rpc.call('release', { handle: a.handle });
    } finally {
      await other.close();
    }
  });
});

describe('serve: lifetime', () => {
  for (const how of ['EOF', 'SIGTERM', 'SIGINT'] as const) {
    test(`${how} releases everything and exits 0`, async () => {
      const t = tempDir();
      const h = startServe({ HOSTLOCK_DIR: t.dir });
      await h.rpc.call('acquire', { name: 'a' });
      await h.rpc.call('acquire', { name: 'b', shared: true });
      if (how === 'EOF') h.proc.stdin!.end();
      else h.proc.kill(how);
      assert.equal(await h.exited, 0);
      const { lockedByOthers } = await import('./rpc');
      assert.equal(lockedByOthers(join(t.dir, 'a.lock')), false);
      assert.equal(lockedByOthers(join(t.dir, 'b.lock')), false);
      t.cleanup();
    });
  }
});
