// `hostlock flock` and `hostlock run` start their command on each Node major
// the README names: the command's status and signal come back as flock(1)
// gives them, it gets HOSTLOCK_TOKEN and keeps the lock on its descriptor
// when hostlock is killed, a command that cannot start gets flock(1)'s
// status, and nothing reaches stderr, not even under --pending-deprecation.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLI, NODES, tempDir, until } from './rpc';

const t = tempDir('hl-spawn');
after(() => t.cleanup());
const lock = join(t.dir, 'f.lock');
const locks = join(t.dir, 'locks');
mkdirSync(locks, { mode: 0o700 });
for (const [major, node] of NODES) {
  describe(`Node ${major}`, () => {
    const env = { ...process.env, HOSTLOCK_DIR: locks };
    const hl = (args: string[], extra: NodeJS.ProcessEnv = {}) => {
      assert.ok(existsSync(node), `${node} is missing: run \`make nodes\``);
      return spawnSync(node, [CLI, ...args], { env: { ...env, ...extra }, encoding: 'utf8' });
    };

    test('flock: the status, the signal, the token, and silence', () => {
      const ok = hl(['flock', lock, 'sh', '-c', 'echo "token=$HOSTLOCK_TOKEN"; exit 3'], {
        NODE_OPTIONS: '--pending-deprecation',
      });
      assert.equal(ok.status, 3, ok.stderr);
      assert.match(ok.stdout, /^token=[1-9][0-9]*\n$/);
      assert.equal(ok.stderr, '');
      const killed = hl(['flock', lock, 'sh', '-c', 'kill -TERM $$']);
      assert.equal(killed.status, 128 + 15, killed.stderr);
      const missing = hl(['flock', lock, 'no-such-command-here']);
      assert.equal(missing.status, 69);
      assert.equal(missing.stderr, 'flock: failed to execute no-such-command-here: No such file or directory\n');
    });

    test('flock: the command holds the lock on its descriptor after hostlock is killed', async () => {
      const started = join(t.dir, `started-${major}`);
      const cmd = `touch '${started}'; exec sleep 30`;
      const p = spawn(node, [CLI, 'flock', lock, 'sh', '-c', cmd], { env, stdio: 'ignore' });
      const busy = () => spawnSync('flock', ['-n', lock, 'true']).status === 1;
      await until(() => existsSync(started));
      p.kill('SIGKILL');
      await new Promise((r) => p.once('exit', r));
      assert.ok(busy(), 'the lock went with hostlock, not with its command');
      spawnSync('pkill', ['-f', `^sleep 30$`]);
      await until(() => !busy());
    });

    test('run: the status and the signal as 128+N', () => {
      const ok = hl(['run', 'r', '--', 'sh', '-c', 'test -n "$HOSTLOCK_TOKEN" && exit 5'], {
        NODE_OPTIONS: '--pending-deprecation',
      });
      assert.equal(ok.status, 5, ok.stderr);
      assert.equal(ok.stderr, '');
      const killed = hl(['run', 'r', '--', 'sh', '-c', 'kill -KILL $$']);
      assert.equal(killed.status, 128 + 9, killed.stderr);
    });
  });
}
