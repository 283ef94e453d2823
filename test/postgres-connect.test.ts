// How the PostgreSQL store reads its URL (libpq syntax, PG* variables,
// ~/.pgpass, sslmode) and how it fails: every outage or bad input is a clear
// error within the connect timeout that names the masked URL and what to do,
// and no password ever shows, in errors or in the records others read.
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, HostlockError } from '../src/core/errors';
import { SCHEMA } from '../src/stores/postgres/schema';
import { maskUrl } from '../src/store/mask';
import { passfileLookup, resolveTarget } from '../src/stores/postgres/url';
import { PostgresStore, setup } from '../src/stores/postgres/store';
import { tempDir } from './rpc';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

let pg: PgServer;
let tmp: { dir: string; cleanup: () => void };

before(async () => {
  pg = await startPostgres();
  await setup(pg.url(), { grantTo: LOCK_ROLE });
  tmp = tempDir('hl-pgconn');
});

after(async () => {
  await pg?.stop();
  tmp?.cleanup();
});

// Locks and releases one name through a fresh store; returns the store's error if any.
async function tryStore(url: string, env: NodeJS.ProcessEnv = {}): Promise<HostlockError | null> {
  const s = new PostgresStore(url, { controller: 'conn', env: { ...env }, log: () => undefined });
  try {
    const h = await s.acquire({
      key: { id: 'conn', name: 'conn' },
      mode: 'exclusive',
      requester: { pid: process.pid, user: 'u', controller: 'conn' },
      wait: false,
    });
    await h?.release();
    return null;
  } catch (err) {
    if (!(err instanceof HostlockError)) throw err; // a traceback-worthy failure fails the test
    return err;
  } finally {
    await s.close();
  }
}

function assertClear(err: HostlockError | null, pattern: RegExp, secret: string, withinMs?: [number, number]): void {
  assert.ok(err, 'an error was expected');
  assert.match(err.message, pattern);
  assert.ok(!err.message.includes(secret), `the password leaked: ${err.message}`);
  assert.ok(!JSON.stringify(err.data).includes(secret), 'the password leaked into the error data');
  if (withinMs) assert.ok(withinMs[1] - withinMs[0] < 4000, `took ${withinMs[1] - withinMs[0]} ms`);
}

describe('postgresql URL', () => {
  test('passwords are masked in the user info and in parameters, also in URLs that do not parse', () => {
    assert.equal(maskUrl('postgresql://u:p%40ss@h:5/db?sslmode=require'), 'postgresql://u:***@h:5/db?sslmode=require');
    assert.equal(maskUrl('postgres://h/db?user=u&password=zz&x=1'), 'postgres://h/db?user=u&password=***&x=1');
    assert.equal(maskUrl('postgresql://u:secret@'), 'postgresql://u:***@');
    assert.throws(
      () => resolveTarget('postgresql://u:secret@h/db?bogus=1', {}),
      (e: Error) => /unsupported parameter "bogus"/.test(e.message) && !e.message.includes('secret'),
    );
  });

  test('libpq syntax: hosts, ports, socket directories, percent-encoding, parameters', () => {
    const t = resolveTarget('postgresql://al%40ice:pw@[::1]:6000,db2/my%20db?sslmode=disable&connect_timeout=3', {});
    assert.deepEqual(t.hosts, [
      { host: '::1', port: 6000 },
      { host: 'db2', port: 5432 },
    ]);
    assert.equal(t.user, 'al@ice');
    assert.equal(t.database, 'my db');
    assert.equal(t.password, 'pw');
    assert.equal(t.connectTimeoutMs, 3000);
    assert.ok(!JSON.stringify(t).includes('"pw"'), 'the password is not enumerable');
    const s = resolveTarget('postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql&port=5433', {});
    assert.deepEqual(s.hosts, [{ host: '/var/run/postgresql', port: 5433 }]);
  });

  test('PG* variables fill what the URL leaves out; the URL wins', () => {
    const env = { PGHOST: 'envhost', PGPORT: '7777', PGUSER: 'envuser', PGDATABASE: 'envdb', PGSSLMODE: 'require' };
    const t = resolveTarget('postgresql://', env);
    assert.deepEqual(t.hosts, [{ host: 'envhost', port: 7777 }]);
    assert.equal(t.user, 'envuser');
    assert.equal(t.database, 'envdb');
    assert.equal(t.sslmode, 'require');
    const u = resolveTarget('postgresql://urluser@urlhost/urldb', env);
    assert.equal(u.user, 'urluser');
    assert.equal(u.hosts[0]?.host, 'urlhost');
    assert.equal(u.database, 'urldb');
  });

  test('passfile: wildcards, escapes, first match; ignored when others can read it', () => {
    const f = join(tmp.dir, 'pgpass');
    writeFileSync(f, '# comment\nother:*:*:*:no\nh:5432:db:u:first\\:pw\n*:*:*:u:second\n');
    chmodSync(f, 0o600);
    assert.equal(passfileLookup(f, 'h', 5432, 'db', 'u'), 'first:pw');
    assert.equal(passfileLookup(f, 'x', 1, 'y', 'u'), 'second');
    assert.equal(passfileLookup(f, 'x', 1, 'y', 'v'), undefined);
    chmodSync(f, 0o644);
    assert.equal(passfileLookup(f, 'h', 5432, 'db', 'u'), undefined);
  });

  test('verify-full without a root certificate is refused before connecting, saying what to add', () => {
    assert.throws(() => resolveTarget('postgresql://h/db?sslmode=verify-full', { HOME: tmp.dir }), /sslrootcert/);
  });
});

describe('postgresql connections and outages', { timeout: 120_000 }, () => {
  test('PG* variables and ~/.pgpass are honoured as libpq does', async () => {
    const passfile = join(tmp.dir, 'real-pgpass');
    writeFileSync(passfile, `127.0.0.1:${pg.port}:${pg.database}:${LOCK_ROLE}:${LOCK_PASSWORD}\n`);
    chmodSync(passfile, 0o600);
    const env = {
      PGHOST: '127.0.0.1',
      PGPORT: String(pg.port),
      PGUSER: LOCK_ROLE,
      PGDATABASE: pg.database,
      PGPASSFILE: passfile,
      PGSSLMODE: 'disable',
    };
    assert.equal(await tryStore('postgresql://', env), null);
    // Without the passfile the server's password request is answered by a clear error.
    const err = await tryStore('postgresql://', { ...env, PGPASSFILE: join(tmp.dir, 'none') });
    assertClear(err, /password/, LOCK_PASSWORD);
  });

  test('sslmode: require, and verify-full with the right CA, connect over TLS', async () => {
    for (const q of [
      '?sslmode=require',
      `?sslmode=verify-full&sslrootcert=${pg.caFile}`,
      `?sslmode=verify-ca&sslrootcert=${pg.caFile}`,
    ]) {
      assert.equal(await tryStore(pg.url(LOCK_ROLE, LOCK_PASSWORD, q)), null, q);
    }
    const viaName = pg
      .url(LOCK_ROLE, LOCK_PASSWORD, `?sslmode=verify-full&sslrootcert=${pg.caFile}`)
      .replace('127.0.0.1', 'localhost');
    assert.equal(await tryStore(viaName), null);
    const s = new PostgresStore(viaName, { controller: 'tls', log: () => undefined });
    await s.status({ id: 'tls' });
    const [{ ssl } = {}] = await pg.query('SELECT ssl FROM pg_stat_ssl WHERE pid = $1', [s.backendPid]);
    assert.equal(ssl, true, 'the session runs over TLS');
    await s.close();
  });

  test('verify-full with a CA that did not sign the server: a clear TLS error', async () => {
    const t0 = Date.now();
    const err = await tryStore(pg.url(LOCK_ROLE, LOCK_PASSWORD, `?sslmode=verify-full&sslrootcert=${pg.otherCaFile}`));
    assertClear(err, /certificate did not verify.*sslrootcert/, LOCK_PASSWORD, [t0, Date.now()]);
    assert.equal(err!.code, ErrorCode.StoreUnavailable);
    assert.match(err!.message, /hl_lock:\*\*\*@/);
  });

  test('wrong password: says so and where the password came from, masked', async () => {
    const t0 = Date.now();
    const err = await tryStore(pg.url(LOCK_ROLE, 'not-the-pw', '?sslmode=disable'));
    assertClear(err, /password authentication failed for user "hl_lock".*from the URL/, 'not-the-pw', [t0, Date.now()]);
  });

  test('missing database: names it and how to create it', async () => {
    const err = await tryStore(pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable').replace(pg.database, 'nosuchdb'));
    assertClear(err, /database "nosuchdb" does not exist.*createdb/, LOCK_PASSWORD);
  });

  test('nothing listening: a clear error at once', async () => {
    const t0 = Date.now();
    const err = await tryStore(`postgresql://u:sekrit@127.0.0.1:1/db?sslmode=disable`);
    assertClear(err, /cannot reach the server at 127\.0\.0\.1:1.*running/, 'sekrit', [t0, Date.now()]);
  });

  test('a server that accepts but never answers: an error within connect_timeout, never a hang', async () => {
    const sockets: Socket[] = [];
    const silent: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    try {
      const t0 = Date.now();
      const err = await tryStore(`postgresql://u:sekrit@127.0.0.1:${port}/db?connect_timeout=1&sslmode=disable`);
      assertClear(err, /within 1 s \(connect_timeout\)|cannot connect/, 'sekrit', [t0, Date.now()]);
      assert.ok(Date.now() - t0 < 3000);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  test('records other controllers read never hold a password', async () => {
    const s = new PostgresStore(pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable'), {
      controller: 'rec',
      log: () => undefined,
    });
    assert.ok(!s.describe.includes(LOCK_PASSWORD));
    const h = await s.acquire({
      key: { id: 'rec', name: 'rec' },
      mode: 'exclusive',
      requester: { pid: process.pid, user: 'u', controller: 'rec', task: 't' },
      wait: true,
    });
    const dump = JSON.stringify(
      await pg.query(`SELECT q.*, r.* FROM ${SCHEMA}.queue q JOIN ${SCHEMA}.runs r USING (run_id)`),
    );
    const apps = JSON.stringify(await pg.query(`SELECT application_name FROM pg_stat_activity`));
    assert.ok(!dump.includes(LOCK_PASSWORD) && !apps.includes(LOCK_PASSWORD));
    assert.ok(!JSON.stringify(await s.status({ id: 'rec' })).includes(LOCK_PASSWORD));
    await h?.release();
    await s.close();
  });
});
