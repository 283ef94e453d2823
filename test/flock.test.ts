// `hostlock flock` is util-linux flock(1)'s command line: a port of
// util-linux's own flock(2) test cases (tests/ts/flock/flock, close and
// unlock, at util-linux commit 39465c780eed56034ed1440068a2722fc3331343),
// written anew. Each scenario is a shell script run three ways: hostlock
// alone, hostlock tested while the installed flock(1) holds, and flock(1)
// tested while hostlock holds; like upstream, the output the script gathers
// is compared with the expected text, and nothing may reach stderr.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLI, cli, lockedByOthers, tempDir, until } from './rpc';

const FLOCK = '/usr/bin/flock';

interface Bench {
  dir: string;
  env: NodeJS.ProcessEnv;
  hostlock: string; // an executable that is `hostlock flock`, as a script would call it
  cleanup(): void;
}

function bench(): Bench {
  const t = tempDir('flock');
  const locks = join(t.dir, 'locks');
  mkdirSync(locks, { mode: 0o700 });
  const hostlock = join(t.dir, 'hostlock-flock');
  writeFileSync(hostlock, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} flock "$@"\n`);
  chmodSync(hostlock, 0o755);
  const whole = join(t.dir, 'hostlock');
  writeFileSync(whole, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"\n`);
  chmodSync(whole, 0o755);
  return { dir: t.dir, env: { ...process.env, HOSTLOCK_DIR: locks, SHELL: '/bin/bash' }, hostlock, cleanup: t.cleanup };
}

// Runs a scenario: HOLD takes the background lock, CMD is the flock under test.
function scenario(b: Bench, script: string, hold: string, cmd: string) {
  const r = spawnSync('bash', ['-c', script], {
    cwd: b.dir,
    env: { ...b.env, OUT: b.dir, HOLD: hold, CMD: cmd },
    encoding: 'utf8',
    timeout: 60000,
  });
  assert.equal(r.status, 0, `the scenario itself failed: ${r.stderr}`);
  const read = (f: string) => readFileSync(join(b.dir, f), 'utf8');
  return { read, stderr: r.stderr };
}

const WAYS = [
  { way: 'hostlock flock alone', hold: 'hostlock', cmd: 'hostlock' },
  { way: 'hostlock flock while flock(1) holds', hold: 'flock', cmd: 'hostlock' },
  { way: 'flock(1) while hostlock flock holds', hold: 'hostlock', cmd: 'flock' },
] as const;

// tests/ts/flock/flock: a shared lock held for 3 s in the background, and
// each case run against it. Every case appends to its own output file.
const FLOCK_CASES = String.raw`
set -u
LOCK="$OUT/lockfile"
do_lock() { # opts expected-rc message subtest
  $CMD $1 "$LOCK" echo "$3" >>"$OUT/$4.out" 2>>"$OUT/$4.err"
  rc=$?
  if [ "$rc" = "$2" ]; then echo Success >>"$OUT/$4.out"; else echo "Failed [rc=$rc]" >>"$OUT/$4.out"; fi
}
START=$(date +%s)
$HOLD --shared "$LOCK" bash -c "echo 'API: flock(2)'; echo Locking; sleep 3; echo Unlocking" >>"$OUT/general.out" 2>&1 &
pid=$!
timeout 5s bash -c "while ! pgrep -P $pid >/dev/null; do sleep 0.1; done" || { echo "no child of the holder"; exit 1; }

do_lock "--nonblocking --conflict-exit-code 123" 123 "You will never see this!" non-block
do_lock "--no-fork --nonblocking --conflict-exit-code 123" 123 "You will never see this!" no-fork
do_lock "--shared" 0 "Have shared lock" shared
do_lock "--nb --exclusive --conflict-exit-code 123" 123 "You will never see this!" exclusive

cd "$OUT" || exit 1
exec 4<>"$LOCK"
$CMD --nonblocking --exclusive --conflict-exit-code 123 4 >>"$OUT/fd.out" 2>>"$OUT/fd.err"
rc=$?
if [ "$rc" = 123 ]; then echo Success >>"$OUT/fd.out"; else echo "Failed [rc=$rc]" >>"$OUT/fd.out"; fi
[ -f 4 ] && echo "fd file should not exist" >>"$OUT/fd.out"
exec 4<&-

do_lock "--timeout 5 --conflict-exit-code 5" 0 "After timeout." timeout
END=$(date +%s)
DIFF=$((END - START))
if [ $DIFF -lt 3 ]; then echo "general lock failed [$DIFF sec]"; elif [ $DIFF -gt 5 ]; then echo "wait too long [$DIFF sec]"; else echo success; fi >"$OUT/time-check.out"
wait
echo Unlocked >>"$OUT/general.out"
`;

const FLOCK_EXPECTED: Record<string, string> = {
  general: 'API: flock(2)\nLocking\nUnlocking\nUnlocked\n',
  'non-block': 'Success\n',
  'no-fork': 'Success\n',
  shared: 'Have shared lock\nSuccess\n',
  exclusive: 'Success\n',
  fd: 'Success\n',
  timeout: 'After timeout.\nSuccess\n',
  'time-check': 'success\n',
};

for (const { way, hold, cmd } of WAYS) {
  test(`flock(1)'s cases (non-block, no-fork, shared, exclusive, fd, timeout, time-check): ${way}`, () => {
    const b = bench();
    const tool = (t: string) => (t === 'hostlock' ? b.hostlock : FLOCK);
    const r = scenario(b, FLOCK_CASES, tool(hold), tool(cmd));
    for (const [name, want] of Object.entries(FLOCK_EXPECTED)) {
      assert.equal(r.read(`${name}.out`), want, `${name}: output`);
      if (name !== 'general' && name !== 'time-check') assert.equal(r.read(`${name}.err`), '', `${name}: stderr`);
    }
    b.cleanup();
  });
}

// tests/ts/flock/close: with --close the command does not get the locked
// descriptor (a flock on it inside fails EBADF: 65); without, it shares it.
const CLOSE_CASES = String.raw`
exec 10<>"$OUT/lock"
$HOLD --exclusive --close --fd 10 --command "$CMD 10 >>$OUT/close.out 2>>$OUT/close.err" >>"$OUT/close.out" 2>>"$OUT/close.err"
echo "exit code: $?" >>"$OUT/close.out"
$HOLD --exclusive --fd 10 --command "$CMD 10 >>$OUT/close.out 2>>$OUT/close.err" >>"$OUT/close.out" 2>>"$OUT/close.err"
echo "exit code: $?" >>"$OUT/close.out"
sed -i -e 's@Bad file descriptor@EBADF@' "$OUT/close.out" "$OUT/close.err"
`;

// tests/ts/flock/unlock: -u on a descriptor drops its lock; -w 0 is -n.
const UNLOCK_CASES = String.raw`
exec 10<>"$OUT/lock"
{
  $HOLD --exclusive --nonblock --verbose 10
  $CMD --unlock 10
  $HOLD --exclusive --wait 0 --verbose "$OUT/lock" true
} >>"$OUT/unlock.out" 2>>"$OUT/unlock.err"
sed -i -E 's@(flock.*took) [0-9]+\.[0-9]+ (seconds$)@\1 <n> \2@g' "$OUT/unlock.out"
`;

// The installed flock(1) may predate --fd: it is tested here in the descriptor form.
for (const { way, inner } of [
  { way: 'hostlock flock alone', inner: 'hostlock --exclusive --nonblock' },
  { way: 'flock(1) inside hostlock flock', inner: 'flock --exclusive --nonblock' },
]) {
  test(`--close and --fd (close): ${way}`, () => {
    const b = bench();
    const r = scenario(
      b,
      CLOSE_CASES,
      b.hostlock,
      inner.replace(/^(hostlock|flock)/, (t) => (t === 'flock' ? FLOCK : b.hostlock)),
    );
    assert.equal(r.read('close.out'), 'exit code: 65\nexit code: 0\n');
    assert.equal(r.read('close.err'), 'flock: 10: EBADF\n');
    b.cleanup();
  });
}

for (const { way, hold, cmd } of WAYS) {
  test(`--unlock on a descriptor, --wait 0 (unlock): ${way}`, () => {
    const b = bench();
    const tool = (t: string) => (t === 'hostlock' ? b.hostlock : FLOCK);
    const r = scenario(b, UNLOCK_CASES, tool(hold), tool(cmd));
    assert.equal(
      r.read('unlock.out'),
      'flock: getting lock took <n> seconds\nflock: getting lock took <n> seconds\nflock: executing true\n',
    );
    assert.equal(r.read('unlock.err'), '');
    b.cleanup();
  });
}

// What flock(1) answers to a command line, hostlock flock answers: status and stderr.
test("usage errors, exit statuses and messages are flock(1)'s", () => {
  const b = bench();
  const f = join(b.dir, 'f.lock');
  const cases: string[][] = [
    [],
    [f],
    ['-n'],
    ['--bogus', f, 'true'],
    ['-q', f, 'true'],
    ['-w'],
    ['-w', 'abc', f, 'true'],
    ['-E', '300', f, 'true'],
    ['-E', 'x', f, 'true'],
    ['-F', '-o', f, 'true'],
    [f, '-c'],
    [f, '-c', 'true', 'extra'],
    ['notanumber'],
    ['--nonblock=1', f, 'true'],
    [join(b.dir, 'no', 'such', 'dir', 'x.lock'), 'true'],
    ['99'],
    [f, 'sh', '-c', 'exit 7'],
    ['-c', 'true'],
    [f, '-c', 'exit 3'],
    [f, join(b.dir, 'not-a-command')],
    [f, b.dir],
    ['--nonb', '-E', '0', f, 'true'],
    ['-nsx', f, 'true'],
    ['-w0', f, 'true'],
    ['-w', '-1', f, 'true'],
    ['-w', '1e-7', f, 'true'],
    ['--n', f, 'true'],
    ['-cn', f, 'true'],
    ['--command', 'true'],
    ['--shared=x', f, 'true'],
    ['--', f, 'true'],
    ['-E', '-1', f, 'true'],
  ];
  for (const args of cases) {
    // By name, as a script calls it: getopt's messages start with argv[0].
    const theirs = spawnSync('flock', args, { env: b.env, encoding: 'utf8' });
    const ours = spawnSync(b.hostlock, args, { env: b.env, encoding: 'utf8' });
    const what = `flock ${args.join(' ')}`;
    assert.equal(ours.status, theirs.status, `${what}: exit status (stderr: ${ours.stderr})`);
    assert.equal(
      ours.stderr,
      theirs.stderr.replace("Try 'flock --help'", "Try 'hostlock flock --help'"),
      `${what}: stderr`,
    );
    assert.equal(ours.stdout, theirs.stdout, `${what}: stdout`);
  }
  b.cleanup();
});

test('lock files are created as flock(1) creates them; directories and read-only files lock read-only', () => {
  const b = bench();
  const run = (args: string[], umask: string) =>
    spawnSync('sh', ['-c', `umask ${umask}; exec "$@"`, 'sh', ...args], { env: b.env, encoding: 'utf8' });
  for (const [tool, name] of [
    [FLOCK, 'theirs.lock'],
    [b.hostlock, 'ours.lock'],
  ] as const) {
    assert.equal(run([tool, join(b.dir, name), 'true'], '022').status, 0);
  }
  const mode = (n: string) => statSync(join(b.dir, n)).mode & 0o7777;
  assert.equal(mode('ours.lock'), mode('theirs.lock'));
  assert.equal(mode('ours.lock'), 0o644);
  // A directory, and a file nobody may write (a root test still needs no write bit).
  const ro = join(b.dir, 'ro.lock');
  writeFileSync(ro, '');
  chmodSync(ro, 0o444);
  for (const target of [b.dir, ro]) {
    const r = spawnSync(b.hostlock, [target, 'sh', '-c', `${FLOCK} -n ${target} true; echo probe=$?`], {
      env: b.env,
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'probe=1\n', `${target} was not locked`);
    assert.equal(r.stderr, '');
  }
  b.cleanup();
});

test('hostlock status shows the holder of a file locked by path or by a shell descriptor; HOSTLOCK_TOKEN grows', async () => {
  const b = bench();
  const lock = join(b.dir, 'backup.lock');
  const tokens = [1, 2].map(() =>
    spawnSync(b.hostlock, [lock, 'sh', '-c', 'echo $HOSTLOCK_TOKEN'], { env: b.env, encoding: 'utf8' }).stdout.trim(),
  );
  assert.deepEqual(tokens, ['1', '2']);
  // Its own process group: like flock(1)'s, the command keeps the lock if only hostlock is killed.
  const holder = spawn(b.hostlock, [lock, 'sleep', '30'], { env: b.env, stdio: 'ignore', detached: true });
  await until(() => lockedByOthers(lock));
  const s = cli(['status'], { HOSTLOCK_DIR: b.env.HOSTLOCK_DIR });
  assert.equal(s.status, 0);
  assert.match(s.stdout, new RegExp(`${lock}\\s+exclusive\\s+\\[sleep 30\\] \\S+ pid ${holder.pid}`));
  process.kill(-holder.pid!, 'SIGTERM');
  await until(() => !lockedByOthers(lock));
  // The descriptor form: the shell keeps the lock, and the record, after hostlock exits.
  const sh = spawnSync(
    'bash',
    ['-c', `exec 9>"${lock}"; "$HL" -s 9 || exit 9; "$HLS" status; "$HL" -u 9; "$HLS" status`],
    {
      env: { ...b.env, HL: b.hostlock, HLS: join(b.dir, 'hostlock') },
      encoding: 'utf8',
    },
  );
  assert.equal(sh.status, 0, sh.stderr);
  const [held, after] = sh.stdout.split(/(?=lock directory)/);
  assert.match(held!, new RegExp(`${lock}\\s+shared\\s+\\[bash -c`));
  assert.doesNotMatch(after!, /backup\.lock/);
  const h = cli(['history', lock], { HOSTLOCK_DIR: b.env.HOSTLOCK_DIR });
  assert.match(h.stdout, /grant .*token 1[\s\S]*release[\s\S]*grant/);
  b.cleanup();
});
