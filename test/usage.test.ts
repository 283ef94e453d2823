// Mistakes on the command line are usage errors (exit 64) whose message names
// the right form, found before anything is opened, read or drawn.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLI, cli, lockedByOthers, tempDir } from './rpc';

function usage(args: string[], env: NodeJS.ProcessEnv, message: RegExp) {
  const r = cli(args, env);
  assert.equal(r.status, 64, `${args.join(' ')}: ${r.stderr}`);
  assert.match(r.stderr, message, args.join(' '));
  return r;
}

test('a backend URL with one slash is a usage error naming the form, on every command', () => {
  const t = tempDir('usage');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  try {
    const twoSlashes = /two slashes after the scheme \(postgresql:\/\/…\).*postgresql:\/\/\[USER/;
    for (const [cmd, ...rest] of [['status'], ['history'], ['timeline'], ['run', 'h1', '--', 'true']])
      usage([cmd!, '--backend', 'postgresql:/x', ...rest], env, twoSlashes);
    usage(['status', '--backend', 'ftp://x'], env, /unknown backend; give local/);
    usage(['break', 'x', '--reason', 'r', '--yes', '--backend', 'etcd:/h'], env, /\(etcd:\/\/…\)/);
    // The password of a URL never shows.
    const r = usage(
      ['status', '--backend', 'postgres:/u:secret@h/db'],
      env,
      /two slashes after the scheme \(postgres:\/\/…\)/,
    );
    assert.doesNotMatch(r.stderr, /secret/);
  } finally {
    t.cleanup();
  }
});

test('--dir with a backend is a usage error, on every command', () => {
  const t = tempDir('usage');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  try {
    for (const [cmd, ...rest] of [['status'], ['history'], ['timeline'], ['run', 'h1', '--', 'true']])
      usage(
        [cmd!, '--backend', 'etcd://127.0.0.1:1', '--dir', t.dir, ...rest],
        env,
        /--dir applies to the local store only/,
      );
  } finally {
    t.cleanup();
  }
});

test('history --since takes today and yesterday; anything else lists the accepted forms', () => {
  const t = tempDir('usage');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  try {
    assert.equal(cli(['run', 'x', '--', 'true'], env).status, 0);
    for (const since of ['yesterday', 'today']) {
      const r = cli(['history', '--since', since], env);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /grant .*x/);
    }
    usage(
      ['history', '--since', 'last week'],
      env,
      /--since last week: give a duration ago .*today, yesterday or a date/,
    );
    usage(['timeline', '--since', 'soon'], env, /--since soon: give /);
  } finally {
    t.cleanup();
  }
});

test('timeline --svg into a missing directory fails at once, naming it', () => {
  const t = tempDir('usage');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  try {
    assert.equal(cli(['run', 'x', '--', 'true'], env).status, 0);
    const svg = join(t.dir, 'no', 'such', 'x.svg');
    const r = usage(['timeline', '--svg', svg], env, /--svg .*x\.svg: directory .*no\/such does not exist/);
    assert.doesNotMatch(r.stderr, /ENOENT/);
    assert.equal(r.stdout, '', 'nothing is drawn');
    mkdirSync(join(t.dir, 'out'));
    usage(['timeline', '--svg', join(t.dir, 'out')], env, /is a directory: give a file name/);
    const ok = cli(['timeline', '--svg', join(t.dir, 'out', 'x.svg')], env);
    assert.equal(ok.status, 0, ok.stderr);
    assert.ok(existsSync(join(t.dir, 'out', 'x.svg')));
  } finally {
    t.cleanup();
  }
});

test('run with the command not after -- says to put it there', () => {
  const r = usage(['run', 'h1', 'ls', '-la'], {}, /Unknown arguments: l, a; put the command and its options after --/);
  assert.match(r.stderr, /hostlock run NAME \[OPTIONS\] -- COMMAND ARGS/);
});

test('a command that cannot run is named with what to do, exits 69 as flock(1) does, and locks nothing', () => {
  const t = tempDir('usage');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  try {
    const script = join(t.dir, 'deploy.sh');
    writeFileSync(script, 'echo ran\n');
    chmodSync(script, 0o644);
    for (const [args, message] of [
      [
        ['run', 'h1', 'nosuchcmd'],
        /^hostlock: cannot run nosuchcmd: no such command on PATH; check its spelling, install it or give its path; nothing was locked\n$/,
      ],
      [['run', 'h1', '--', 'nosuchcmd', '-x'], /^hostlock: cannot run nosuchcmd: no such command on PATH;/],
      [
        ['run', 'h1', '--', '/no/such/cmd'],
        /^hostlock: cannot run \/no\/such\/cmd: no such file; check the path; nothing was locked\n$/,
      ],
      [
        ['run', 'h1', '--', script],
        new RegExp(
          `^hostlock: cannot run ${script}: not executable; chmod \\+x it or run it with its interpreter \\(sh ${script}\\); nothing was locked\n$`,
        ),
      ],
      [['run', 'h1', '--', t.dir], /: is a directory; nothing was locked\n$/],
    ] as const) {
      const r = cli([...args], env);
      assert.equal(r.status, 69, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.doesNotMatch(r.stderr, /ENOENT|spawn/);
    }
    // Before any store is reached (none listens here), after the usage errors.
    assert.equal(cli(['run', '--backend', 'etcd://127.0.0.1:1', 'h1', 'nosuchcmd'], env).status, 69);
    usage(['run', '--backend', 'postgresql:/x', 'h1', 'nosuchcmd'], env, /two slashes after the scheme/);
    // Nothing was taken: no lock file, no history that says the command ran.
    assert.equal(existsSync(join(t.dir, 'h1.lock')), false);
    const h = cli(['history'], env);
    assert.doesNotMatch(h.stdout, /grant|release/, h.stdout);
    // hostlock flock: flock(1)'s own line and status; the lock is not left held, and
    // history does not record a hold by a command that never started.
    const file = join(t.dir, 'f');
    const f = cli(['flock', file, 'nosuchcmd'], env);
    assert.equal(f.status, 69, f.stderr);
    assert.equal(f.stderr, 'flock: failed to execute nosuchcmd: No such file or directory\n');
    assert.equal(lockedByOthers(file), false);
    assert.doesNotMatch(cli(['history'], env).stdout, /grant|release/);
  } finally {
    t.cleanup();
  }
});

test('output cut short by its reader (status | head -1) ends quietly with the status of a SIGPIPE', () => {
  const t = tempDir('usage-pipe');
  try {
    for (let i = 0; i < 2000; i++) writeFileSync(join(t.dir, `h${i}.lock`), '');
    for (let i = 0; i < 40; i++) assert.equal(cli(['run', `h${i}`, '--', 'true'], { HOSTLOCK_DIR: t.dir }).status, 0);
    for (const args of [['status'], ['status', '--json'], ['history']]) {
      const r = spawnSync('/bin/bash', ['-o', 'pipefail', '-c', `"$0" "$@" | head -c 1 >/dev/null`, CLI, ...args], {
        env: { ...process.env, HOSTLOCK_DIR: t.dir },
        encoding: 'utf8',
      });
      assert.equal(r.stderr, '', `${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.status === 0 || r.status === 141, `${args.join(' ')}: exit ${r.status}`);
    }
  } finally {
    t.cleanup();
  }
});
