// The name-to-file encoding: injective, and never outside the lock directory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { basename, dirname } from 'node:path';
import { decodeLockName, encodeLockName, lockPathFor } from '../src/stores/flock/names';

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
