// Private PostgreSQL and etcd servers for the scenarios that need them
// (molecule multi_controller): starts both, prepares the PostgreSQL schema
// for the lock role, writes `HOSTLOCK_TEST_PG_URL=…` and
// `HOSTLOCK_TEST_ETCD_URL=…` lines to the file named by its argument, and
// stops both when its stdin closes or it is signalled.
//
// With --bare (the tests of hostlock.core.setup): PostgreSQL alone, no schema,
// and `HOSTLOCK_TEST_PG_ADMIN_URL=…` (a role that may create it, with its
// password), `HOSTLOCK_TEST_PG_ADMIN_PASSWORD=…`, `HOSTLOCK_TEST_PG_URL=…` (the
// lock role) and `HOSTLOCK_TEST_PG_LOCK_ROLE=…` lines.
import { renameSync, writeFileSync } from 'node:fs';
import { setup } from '../../src/stores/postgres/store';
import { etcdForTests } from './etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres } from './postgres';

async function main(): Promise<void> {
  const out = process.argv[2];
  if (!out) throw new Error('usage: node build/test/servers/up.js ENV_FILE [--bare]');
  if (process.argv[3] === '--bare') return bare(out);
  const [pg, etcd] = await Promise.all([startPostgres(), etcdForTests()]);
  const stop = async () => {
    await Promise.allSettled([pg.stop(), etcd.stop()]);
    process.exit(0);
  };
  process.stdin.on('end', () => void stop());
  process.stdin.resume();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => void stop());
  await setup(pg.url(), { grantTo: LOCK_ROLE });
  const lines = [
    `HOSTLOCK_TEST_PG_URL=${pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable')}`,
    `HOSTLOCK_TEST_ETCD_URL=${etcd.url}`,
  ];
  writeFileSync(`${out}.tmp`, lines.join('\n') + '\n');
  renameSync(`${out}.tmp`, out); // whoever waits for the file sees it whole
}

async function bare(out: string): Promise<void> {
  const pg = await startPostgres();
  const stop = async () => {
    await pg.stop().catch(() => undefined);
    process.exit(0);
  };
  process.stdin.on('end', () => void stop());
  process.stdin.resume();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => void stop());
  const admin = new URL(pg.url(undefined, undefined, '?sslmode=disable'));
  const lines = [
    `HOSTLOCK_TEST_PG_ADMIN_URL=${admin.href}`,
    `HOSTLOCK_TEST_PG_ADMIN_PASSWORD=${decodeURIComponent(admin.password)}`,
    `HOSTLOCK_TEST_PG_URL=${pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable')}`,
    `HOSTLOCK_TEST_PG_LOCK_ROLE=${LOCK_ROLE}`,
  ];
  writeFileSync(`${out}.tmp`, lines.join('\n') + '\n');
  renameSync(`${out}.tmp`, out);
}

main().catch((err: unknown) => {
  process.stderr.write(`test servers: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
