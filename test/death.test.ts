// Death of a holder, every way it can die, and what becomes of its lock: a
// helper killed with SIGKILL (the kernel frees at once), a client killed while
// its `serve` helper lives on (the helper releases on stdin EOF), and
// `hostlock run` killed while its command runs: like flock(1), the command
// inherited the lock and keeps it until it exits, so it never runs unprotected.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { spawnWithPid } from './pids';
import { CLI, FIXTURES, lockedByOthers, sleep, startServe, tempDir, until } from './rpc';

describe('death of the holder', () => {
  const t = tempDir('death');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  after(() => t.cleanup());

  test('SIGKILL of a serve helper: free within 100 ms', async () => {
    const h = startServe(env);
    await h.rpc.call('acquire', { name: 's' });
    const t0 = performance.now();
    h.proc.kill('SIGKILL');
    await until(() => !lockedByOthers(join(t.dir, 's.lock')), 1000, 2);
    assert.ok(performance.now() - t0 < 100);
  });

  test('a dead holder is never reported, even once its PID belongs to another process', async (ctx) => {
    const h = startServe(env);
    const watcher = startServe(env);
    try {
      await h.rpc.call('acquire', { name: 'p', owner: { playbook: 'dead.yml' } });
      assert.equal((await watcher.rpc.call('status', { name: 'p' })).holders[0]?.playbook, 'dead.yml');
      const pid = h.proc.pid!;
      h.proc.kill('SIGKILL');
      await h.exited;
      const impostor = spawnWithPid(pid); // its record is still on disk, naming this PID
      if (!impostor) return ctx.skip('cannot choose a PID here');
      // Someone else locks the file now, so the kernel's table alone cannot hide the stale record.
      const other = spawn('flock', ['-x', '-o', join(t.dir, 'p.lock'), 'sleep', '30'], {
        stdio: 'ignore',
        detached: true,
      });
      try {
        await until(() => lockedByOthers(join(t.dir, 'p.lock')));
        const s = await watcher.rpc.call('status', { name: 'p' });
        assert.deepEqual(
          s.holders.map((x: any) => [x.pid, x.foreign ?? false]),
          [[other.pid, true]],
          `a dead holder is reported: ${JSON.stringify(s.holders)}`,
        );
      } finally {
        impostor.kill('SIGKILL');
        process.kill(-other.pid!, 'SIGKILL'); // flock and its sleep
      }
    } finally {
      await watcher.close();
    }
  });

  test('SIGKILL of the client of a serve helper: the helper releases on EOF and exits', async () => {
    // The client: a Python process that starts serve with pipes, locks, and waits to be killed.
    const client = spawn('python3', [join(FIXTURES, 'serve-client.py'), CLI, process.execPath], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    client.stdout.on('data', (d) => (out += d));
    await until(() => out.includes('\n'), 10000);
    const line = out;
    const [helperPid, acquired] = line.trim().split(' ');
    assert.equal(acquired, 'True');
    assert.ok(lockedByOthers(join(t.dir, 'c.lock')));
    const t0 = performance.now();
    client.kill('SIGKILL');
    await until(() => !lockedByOthers(join(t.dir, 'c.lock')), 1000, 2);
    const ms = performance.now() - t0;
    assert.ok(ms < 100, `freed after ${ms.toFixed(0)} ms`);
    await until(() => {
      try {
        readFileSync(`/proc/${helperPid}/stat`);
        return false;
      } catch {
        return true;
      }
    }, 2000);
  });

  test('SIGKILL of `hostlock run`: its command keeps the lock until it exits, and status says held', async () => {
    const path = join(t.dir, 'r.lock');
    const run = spawn(process.execPath, [CLI, 'run', 'r', '--', 'sleep', '1.5'], {
      env: { ...process.env, ...env },
      stdio: 'ignore',
    });
    await until(() => lockedByOthers(path), 5000);
    await sleep(200);
    run.kill('SIGKILL');
    await sleep(200);
    assert.ok(lockedByOthers(path), 'the command runs on, unprotected: the lock died with hostlock run');
    const status = spawn(process.execPath, [CLI, 'status', '--json'], { env: { ...process.env, ...env } });
    let out = '';
    status.stdout.on('data', (d) => (out += d));
    await new Promise((r) => status.on('exit', r));
    const lock = JSON.parse(out).locks.find((l: any) => l.name === 'r');
    assert.equal(lock.held, true, `status: ${JSON.stringify(lock)}`);
    await until(() => !lockedByOthers(path), 5000); // the command ended: free
  });
});
