// Server stores in a playbook: 4 hosts × 10 lock/release pairs with the
// PostgreSQL store (st-pg) and with the etcd store (st-etcd), each against the
// same playbook on the local flock store, runs alternating, medians. The
// servers are private ones on this machine (test/servers), started here.
import { join } from 'node:path';
import { setup } from '../src/stores/postgres/store';
import { etcdForTests } from '../test/servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres } from '../test/servers/postgres';
import { alternate, haveAnsible, runPlaybook, stage, writePlaybook } from './ansible';
import { median, note, report, rounds as roundsOf, size } from './lib';

async function main(): Promise<void> {
  if (!haveAnsible()) {
    process.stdout.write(
      'BENCH ' + JSON.stringify({ goal: 'st-pg', skipped: true, what: 'stores in a playbook' }) + '\n',
    );
    return;
  }
  const tasks = size(20, 2);
  const hosts = size(4, 1);
  const rounds = roundsOf(7, 1);
  const [pg, etcd] = await Promise.all([startPostgres(), etcdForTests()]);
  const s = stage('playbook-stores', hosts);
  try {
    await setup(pg.url(), { grantTo: LOCK_ROLE });
    const local = join(s.dir, 'local.yml');
    writePlaybook(local, 'hostlock.core.lock', tasks);
    const stores = [
      { goal: 'st-pg', label: 'PostgreSQL', url: pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable') },
      { goal: 'st-etcd', label: 'etcd', url: etcd.url },
    ];
    for (const st of stores) {
      const book = join(s.dir, `${st.goal}.yml`);
      writePlaybook(book, 'hostlock.core.lock', tasks, { backend: st.url });
      const t = await alternate(
        () => runPlaybook(book, s),
        () => runPlaybook(local, s),
        rounds,
      );
      note(
        `${st.goal}: ${t.subject.map((x) => x.toFixed(0)).join(' ')} ms; local: ${t.anchor.map((x) => x.toFixed(0)).join(' ')} ms`,
      );
      const a = median(t.subject);
      const b = median(t.anchor);
      report({
        goal: st.goal,
        what: `playbook ${tasks / 2} lock/release pairs × ${hosts} hosts on the ${st.label} store (median of ${rounds})`,
        figure: a,
        unit: 'ms',
        anchor: b,
        anchorWhat: 'same playbook on the local flock store',
        target: '≤ 1.3×',
        met: a / b <= 1.3,
      });
    }
  } finally {
    s.cleanup();
    await Promise.allSettled([pg.stop(), etcd.stop()]);
  }
}

main().catch((err) => {
  process.stderr.write(`playbook-stores benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
