// NODE_EXTRA_CA_CERTS through the executable: its shell keeps the variable
// from node's start (Node would read the file before anything else), the
// executable gives it back to every command it runs, and a TLS connection to a
// server store that trusts the default CAs trusts the file's, as under Node's
// own handling (src/sys/extraca.ts).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { setup } from '../src/stores/postgres/store';
import { CLI } from './rpc';
import { startEtcdCluster, type EtcdCluster } from './servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

// The command prints the variable as it sees it, then how many times node's
// own start environment (its parent's /proc environ) held it.
const SHOW = 'echo "$NODE_EXTRA_CA_CERTS"; tr "\\0" "\\n" </proc/$PPID/environ | grep -c ^NODE_EXTRA_CA_CERTS= || true';

function hostlock(args: string[], env: Record<string, string | undefined>) {
  const e: NodeJS.ProcessEnv = { ...process.env };
  delete e.NODE_EXTRA_CA_CERTS;
  delete e.NODE_OPTIONS;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete e[k];
    else e[k] = v;
  }
  return spawnSync(CLI, args, { env: e, encoding: 'utf8', timeout: 30_000 });
}

describe('NODE_EXTRA_CA_CERTS', { timeout: 120_000 }, () => {
  let pg: PgServer;
  let etcd: EtcdCluster;
  before(async () => {
    pg = await startPostgres();
    await setup(pg.url(), { grantTo: LOCK_ROLE });
    etcd = await startEtcdCluster(1, { tls: true });
  });
  after(async () => {
    await pg?.stop();
    await etcd?.stop();
  });

  test('kept from node start, given back to the command, trusted by PostgreSQL with sslrootcert=system', () => {
    const url = pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=verify-full&sslrootcert=system');
    const ok = hostlock(['run', '--backend', url, 'tls-pg', '--', 'sh', '-c', SHOW], {
      NODE_EXTRA_CA_CERTS: pg.caFile,
    });
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout, `${pg.caFile}\n0\n`);
    assert.equal(ok.stderr, '');

    // Without the file, the server's CA is not among Node's: the file is what made it trusted.
    const none = hostlock(['run', '--backend', url, 'tls-pg', '--', 'true'], {});
    assert.equal(none.status, 73);
    assert.match(none.stderr, /certificate did not verify/);

    // With NODE_OPTIONS the variable is Node's to handle, at its own cost, with the same trust.
    const opts = hostlock(['run', '--backend', url, 'tls-pg', '--', 'sh', '-c', SHOW], {
      NODE_EXTRA_CA_CERTS: pg.caFile,
      NODE_OPTIONS: '--no-warnings',
    });
    assert.equal(opts.status, 0, opts.stderr);
    assert.equal(opts.stdout, `${pg.caFile}\n1\n`);
  });

  test('trusted by etcd+https:// without cacert=', () => {
    const { cacert, cert, key } = etcd.tls!;
    const url = `${etcd.url}?cert=${cert}&key=${key}`;
    const ok = hostlock(['run', '--backend', url, 'tls-etcd', '--', 'sh', '-c', SHOW], { NODE_EXTRA_CA_CERTS: cacert });
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout, `${cacert}\n0\n`);

    const none = hostlock(['run', '--backend', `${url}&timeout_ms=2000`, 'tls-etcd', '--', 'true'], {});
    assert.equal(none.status, 73);
    assert.match(none.stderr, /not trusted/);
  });

  test('a file that cannot be read: the command still sees the variable; a warning, and only the bundled CAs', () => {
    const url = pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=verify-full&sslrootcert=system');
    const r = hostlock(['run', '--backend', url, 'tls-pg', '--', 'true'], {
      NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem',
    });
    assert.equal(r.status, 73);
    assert.match(r.stderr, /ignoring the extra CA certificates of NODE_EXTRA_CA_CERTS \(\/nonexistent\/ca\.pem\)/);
    assert.match(r.stderr, /certificate did not verify/);
    const local = hostlock(['flock', '/tmp', 'sh', '-c', 'echo "$NODE_EXTRA_CA_CERTS"'], {
      NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem',
    });
    assert.equal(local.status, 0, local.stderr);
    assert.equal(local.stdout, '/nonexistent/ca.pem\n');
    assert.equal(local.stderr, '');
  });

  test('HOSTLOCK_CA inherited from another process is not taken, nor passed on', () => {
    const r = hostlock(['flock', '/tmp', 'sh', '-c', 'echo "${NODE_EXTRA_CA_CERTS-unset} ${HOSTLOCK_CA-unset}"'], {
      HOSTLOCK_CA: '1:/etc/hostname',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'unset unset\n');
  });
});
