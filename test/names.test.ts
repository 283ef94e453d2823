// The name-to-file encoding: injective, never outside the lock directory, and
// long names hashed into a file name that still leads back to them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import {
  decodeLockName,
  encodeLockName,
  isHashedStem,
  LOCK_SUFFIX,
  lockNameOf,
  lockPathFor,
} from '../src/stores/flock/names';
import { tempDir } from './rpc';

const tricky = [
  'web1',
  '../x',
  '/etc/passwd',
  'a/b',
  '.',
  '..',
  '.hidden',
  'a\u0000b',
  'é',
  '%41',
  'A',
  'a b',
  '~',
  'x'.repeat(4096),
  'x'.repeat(4096) + 'y',
  '%'.repeat(300),
  'host.example.com',
];

test('encoded names stay one file inside the directory', () => {
  for (const name of tricky) {
    const p = lockPathFor('/locks', name);
    assert.equal(dirname(p), '/locks', `escaped for ${JSON.stringify(name.slice(0, 20))}`);
    const file = basename(p);
    assert.ok(Buffer.byteLength(file) <= 255, 'file name too long');
    assert.ok(!file.includes('/') && !file.includes('\u0000'));
    assert.ok(!file.startsWith('.'), 'hidden files are reserved for hostlock itself');
  }
});

test('the encoding is injective on tricky names', () => {
  const seen = new Map<string, string>();
  for (const name of tricky) {
    const enc = encodeLockName(name);
    assert.ok(!seen.has(enc), `${JSON.stringify(name)} and ${JSON.stringify(seen.get(enc))} collide`);
    seen.set(enc, name);
  }
});

test('an empty name is refused, not mapped to a hidden file', () => {
  assert.throws(() => encodeLockName(''), /empty/);
});

test('plain encodings decode back; hashed ones say they cannot', () => {
  for (const name of ['web1', '../x', 'a\u0000b', 'é', '%41', '.hidden'])
    assert.equal(decodeLockName(encodeLockName(name)), name);
  assert.equal(decodeLockName(encodeLockName('x'.repeat(4096))), null);
  assert.notEqual(encodeLockName('%41'), encodeLockName('A'));
});

test('names too long for one file name are hashed, distinct, and found again from the file', () => {
  const t = tempDir('names');
  try {
    const long = ['x'.repeat(300), 'x'.repeat(299) + 'y', 'é'.repeat(200), '/'.repeat(100)];
    const stems = long.map((n) => encodeLockName(n));
    assert.equal(new Set(stems).size, long.length, 'two long names share a file');
    for (const [i, name] of long.entries()) {
      const stem = stems[i]!;
      assert.ok(isHashedStem(stem), `${stem} is not hashed`);
      assert.match(stem, /~[0-9a-f]{64}$/);
      assert.ok(Buffer.byteLength(stem + LOCK_SUFFIX) <= 255);
      assert.equal(decodeLockName(stem), null);
      // The lock file holds the whole name; a file whose content does not hash to its stem names nothing.
      const path = lockPathFor(t.dir, name);
      writeFileSync(path, name);
      assert.equal(lockNameOf(path), name);
      writeFileSync(path, name + '!');
      assert.equal(lockNameOf(path), null);
    }
    assert.ok(!isHashedStem(encodeLockName('x'.repeat(200))), 'a name that fits is not hashed');
  } finally {
    t.cleanup();
  }
});

test('random names: injective, contained, decoded back', () => {
  // A fixed seed: the same names every run.
  let seed = 0x9e3779b9;
  const rand = (n: number) => {
    seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return seed % n;
  };
  const alphabet = ['a', 'Z', '0', '.', '-', '_', '%', '/', '~', ' ', '\u0000', 'é', '€', '🔒', '\n'];
  const seen = new Map<string, string>();
  for (let i = 0; i < 3000; i++) {
    const len = 1 + rand(i % 10 === 0 ? 200 : 12);
    let name = '';
    for (let j = 0; j < len; j++) name += alphabet[rand(alphabet.length)];
    if (seen.has(name)) continue;
    const stem = encodeLockName(name);
    const other = [...seen.entries()].find(([, s]) => s === stem);
    assert.equal(other, undefined, `${JSON.stringify(name)} and ${JSON.stringify(other?.[0])} collide`);
    seen.set(name, stem);
    const p = lockPathFor('/locks', name);
    assert.equal(dirname(p), '/locks');
    assert.ok(!basename(p).startsWith('.') && Buffer.byteLength(basename(p)) <= 255);
    if (!isHashedStem(stem)) assert.equal(decodeLockName(stem), name);
  }
});
