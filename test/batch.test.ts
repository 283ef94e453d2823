// A run's batch (one task of a linear play): the agent takes every member's
// name in path order on the members' behalf, so two runs never each hold part
// of what the other waits for; names nobody asks for are not kept.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startAgent, type TestAgent } from './agents';
import { connectSocket, lockedByOthers, sleep, tempDir, until } from './rpc';

const names = Array.from({ length: 10 }, (_, i) => `n${i}`);
const members = names.map((name, i) => ({ member: `m${i}`, name }));

describe('batches', { timeout: 60000 }, () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: join(t.dir, 'locks'), HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  const agents: TestAgent[] = [];
  const socks: Array<{ destroy(): void }> = [];
  before(() => mkdirSync(env.HOSTLOCK_DIR, { mode: 0o700 }));
  after(async () => {
    for (const s of socks) s.destroy();
    await Promise.all(agents.map((a) => a.stop()));
    t.cleanup();
  });
  const lockPath = (name: string) => join(env.HOSTLOCK_DIR, `${name}.lock`);

  async function run() {
    const a = await startAgent(env);
    agents.push(a);
    // One connection per member, as each Ansible worker has its own.
    const ask = async (member: string, name: string, params: object = {}, method = 'acquire') => {
      const c = await a.connect();
      socks.push(c.sock);
      return c.rpc.call(method, { name, scope: 'run', member, ...params });
    };
    const release = async (params: object) => {
      const c = await a.connect();
      socks.push(c.sock);
      return c.rpc.call('release', { scope: 'run', ...params });
    };
    return { ask, release };
  }

  // A connection to another run's agent, holding locks of its own.
  async function other() {
    const b = await startAgent(env);
    agents.push(b);
    const c = await connectSocket(b.socket);
    socks.push(c.sock);
    return c;
  }

  test('two runs asking for their members in opposite orders both complete', async () => {
    const [a, b] = [await run(), await run()];
    const batch = { id: 'task1:x', members };
    // Without the plan: A would hold n0 and B n9, each then waiting for the other's.
    const a0 = a.ask('m0', 'n0', { batch, timeout: 10 });
    await sleep(200);
    const b9 = b.ask('m9', 'n9', { batch, timeout: 10 });
    await sleep(200);
    const aRest = members.slice(1).map((m) => a.ask(m.member, m.name, { batch, timeout: 10 }));
    const bRest = members.slice(0, 9).map((m) => b.ask(m.member, m.name, { batch, timeout: 10 }));
    const gotA = await Promise.all([a0, ...aRest]);
    assert.ok(
      gotA.every((r) => r.acquired),
      JSON.stringify(gotA.filter((r) => !r.acquired)),
    );
    assert.equal(gotA.filter((r) => r.changed).length, 10, 'each fresh hold reports changed once');
    for (const m of members) await a.release({ name: m.name, member: m.member });
    const gotB = await Promise.all([b9, ...bRest]);
    assert.ok(
      gotB.every((r) => r.acquired),
      JSON.stringify(gotB.filter((r) => !r.acquired)),
    );
    for (const m of members) await b.release({ name: m.name, member: m.member });
    for (const n of names) assert.equal(lockedByOthers(lockPath(n)), false, n);
  });

  test('a name taken for a member that never asks is released when the next batch begins', async () => {
    const a = await run();
    const batch = { id: 'task1:y', members: members.slice(0, 3) };
    assert.equal((await a.ask('m0', 'n0', { batch })).acquired, true);
    await until(() => lockedByOthers(lockPath('n2')), 3000);
    // The next task of the run: the batch is over, m1 and m2 never asked.
    await a.ask('m0', 'other', { batch: { id: 'task2:y', members: [{ member: 'm0', name: 'other' }] } });
    assert.equal(lockedByOthers(lockPath('n1')), false, 'n1 kept for a member that never asked');
    assert.equal(lockedByOthers(lockPath('n2')), false, 'n2 kept for a member that never asked');
    assert.equal(lockedByOthers(lockPath('n0')), true, 'm0 asked for n0 and holds it');
    await a.release({ name: 'n0' });
    await a.release({ name: 'other' });
  });

  test('a member that gives up its wait gives up its name; the batch goes on without it', async () => {
    const a = await run();
    const blocker = await other();
    assert.equal((await blocker.rpc.call('acquire', { name: 'n1' })).acquired, true);
    const batch = { id: 'task1:z', members: members.slice(0, 3) };
    const m1 = await a.ask('m1', 'n1', { batch, timeout: 0.5 });
    assert.equal(m1.acquired, false);
    assert.equal(m1.reason, 'timeout');
    const [m0, m2] = await Promise.all([
      a.ask('m0', 'n0', { batch, timeout: 5 }),
      a.ask('m2', 'n2', { batch, timeout: 5 }),
    ]);
    assert.equal(m0.acquired && m2.acquired, true, 'the batch stalled behind a name nobody wants');
    blocker.sock.destroy();
    await sleep(300);
    assert.equal(lockedByOthers(lockPath('n1')), false, 'the run took n1 after its member gave up');
    await a.release({ name: 'n0' });
    await a.release({ name: 'n2' });
  });

  test('a member queued behind another name says which', async () => {
    const a = await run();
    const blocker = await other();
    assert.equal((await blocker.rpc.call('acquire', { name: 'n0' })).acquired, true);
    const c = await a.ask('m1', 'n1', { batch: { id: 'task1:w', members: members.slice(0, 2) } }, 'try');
    assert.equal(c.acquired, false);
    assert.equal(c.behind, 'n0');
    blocker.sock.destroy();
  });
});
