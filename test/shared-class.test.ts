// The error classes that several bundles of one process each have a copy of
// (src/core/errors.ts, sharedClass): an error made by one copy is an instance
// for every copy, as the store bundles need of the command bundles.
import assert from 'node:assert/strict';
import { test } from 'node:test';

type Errors = typeof import('../src/core/errors');
type StoreErrors = typeof import('../src/store/errors');

// A second, separate copy of a module and the modules it imports, as a second
// bundle carries one.
function freshCopy<T>(path: string): T {
  const saved = { ...require.cache };
  for (const k of Object.keys(require.cache)) if (k.includes('/build/src/')) delete require.cache[k];
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a second copy on purpose
    return require(path) as T;
  } finally {
    Object.assign(require.cache, saved);
  }
}

test('a HostlockError of one copy is a HostlockError to another; a plain error or look-alike is not', () => {
  const a = freshCopy<Errors>('../src/core/errors');
  const b = freshCopy<Errors>('../src/core/errors');
  assert.notEqual(a.HostlockError, b.HostlockError, 'two copies of the class');
  const fromB = new b.HostlockError(a.ErrorCode.StoreUnavailable, 'down');
  assert.ok(fromB instanceof a.HostlockError);
  assert.ok(new a.HostlockError(1, 'x') instanceof b.HostlockError);
  assert.ok(a.isStoreUnavailable(fromB), 'the helpers of one copy take the errors of another');
  assert.equal(a.fromErrno(fromB, '/p', 'open'), fromB);
  assert.ok(!(new Error('x') instanceof a.HostlockError));
  assert.ok(!(({ name: 'HostlockError', code: 1 } as unknown) instanceof a.HostlockError));
  for (const v of [null, undefined, 'x', 1])
    assert.ok(!((v as unknown as object) instanceof a.HostlockError), String(v));
});

test('a subclass keeps the ordinary test: its errors are HostlockErrors, not every HostlockError is one of it', () => {
  const errors = freshCopy<Errors>('../src/core/errors');
  const { EtcdError } = freshCopy<typeof import('../src/stores/etcd/gateway')>('../src/stores/etcd/gateway');
  const etcd = new EtcdError('no leader', 'http://127.0.0.1:2379');
  assert.ok(etcd instanceof errors.HostlockError, 'an EtcdError of the etcd bundle, seen by the command');
  assert.ok(etcd instanceof EtcdError);
  assert.ok(!(new errors.HostlockError(errors.ErrorCode.StoreUnavailable, 'down') instanceof EtcdError));
});

test('an AbortError of one copy is an abort to another', () => {
  const a = freshCopy<StoreErrors>('../src/store/errors');
  const b = freshCopy<StoreErrors>('../src/store/errors');
  assert.notEqual(a.AbortError, b.AbortError);
  assert.ok(a.isAbort(new b.AbortError()));
  assert.ok(new a.AbortError() instanceof b.AbortError);
  assert.ok(!a.isAbort(new Error('the wait was aborted')));
});

test("a usage error of one bundle's command line is one to the other's: exit 64 and the hint", () => {
  const a = freshCopy<typeof import('../src/cli/exit')>('../src/cli/exit');
  const b = freshCopy<typeof import('../src/cli/exit')>('../src/cli/exit');
  assert.notEqual(a.UsageError, b.UsageError, 'two copies of the class');
  const err = new b.UsageError('give a name');
  assert.equal(a.exitCodeFor(err), 64);
  assert.equal(a.errorReport(err), 'hostlock: give a name\nTry: hostlock --help\n');
  const plain = Object.assign(new Error('give a name'), { name: 'UsageError' });
  assert.equal(a.exitCodeFor(plain), 1, 'an error that only borrows the name is no usage error');
});
