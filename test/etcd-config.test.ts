// The etcd store's TLS files: one that cannot be read is the store's error
// (-32007, exit 73), naming the file and what to do, never an internal error
// with a stack. No cluster is needed: the files are read before any member is.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ErrorCode, HostlockError } from '../src/core/errors';
import { EtcdStore } from '../src/stores/etcd/store';
import { tlsFiles } from '../src/stores/etcd/config';
import { cli, startServe, tempDir } from './rpc';

const t = tempDir('hl-etcd-config');
after(() => t.cleanup());

function assertNamesFile(message: string, what: RegExp, path: string): void {
  assert.match(message, what);
  assert.ok(message.includes(path), `the message names ${path}: ${message}`);
  assert.match(message, /no such file/);
  assert.match(message, /give (cacert|cert|key)= a PEM file this user can read/);
  assert.doesNotMatch(message, /hunter2|internal error|\n\s+at /);
}

describe('an etcd TLS file that cannot be read', () => {
  const missing = join(t.dir, 'missing', 'ca.pem');
  const url = `etcd+https://bob:hunter2@127.0.0.1:1/?cacert=${missing}`;

  test('hostlock status --backend exits 73 naming the file, with no stack', () => {
    const r = cli(['status', '--backend', url]);
    assert.equal(r.status, 73, r.stderr);
    assertNamesFile(r.stderr, /cannot read the CA file/, missing);
    assert.match(r.stderr, /bob:\*\*\*@127\.0\.0\.1:1/);
  });

  test('hostlock run exits 73 and never runs its command', () => {
    const r = cli(['run', 'x', '--backend', url, '--timeout', '0.5', '--', 'echo', 'ran']);
    assert.equal(r.status, 73, r.stderr);
    assert.doesNotMatch(r.stdout, /ran/);
    assertNamesFile(r.stderr, /cannot read the CA file/, missing);
  });

  test('serve answers the store error, and logs no bug', async () => {
    const h = startServe();
    try {
      for (const method of ['status', 'try']) {
        const reply = (await h.rpc.raw(method, { name: 'x', backend: url })) as {
          error?: { code: number; message: string; data?: Record<string, unknown> };
        };
        assert.ok(reply.error, `${method}: expected an error`);
        assert.equal(reply.error.code, ErrorCode.StoreUnavailable, reply.error.message);
        assertNamesFile(reply.error.message, /cannot read the CA file/, missing);
        assert.equal(reply.error.data?.path, missing);
      }
    } finally {
      await h.close();
    }
    assert.doesNotMatch(h.stderr(), /internal error|\n\s+at /);
  });

  test('the store says which of the three files, and why', () => {
    const cert = join(t.dir, 'cert.pem');
    const key = join(t.dir, 'key.pem');
    writeFileSync(cert, 'not really a certificate\n');
    writeFileSync(key, 'not really a key\n');
    const cases: [string, RegExp, string][] = [
      [`etcd+https://h1?cacert=${missing}`, /cannot read the CA file/, missing],
      [`etcd+https://h1?cert=${join(t.dir, 'none.pem')}&key=${key}`, /cannot read the certificate file/, 'none.pem'],
    ];
    for (const [u, what, path] of cases) {
      assert.throws(
        () => new EtcdStore(u),
        (e: unknown) => {
          assert.ok(e instanceof HostlockError, String(e));
          assert.equal(e.code, ErrorCode.StoreUnavailable);
          assertNamesFile(e.message, what, path);
          return true;
        },
      );
    }
    assert.throws(
      () => tlsFiles({ cert, key: t.dir }, 'etcd+https://h1'),
      (e: unknown) => {
        assert.ok(e instanceof HostlockError, String(e));
        assert.equal(e.code, ErrorCode.StoreUnavailable);
        assert.match(
          e.message,
          /^etcd backend etcd\+https:\/\/h1: cannot read the key file .*: it is a directory; give key= a PEM file/,
        );
        assert.equal(e.data.errno, 'EISDIR');
        return true;
      },
    );
    const read = tlsFiles({ cert }, 'etcd+https://h1');
    assert.equal(read.cert?.toString(), 'not really a certificate\n');
    assert.equal(read.ca, undefined);
  });
});
