// `hostlock status` finds the one lock an operator asks about (names, shell
// patterns, --held) in one layout for every store, and `hostlock clear`
// removes only lock files nobody holds or waits for, never letting two
// hostlock users into one lock while it does.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { patternRegExp, selectRows } from '../src/cli/commands/status';
import { turnstilePathFor } from '../src/stores/flock/turnstile';
import { CLI, cli, lockedByOthers, sleep, tempDir, until } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

// `hostlock run` holding `name` until killed.
function holdWith(env: NodeJS.ProcessEnv, ...args: string[]): ChildProcess {
  return spawn(CLI, ['run', ...args, '--', 'sleep', '300'], { env: { ...process.env, ...env }, stdio: 'ignore' });
}

function stopped(p: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (p.exitCode !== null || p.signalCode !== null) return r();
    p.once('exit', () => r());
    p.kill('SIGKILL');
  });
}

describe('shell patterns', () => {
  test('*, ? and [...] match whole names; everything else is literal', () => {
    assert.ok(patternRegExp('web*').test('web12'));
    assert.ok(!patternRegExp('web*').test('aweb1'));
    assert.ok(patternRegExp('db?').test('db1') && !patternRegExp('db?').test('db12'));
    assert.ok(patternRegExp('db[12]').test('db2') && !patternRegExp('db[12]').test('db3'));
    assert.ok(patternRegExp('db[!12]').test('db3') && !patternRegExp('db[!12]').test('db1'));
    assert.ok(patternRegExp('a.b+c').test('a.b+c') && !patternRegExp('a.b+c').test('axbbc'));
    assert.ok(patternRegExp('x[').test('x['));
  });

  test('a plain name that has no lock is shown free; a pattern adds nothing', () => {
    const rows = [{ name: 'web1', held: true, holders: [], waiters: [] }];
    assert.deepEqual(
      selectRows(rows, { names: ['web2', 'db*'], held: false }).map((r) => [r.name, r.held]),
      [['web2', false]],
    );
  });
});

describe('status on the local store', () => {
  const t = tempDir('status');
  const env = { HOSTLOCK_DIR: t.dir };
  const holders: ChildProcess[] = [];
  before(async () => {
    for (const n of ['web1', 'web2', 'db1', 'db2', 'cache']) cli(['run', n, '--', 'true'], env);
    holders.push(holdWith(env, 'web1'), holdWith(env, 'db2'));
    await until(() => lockedByOthers(join(t.dir, 'web1.lock')) && lockedByOthers(join(t.dir, 'db2.lock')), 10000);
  });
  after(async () => {
    await Promise.all(holders.map(stopped));
    t.cleanup();
  });

  test('a name shows that lock only, with its holder; the summary counts the whole directory', () => {
    const r = cli(['status', 'web1'], env);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /: 5 lock\(s\), 1 shown, 1 held$/);
    assert.match(lines[1]!, /^NAME +STATE +HOLDERS +SINCE$/);
    assert.match(
      lines[2]!,
      new RegExp(`^web1 +exclusive +\\[sleep 300\\] \\S+@\\S+ pid ${holders[0]!.pid} token \\d+ `),
    );
    assert.equal(lines.length, 3, r.stdout);
  });

  test('patterns, several names, a name never locked, --held', () => {
    const names = (args: string[]) =>
      cli(['status', ...args], env)
        .stdout.trim()
        .split('\n')
        .slice(2)
        .map((l) => l.split(/ +/).slice(0, 2).join(' '));
    assert.deepEqual(names(['db*']), ['db1 free', 'db2 exclusive']);
    assert.deepEqual(names(['web?', 'cache']), ['cache free', 'web1 exclusive', 'web2 free']);
    assert.deepEqual(names(['nosuch']), ['nosuch free']);
    assert.deepEqual(names(['--held']), ['db2 exclusive', 'web1 exclusive']);
    assert.deepEqual(names(['--held', 'web*']), ['web1 exclusive']);
    const json = JSON.parse(cli(['status', '--json', '--held'], env).stdout);
    assert.deepEqual(
      json.locks.map((l: { name: string }) => l.name),
      ['db2', 'web1'],
    );
    assert.equal(json.dir, t.dir);
  });
});

describe('clear', () => {
  test('removes free lock files and their turnstiles; keeps held and waited-for ones; --dry-run removes nothing', async () => {
    const t = tempDir('clear');
    const env = { HOSTLOCK_DIR: t.dir };
    for (const n of ['a', 'b', 'c', 'd']) cli(['run', n, '--', 'true'], env);
    writeFileSync(join(t.dir, '.a.lock.turnstile'), '');
    const holder = holdWith(env, 'b');
    // d is held by a process outside hostlock, and c is waited for behind it.
    const foreign = spawn('flock', [join(t.dir, 'c.lock'), 'sleep', '300'], { stdio: 'ignore' });
    await until(() => lockedByOthers(join(t.dir, 'b.lock')) && lockedByOthers(join(t.dir, 'c.lock')), 10000);
    const waiter = spawn(CLI, ['run', 'c', '--', 'true'], { env: { ...process.env, ...env }, stdio: 'ignore' });
    try {
      await until(() => JSON.parse(cli(['status', 'c', '--json'], env).stdout).locks[0].waiters.length === 1, 10000);
      const dry = cli(['clear', '--dry-run'], env);
      assert.equal(dry.status, 0, dry.stderr);
      assert.match(dry.stdout, /would clear 2 lock file\(s\), kept 2/);
      assert.ok(existsSync(join(t.dir, 'a.lock')) && existsSync(join(t.dir, 'd.lock')));

      const r = JSON.parse(cli(['clear', '--json'], env).stdout);
      assert.deepEqual(r.cleared.sort(), ['a', 'd']);
      assert.deepEqual(r.kept.map((k: { name: string; why: string }) => `${k.name} ${k.why}`).sort(), [
        'b held',
        'c held',
      ]);
      assert.ok(!existsSync(join(t.dir, 'a.lock')) && !existsSync(join(t.dir, '.a.lock.turnstile')));
      assert.ok(existsSync(join(t.dir, 'b.lock')) && existsSync(join(t.dir, 'c.lock')));
      assert.ok(lockedByOthers(join(t.dir, 'b.lock')), 'the holder still holds b');

      const named = cli(['clear', 'b', 'nosuch'], env);
      assert.equal(named.status, 0);
      assert.match(named.stdout, /cleared 0 lock file\(s\), kept 1\n {2}kept b: held/);
    } finally {
      await Promise.all([holder, foreign, waiter].map(stopped));
      t.cleanup();
    }
  });

  test('on a server store it is a usage error that says why', () => {
    const r = cli(['clear', '--backend', 'postgresql://127.0.0.1:1/x']);
    assert.equal(r.status, 64, r.stdout);
    assert.match(r.stderr, /keeps nothing for a lock nobody holds/);
  });

  test('clearing in a loop never lets two hostlock runs into one lock', async () => {
    const t = tempDir('clear-loop');
    try {
      const r = await runsWhileClearing(t.dir, () => cli(['clear', 'ctr'], { HOSTLOCK_DIR: t.dir }));
      assert.ok(r.cleaned >= 3, `the cleaner ran ${r.cleaned} times`);
      assert.equal(r.overlap, null, r.overlap ?? '');
    } finally {
      t.cleanup();
    }
  });

  test('the same loop catches an unsafe clear: files unlinked without their lock let two runs in', async () => {
    // What clear does, less the lock it takes and the inode it re-checks: the loop
    // above passing means something only if it fails this.
    const t = tempDir('clear-unsafe');
    try {
      const lockFile = join(t.dir, 'ctr.lock');
      const r = await runsWhileClearing(t.dir, () => {
        for (const f of [lockFile, turnstilePathFor(lockFile)]) rmSync(f, { force: true });
      });
      assert.notEqual(r.overlap, null, `no overlap seen in ${r.cleaned} unsafe clears`);
      assert.match(r.overlap!, /^run \d entered while run \d was inside$/);
    } finally {
      t.cleanup();
    }
  });
});

describe('one status layout for every store', () => {
  let pg: PgServer;
  let etcd: EtcdCluster;
  before(async () => {
    [pg, etcd] = await Promise.all([startPostgres(), etcdForTests()]);
    const setup = cli(['setup', '--backend', pg.url(), '--grant', LOCK_ROLE]);
    assert.equal(setup.status, 0, setup.stderr);
  });
  after(async () => {
    await Promise.all([pg?.stop(), etcd?.stop()]);
  });

  for (const store of ['local', 'postgresql', 'etcd']) {
    test(`${store}: the same header, rows and holder cells, names and --held`, async () => {
      const t = tempDir('layout');
      const backend =
        store === 'local'
          ? undefined
          : store === 'postgresql'
            ? pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable')
            : etcd.url;
      const where = backend ? ['--backend', backend] : ['--dir', t.dir];
      const env = { HOSTLOCK_CONTROLLER: 'ctl-status' };
      const name = `lay-${process.pid}-${store}`;
      cli(['run', ...where, `${name}-free`, '--', 'true'], env);
      const holder = holdWith(env, ...where, `${name}-held`);
      try {
        await until(
          () => JSON.parse(cli(['status', ...where, '--json', `${name}-held`], env).stdout).locks[0]?.held === true,
          15000,
          100,
        );
        const r = cli(['status', ...where, '--held', `${name}-*`], env);
        assert.equal(r.status, 0, r.stderr);
        const lines = r.stdout.trim().split('\n');
        assert.match(lines[0]!, /^(lock directory|backend) .*: \d+ lock\(s\), 1 shown, 1 held$/);
        assert.doesNotMatch(lines[0]!, new RegExp(LOCK_PASSWORD));
        assert.match(lines[1]!, /^NAME +STATE +HOLDERS +SINCE$/);
        assert.match(
          lines[2]!,
          new RegExp(
            `^${name}-held +exclusive +\\[sleep 300\\] \\S+@ctl-status pid ${holder.pid} token \\d+ +\\d{4}-\\d\\d-\\d\\dT`,
          ),
        );
        assert.equal(lines.length, 3, r.stdout);
      } finally {
        await stopped(holder);
        t.cleanup();
      }
    });
  }
});

// Three `hostlock run ctr` commands, each journalling its entries into and exits
// from the lock and rerun as it ends, for a few seconds, while `clean` runs in a
// loop: how often it ran, and the journal's first overlap (null: none).
async function runsWhileClearing(dir: string, clean: () => void): Promise<{ cleaned: number; overlap: string | null }> {
  const env = { HOSTLOCK_DIR: dir };
  const journal = join(dir, '..', `journal-${process.pid}-${basename(dir)}`);
  writeFileSync(journal, '');
  let clearing = true;
  const cleaner = (async () => {
    let n = 0;
    while (clearing) {
      clean();
      n++;
      await sleep(5);
    }
    return n;
  })();
  // `hostlock run ctr` around `rounds` sections of run `i`, each journalled in and out.
  const run = (i: number, rounds: number, pause: string) =>
    spawn(
      CLI,
      [
        'run',
        'ctr',
        '--',
        'sh',
        '-c',
        `for j in $(seq ${rounds}); do echo "in ${i} $j" >> ${journal}; sleep ${pause}; echo "out ${i} $j" >> ${journal}; done`,
      ],
      { env: { ...process.env, ...env }, stdio: 'ignore' },
    );
  const runs = Array.from({ length: 3 }, (_, i) => run(i, 8, '0.01'));
  try {
    // Each run enters many times: rerun each as it ends, for a few seconds.
    const deadline = Date.now() + 6000;
    await Promise.all(
      runs.map(async (first, i) => {
        let p = first;
        for (;;) {
          await new Promise((r) => p.once('exit', r));
          if (Date.now() > deadline) return;
          p = run(i, 1, '0.005');
        }
      }),
    );
  } finally {
    clearing = false;
  }
  const cleaned = await cleaner;
  let inside = -1;
  let overlap: string | null = null;
  for (const line of readFileSync(journal, 'utf8').trim().split('\n')) {
    const [what, who] = line.split(' ');
    if (what === 'in') {
      if (inside !== -1) {
        overlap = `run ${who} entered while run ${inside} was inside`;
        break;
      }
      inside = Number(who);
    } else if (inside === Number(who)) {
      inside = -1;
    } else {
      overlap = `run ${who} left while run ${inside} was inside`;
      break;
    }
  }
  rmSync(journal, { force: true });
  return { cleaned, overlap };
}
