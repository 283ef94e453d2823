// Faults around the per-run agent and its helpers: SIGKILL of the agent while
// the run holds locks and while workers wait; SIGKILL of the owner
// (ansible-playbook); a crowd of agents starting over the leftovers of a
// killed one (stale socket, pid file, holds file). What must hold: the kernel
// frees the locks at once, no process of the dead agent lives on to take a
// lock later, exactly one new agent serves, and it tells every member of the
// run, once, which holds were lost.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { spawnWithPid } from './pids';
import { CLI, cli, connectSocket, lockedByOthers, sleep, startServe, tempDir, until } from './rpc';

function spawnAgent(ownerPid: number, env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [CLI, 'agent', '--owner-pid', String(ownerPid)], {
    env: { ...process.env, ...env },
    stdio: 'ignore',
    detached: true,
  });
}

async function connectWhenUp(path: string, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await connectSocket(path);
    } catch (err) {
      if (Date.now() > end) throw err;
      await sleep(20);
    }
  }
}

function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const alive = (pid: number) =>
  existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));

// Polls flock(1) until the file is free; returns the milliseconds it took.
async function freedWithin(path: string, ms: number): Promise<number> {
  const t0 = performance.now();
  await until(() => !lockedByOthers(path), ms, 5);
  return performance.now() - t0;
}

describe('agent faults', () => {
  const t = tempDir('afault');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  const owners: ChildProcess[] = [];
  const owner = () => {
    const o = spawn('sleep', ['600'], { stdio: 'ignore' });
    owners.push(o);
    return o;
  };
  after(() => {
    for (const o of owners) o.kill('SIGKILL');
    t.cleanup();
  });

  test('SIGKILL of the agent holding run holds and connection locks: all free at once', async () => {
    const o = owner();
    const agent = spawnAgent(o.pid!, env);
    const sockPath = cli(['agent', '--owner-pid', String(o.pid), '--print-socket'], env).stdout.trim();
    const c = await connectWhenUp(sockPath);
    await c.rpc.call('acquire', { name: 'r1', scope: 'run', member: 'web1' });
    await c.rpc.call('acquire', { name: 'r2', scope: 'run', member: 'web2', shared: true });
    await c.rpc.call('acquire', { name: 'c1' });
    for (const n of ['r1', 'r2', 'c1']) assert.ok(lockedByOthers(join(t.dir, `${n}.lock`)));
    agent.kill('SIGKILL');
    const ms = await Promise.all(['r1', 'r2', 'c1'].map((n) => freedWithin(join(t.dir, `${n}.lock`), 1000)));
    assert.ok(Math.max(...ms) < 100, `freed after ${ms.map((x) => x.toFixed(0)).join(', ')} ms`);
    c.sock.destroy();
    o.kill('SIGKILL');
  });

  test('SIGKILL of an agent or a serve helper while they wait: no orphan lives on to take the lock later', async () => {
    const holder = startServe(env);
    try {
      const held = await holder.rpc.call('acquire', { name: 'w' });
      const held2 = await holder.rpc.call('acquire', { name: 'w2' });
      // A waiting agent connection and a waiting serve helper, both in the kernel.
      const o = owner();
      const agent = spawnAgent(o.pid!, env);
      const c = await connectWhenUp(cli(['agent', '--owner-pid', String(o.pid), '--print-socket'], env).stdout.trim());
      c.sock.on('error', () => {});
      void c.rpc.call('acquire', { name: 'w' }).catch(() => {});
      void c.rpc.call('acquire', { name: 'w2', scope: 'run', member: 'web1' }).catch(() => {});
      const waiter = startServe(env);
      waiter.proc.stdin!.on('error', () => {});
      void waiter.rpc.call('acquire', { name: 'w' }).catch(() => {});
      void waiter.rpc.call('acquire', { name: 'w', shared: true }).catch(() => {});
      await until(() => children(agent.pid!).length > 0 && children(waiter.proc.pid!).length > 0, 3000);
      const orphans = [...children(agent.pid!), ...children(waiter.proc.pid!)];
      agent.kill('SIGKILL');
      waiter.proc.kill('SIGKILL');
      await sleep(200);
      const left = orphans.filter(alive);
      assert.deepEqual(
        left,
        [],
        `waiters of the dead helpers still wait (pids ${left.join(', ')}): they would take the lock when it frees`,
      );
      // And when the holder lets go, nobody takes it.
      await holder.rpc.call('release', { handle: held.handle });
      await holder.rpc.call('release', { handle: held2.handle });
      await sleep(100);
      assert.equal(lockedByOthers(join(t.dir, 'w.lock')), false, 'a dead waiter took the lock');
      assert.equal(lockedByOthers(join(t.dir, 'w2.lock')), false, 'a dead waiter took the lock');
      o.kill('SIGKILL');
    } finally {
      await holder.close();
    }
  });

  test('SIGKILL of the owner (ansible-playbook): holds free within 2 s, the agent exits and cleans up', async () => {
    const o = owner();
    const agent = spawnAgent(o.pid!, env);
    const sockPath = cli(['agent', '--owner-pid', String(o.pid), '--print-socket'], env).stdout.trim();
    const c = await connectWhenUp(sockPath);
    await c.rpc.call('acquire', { name: 'own', scope: 'run', member: 'web1' });
    const exited = new Promise((r) => agent.on('exit', r));
    o.kill('SIGKILL');
    const ms = await freedWithin(join(t.dir, 'own.lock'), 2000);
    process.stderr.write(`# owner SIGKILL: hold freed after ${ms.toFixed(0)} ms\n`);
    await exited;
    assert.equal(existsSync(sockPath), false, 'socket left behind');
    assert.equal(existsSync(sockPath.replace(/\.sock$/, '.pid')), false, 'pid file left behind');
    c.sock.destroy();
  });

  test('the owner dies and its PID is reused at once: the agent still sees its owner gone (start time)', async (ctx) => {
    const o = owner();
    const agent = spawnAgent(o.pid!, env);
    const sockPath = cli(['agent', '--owner-pid', String(o.pid), '--print-socket'], env).stdout.trim();
    const c = await connectWhenUp(sockPath);
    await c.rpc.call('acquire', { name: 'reuse', scope: 'run', member: 'web1' });
    const exited = new Promise((r) => agent.on('exit', r));
    // Swap the owner for an impostor with its PID while the agent cannot look.
    agent.kill('SIGSTOP');
    o.kill('SIGKILL');
    await new Promise((r) => o.on('exit', r));
    const impostor = spawnWithPid(o.pid!);
    agent.kill('SIGCONT');
    if (!impostor) return ctx.skip('cannot choose a PID here');
    owners.push(impostor);
    try {
      await freedWithin(join(t.dir, 'reuse.lock'), 2000);
      await exited;
    } finally {
      impostor.kill('SIGKILL');
      c.sock.destroy();
    }
  });

  test("20 agents racing over a killed agent's stale socket, pid and holds files: one serves and reports the losses once per member", async () => {
    const o = owner();
    const first = spawnAgent(o.pid!, env);
    const sockPath = cli(['agent', '--owner-pid', String(o.pid), '--print-socket'], env).stdout.trim();
    const c = await connectWhenUp(sockPath);
    for (const member of ['web1', 'web2', 'web3', 'web4'])
      await c.rpc.call('acquire', { name: 'db', scope: 'run', member });
    for (const member of ['web2', 'web5']) await c.rpc.call('acquire', { name: 'cache', scope: 'run', member });
    first.kill('SIGKILL');
    await new Promise((r) => first.on('exit', r));
    c.sock.destroy();
    assert.ok(existsSync(sockPath), 'the killed agent left its socket');
    // The stale socket refuses connections; it must not stop a new agent.
    await assert.rejects(connectSocket(sockPath), /ECONNREFUSED/);
    const crowd = Array.from({ length: 20 }, () => spawnAgent(o.pid!, env));
    const c2 = await connectWhenUp(sockPath);
    const hello = await c2.rpc.call('hello', {});
    await until(() => crowd.filter((a) => a.exitCode !== null).length === 19, 10000);
    const serving = crowd.filter((a) => a.exitCode === null);
    assert.deepEqual(
      serving.map((a) => a.pid),
      [hello.pid],
      'exactly one agent serves, the one that answers',
    );
    const lostOf = async (member: string) =>
      (await c2.rpc.call('hello', { member })).lost.map((l: any) => l.name).sort();
    assert.deepEqual(await lostOf('web1'), ['db']);
    assert.deepEqual(await lostOf('web2'), ['cache', 'db']);
    assert.deepEqual(await lostOf('web2'), [], 'reported twice');
    // A second connection (another worker) learns web3's loss once too.
    const c3 = await connectSocket(sockPath);
    assert.deepEqual(
      (await c3.rpc.call('hello', { member: 'web3' })).lost.map((l: any) => l.name),
      ['db'],
    );
    assert.deepEqual(await lostOf('web3'), []);
    // Without a hello, a member's next run-scope request is refused "lock lost", once.
    const refused = await c3.rpc.raw('try', { name: 'db', scope: 'run', member: 'web4', protocol: 2 });
    assert.equal(refused.error?.code, -32003, JSON.stringify(refused));
    assert.equal(
      refused.error.message,
      "lock lost: web4 held 'db' (this run's hostlock agent died holding it); " +
        'another run may have entered the guarded section',
    );
    assert.deepEqual(
      refused.error.data.lost.map((l: any) => l.name),
      ['db'],
    );
    const released = await c3.rpc.raw('release', { name: 'cache', scope: 'run', member: 'web5', protocol: 2 });
    assert.equal(released.error?.code, -32003, JSON.stringify(released));
    assert.equal((await c3.rpc.call('release', { name: 'cache', scope: 'run', member: 'web5' })).released, false);
    assert.deepEqual(await lostOf('web4'), []);
    // The run can lock again.
    const again = await c2.rpc.call('acquire', { name: 'db', scope: 'run', member: 'web1', timeout: 2 });
    assert.equal(again.acquired, true);
    c2.sock.destroy();
    c3.sock.destroy();
    o.kill('SIGKILL');
    await until(() => serving[0]!.exitCode !== null, 5000);
  });
});
