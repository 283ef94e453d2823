// What `hostlock run NAME -- CMD` promises, with real processes and real
// servers: never two commands inside one name on any store (a SIGKILLed
// wrapper's command dies with it on a server store), a lost hold is loud,
// reaches the command and ends in exit 75, and signals behave as a shell user
// expects (inherited SIG_IGN kept for hostlock and its command; 128+N exact
// while waiting). The executable is started as a shell starts it (its own
// file, not `node file`), so it sees the signals it inherited.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, cli, sleep, startServe, tempDir, until } from './rpc';
import { startEtcdCluster, type EtcdCluster } from './servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

function start(
  file: string,
  args: string[],
  opts: { detached?: boolean; env?: NodeJS.ProcessEnv } = {},
): { proc: ChildProcess; exit: Promise<Exit> } {
  const env = { ...process.env, ...opts.env };
  const proc = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: opts.detached, env });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const exit = new Promise<Exit>((r) => proc.on('exit', (code, signal) => r({ code, signal, stderr })));
  return { proc, exit };
}

const hostlock = (args: string[], opts?: { detached?: boolean }) => start(CLI, args, opts);

// Running, not a zombie waiting for its new parent to reap it.
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function readPid(path: string): number {
  return Number(readFileSync(path, 'utf8').trim());
}

function killQuietly(pid: number | undefined): void {
  try {
    if (pid) process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>(
      (_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)),
    ),
  ]);
}

let pg: PgServer;
let etcd: EtcdCluster;

before(async () => {
  [pg, etcd] = await Promise.all([startPostgres(), startEtcdCluster(1)]);
  const setup = cli(['setup', '--backend', pg.url(), '--grant', LOCK_ROLE]);
  assert.equal(setup.status, 0, setup.stderr);
});
after(async () => {
  etcd?.resume(0);
  await Promise.allSettled([pg?.stop(), etcd?.stop()]);
});

const stores = [
  { label: 'postgresql', url: () => pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable') },
  { label: 'etcd', url: () => `${etcd.url}?ttl=2` },
];

for (const s of stores) {
  describe(`hostlock run on ${s.label}`, () => {
    const t = tempDir(`hl-runsem-${s.label}`);
    after(() => t.cleanup());

    test('SIGKILL of the wrapper: the next holder gets the name only once the first command is gone', async () => {
      const ticks = join(t.dir, 'ticks');
      const pidFile = join(t.dir, 'pid1');
      const entered = join(t.dir, 'entered2');
      const first = hostlock([
        'run',
        'killed',
        '--backend',
        s.url(),
        '--',
        'sh',
        '-c',
        `echo $$ > ${pidFile}; while :; do date +%s.%N >> ${ticks}; sleep 0.02; done`,
      ]);
      let cmdPid: number | undefined;
      try {
        await until(() => existsSync(ticks), 20000);
        cmdPid = readPid(pidFile);
        await sleep(300);
        first.proc.kill('SIGKILL');
        const second = hostlock([
          'run',
          'killed',
          '--backend',
          s.url(),
          '--timeout',
          '30',
          '--',
          'sh',
          '-c',
          `date +%s.%N > ${entered}`,
        ]);
        const r = await within(second.exit, 40000, 'the second run');
        assert.equal(r.code, 0, r.stderr);
        await sleep(300); // a tick of a command that still ran would land by now
        const last = Math.max(...readFileSync(ticks, 'utf8').trim().split('\n').map(Number));
        const got = Number(readFileSync(entered, 'utf8'));
        assert.ok(
          last < got,
          `the first command ran ${(last - got).toFixed(3)} s inside the name after the second command entered it`,
        );
        assert.ok(!alive(cmdPid), 'the first command outlived the wrapper that held its lock');
      } finally {
        killQuietly(cmdPid);
      }
    });
  });
}

describe('a lost hold', () => {
  const t = tempDir('hl-runsem-lost');
  after(() => t.cleanup());
  const command = (dir: string, trap = 'TERM') =>
    `trap "echo ${trap} >> ${dir}/journal; exit 3" ${trap}; echo up > ${dir}/up; while :; do sleep 0.05; done`;

  test('postgresql session terminated: loud, SIGTERM to the command, exit 75', async () => {
    const dir = join(t.dir, 'pg');
    mkdirSync(dir);
    const url = stores[0]!.url();
    const run = hostlock(['run', 'cut', '--backend', url, '--', 'sh', '-c', command(dir)]);
    await until(() => existsSync(join(dir, 'up')), 20000);
    await pg.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [LOCK_ROLE]);
    const r = await within(run.exit, 20000, 'hostlock run');
    assert.equal(r.code, 75, r.stderr);
    assert.match(r.stderr, /hostlock: LOST the lock cut/);
    assert.match(r.stderr, /another holder may be inside/);
    assert.equal(readFileSync(join(dir, 'journal'), 'utf8'), 'TERM\n');
  });

  test('local store, lock file deleted: loud, SIGTERM to the command, exit 75, the history says lost', async () => {
    const dir = join(t.dir, 'local');
    mkdirSync(dir);
    const run = hostlock(['run', 'unlinked', '--dir', dir, '--', 'sh', '-c', command(dir)]);
    await until(() => existsSync(join(dir, 'up')), 20000);
    unlinkSync(join(dir, 'unlinked.lock'));
    const r = await within(run.exit, 20000, 'hostlock run');
    assert.equal(r.code, 75, r.stderr);
    assert.match(r.stderr, /hostlock: LOST the lock unlinked: lock file .* was deleted or replaced while held/);
    assert.equal(readFileSync(join(dir, 'journal'), 'utf8'), 'TERM\n');
    const events = readFileSync(join(dir, '.history', 'journal'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { event: string }).event);
    assert.deepEqual(events, ['grant', 'lost']);
  });

  for (const st of stores) {
    test(`hostlock break --backend ${st.label}: the run's command is signalled, exit 75`, async () => {
      const dir = join(t.dir, `break-${st.label}`);
      mkdirSync(dir);
      const run = hostlock(['run', 'broken', '--backend', st.url(), '--', 'sh', '-c', command(dir)]);
      await until(() => existsSync(join(dir, 'up')), 20000);
      const b = cli(['break', 'broken', '--backend', st.url(), '--reason', 'test', '--yes']);
      assert.equal(b.status, 0, b.stderr);
      const r = await within(run.exit, 20000, 'hostlock run');
      assert.equal(r.code, 75, r.stderr);
      assert.match(r.stderr, /hostlock: LOST the lock broken/);
      assert.equal(readFileSync(join(dir, 'journal'), 'utf8'), 'TERM\n');
    });
  }

  test('etcd frozen past the ttl: the chosen signal, then SIGKILL after the grace, exit 75', async () => {
    const dir = join(t.dir, 'etcd');
    mkdirSync(dir);
    // The command ignores SIGUSR1 (it only notes it): the grace ends it.
    const script = `trap "echo USR1 >> ${dir}/journal" USR1; echo up > ${dir}/up; while :; do sleep 0.05; done`;
    const args = ['run', 'frozen', '--backend', stores[1]!.url(), '--on-lost', 'SIGUSR1', '--lost-grace', '1'];
    const run = hostlock([...args, '--', 'sh', '-c', script]);
    try {
      await until(() => existsSync(join(dir, 'up')), 20000);
      etcd.pause(0);
      await until(() => existsSync(join(dir, 'journal')), 15000);
      const noted = performance.now();
      const r = await within(run.exit, 15000, 'hostlock run');
      const grace = (performance.now() - noted) / 1000;
      assert.equal(r.code, 75, r.stderr);
      assert.match(r.stderr, /hostlock: LOST the lock frozen/);
      assert.match(r.stderr, /SIGKILL/);
      assert.ok(grace > 0.5, `ended ${grace.toFixed(2)} s after SIGUSR1, before its grace`);
    } finally {
      etcd.resume(0);
    }
  });
});

// The same promise for a connection's own lock over `hostlock serve` (the
// Python `Lock`, an action plugin): a hold lost in the store is told to its
// client at once, and its release says it was lost instead of "released".
describe("a serve connection's lost hold", () => {
  for (const st of stores) {
    test(`${st.label}: a \`lost\` notification at once, release answers lost, status frees it`, async () => {
      const helper = startServe();
      try {
        const name = `conn-${st.label}`;
        const got = await helper.rpc.call('acquire', { name, backend: st.url() });
        assert.equal(got.acquired, true);
        const b = cli(['break', name, '--backend', st.url(), '--reason', 'test', '--yes']);
        assert.equal(b.status, 0, b.stderr);
        await until(() => helper.rpc.notifications.some((m) => m.method === 'lost'), 10000);
        const note = helper.rpc.notifications.find((m) => m.method === 'lost')!;
        assert.equal(note.params.handle, got.handle);
        assert.equal(note.params.name, name);
        assert.match(note.params.reason, /broken by .*test/);
        assert.match(helper.stderr(), new RegExp(`lock '${name}' lost`));
        const rel = await helper.rpc.call('release', { handle: got.handle });
        assert.deepEqual(
          { released: rel.released, lost: rel.lost, reason: rel.reason },
          { released: false, lost: true, reason: note.params.reason },
        );
        // The name is free for the next holder, in this helper and outside it.
        const again = await helper.rpc.call('try', { name, backend: st.url() });
        assert.equal(again.acquired, true, JSON.stringify(again));
        assert.equal((await helper.rpc.call('release', { handle: again.handle })).released, true);
        assert.equal(helper.rpc.notifications.filter((m) => m.method === 'lost').length, 1);
        // The lost hold ends at its `lost` record: no release of it is recorded.
        const h = cli(['history', name, '--backend', st.url(), '--json']);
        assert.equal(h.status, 0, h.stderr);
        const first = (JSON.parse(h.stdout) as { events: { event: string; token?: number }[] }).events.filter(
          (r) => r.token === got.token,
        );
        assert.deepEqual(
          first.map((r) => r.event).filter((e) => e !== 'break'),
          ['grant', 'lost'],
        );
      } finally {
        await helper.close();
      }
    });
  }

  test('postgresql session terminated: the client hears `lost`, release answers lost', async () => {
    const helper = startServe();
    try {
      const got = await helper.rpc.call('acquire', { name: 'conn-cut', backend: stores[0]!.url() });
      assert.equal(got.acquired, true);
      await pg.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [LOCK_ROLE]);
      await until(() => helper.rpc.notifications.some((m) => m.method === 'lost'), 10000);
      const rel = await helper.rpc.call('release', { handle: got.handle });
      assert.equal(rel.released, false);
      assert.equal(rel.lost, true);
    } finally {
      await helper.close();
    }
  });
});

describe('signals', () => {
  const t = tempDir('hl-runsem-sig');
  after(() => t.cleanup());
  let n = 0;
  const fresh = () => {
    const dir = join(t.dir, String(++n));
    mkdirSync(dir);
    return dir;
  };

  test('nohup: SIGHUP to the job leaves hostlock and its command running; exit 0', async () => {
    const dir = fresh();
    const script = `echo up > ${dir}/up; sleep 1; echo done > ${dir}/done`;
    const job = start('nohup', [CLI, 'run', 'nohup', '--dir', dir, '--', 'sh', '-c', script], { detached: true });
    await until(() => existsSync(join(dir, 'up')), 10000);
    process.kill(-job.proc.pid!, 'SIGHUP');
    const r = await within(job.exit, 10000, 'hostlock run');
    assert.equal(r.code, 0, `${r.signal ?? ''} ${r.stderr}`);
    assert.ok(existsSync(join(dir, 'done')), 'the command did not complete');
  });

  test("the executable's shell hands over the start time: the holder record carries /proc's, the command no variable", async () => {
    const dir = fresh();
    // Renamed into place once whole: the test reads it as soon as it exists.
    const script = `echo "[$HOSTLOCK_PROC]" > ${dir}/env; cat /proc/$PPID/stat > ${dir}/stat.tmp; mv ${dir}/stat.tmp ${dir}/stat; sleep 1`;
    const job = start(CLI, ['flock', join(dir, 'f.lock'), 'sh', '-c', script], { env: { HOSTLOCK_DIR: dir } });
    await until(() => existsSync(join(dir, 'stat')), 10000);
    const stat = readFileSync(join(dir, 'stat'), 'utf8');
    const start22 = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    const records = readdirSync(join(dir, '.holders')).filter((f) => f.endsWith('.json'));
    assert.equal(records.length, 1, records.join(' '));
    const rec = JSON.parse(readFileSync(join(dir, '.holders', records[0]!), 'utf8'));
    assert.equal(rec.helper_pid, job.proc.pid);
    assert.equal(rec.helper_start, start22);
    assert.equal(readFileSync(join(dir, 'env'), 'utf8'), '[]\n');
    assert.equal((await within(job.exit, 10000, 'hostlock flock')).code, 0);
  });

  test("a background job's SIGINT (ignored on entry) leaves hostlock and its command running", async () => {
    const dir = fresh();
    const script = `echo $$ > ${dir}/cmd; sleep 1; echo done > ${dir}/done`;
    const outer = `${CLI} run bg --dir ${dir} -- sh -c '${script}' & echo $! > ${dir}/hl; wait $!; echo $? > ${dir}/status`;
    const sh = start('sh', ['-c', outer]);
    await until(() => existsSync(join(dir, 'cmd')) && existsSync(join(dir, 'hl')), 10000);
    process.kill(readPid(join(dir, 'hl')), 'SIGINT');
    process.kill(readPid(join(dir, 'cmd')), 'SIGINT');
    await within(sh.exit, 10000, 'the shell');
    assert.equal(readFileSync(join(dir, 'status'), 'utf8').trim(), '0');
    assert.ok(existsSync(join(dir, 'done')), 'the command did not complete');
  });

  for (const [sig, code] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
    ['SIGHUP', 129],
  ] as const) {
    test(`${sig} while waiting exits ${code}`, async () => {
      const dir = fresh();
      const holder = hostlock(['run', 'w', '--dir', dir, '--', 'sh', '-c', `echo up > ${dir}/up; exec sleep 30`]);
      try {
        await until(() => existsSync(join(dir, 'up')), 10000);
        const waiter = hostlock(['run', 'w', '--dir', dir, '--', 'touch', join(dir, 'entered')]);
        await sleep(800);
        waiter.proc.kill(sig);
        const r = await within(waiter.exit, 10000, 'the waiter');
        assert.equal(r.code, code, `${r.signal ?? ''} ${r.stderr}`);
        assert.ok(!existsSync(join(dir, 'entered')));
      } finally {
        holder.proc.kill('SIGTERM');
        await holder.exit;
      }
    });
  }

  test('SIGTERM while the command runs goes to the command; hostlock exits with its status', async () => {
    const dir = fresh();
    const script = `trap "echo term > ${dir}/t; exit 7" TERM; echo up > ${dir}/up; while :; do sleep 0.05; done`;
    const run = hostlock(['run', 'fwd', '--dir', dir, '--', 'sh', '-c', script]);
    await until(() => existsSync(join(dir, 'up')), 10000);
    run.proc.kill('SIGTERM');
    const r = await within(run.exit, 10000, 'hostlock run');
    assert.equal(r.code, 7, r.stderr);
    assert.equal(readFileSync(join(dir, 't'), 'utf8'), 'term\n');
  });

  test('SIGTERM sent the instant the command starts still goes to the command', async () => {
    // The command signals hostlock as its first act, racing hostlock's return
    // from starting it: a moment without a handler would let SIGTERM kill hostlock.
    const dir = fresh();
    const script = 'trap "exit 7" TERM; kill -TERM $PPID; sleep 5 & wait';
    for (let i = 0; i < 30; i++) {
      const r = await within(hostlock(['run', `race${i}`, '--dir', dir, '--', 'sh', '-c', script]).exit, 20000, 'run');
      assert.deepEqual([r.code, r.signal], [7, null], `attempt ${i}: ${r.stderr}`);
    }
  });
});
