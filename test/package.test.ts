// `npm pack` makes a helper package that installs on its own, with `hostlock` on PATH.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT, tempDir } from './rpc';

// `npm pack` of the checkout, then `npm install -g` of it under a private prefix.
function packAndInstall(dir: string, how: string): { prefix: string; stderr: string } {
  const pack = spawnSync('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(pack.status, 0, pack.stderr);
  const tgz = join(dir, pack.stdout.trim().split('\n').pop()!);
  const prefix = join(dir, 'prefix');
  const inst = spawnSync(
    'npm',
    ['install', '-g', how, '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tgz],
    { encoding: 'utf8', timeout: 300000 },
  );
  assert.equal(inst.status, 0, inst.stderr);
  return { prefix, stderr: inst.stderr };
}

// `hostlock serve` from an installed copy, asked `hello` and then to `try` a lock in `dir`.
function helloAndTry(bin: string, dir: string) {
  const lines = [
    { jsonrpc: '2.0', id: 1, method: 'hello', params: {} },
    { jsonrpc: '2.0', id: 2, method: 'try', params: { name: 'p', dir } },
  ];
  const serve = spawnSync(bin, ['serve'], {
    encoding: 'utf8',
    input: lines.map((l) => JSON.stringify(l)).join('\n') + '\n',
  });
  const [hello, tried] = serve.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  return { serve, hello, tried };
}

test('npm pack → npm install -g (as README and make install do it) → hostlock works, quietly', () => {
  const t = tempDir('pack');
  try {
    const { prefix, stderr } = packAndInstall(t.dir, '--allow-scripts=fs-ext');
    // Quiet: no npm warning (an install script not covered by allowScripts is one);
    // correct: fs-ext's install script did build its native addon.
    assert.doesNotMatch(stderr, /npm warn/i);
    assert.ok(
      existsSync(
        join(prefix, 'lib', 'node_modules', 'hostlock', 'node_modules', 'fs-ext', 'build', 'Release', 'fs_ext.node'),
      ),
      'fs-ext was installed without its native addon',
    );
    const bin = join(prefix, 'bin', 'hostlock');
    const v = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.stdout.trim(), JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
    const { serve, hello, tried } = helloAndTry(bin, t.dir);
    // The helper finds the binding npm built beside it, and locks with it.
    assert.equal(hello.result.flock, 'fs-ext', serve.stderr);
    assert.equal(tried.result.acquired, true, serve.stderr);
    // The agent's exit watcher ships beside the bundle that starts it.
    assert.ok(
      existsSync(join(prefix, 'lib', 'node_modules', 'hostlock', 'dist', 'pidwatch.py')),
      'pidwatch.py not installed',
    );
    // So do the server stores' own bundles: each answers for its store
    // (here unreachable, exit 73), not as a module that cannot be found.
    for (const [url, says] of [
      ['postgresql://127.0.0.1:1/locks', /cannot reach the server/],
      ['etcd://127.0.0.1:1', /etcd/],
    ] as const) {
      const st = spawnSync(bin, ['status', '--backend', url], { encoding: 'utf8', timeout: 60000 });
      assert.equal(st.status, 73, `${url}: ${st.stderr}`);
      assert.match(st.stderr, says, url);
      assert.doesNotMatch(st.stderr, /Cannot find module/, url);
    }
  } finally {
    t.cleanup();
  }
});

test('npm install -g without building fs-ext (no compiler, no headers): hostlock works, on flock(1)', () => {
  const t = tempDir('pack-noscripts');
  try {
    const { prefix } = packAndInstall(t.dir, '--ignore-scripts');
    const bin = join(prefix, 'bin', 'hostlock');
    const { serve, hello, tried } = helloAndTry(bin, t.dir);
    assert.equal(hello.result.flock, 'flock(1)', serve.stderr);
    assert.equal(tried.result.acquired, true, serve.stderr);
    assert.equal(serve.stderr, '', 'a helper without fs-ext says nothing about it');
  } finally {
    t.cleanup();
  }
});
