// The executable's code cache (src/cli/bundles.ts) on a copy of dist/: written
// once, private, used on later starts; a bundle replaced by another of the
// same length runs its own code, never the cached one; a cache that is not
// private is replaced; HOSTLOCK_CODE_CACHE=0 writes none.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ROOT, tempDir } from './rpc';

const CACHE = `/tmp/hostlock-${process.getuid?.() ?? 0}/cache`;
const t = tempDir('hl-cache');
const dist = join(t.dir, 'dist');
cpSync(join(ROOT, 'dist'), dist, { recursive: true });
const lock = join(t.dir, 'f.lock');

function cachesOf(bundle: string): string[] {
  if (!existsSync(CACHE)) return [];
  return readdirSync(CACHE)
    .filter((f) => f.startsWith(`${bundle}-`))
    .map((f) => join(CACHE, f))
    .filter((f) =>
      readFileSync(f)
        .subarray(0, 400)
        .toString('latin1')
        .startsWith(`${join(dist, bundle)} `),
    );
}

function flock(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [join(dist, 'cli.js'), 'flock', ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

after(() => {
  for (const f of cachesOf('flock.js')) rmSync(f, { force: true });
  t.cleanup();
});

test('written once, 0600, then used: the next starts leave it as it is', () => {
  for (const f of cachesOf('flock.js')) rmSync(f);
  assert.equal(flock([lock, 'true']).status, 0);
  const [cache, ...more] = cachesOf('flock.js');
  assert.ok(cache, `no cache of ${join(dist, 'flock.js')} in ${CACHE}`);
  assert.deepEqual(more, []);
  assert.equal(statSync(cache).mode & 0o777, 0o600);
  const before = statSync(cache, { bigint: true }).mtimeNs;
  for (let i = 0; i < 3; i++) assert.equal(flock([lock, 'true']).status, 0);
  assert.equal(statSync(cache, { bigint: true }).mtimeNs, before, 'a valid cache was rewritten');
});

test('a bundle replaced by another of the same length runs its own code', () => {
  assert.equal(flock([lock, 'true']).status, 0);
  const file = join(dist, 'flock.js');
  const src = readFileSync(file, 'utf8');
  assert.match(flock(['--help']).stdout, /Usage:/);
  const changed = src.replaceAll('Usage:', 'USAGE:');
  assert.notEqual(changed, src);
  assert.equal(changed.length, src.length);
  writeFileSync(file, changed);
  try {
    const r = flock(['--help']);
    assert.match(r.stdout, /USAGE:/, 'the old code ran from the cache');
    assert.doesNotMatch(r.stdout, /Usage:/);
  } finally {
    writeFileSync(file, src);
  }
});

test('a cache others could have written is replaced by a private one', () => {
  assert.equal(flock([lock, 'true']).status, 0);
  const [cache] = cachesOf('flock.js');
  chmodSync(cache!, 0o666);
  assert.equal(flock([lock, 'true']).status, 0);
  assert.equal(statSync(cachesOf('flock.js')[0]!).mode & 0o777, 0o600);
});

test('HOSTLOCK_CODE_CACHE=0 writes no cache', () => {
  for (const f of cachesOf('flock.js')) rmSync(f);
  assert.equal(flock([lock, 'true'], { HOSTLOCK_CODE_CACHE: '0' }).status, 0);
  assert.deepEqual(cachesOf('flock.js'), []);
});
