// A throw-away PostgreSQL 15 cluster for the store's tests: initdb in a temp
// directory, a free 127.0.0.1 port, its socket in the same directory, TLS on
// with a private CA, stopped and deleted afterwards. As root the server runs
// as the unprivileged `postgres` user (it refuses root). With
// HOSTLOCK_TEST_POSTGRES=URL (a superuser) the tests use that server instead,
// in a database of their own that is dropped afterwards.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';

export const PG_BIN = '/usr/lib/postgresql/15/bin';
const ADMIN_PASSWORD = 'admin-pw-s3cret';
export const LOCK_ROLE = 'hl_lock';
export const LOCK_PASSWORD = 'lock-pw-s3cret';
export const NOPERM_ROLE = 'hl_noperm';
export const NOPERM_PASSWORD = 'noperm-pw-s3cret';

export interface PgServer {
  host: string;
  port: number;
  database: string;
  // TCP URL of a superuser, with password.
  adminUrl: string;
  // A URL for `user` (password given) on the test database, plus query.
  url(user?: string, password?: string, query?: string): string;
  // The CA that signed the server's certificate, and one that did not (private cluster only).
  caFile?: string;
  otherCaFile?: string;
  query(sql: string, values?: unknown[]): Promise<Record<string, unknown>[]>;
  // Fast shutdown and start again on the same port and data (a private cluster only).
  restart(): void;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const isRoot = () => process.getuid?.() === 0;

function ensureBinaries(): void {
  if (existsSync(join(PG_BIN, 'initdb'))) return;
  if (!isRoot()) {
    throw new Error(
      `PostgreSQL 15 server binaries are missing (${PG_BIN}/initdb): install them with ` +
        '`sudo apt-get install -y postgresql`, or point HOSTLOCK_TEST_POSTGRES at a server (a superuser URL)',
    );
  }
  process.stderr.write('[postgres] installing the postgresql package\n');
  execFileSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync('apt-get', ['install', '-y', '-q', 'postgresql'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (!existsSync(join(PG_BIN, 'initdb'))) throw new Error(`apt-get installed postgresql but ${PG_BIN} is missing`);
}

// Runs a server binary, as `postgres` when we are root.
function asServerUser(cmd: string, args: string[]): void {
  const argv = isRoot() ? ['runuser', '-u', 'postgres', '--', cmd, ...args] : [cmd, ...args];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr || r.stdout || r.error}`);
}

function makeCerts(dir: string): { ca: string; otherCa: string; cert: string; key: string } {
  const ssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  ssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=hostlock test CA'].concat([
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
    ]),
  );
  ssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=some other CA'].concat([
      '-keyout',
      'other.key',
      '-out',
      'other.crt',
    ]),
  );
  ssl([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=localhost',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
  ]);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  ssl(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2'].concat([
      '-extfile',
      'san.ext',
      '-out',
      'server.crt',
    ]),
  );
  return {
    ca: join(dir, 'ca.crt'),
    otherCa: join(dir, 'other.crt'),
    cert: join(dir, 'server.crt'),
    key: join(dir, 'server.key'),
  };
}

async function adminQuery(url: string, sql: string, values?: unknown[]): Promise<Record<string, unknown>[]> {
  const c = new Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    return (await c.query(sql, values)).rows;
  } finally {
    await c.end();
  }
}

async function prepare(adminUrl: string, database: string): Promise<void> {
  await adminQuery(adminUrl, `CREATE DATABASE ${database}`);
  for (const [role, pw] of [
    [LOCK_ROLE, LOCK_PASSWORD],
    [NOPERM_ROLE, NOPERM_PASSWORD],
  ]) {
    await adminQuery(
      adminUrl,
      `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${role}') THEN CREATE ROLE ${role} LOGIN PASSWORD '${pw}'; END IF; END $$`,
    );
  }
  // The lock role may not create the schema: the tests create it as the owner.
  await adminQuery(adminUrl.replace(/\/[^/?]*(\?|$)/, `/${database}$1`), `REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
}

// `listen`: further addresses to serve besides 127.0.0.1 (a simulated
// controller's link, test/netns.ts), each with password logins from its /30.
export async function startPostgres(opts: { listen?: string[] } = {}): Promise<PgServer> {
  const database = `hostlock_test_${process.pid}_${Date.now() % 100000}`;
  // A server that must listen on a simulated controller's link is always a private one.
  const external = opts.listen?.length ? undefined : process.env.HOSTLOCK_TEST_POSTGRES;
  if (external) {
    const u = new URL(external);
    await prepare(external, database);
    const make = (user = 'postgres', password?: string, query = '') => {
      const v = new URL(external);
      v.username = encodeURIComponent(user);
      v.password = password ? encodeURIComponent(password) : '';
      v.pathname = `/${database}`;
      v.search = query;
      return v.toString();
    };
    return {
      host: u.hostname,
      port: Number(u.port || 5432),
      database,
      adminUrl: external,
      url: (user, password, query) =>
        user
          ? make(user, password, query)
          : make(decodeURIComponent(u.username), decodeURIComponent(u.password), query),
      query: (sql, values) =>
        adminQuery(make(decodeURIComponent(u.username), decodeURIComponent(u.password)), sql, values),
      restart: () => {
        throw new Error('cannot restart the server given in HOSTLOCK_TEST_POSTGRES');
      },
      stop: async () => {
        await adminQuery(external, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
      },
    };
  }

  ensureBinaries();
  const dir = mkdtempSync(join(tmpdir(), 'hostlock-pg-'));
  const data = join(dir, 'data');
  mkdirSync(data, { mode: 0o700 });
  const certs = makeCerts(dir);
  const pwfile = join(dir, 'pwfile');
  writeFileSync(pwfile, ADMIN_PASSWORD + '\n');
  if (isRoot()) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    for (const f of [dir, data, pwfile, certs.cert, certs.key]) chownSync(f, uid, gid);
  }
  chmodSync(certs.key, 0o600);
  chmodSync(dir, 0o755);
  const port = await freePort();
  asServerUser(join(PG_BIN, 'initdb'), [
    '-D',
    data,
    '-U',
    'postgres',
    '--pwfile',
    pwfile,
    '-E',
    'UTF8',
    '--no-sync',
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
  ]);
  for (const addr of opts.listen ?? []) {
    appendFileSync(join(data, 'pg_hba.conf'), `host all all ${addr}/30 scram-sha-256\n`);
  }
  const serverOpts = [
    `-p ${port}`,
    `-k ${dir}`,
    `-c listen_addresses=${['127.0.0.1', ...(opts.listen ?? [])].join(',')}`,
    '-c max_connections=100',
    '-c fsync=off',
    '-c ssl=on',
    `-c ssl_cert_file=${certs.cert}`,
    `-c ssl_key_file=${certs.key}`,
  ].join(' ');
  let stopped = false;
  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    try {
      asServerUser(join(PG_BIN, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']);
    } catch {
      /* already down */
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // Never leave a server behind, even on a crash or a signal.
  process.once('exit', stopSync);
  const onSignal = (sig: NodeJS.Signals) => {
    stopSync();
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15));
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, onSignal);
  asServerUser(join(PG_BIN, 'pg_ctl'), ['-D', data, '-o', serverOpts, '-l', join(dir, 'server.log'), '-w', 'start']);
  const adminUrl = `postgresql://postgres:${ADMIN_PASSWORD}@127.0.0.1:${port}/postgres?sslmode=disable`;
  await prepare(adminUrl, database);
  const url = (user = 'postgres', password = ADMIN_PASSWORD, query = '') =>
    `postgresql://${encodeURIComponent(user)}${password ? ':' + encodeURIComponent(password) : ''}@127.0.0.1:${port}/${database}${query}`;
  return {
    host: '127.0.0.1',
    port,
    database,
    adminUrl,
    url,
    caFile: certs.ca,
    otherCaFile: certs.otherCa,
    query: (sql, values) => adminQuery(url('postgres', ADMIN_PASSWORD, '?sslmode=disable'), sql, values),
    restart: () =>
      asServerUser(join(PG_BIN, 'pg_ctl'), [
        '-D',
        data,
        '-o',
        serverOpts,
        '-l',
        join(dir, 'server.log'),
        '-m',
        'fast',
        '-w',
        'restart',
      ]),
    stop: () => {
      process.removeListener('exit', stopSync);
      for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.removeListener(sig, onSignal);
      stopSync();
      return Promise.resolve();
    },
  };
}
