// When a test fails or hangs, its file fails (a hang at the per-test timeout) and
// the helpers it started are killed, so neither the suite nor a stray helper is left waiting.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir, until } from './rpc';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// Runs the fixture's tests matching `pattern` in a runner of its own; the pids of
// the helpers they started. NODE_TEST_CONTEXT would make it report to this runner.
function runFixture(
  dir: string,
  pattern: string,
  timeout: string[],
): { status: number | null; stdout: string; pids: number[] } {
  const pidFile = join(dir, `pids-${pattern}`);
  const started = Date.now();
  const r = spawnSync(
    process.execPath,
    ['--test', ...timeout, `--test-name-pattern=${pattern}`, join(__dirname, 'fixtures', 'hang.js')],
    {
      encoding: 'utf8',
      env: { ...process.env, NODE_TEST_CONTEXT: undefined, HANG_PIDFILE: pidFile, HOSTLOCK_DIR: dir },
      timeout: 30000,
    },
  );
  assert.equal(r.error, undefined, `the test file did not end by itself: ${String(r.error)}`);
  assert.ok(Date.now() - started < 20000, 'the test file ended long after its tests');
  return { status: r.status, stdout: r.stdout, pids: readFileSync(pidFile, 'utf8').trim().split('\n').map(Number) };
}

test('a failed test ends its file and kills its helpers', async () => {
  const t = tempDir();
  try {
    // No --test-timeout: the runner would kill the file at the timeout; the file must end by itself.
    const r = runFixture(t.dir, 'fails', []);
    assert.notEqual(r.status, 0);
    assert.match(r.stdout, /failed on purpose/);
    await until(() => r.pids.every((pid) => !alive(pid)), 5000);
  } finally {
    t.cleanup();
  }
});

test('a hanging test fails at --test-timeout and kills its helpers', async () => {
  const t = tempDir();
  try {
    const r = runFixture(t.dir, 'never ends', ['--test-timeout=1500']);
    assert.notEqual(r.status, 0);
    assert.match(r.stdout, /timed out after 1500ms/);
    await until(() => r.pids.every((pid) => !alive(pid)), 5000);
  } finally {
    t.cleanup();
  }
});
