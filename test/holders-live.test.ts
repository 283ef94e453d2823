// The live holder of a lock whose `hostlock run` wrapper is gone: the command
// inherited the lock (as its fd 3) and keeps it. `status`, `break` and the
// waiting lines name that command (pid, user, command line), never the dead
// wrapper's pid with an unknown user.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { CLI, cli, descendants, tempDir, until } from './rpc';

interface Listed {
  locks: Array<{ name: string; held: boolean; holders: Array<{ pid: number; user: string; command?: string }> }>;
}

function holdersOf(env: NodeJS.ProcessEnv, name: string) {
  const st = cli(['status', '--json'], env);
  assert.equal(st.status, 0, st.stderr);
  return (JSON.parse(st.stdout) as Listed).locks.find((l) => l.name === name)?.holders ?? [];
}

// `hostlock run NAME -- sleep 300`, once it holds: the wrapper and its command.
async function holdingRun(env: NodeJS.ProcessEnv, name: string): Promise<{ wrapper: ChildProcess; command: number }> {
  const wrapper = spawn(process.execPath, [CLI, 'run', name, '--', 'sleep', '300'], {
    env: { ...process.env, ...env },
    stdio: 'ignore',
  });
  let command = 0;
  await until(
    () => {
      const kids = descendants(wrapper.pid!).filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'latin1').startsWith('sleep\x00300');
        } catch {
          return false;
        }
      });
      command = kids[0] ?? 0;
      return command > 0 && holdersOf(env, name).length > 0;
    },
    10_000,
    50,
  );
  return { wrapper, command };
}

function gone(pid: number): Promise<void> {
  return until(() => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      return /\) [ZX] /.test(stat);
    } catch {
      return true;
    }
  }, 10_000);
}

function checkNamed(env: NodeJS.ProcessEnv, name: string, command: number, dead: number): void {
  const holders = holdersOf(env, name);
  assert.equal(holders.length, 1, JSON.stringify(holders));
  assert.equal(holders[0]!.pid, command, `the live command is named, not the dead wrapper ${dead}`);
  assert.equal(holders[0]!.user, userInfo().username);
  assert.match(holders[0]!.command ?? '', /^sleep 300$/);
  const text = cli(['status'], env).stdout;
  assert.match(text, new RegExp(`pid ${command}\\b`));
  assert.match(text, /sleep 300/);
  assert.doesNotMatch(text, new RegExp(`pid ${dead}\\b`));
}

describe('the live holder after its wrapper is gone', { timeout: 90_000 }, () => {
  test('kill -9 of the wrapper: status, break and a waiter name the command', async () => {
    const t = tempDir('hl-live');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const { wrapper, command } = await holdingRun(env, 'job');
    try {
      wrapper.kill('SIGKILL');
      await gone(wrapper.pid!);
      checkNamed(env, 'job', command, wrapper.pid!);

      const broke = cli(['break', 'job', '--reason', 'stuck', '--yes'], env);
      assert.equal(broke.status, 1, broke.stderr);
      assert.match(broke.stderr, new RegExp(`pid ${command}\\b`));
      assert.match(broke.stderr, /sleep 300/);
      assert.doesNotMatch(broke.stderr, new RegExp(`pid ${wrapper.pid}\\b|\\?`));

      const waiter = cli(['run', 'job', '--timeout', '6', '--', 'true'], env);
      assert.equal(waiter.status, 1, waiter.stderr);
      const lines = waiter.stderr.trim().split('\n');
      assert.ok(
        lines.some((l) => /waiting \d+s/.test(l)),
        waiter.stderr,
      );
      for (const l of lines) {
        assert.match(l, new RegExp(`held by ${userInfo().username}\\S* pid ${command}\\b`), l);
        assert.doesNotMatch(l, new RegExp(`pid ${wrapper.pid}\\b`), l);
      }
    } finally {
      process.kill(command, 'SIGKILL');
      t.cleanup();
    }
  });

  test('break of a `hostlock run` holder names the command that keeps the lock', async () => {
    const t = tempDir('hl-live');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
    const { wrapper, command } = await holdingRun(env, 'job2');
    try {
      const broke = cli(['break', 'job2', '--reason', 'stuck', '--yes'], env);
      assert.equal(broke.status, 1, broke.stderr);
      assert.match(broke.stderr, /ended the helper/);
      assert.match(broke.stderr, new RegExp(`still held by .*pid ${command}\\b.*sleep 300`));
      assert.doesNotMatch(broke.stderr, new RegExp(`still held by .*pid ${wrapper.pid}\\b`));
      await gone(wrapper.pid!);
      checkNamed(env, 'job2', command, wrapper.pid!);
    } finally {
      process.kill(command, 'SIGKILL');
      t.cleanup();
    }
  });
});
