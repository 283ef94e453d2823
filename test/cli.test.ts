// The `hostlock` command: run behaves like flock(1) with names, status lists
// every lock, and every exit code in --help is the one scripts get.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { CLI, cli, lockedByOthers, tempDir, until } from './rpc';

test('--help lists every command and exit code; --version prints the version', () => {
  const h = cli(['--help']);
  assert.equal(h.status, 0);
  for (const w of ['status', 'run', 'serve', 'agent', '64', '69', '71', '73'])
    assert.match(h.stdout, new RegExp(`\\b${w}\\b`));
  const v = cli(['--version']);
  assert.equal(v.status, 0);
  assert.match(v.stdout.trim(), /^\d+\.\d+\.\d+$/);
});

test('usage errors exit 64 with a hint', () => {
  for (const args of [
    [],
    ['bogus'],
    ['run', 'x'],
    ['run', 'x', '--timeout', '-1', '--', 'true'],
    ['run', 'x', '-n', '-w', '1', '--', 'true'],
    ['run', '', '--', 'true'],
  ]) {
    const r = cli(args);
    assert.equal(r.status, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /hostlock: /);
  }
});

test('run holds the lock for the command and passes its exit status', () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: t.dir };
  const r = cli(
    ['run', 'job', '--', 'sh', '-c', `flock -n ${join(t.dir, 'job.lock')} true; echo "probe=$?"; exit 7`],
    env,
  );
  assert.equal(r.status, 7);
  assert.match(r.stdout, /probe=1/, 'the lock was not held while the command ran');
  assert.equal(lockedByOthers(join(t.dir, 'job.lock')), false, 'still held after the command');
  assert.equal(cli(['run', 'job', '--', '/nonexistent/cmd'], env).status, 69);
  t.cleanup();
});

test('run --nonblock / --timeout / --conflict-exit-code against a flock(1) holder', async () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: t.dir };
  const holder = spawn('flock', ['-o', '-x', join(t.dir, 'busy.lock'), 'sleep', '5'], { stdio: 'ignore' });
  await until(() => lockedByOthers(join(t.dir, 'busy.lock')));
  const n = cli(['run', '-n', 'busy', '--', 'true'], env);
  assert.equal(n.status, 1);
  assert.match(n.stderr, /held by/);
  assert.equal(cli(['run', '-n', '-E', '42', 'busy', '--', 'true'], env).status, 42);
  const t0 = performance.now();
  const w = cli(['run', '--timeout', '0.3', 'busy', '--', 'true'], env);
  assert.equal(w.status, 1);
  assert.ok(performance.now() - t0 >= 300);
  assert.match(w.stderr, /gave up/);
  holder.kill();
  t.cleanup();
});

test('run refuses a symlinked lock file (73) and leaves its target untouched', () => {
  const t = tempDir();
  const target = join(t.dir, 'precious');
  writeFileSync(target, 'keep me');
  symlinkSync(target, join(t.dir, 'evil.lock'));
  const r = cli(['run', 'evil', '--', 'true'], { HOSTLOCK_DIR: t.dir });
  assert.equal(r.status, 73);
  assert.match(r.stderr, /symbolic link/);
  assert.equal(readFileSync(target, 'utf8'), 'keep me');
  assert.equal(cli(['run', 'x', '--dir', join(t.dir, 'missing'), '--', 'true']).status, 73);
  t.cleanup();
});

test('status lists free and held locks, as a table and as JSON', async () => {
  const t = tempDir();
  mkdirSync(join(t.dir, 'sub'));
  const env = { HOSTLOCK_DIR: t.dir };
  const holder = spawn(
    process.execPath,
    [join(__dirname, '..', '..', 'dist', 'cli.js'), 'run', 'web1', '--', 'sleep', '5'],
    { env: { ...process.env, ...env } },
  );
  await until(() => lockedByOthers(join(t.dir, 'web1.lock')));
  cli(['run', 'free one', '--', 'true'], env);
  const j = cli(['status', '--json'], env);
  assert.equal(j.status, 0, j.stderr);
  const res = JSON.parse(j.stdout);
  const byName = Object.fromEntries(res.locks.map((l: any) => [l.name, l]));
  assert.equal(byName.web1.held, true);
  assert.equal(byName.web1.holders[0].pid, holder.pid);
  assert.equal(byName['free one'].held, false);
  const table = cli(['status'], env);
  assert.match(table.stdout, /web1\s+exclusive/);
  assert.match(table.stdout, /free one\s+free/);
  // It writes its release to the lock directory's history as it goes: wait for it.
  const gone = new Promise((r) => holder.once('exit', r));
  holder.kill();
  await gone;
  t.cleanup();
});

test('status names a free lock whose name is too long for a file name, not its hashed file stem', () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: t.dir };
  const long = `deploy of ${'x'.repeat(300)} on web1`;
  assert.equal(cli(['run', long, '--', 'true'], env).status, 0);
  const j = cli(['status', '--json'], env);
  assert.equal(j.status, 0, j.stderr);
  const locks = JSON.parse(j.stdout).locks;
  assert.equal(locks.length, 1);
  assert.equal(locks[0].name, long);
  assert.equal(locks[0].held, false);
  assert.match(locks[0].path, /~[0-9a-f]{64}\.lock$/);
  t.cleanup();
});

test('logs go to stderr only: Waiting, Acquired, Released with the prefix; JSON on request', async () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: t.dir, LOG_LEVEL: 'info' };
  const holder = spawn('flock', ['-o', '-x', join(t.dir, 'logged.lock'), 'sleep', '60'], {
    stdio: 'ignore',
    detached: true, // its own group: flock and its sleep go together
  });
  await until(() => lockedByOthers(join(t.dir, 'logged.lock')));
  // The holder lets go only once the waiter has said it waits.
  const waiter = spawn(
    process.execPath,
    [join(__dirname, '..', '..', 'dist', 'cli.js'), 'run', 'logged', '--', 'echo', 'out'],
    {
      env: { ...process.env, ...env },
    },
  );
  let stdout = '';
  let stderr = '';
  waiter.stdout.on('data', (c) => (stdout += c));
  waiter.stderr.on('data', (c) => (stderr += c));
  const status = new Promise((r) => waiter.once('exit', r));
  await until(() => /Waiting/.test(stderr), 30_000);
  process.kill(-holder.pid!, 'SIGTERM');
  assert.equal(await status, 0, stderr);
  assert.equal(stdout, 'out\n', 'stdout carries only the command output');
  for (const m of ['Waiting', 'Acquired', 'Released']) assert.match(stderr, new RegExp(`logged .*${m}`));
  const quiet = cli(['run', 'logged', '--', 'true'], { HOSTLOCK_DIR: t.dir });
  assert.equal(quiet.stderr, '', 'the default level (warn) says nothing on success');
  const j = cli(['run', 'logged', '--', 'true'], { ...env, HOSTLOCK_LOG_FORMAT: 'json' });
  const lines = j.stderr
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => l.message),
    ['Acquired', 'Released'],
  );
  assert.equal(lines[0].prefix, 'logged');
  assert.equal(lines[0].path, join(t.dir, 'logged.lock'));
  t.cleanup();
});

test('run refuses a path as a lock name (exit 64), pointing to hostlock flock, and runs nothing', () => {
  const t = tempDir();
  const marker = join(t.dir, 'ran');
  for (const name of [join(t.dir, 'p.lock'), './p.lock', '.hidden', '~/p.lock', 'a/b']) {
    const r = cli(['run', name, '-n', '--', 'touch', marker], { HOSTLOCK_DIR: t.dir });
    assert.equal(r.status, 64, `${name}: ${r.stderr}`);
    assert.match(r.stderr, /hostlock flock /, name);
  }
  assert.throws(() => readFileSync(marker), 'a refused run ran its command');
  assert.match(cli(['run', '--help']).stdout, /not a path/);
  t.cleanup();
});

// Which bundles a command loads, read at its exit: the full command line is
// dist/main.js; a server store's code is dist/store-<kind>.js.
function bundlesLoaded(args: string[], env: NodeJS.ProcessEnv): { status: number | null; loaded: string[] } {
  const t = tempDir('hl-probe');
  const probe = join(t.dir, 'probe.js');
  writeFileSync(
    probe,
    // The executable compiles each of its command bundles as a vm.Script named
    // by its file; a store's bundle is required as a library is.
    [
      "const vm = require('node:vm');",
      'const loaded = [];',
      'const Script = vm.Script;',
      'vm.Script = class extends Script { constructor(s, o) { super(s, o); loaded.push(o.filename); } };',
      "process.on('exit', () => process.stderr.write('\\nLOADED ' + [...loaded, ...Object.keys(require.cache)].join(' ') + '\\n'));",
    ].join('\n'),
  );
  const r = spawnSync(process.execPath, ['-r', probe, CLI, ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  t.cleanup();
  const loaded = /LOADED (.*)/.exec(r.stderr)?.[1];
  assert.ok(loaded !== undefined, r.stderr);
  return { status: r.status, loaded: loaded.split(' ') };
}

function loadsFullCli(args: string[], env: NodeJS.ProcessEnv): { status: number | null; full: boolean } {
  const r = bundlesLoaded(args, env);
  return { status: r.status, full: r.loaded.some((m) => m.endsWith('/main.js')) };
}

test('a command on the local store reads no server store’s code; a backend loads its own store only', () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: t.dir };
  const stores = (args: string[]) =>
    bundlesLoaded(args, env)
      .loaded.filter((m) => /\/store-[a-z]+\.js$/.test(m))
      .map((m) => m.replace(/^.*\//, ''));
  // Each server store's code is in its own bundle only.
  for (const b of ['cli', 'flock', 'run', 'serve', 'agent', 'main'])
    assert.doesNotMatch(
      readFileSync(join(dirname(CLI), `${b}.js`), 'latin1'),
      /\b(PostgresStore|EtcdStore) = class\b/,
      b,
    );
  assert.deepEqual(stores(['run', 'a', '--', 'true']), []);
  assert.deepEqual(stores(['flock', join(t.dir, 'f.lock'), 'true']), []);
  assert.deepEqual(stores(['status']), []);
  // Unreachable servers: the store is loaded, and fails with its own error.
  assert.deepEqual(stores(['run', '--backend', 'postgresql://127.0.0.1:1/x', 'a', '--', 'true']), [
    'store-postgres.js',
  ]);
  assert.deepEqual(stores(['status', '--backend', 'etcd://127.0.0.1:1']), ['store-etcd.js']);
  t.cleanup();
});

test('flock and plain forms of run start without the full command line; other forms get it, with the same answers', () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: t.dir };
  for (const args of [
    ['flock', join(t.dir, 'f.lock'), 'true'],
    ['run', 'a', '--', 'true'],
    ['run', '--dir', t.dir, '-n', '-q', 'a', '--', 'true'],
    ['run', 'a', '-s', '-w', '2.5', '-E', '3', '--', 'sh', '-c', 'exit 4'],
  ])
    assert.equal(loadsFullCli(args, env).full, false, args.join(' '));
  for (const [args, status] of [
    [['run', 'a', '--timeout=1', '--', 'true'], 0],
    [['run', 'a', '--slots', '2', '--', 'true'], 0],
    [['run', 'a', 'true'], 0],
    [['run', './a', '--', 'true'], 64],
    [['run', 'a', '-n', '-w', '1', '--', 'true'], 64],
    [['run', 'a', '-E', '256', '--', 'true'], 64],
    [['run', 'a', '-w', '-1', '--', 'true'], 64],
    [['run', 'a', '--dir', '/tmp', '--backend', 'etcd://127.0.0.1:1', '--', 'true'], 64],
    [['run', 'a', '--backend', 'postgresql:/x', '--', 'true'], 64],
    [['run', 'a', '--help'], 0],
  ] as const) {
    const r = loadsFullCli([...args], env);
    assert.deepEqual(r, { status, full: true }, args.join(' '));
  }
  assert.equal(loadsFullCli(['run', 'a', '-s', '-w', '2.5', '-E', '3', '--', 'sh', '-c', 'exit 4'], env).status, 4);
});

test('flock and run end as soon as their command does, with every line written and the history flushed', () => {
  const t = tempDir();
  const env = { HOSTLOCK_DIR: t.dir, LOG_LEVEL: 'debug' };
  const big = 'x'.repeat(300_000);
  const r = cli(['run', 'a', '--', 'sh', '-c', "head -c 300000 /dev/zero | tr '\\0' x; exit 3"], env);
  assert.equal(r.status, 3, r.stderr);
  assert.equal(r.stdout, big, "the command's output, whole");
  assert.match(r.stderr, /INFO a \S+ Released\n.*DEBUG command finished \{"code":3\}\n$/s);
  const f = cli(['flock', join(t.dir, 'f.lock'), 'sh', '-c', 'exit 4'], env);
  assert.equal(f.status, 4, f.stderr);
  const h = JSON.parse(cli(['history', '--json'], env).stdout) as { events: { event: string; path: string }[] };
  for (const path of [join(t.dir, 'a.lock'), join(t.dir, 'f.lock')])
    assert.deepEqual(
      h.events.filter((e) => e.path === path).map((e) => e.event),
      ['grant', 'release'],
      path,
    );
  t.cleanup();
});

test('a symlinked --dir is its real directory: the same files, shown under the real path', () => {
  const t = tempDir();
  try {
    const real = join(t.dir, 'real');
    const link = join(t.dir, 'link');
    mkdirSync(real);
    symlinkSync('real', link);
    const probe = `flock -n ${join(real, 'x.lock')} true; echo "probe=$?"`;
    const r = cli(['run', '--dir', link, 'x', '--', 'sh', '-c', probe]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /probe=1/, 'the lock taken through the link is the real directory’s');
    for (const dir of [link, real]) {
      const s = JSON.parse(cli(['status', '--dir', dir, '--json']).stdout);
      assert.equal(s.dir, real);
      assert.deepEqual(
        s.locks.map((l: { path: string }) => l.path),
        [join(real, 'x.lock')],
      );
    }
    // Through HOSTLOCK_DIR too; and --help says so instead of listing a symlink as unusable.
    const h = cli(['history', '--json'], { HOSTLOCK_DIR: link });
    assert.equal(JSON.parse(h.stdout).dir, real, h.stderr);
    const help = cli(['--help']).stdout;
    assert.match(help, /73 +the lock directory[^\n]*a lock file\n +that is a symlink/);
    assert.match(help, /A --dir that is a\n +symlink is followed: its real directory is used and shown/);
  } finally {
    t.cleanup();
  }
});
