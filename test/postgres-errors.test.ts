// The PostgreSQL store's errors name the fix: an unreadable TLS file, a role
// that does not exist, a password file that is too open to be read, a wrong
// password and the file it came from. Every one is a HostlockError with code
// StoreUnavailable (exit 73 from the command line), none prints a stack or a
// password. Against a private server, as a user would meet each of them.
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, HostlockError } from '../src/core/errors';
import { PostgresStore, setup } from '../src/stores/postgres/store';
import { cli, tempDir } from './rpc';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

let pg: PgServer;
let tmp: { dir: string; cleanup: () => void };

before(async () => {
  pg = await startPostgres();
  await setup(pg.url(), { grantTo: LOCK_ROLE });
  tmp = tempDir('hl-pgerr');
});

after(async () => {
  await pg?.stop();
  tmp?.cleanup();
});

// Locks and releases one name through a fresh store: its error (null when it
// locked) and what it logged.
async function tryStore(
  url: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ err: HostlockError | null; log: string[] }> {
  const log: string[] = [];
  const s = new PostgresStore(url, { controller: 'errs', env: { ...env }, log: (m) => log.push(m) });
  try {
    const h = await s.acquire({
      key: { id: 'errs', name: 'errs' },
      mode: 'exclusive',
      requester: { pid: process.pid, user: 'u', controller: 'errs' },
      wait: false,
    });
    await h?.release();
    return { err: null, log };
  } catch (err) {
    if (!(err instanceof HostlockError)) throw err; // a stack-worthy failure fails the test
    return { err, log };
  } finally {
    await s.close();
  }
}

function assertStoreError(err: HostlockError | null, secret?: string): asserts err is HostlockError {
  assert.ok(err, 'an error was expected');
  assert.equal(err.code, ErrorCode.StoreUnavailable, err.message);
  if (secret) {
    assert.ok(!err.message.includes(secret), `the password leaked: ${err.message}`);
    assert.ok(!JSON.stringify(err.data).includes(secret), 'the password leaked into the error data');
  }
}

function passfile(name: string, password: string, mode: number): string {
  const f = join(tmp.dir, name);
  writeFileSync(f, `127.0.0.1:${pg.port}:${pg.database}:${LOCK_ROLE}:${password}\n`);
  chmodSync(f, mode);
  return f;
}

// The lock role on the test database through the PG* variables, its password from `file`.
const viaPassfile = (file: string): NodeJS.ProcessEnv => ({
  PGHOST: '127.0.0.1',
  PGPORT: String(pg.port),
  PGUSER: LOCK_ROLE,
  PGDATABASE: pg.database,
  PGPASSFILE: file,
  PGSSLMODE: 'disable',
});

describe('TLS files that cannot be read', () => {
  test('a missing sslrootcert: exit 73 from the command line, naming the file and what to do, no stack', () => {
    const r = cli(['status', '--backend', 'postgresql://127.0.0.1:1/x?sslmode=verify-full&sslrootcert=/nonexistent']);
    assert.equal(r.status, 73, r.stderr);
    assert.match(r.stderr, /cannot read sslrootcert \/nonexistent \(no such file\)/);
    assert.match(r.stderr, /point sslrootcert at the CA certificate .*PEM/);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });

  test('an unreadable client certificate or key: the store error, naming which and the file', async () => {
    const cert = join(tmp.dir, 'client.crt');
    writeFileSync(cert, 'not a certificate\n');
    chmodSync(cert, 0o000);
    const key = join(tmp.dir, 'absent.key');
    const { err } = await tryStore(
      `postgresql://u:sekrit@127.0.0.1:1/db?sslmode=require&sslcert=${cert}&sslkey=${key}`,
    );
    assertStoreError(err, 'sekrit');
    // As root the certificate reads despite its mode: then the key is the one missing.
    if (process.getuid?.() === 0) assert.match(err.message, new RegExp(`cannot read sslkey ${key} \\(no such file\\)`));
    else assert.match(err.message, new RegExp(`cannot read sslcert ${cert} \\(permission denied\\)`));
    assert.match(err.message, /point sslcert and sslkey at the client certificate and its key/);
    assert.match(err.message, /u:\*\*\*@127\.0\.0\.1:1/);
  });
});

describe('logins the server refuses', { timeout: 120_000 }, () => {
  test('a role that does not exist: says so and how to create it, not pg_hba.conf', async () => {
    // The test server trusts its socket, so there the server says the role is missing.
    const [row] = await pg.query('SHOW unix_socket_directories');
    const socketDir = String(row!.unix_socket_directories).split(',')[0]!.trim();
    const url = `postgresql:///${pg.database}?host=${encodeURIComponent(socketDir)}&port=${pg.port}&user=nosuchrole`;
    const { err } = await tryStore(url);
    assertStoreError(err);
    assert.match(err.message, /role "nosuchrole" does not exist/);
    assert.match(err.message, /CREATE ROLE nosuchrole LOGIN/);
    assert.match(err.message, /hostlock setup --backend URL --grant nosuchrole/);
    assert.doesNotMatch(err.message, /pg_hba/);
  });

  test('a role the server refuses by password: also names a missing role as a cause', async () => {
    const { err } = await tryStore(pg.url('nosuchrole', 'pw-of-nobody', '?sslmode=disable'));
    assertStoreError(err, 'pw-of-nobody');
    assert.match(err.message, /password authentication failed for user "nosuchrole" \(password from the URL\)/);
    assert.match(err.message, /CREATE ROLE nosuchrole LOGIN/);
  });

  test('setup --grant to a role that does not exist: says how to create it', async () => {
    await assert.rejects(setup(pg.url(), { grantTo: 'nosuchrole' }), (e: HostlockError) => {
      assert.equal(e.code, ErrorCode.StoreUnavailable);
      assert.match(e.message, /role "nosuchrole" does not exist/);
      assert.match(e.message, /CREATE ROLE nosuchrole LOGIN/);
      return true;
    });
  });

  test('a password file others can read is ignored, and the error says so and how to fix it', async () => {
    const f = passfile('open-pgpass', LOCK_PASSWORD, 0o644);
    const { err, log } = await tryStore('postgresql://', viaPassfile(f));
    assertStoreError(err, LOCK_PASSWORD);
    assert.match(err.message, /asks user "hl_lock" for a password and none was given/);
    assert.ok(
      err.message.includes(`password file ${f} was ignored: its permissions are too open (mode 0644); chmod 0600 ${f}`),
      err.message,
    );
    assert.ok(!log.join('\n').includes(LOCK_PASSWORD));
    // Once it is 0600 the same settings connect.
    chmodSync(f, 0o600);
    assert.equal((await tryStore('postgresql://', viaPassfile(f))).err, null);
  });

  test('a password file too open for a server that needs no password: a warning, the lock still works', async () => {
    const f = passfile('open-pgpass-trust', LOCK_PASSWORD, 0o640);
    const [row] = await pg.query('SHOW unix_socket_directories');
    const socketDir = String(row!.unix_socket_directories).split(',')[0]!.trim();
    const env = { ...viaPassfile(f), PGHOST: socketDir };
    const { err, log } = await tryStore('postgresql://', env);
    assert.equal(err, null);
    assert.ok(
      log.some((l) => l.includes(`password file ${f} was ignored: its permissions are too open (mode 0640)`)),
      log.join('\n'),
    );
  });

  test('a wrong password from PGPASSFILE names that file, never the password', async () => {
    const f = passfile('wrong-pgpass', 'not-the-pw', 0o600);
    const { err } = await tryStore('postgresql://', viaPassfile(f));
    assertStoreError(err, 'not-the-pw');
    assert.ok(err.message.includes(`(password from ${f})`), err.message);
    assert.ok(err.message.includes(`fix the password in ${f}`), err.message);
    assert.doesNotMatch(err.message, /~\/\.pgpass/);
  });

  test('a wrong password from PGPASSWORD says so', async () => {
    const env = { ...viaPassfile(join(tmp.dir, 'none')), PGPASSWORD: 'not-the-pw' };
    const { err } = await tryStore('postgresql://', env);
    assertStoreError(err, 'not-the-pw');
    assert.match(err.message, /\(password from PGPASSWORD\); fix PGPASSWORD/);
  });
});

describe('a closed store', () => {
  test('reports the history records it could not write', async () => {
    const log: string[] = [];
    const s = new PostgresStore('postgresql://u:sekrit@127.0.0.1:1/db?sslmode=disable', { log: (m) => log.push(m) });
    s.record({ event: 'grant', key: { id: 'h', name: 'h' }, who: { pid: process.pid, user: 'u', controller: 'c' } });
    await s.close();
    assert.equal(log.length, 1, log.join('\n'));
    assert.match(log[0]!, /^1 history record\(s\) not written: .*cannot reach the server at 127\.0\.0\.1:1/);
    assert.ok(!log[0]!.includes('sekrit'));
  });

  test('refuses new requests with the store-closed error', async () => {
    const s = new PostgresStore(pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable'), { log: () => undefined });
    await s.status({ id: 'closed' });
    await s.close();
    await assert.rejects(s.status({ id: 'closed' }), (e: HostlockError) => {
      assert.equal(e.code, ErrorCode.StoreUnavailable);
      assert.match(e.message, /^PostgreSQL backend postgresql:\/\/hl_lock:\*\*\*@.*: the store was closed/);
      return true;
    });
  });

  test('fails the waits it had with the store-closed error', async () => {
    const url = pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable');
    const a = new PostgresStore(url, { controller: 'a', log: () => undefined });
    const b = new PostgresStore(url, { controller: 'b', log: () => undefined });
    const req = (controller: string) => ({
      key: { id: 'closing', name: 'closing' },
      mode: 'exclusive' as const,
      requester: { pid: process.pid, user: 'u', controller },
      wait: true,
    });
    const held = await a.acquire(req('a'));
    const waiting = b.acquire(req('b')).then(
      () => assert.fail('the wait was granted'),
      (e: unknown) => e,
    );
    // The wait is in the server's queue once status lists it.
    for (let i = 0; i < 100 && (await a.status({ id: 'closing' })).waiters.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await b.close();
    const err = await waiting;
    assert.ok(err instanceof HostlockError, String(err));
    assert.equal(err.code, ErrorCode.StoreUnavailable);
    assert.match(err.message, /the store was closed while waiting/);
    await held?.release();
    await a.close();
  });
});
