// Private PostgreSQL and etcd servers for the scenarios that need them
// (molecule multi_controller): starts both, prepares the PostgreSQL schema
// for the lock role, writes `HOSTLOCK_TEST_PG_URL=…` and
// `HOSTLOCK_TEST_ETCD_URL=…` lines to the file named by its argument, and
// stops both when its stdin closes or it is signalled.
import { renameSync, writeFileSync } from 'node:fs';
import { setup } from '../../src/stores/postgres';
import { etcdForTests } from './etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres } from './postgres';

async function main(): Promise<void> {
  const out = process.argv[2];
  if (!out) throw new Error('usage: node build/test/servers/up.js ENV_FILE');
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

main().catch((err: unknown) => {
  process.stderr.write(`test servers: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
