// `hostlock break`: a run whose agent is stopped (SIGSTOP) holds a lock
// forever; break ends the agent, the kernel releases, the waiter gets in
// within a second, the history says who broke what and why, and the run,
// once it goes on, hears "lock lost" on its next hostlock task.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { startAgent } from './agents';
import { CLI, cli, connectSocket, lockedByOthers, startServe, tempDir, until } from './rpc';

describe('hostlock break', { timeout: 60000 }, () => {
  test("break of a SIGSTOPped run's hold lets the waiter in within 1 s; the run then fails lock lost", async () => {
    const t = tempDir('brk');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const run = await startAgent(env);
    const waiter = startServe(env);
    let successor: ReturnType<typeof spawn> | undefined;
    try {
      const c = await run.connect();
      const got = await c.rpc.call('acquire', {
        name: 'db',
        dir: t.dir,
        scope: 'run',
        member: 'web1',
        owner: { run: 'stuck-run', playbook: 'migrate.yml', task: 'Lock db', host: 'web1' },
      });
      assert.equal(got.acquired, true);
      c.sock.destroy();
      run.agent.kill('SIGSTOP');
      const waiting = waiter.rpc.call('acquire', { name: 'db', owner: { run: 'next-run' } });
      await until(async () => (await waiter.rpc.call('status', { name: 'db' })).waiters.length === 1);

      // status marks the holder as stopped.
      const s = JSON.parse(cli(['status', '--json'], env).stdout).locks.find((l: any) => l.name === 'db');
      assert.equal(s.holders[0].stopped, true, JSON.stringify(s.holders));
      assert.match(cli(['status'], env).stdout, /run stuck-run .*STOPPED/);

      // Not on a terminal and without --yes: refused, nothing ended.
      const refused = cli(['break', 'db', '--reason', 'stuck'], env);
      assert.equal(refused.status, 64, refused.stderr);
      assert.match(refused.stderr, /confirm with --yes/);
      assert.ok(lockedByOthers(join(t.dir, 'db.lock')));
      // A reason is required.
      assert.equal(cli(['break', 'db', '--yes'], env).status, 64);

      // Timed from the moment break ends the agent (the CLI's own start-up aside).
      let ended = 0;
      run.agent.once('exit', () => (ended = performance.now()));
      const breaking = spawn(
        process.execPath,
        [CLI, 'break', 'db', '--reason', 'migration hung on a lock wait', '--yes'],
        {
          env: { ...process.env, ...env },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      breaking.stderr.on('data', (c) => (stderr += c));
      const status = await new Promise<number | null>((res) => breaking.on('exit', (c) => res(c)));
      const r = await waiting;
      const took = performance.now() - ended;
      assert.equal(status, 0, stderr);
      assert.match(stderr, /broke db: ended pid \d+/);
      assert.equal(r.acquired, true);
      assert.ok(ended > 0 && took < 1000, `the waiter got in ${took.toFixed(0)} ms after the agent ended`);

      // On the record: who broke what, when and why.
      const hist = JSON.parse(cli(['history', 'db', '--json'], env).stdout).events;
      const b = hist.find((e: any) => e.event === 'break');
      assert.ok(b, JSON.stringify(hist));
      assert.equal(b.reason, 'migration hung on a lock wait');
      assert.equal(b.victim.run, 'stuck-run');
      assert.equal(b.victim.helper_pid, run.agent.pid);
      assert.equal(b.token, got.token);
      assert.ok(b.user && b.pid && b.t);
      assert.match(
        cli(['history', 'db'], env).stdout,
        /break +db .*broke pid \d+ \(run stuck-run\), reason: migration hung/,
      );

      // The run goes on: its next task (a new agent for the same run) hears "lock lost".
      successor = spawn(process.execPath, [CLI, 'agent', '--owner-pid', String(run.owner.pid)], {
        env: { ...process.env, ...env },
        stdio: 'ignore',
      });
      const socket = cli(['agent', '--owner-pid', String(run.owner.pid), '--print-socket'], env).stdout.trim();
      let conn: Awaited<ReturnType<typeof connectSocket>> | undefined;
      await until(async () => {
        try {
          conn = await connectSocket(socket);
          return true;
        } catch {
          return false;
        }
      }, 10000);
      const hello = await conn!.rpc.call('hello', { member: 'web1' });
      assert.deepEqual(
        hello.lost.map((l: any) => l.name),
        ['db'],
      );
      conn!.sock.destroy();
    } finally {
      run.agent.kill('SIGKILL');
      run.owner.kill('SIGKILL');
      successor?.kill('SIGKILL');
      await waiter.close();
      t.cleanup();
    }
  });

  test('a holder without a hostlock helper (flock(1)) is not broken; a free lock neither', async () => {
    const t = tempDir('brk');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const flock = spawn('flock', ['-x', join(t.dir, 'ext.lock'), 'sleep', '30'], { stdio: 'ignore' });
    try {
      await until(() => lockedByOthers(join(t.dir, 'ext.lock')));
      const r = cli(['break', 'ext', '--reason', 'x', '--yes'], env);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /not a hostlock holder/);
      assert.ok(lockedByOthers(join(t.dir, 'ext.lock')));
      const free = cli(['break', 'nothing', '--reason', 'x', '--yes'], env);
      assert.equal(free.status, 1);
      assert.match(free.stderr, /nothing is not held/);
    } finally {
      flock.kill('SIGKILL');
      t.cleanup();
    }
  });
});
