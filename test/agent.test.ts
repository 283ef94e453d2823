// The per-run agent: one per owner process, connection locks end with their
// connection, run holds are counted and outlive connections, and the agent
// ends (releasing all) when its owner is gone or it is idle.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, cli, connectSocket, lockedByOthers, sleep, tempDir, until } from './rpc';

function owner(): ChildProcess {
  return spawn('sleep', ['300'], { stdio: 'ignore' });
}

function startAgent(ownerPid: number, env: NodeJS.ProcessEnv, extra: string[] = []): ChildProcess {
  return spawn(process.execPath, [CLI, 'agent', '--owner-pid', String(ownerPid), ...extra], {
    env: { ...process.env, ...env },
    stdio: 'ignore',
    detached: true,
  });
}

function socketOf(ownerPid: number, env: NodeJS.ProcessEnv): string {
  const r = cli(['agent', '--owner-pid', String(ownerPid), '--print-socket'], env);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

async function connectWhenUp(path: string) {
  await until(() => existsSync(path), 10000);
  for (let i = 0; ; i++) {
    try {
      return await connectSocket(path);
    } catch (err) {
      if (i > 100) throw err;
      await sleep(20);
    }
  }
}

describe('agent', () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: join(t.dir, 'locks'), HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  before(() => mkdirSync(env.HOSTLOCK_DIR, { mode: 0o700 }));
  after(() => t.cleanup());

  test('20 agents started at once for one run: exactly one serves', async () => {
    const o = owner();
    const agents = Array.from({ length: 20 }, () => startAgent(o.pid!, env));
    const exits = agents.map((a) => new Promise<number | null>((r) => a.on('exit', (c) => r(c))));
    const sock = socketOf(o.pid!, env);
    const { sock: s1, rpc } = await connectWhenUp(sock);
    const hello = await rpc.call('hello', { client: 'test' });
    assert.equal(hello.agent, true);
    // All but one exit 0 at once; the one left is the one we talk to.
    await until(() => agents.filter((a) => a.exitCode !== null).length === 19, 10000);
    const alive = agents.filter((a) => a.exitCode === null);
    assert.equal(alive.length, 1);
    assert.equal(alive[0]!.pid, hello.pid);
    for (const a of agents) if (a.exitCode !== null) assert.equal(a.exitCode, 0);
    const st = statSync(join(t.dir, 'rt'));
    assert.equal(st.mode & 0o777, 0o700, 'runtime directory must be private');
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    s1.destroy();
    o.kill();
    await Promise.race([Promise.all(exits), sleep(5000)]);
    assert.notEqual(alive[0]!.exitCode, null, 'agent outlived its owner');
  });

  test('connection locks end with the connection; run holds outlive it, counted by member', async () => {
    const o = owner();
    const a = startAgent(o.pid!, env);
    const path = socketOf(o.pid!, env);
    const c1 = await connectWhenUp(path);
    const conn = await c1.rpc.call('acquire', { name: 'conn' });
    const run1 = await c1.rpc.call('acquire', {
      name: 'cluster',
      scope: 'run',
      member: 'web1',
      owner: { host: 'web1', pid: o.pid },
    });
    assert.equal(run1.changed, true);
    assert.equal(conn.acquired && run1.acquired, true);
    c1.sock.destroy();
    await until(() => !lockedByOthers(join(env.HOSTLOCK_DIR, 'conn.lock')), 3000);
    assert.equal(lockedByOthers(join(env.HOSTLOCK_DIR, 'cluster.lock')), true, 'run hold ended with its connection');

    const c2 = await connectSocket(path);
    const run2 = await c2.rpc.call('acquire', { name: 'cluster', scope: 'run', member: 'web2' });
    assert.equal(run2.acquired, true);
    assert.equal(run2.changed, false, 'the run already held it');
    const st = await c2.rpc.call('status', { name: 'cluster' });
    assert.deepEqual(st.holders[0].members.sort(), ['web1', 'web2']);
    assert.equal(st.holders[0].pid, o.pid, 'a run hold shows the run owner pid');
    // A handle of another connection is refused.
    const c3 = await connectSocket(path);
    const mine = await c2.rpc.call('acquire', { name: 'private' });
    assert.equal((await c3.rpc.raw('release', { handle: mine.handle })).error?.code, -32602);
    assert.equal((await c2.rpc.call('release', { name: 'cluster', scope: 'run', member: 'web1' })).released, true);
    assert.equal(lockedByOthers(join(env.HOSTLOCK_DIR, 'cluster.lock')), true);
    assert.equal((await c3.rpc.call('release', { name: 'cluster', scope: 'run', member: 'web2' })).released, true);
    assert.equal(lockedByOthers(join(env.HOSTLOCK_DIR, 'cluster.lock')), false);
    c2.sock.destroy();
    c3.sock.destroy();
    o.kill();
    await until(() => a.exitCode !== null, 5000);
  });

  test('owner death releases the run holds within 2 s and the agent exits', async () => {
    const o = owner();
    const a = startAgent(o.pid!, env);
    const c = await connectWhenUp(socketOf(o.pid!, env));
    await c.rpc.call('acquire', { name: 'web9', scope: 'run', member: 'web9' });
    const lock = join(env.HOSTLOCK_DIR, 'web9.lock');
    assert.equal(lockedByOthers(lock), true);
    o.kill('SIGKILL');
    const t0 = performance.now();
    await until(() => !lockedByOthers(lock), 2000, 20);
    assert.ok(performance.now() - t0 < 2000);
    await until(() => a.exitCode !== null, 3000);
    c.sock.destroy();
  });

  test('an agent idle with nothing held exits; one with a hold stays', async () => {
    const o = owner();
    const idle = startAgent(o.pid!, env, ['--idle-timeout', '0.5']);
    const path = socketOf(o.pid!, env);
    const c = await connectWhenUp(path);
    await c.rpc.call('acquire', { name: 'stay', scope: 'run', member: 'h' });
    c.sock.destroy();
    await sleep(1200);
    assert.equal(idle.exitCode, null, 'agent quit while the run held a lock');
    const c2 = await connectSocket(path);
    await c2.rpc.call('release', { name: 'stay', scope: 'run', member: 'h' });
    c2.sock.destroy();
    await until(() => idle.exitCode !== null, 4000);
    assert.equal(existsSync(path), false, 'socket left behind');
    o.kill();
  });

  test('SIGKILL of the agent: the next agent of the run reports the lost hold once per member', async () => {
    const o = owner();
    const a = startAgent(o.pid!, env);
    const path = socketOf(o.pid!, env);
    const c = await connectWhenUp(path);
    const hello = await c.rpc.call('hello', {});
    await c.rpc.call('acquire', { name: 'db', scope: 'run', member: 'web1' });
    await c.rpc.call('acquire', { name: 'db', scope: 'run', member: 'web2' });
    process.kill(hello.pid, 'SIGKILL');
    await until(() => a.exitCode !== null || a.signalCode !== null, 3000);
    c.sock.destroy();
    // A stale socket is left behind; a new agent must still start.
    const b = startAgent(o.pid!, env);
    await sleep(300);
    const c2 = await connectWhenUp(path);
    const h1 = await c2.rpc.call('hello', { member: 'web1' });
    assert.deepEqual(
      h1.lost.map((l: any) => l.name),
      ['db'],
    );
    assert.deepEqual((await c2.rpc.call('hello', { member: 'web1' })).lost, [], 'reported twice to one member');
    assert.deepEqual(
      (await c2.rpc.call('hello', { member: 'web2' })).lost.map((l: any) => l.name),
      ['db'],
    );
    c2.sock.destroy();
    o.kill();
    await until(() => b.exitCode !== null, 5000);
  });

  test('an agent for a process that is not running refuses to start', () => {
    const r = cli(['agent', '--owner-pid', '4194000'], env);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /not running/);
  });
});
