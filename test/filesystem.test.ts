// The file system and other users: planted symlinks are refused and their
// targets untouched; names cannot leave the lock directory; unusable
// directories (missing, not a directory, unwritable, read-only, full) fail
// with -32001 and a sentence saying what to do; the default directory is
// 0700 with 0600 files; a setgid group directory lets a team share locks
// (0660 files, records every member can write and read); another user cannot
// reach a run's agent. Parts that need root (other users, mounts) are skipped
// with the reason when not root.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { kernelInodeKey } from '../src/sys/proc';
import { startAgent } from './agents';
import { CLI, RpcClient, lockedByOthers, sleep, startServe, tempDir, until, type Helper } from './rpc';

const ROOT = process.getuid?.() === 0;
const NOBODY = { uid: 65534, gid: 65534 };
const DAEMON = { uid: 1, gid: 1 };
const USERS_GID = 100;
const needRoot = ROOT ? {} : { skip: 'needs root (other users, mounts)' };

interface User {
  uid: number;
  gid: number;
  groups?: number[];
}

// `hostlock serve` as another user (setpriv), with a given umask.
function serveAs(user: User | null, env: NodeJS.ProcessEnv, umask = '022'): Helper {
  const { node, cli } = user ? runnableByOthers() : { node: process.execPath, cli: CLI };
  const cmd = ['sh', '-c', `umask ${umask}; exec "$0" "$@"`, node, cli, 'serve'];
  const full = user
    ? [
        'setpriv',
        '--reuid',
        String(user.uid),
        '--regid',
        String(user.gid),
        user.groups ? `--groups=${user.groups.join(',')}` : '--clear-groups',
        ...cmd,
      ]
    : cmd;
  const proc: ChildProcess = spawn(full[0]!, full.slice(1), {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  proc.stderr!.on('data', (c) => (err += c));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    proc,
    rpc: new RpcClient(proc.stdin!, proc.stdout!),
    stderr: () => err,
    exited,
    close: () => {
      proc.stdin!.end();
      return exited;
    },
  };
}

// Other users run a copy of what they need — dist/, the fs-ext binding beside
// it, and Node itself where they cannot run this one (a Node under the
// checkout) — in a fresh directory under the temp directory, since the
// checkout may be one they cannot reach (a clone under /root or in a 0700
// mktemp directory). Removed when the file's tests end.
interface ForOthers {
  node: string;
  cli: string;
}
let forOthers: ForOthers | undefined;
let forOthersDir: string | undefined;
after(() => {
  if (forOthersDir) rmSync(forOthersDir, { recursive: true, force: true });
});

// Whether `user` may run `sh -c script` on `files` successfully.
function asUser(user: User, script: string, files: string[]): boolean {
  const ids = ['--reuid', String(user.uid), '--regid', String(user.gid), '--clear-groups'];
  return spawnSync('setpriv', [...ids, 'sh', '-c', script, 'sh', ...files], { timeout: 10000 }).status === 0;
}

function runnableByOthers(): ForOthers {
  if (forOthers) return forOthers;
  forOthersDir = mkdtempSync(join(tmpdir(), 'hl-helper-'));
  const base = forOthersDir;
  cpSync(dirname(CLI), join(base, 'dist'), { recursive: true });
  cpSync(dirname(require.resolve('fs-ext')), join(base, 'node_modules', 'fs-ext'), { recursive: true });
  let node = process.execPath;
  if (!asUser(NOBODY, 'test -x "$1"', [node])) {
    node = join(base, 'bin', 'node');
    mkdirSync(dirname(node));
    copyFileSync(process.execPath, node);
  }
  spawnSync('chmod', ['-R', 'a+rX', base]);
  const cli = join(base, 'dist', 'cli.js');
  if (!asUser(NOBODY, 'test -x "$1" && test -r "$2"', [node, cli]))
    throw new Error(
      `uid ${NOBODY.uid} cannot reach ${base}, where the tests copy the helper for other users: ` +
        `a directory above it is not traversable by them; point TMPDIR at one that is (e.g. TMPDIR=/tmp)`,
    );
  forOthers = { node, cli };
  return forOthers;
}

async function rejects(p: Promise<unknown>, code: number, message: RegExp) {
  await assert.rejects(p, (e: any) => {
    assert.equal(e.code, code, `code ${e.code}: ${e.message}`);
    assert.match(e.message, message);
    return true;
  });
}

const mode = (p: string) => (lstatSync(p).mode & 0o7777).toString(8);

describe('planted symlinks and special files', () => {
  const t = tempDir('fs');
  let h: Helper;
  const target = join(t.dir, 'target');
  before(() => {
    writeFileSync(target, 'secret');
    chmodSync(target, 0o644);
    h = startServe({ HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') });
  });
  after(async () => {
    await h.close();
    t.cleanup();
  });

  test('a symlink at a named lock or a lock path is refused (-32002); the target is untouched', async () => {
    symlinkSync(target, join(t.dir, 'evil.lock'));
    await rejects(h.rpc.call('acquire', { name: 'evil' }), -32002, /symbolic link/);
    await rejects(h.rpc.call('try', { path: join(t.dir, 'evil.lock') }), -32002, /symbolic link/);
    await rejects(h.rpc.call('acquire', { name: 'evil', shared: true, timeout: 1 }), -32002, /symbolic link/);
    assert.equal(readFileSync(target, 'utf8'), 'secret');
    assert.equal(mode(target), '644');
    assert.equal(lockedByOthers(target), false, 'the target got locked');
  });

  test('a dangling symlink is refused and nothing is created where it points', async () => {
    const nowhere = join(t.dir, 'created-through-link');
    symlinkSync(nowhere, join(t.dir, 'dangling.lock'));
    await rejects(h.rpc.call('acquire', { name: 'dangling' }), -32002, /symbolic link/);
    assert.equal(existsSync(nowhere), false);
  });

  test('a FIFO or a directory at the lock path is refused at once, without hanging', async () => {
    spawnSync('mkfifo', [join(t.dir, 'fifo.lock')]);
    mkdirSync(join(t.dir, 'adir.lock'));
    const t0 = performance.now();
    await rejects(h.rpc.call('acquire', { name: 'fifo' }), -32002, /not a regular file/);
    await rejects(h.rpc.call('acquire', { name: 'adir' }), -32002, /not a regular file|directory/);
    await rejects(h.rpc.call('acquire', { path: '/dev/null' }), -32002, /not a regular file/);
    assert.ok(performance.now() - t0 < 1000);
  });

  test('a symlink planted at the turnstile costs fairness only: locks still work, the target is untouched', async () => {
    symlinkSync(target, join(t.dir, '.tsl.lock.turnstile'));
    const other = startServe({ HOSTLOCK_DIR: t.dir });
    try {
      const reader = await h.rpc.call('acquire', { name: 'tsl', shared: true });
      const writer = other.rpc.call('acquire', { name: 'tsl', timeout: 5 });
      await sleep(100);
      const reader2 = await h.rpc.call('acquire', { name: 'tsl', shared: true, timeout: 1 });
      assert.equal(reader2.acquired, true);
      await h.rpc.call('release', { handle: reader.handle });
      await h.rpc.call('release', { handle: reader2.handle });
      const w = await writer;
      assert.equal(w.acquired, true);
      await other.rpc.call('release', { handle: w.handle });
    } finally {
      await other.close();
    }
    assert.equal(readFileSync(target, 'utf8'), 'secret');
    assert.equal(lockedByOthers(target), false);
  });
});

describe('names stay inside the lock directory', () => {
  const t = tempDir('names');
  const dir = join(t.dir, 'locks');
  let h: Helper;
  before(() => {
    mkdirSync(dir);
    h = startServe({ HOSTLOCK_DIR: dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') });
  });
  after(async () => {
    await h.close();
    t.cleanup();
  });

  test('../, /, NUL, dots and 4 KB names each lock their own file in the directory', async () => {
    const names = [
      '../x',
      '../../etc/passwd',
      '/etc/passwd',
      'a/b',
      '.',
      '..',
      '.holders',
      'a\u0000b',
      'é',
      'x'.repeat(4096),
      'x'.repeat(4095) + 'y',
    ];
    const handles = [];
    for (const name of names) {
      const r = await h.rpc.call('acquire', { name, timeout: 1 });
      assert.equal(r.acquired, true, `${JSON.stringify(name.slice(0, 20))}: ${JSON.stringify(r).slice(0, 200)}`);
      assert.equal(join(r.path, '..'), dir, `${JSON.stringify(name.slice(0, 20))} left the directory: ${r.path}`);
      assert.ok(lockedByOthers(r.path));
      handles.push(r.handle);
    }
    assert.deepEqual(
      readdirSync(t.dir).sort(),
      ['locks', 'rt'].filter((f) => existsSync(join(t.dir, f))).sort(),
      'something was created outside',
    );
    const files = readdirSync(dir).filter((f) => !f.startsWith('.'));
    assert.equal(files.length, names.length, 'two names share a file');
    const listed = (await h.rpc.call('list', {})).locks.map((l: any) => l.name).sort();
    assert.deepEqual(listed, [...names].sort(), 'list gives the names back');
    for (const handle of handles) await h.rpc.call('release', { handle });
  });

  test('over-long or empty names, and relative or NUL paths, fail clearly (-32602)', async () => {
    await rejects(h.rpc.call('acquire', { name: 'x'.repeat(4097) }), -32602, /name/);
    await rejects(h.rpc.call('acquire', { name: '' }), -32602, /name/);
    await rejects(h.rpc.call('acquire', { path: 'relative.lock' }), -32602, /absolute/);
    await rejects(h.rpc.call('acquire', { path: join(dir, 'a\u0000b') }), -32602, /absolute|NUL/);
    await rejects(h.rpc.call('acquire', { name: 'x', dir: 'relative' }), -32602, /absolute/);
  });
});

describe('unusable lock directories fail with -32001 and say what to do', () => {
  const t = tempDir('unusable');
  let h: Helper;
  before(() => {
    chmodSync(t.dir, 0o755);
    h = startServe({ HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') });
  });
  after(async () => {
    await h.close();
    t.cleanup();
  });

  test('missing, or not a directory', async () => {
    await rejects(
      h.rpc.call('acquire', { name: 'x', dir: join(t.dir, 'missing') }),
      -32001,
      /does not exist; create it/,
    );
    writeFileSync(join(t.dir, 'file'), '');
    await rejects(h.rpc.call('acquire', { name: 'x', dir: join(t.dir, 'file') }), -32001, /not a directory/);
    await rejects(h.rpc.call('acquire', { path: join(t.dir, 'missing', 'x.lock') }), -32001, /does not exist/);
    await rejects(h.rpc.call('list', { dir: join(t.dir, 'missing') }), -32001, /does not exist/);
  });

  test('not writable by this user', needRoot, async () => {
    const ro = join(t.dir, 'rootonly');
    mkdirSync(ro, { mode: 0o755 });
    const nobody = serveAs(NOBODY, { HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt-nobody') });
    try {
      mkdirSync(join(t.dir, 'rt-nobody'), { mode: 0o700 });
      chownSync(join(t.dir, 'rt-nobody'), NOBODY.uid, NOBODY.gid);
      await rejects(nobody.rpc.call('acquire', { name: 'x', dir: ro }), -32001, /not writable/);
      writeFileSync(join(ro, 'x.lock'), '');
      chmodSync(join(ro, 'x.lock'), 0o600);
      await rejects(nobody.rpc.call('acquire', { path: join(ro, 'x.lock') }), -32001, /permission denied/);
    } finally {
      await nobody.close();
    }
  });

  test('on a read-only file system', needRoot, async (ctx) => {
    const dir = join(t.dir, 'rofs');
    mkdirSync(dir);
    writeFileSync(join(dir, 'exists.lock'), '');
    const mounted =
      spawnSync('mount', ['--bind', dir, dir]).status === 0 &&
      spawnSync('mount', ['-o', 'remount,ro,bind', dir]).status === 0;
    if (!mounted) {
      spawnSync('umount', [dir]);
      return ctx.skip('cannot remount read-only here');
    }
    try {
      await rejects(h.rpc.call('acquire', { name: 'x', dir }), -32001, /read-only/);
      await rejects(h.rpc.call('acquire', { path: join(dir, 'new.lock') }), -32001, /read-only/);
    } finally {
      spawnSync('umount', [dir]);
    }
  });

  test('a full file system: no inode left fails clearly; no block left still locks', needRoot, async (ctx) => {
    const dir = join(t.dir, 'full');
    mkdirSync(dir);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,nr_inodes=64,mode=0700', 'tmpfs', dir]).status !== 0)
      return ctx.skip('cannot mount a small tmpfs here');
    try {
      // Fill the blocks: an empty lock file needs none, a holder record does.
      spawnSync('sh', ['-c', `cat /dev/zero > ${dir}/fill 2>/dev/null`]);
      const r = await h.rpc.call('acquire', { name: 'a', dir });
      assert.equal(r.acquired, true, 'an empty lock file needs no block');
      assert.ok(lockedByOthers(join(dir, 'a.lock')));
      const s = await h.rpc.call('status', { name: 'a', dir });
      assert.equal(s.held, true, 'held, even without room for the holder record');
      await h.rpc.call('release', { handle: r.handle });
      // Use up the inodes.
      for (let i = 0; ; i++) {
        try {
          writeFileSync(join(dir, `i${i}`), '');
        } catch {
          break;
        }
      }
      await rejects(h.rpc.call('acquire', { name: 'b', dir }), -32001, /no space left/);
    } finally {
      spawnSync('umount', [dir]);
    }
  });
});

describe('modes: a private default directory, a shared team directory', () => {
  const base = `/tmp/hostlock-${NOBODY.uid}`;
  const t = tempDir('team');
  // These tests need nobody's default directory absent: one that exists (a
  // real user's, or a leftover) is moved aside for them and put back after.
  const aside = `${base}.aside-${process.pid}`;
  before(() => {
    chmodSync(t.dir, 0o755);
    if (existsSync(base)) renameSync(base, aside);
  });
  after(() => {
    rmSync(base, { recursive: true, force: true });
    if (existsSync(aside)) renameSync(aside, base);
    t.cleanup();
  });

  test('the default directory is 0700 and its files 0600, whatever the umask', needRoot, async () => {
    rmSync(base, { recursive: true, force: true });
    const env = { HOSTLOCK_DIR: '', HOSTLOCK_RUNTIME_DIR: '' };
    const a = serveAs(NOBODY, env, '000');
    const b = serveAs(NOBODY, env, '000');
    try {
      const held = await a.rpc.call('acquire', { name: 'm' });
      assert.equal(held.path, `${base}/locks/m.lock`);
      const waiting = b.rpc.call('acquire', { name: 'm', timeout: 5 }); // makes the turnstile
      await until(() => existsSync(`${base}/locks/.m.lock.turnstile`), 10_000);
      await a.rpc.call('release', { handle: held.handle });
      const got = await waiting;
      assert.equal(got.acquired, true);
      const p = await a.rpc.call('acquire', { path: `${base}/locks/by-path` }); // its record goes to the runtime directory
      for (const d of [base, `${base}/locks`, `${base}/locks/.holders`, `${base}/run`]) assert.equal(mode(d), '700', d);
      for (const f of [`${base}/locks/m.lock`, `${base}/locks/.m.lock.turnstile`, `${base}/locks/by-path`])
        assert.equal(mode(f), '600', f);
      const records = [
        ...readdirSync(`${base}/locks/.holders`).map((f) => `${base}/locks/.holders/${f}`),
        ...readdirSync(`${base}/run/holders`).map((f) => `${base}/run/holders/${f}`),
      ];
      assert.ok(records.length >= 2, 'holder records exist');
      for (const f of records) assert.equal(mode(f), '600', f);
      assert.equal(mode(`${base}/run/holders`), '700');
      await a.rpc.call('release', { handle: p.handle });
      await b.rpc.call('release', { handle: got.handle });
    } finally {
      await a.close();
      await b.close();
      rmSync(base, { recursive: true, force: true });
    }
  });

  test('a default directory squatted by another user is refused', needRoot, async () => {
    rmSync(base, { recursive: true, force: true });
    mkdirSync(base, { mode: 0o777 });
    chmodSync(base, 0o777);
    const a = serveAs(NOBODY, { HOSTLOCK_DIR: '', HOSTLOCK_RUNTIME_DIR: '' });
    try {
      await rejects(a.rpc.call('acquire', { name: 'm' }), -32001, /must be owned by uid 65534 with mode 0700/);
    } finally {
      await a.close();
      rmSync(base, { recursive: true, force: true });
    }
  });

  test(
    'a setgid group directory: 0660 files, records every member writes and reads, exclusion across users',
    needRoot,
    async () => {
      const team = join(t.dir, 'team');
      mkdirSync(team);
      chownSync(team, 0, USERS_GID);
      chmodSync(team, 0o2770);
      const alice = { ...NOBODY, groups: [USERS_GID] };
      const bob = { ...DAEMON, groups: [USERS_GID] };
      const rt = (u: User) => {
        const d = join(t.dir, `rt-${u.uid}`);
        mkdirSync(d, { mode: 0o700, recursive: true });
        chownSync(d, u.uid, u.gid);
        return d;
      };
      const a = serveAs(alice, { HOSTLOCK_DIR: team, HOSTLOCK_RUNTIME_DIR: rt(alice) });
      const b = serveAs(bob, { HOSTLOCK_DIR: team, HOSTLOCK_RUNTIME_DIR: rt(bob) });
      try {
        const x = await a.rpc.call('acquire', { name: 'x', owner: { playbook: 'alice.yml' } });
        assert.equal(x.acquired, true);
        const tried = await b.rpc.call('try', { name: 'x' });
        assert.equal(tried.acquired, false, 'bob got what alice holds');
        assert.equal(
          tried.holders[0].playbook,
          'alice.yml',
          `bob sees alice's record: ${JSON.stringify(tried.holders)}`,
        );
        const waiting = b.rpc.call('block', { handle: tried.handle, timeout: 5 }); // bob makes the turnstile
        await until(() => existsSync(join(team, '.x.lock.turnstile')), 10_000);
        const y = await b.rpc.call('acquire', { name: 'y', owner: { playbook: 'bob.yml' } });
        const sy = await a.rpc.call('status', { name: 'y' });
        assert.equal(
          sy.holders[0]?.playbook,
          'bob.yml',
          `alice sees bob's record, not a foreign lock: ${JSON.stringify(sy.holders)}`,
        );
        await a.rpc.call('release', { handle: x.handle });
        const bx = await waiting;
        assert.equal(bx.acquired, true, 'bob locks the file alice created');
        for (const f of ['x.lock', 'y.lock', '.x.lock.turnstile']) {
          const st = statSync(join(team, f));
          assert.equal((st.mode & 0o777).toString(8), '660', f);
          assert.equal(st.gid, USERS_GID, f);
        }
        const holders = join(team, '.holders');
        const hs = statSync(holders);
        assert.equal(hs.gid, USERS_GID);
        assert.equal(
          (hs.mode & 0o2770).toString(8),
          '2770',
          `.holders is ${(hs.mode & 0o7777).toString(8)}: members must all write records`,
        );
        for (const f of readdirSync(holders)) assert.equal(mode(join(holders, f)), '660', f);
        await b.rpc.call('release', { handle: bx.handle });
        await b.rpc.call('release', { handle: y.handle });
      } finally {
        await a.close();
        await b.close();
      }
    },
  );

  test("a symlink planted in the team's record directory cannot make a member write elsewhere", needRoot, async () => {
    const team = join(t.dir, 'team2');
    mkdirSync(team);
    chownSync(team, 0, USERS_GID);
    chmodSync(team, 0o2770);
    const holders = join(team, '.holders');
    mkdirSync(holders);
    chownSync(holders, 0, USERS_GID);
    chmodSync(holders, 0o2770);
    writeFileSync(join(team, 'v.lock'), '');
    chmodSync(join(team, 'v.lock'), 0o660);
    const victim = join(t.dir, 'victim');
    writeFileSync(victim, 'precious');
    chownSync(victim, DAEMON.uid, DAEMON.gid);
    const bob = { ...DAEMON, groups: [USERS_GID] };
    const rtb = join(t.dir, 'rt-bob2');
    mkdirSync(rtb, { mode: 0o700 });
    chownSync(rtb, bob.uid, bob.gid);
    const b = serveAs(bob, { HOSTLOCK_DIR: team, HOSTLOCK_RUNTIME_DIR: rtb });
    try {
      await b.rpc.call('hello', {});
      // Another member predicts the temporary name bob's helper writes its record to.
      const st = statSync(join(team, 'v.lock'), { bigint: true });
      const key = kernelInodeKey(st.dev, st.ino).replace(/:/g, '_');
      const pid = b.proc.pid!; // setpriv and sh exec: the helper keeps this PID
      for (let seq = 1; seq <= 3; seq++) symlinkSync(victim, join(holders, `.${key}.${pid}.${seq}.json.${pid}.tmp`));
      const r = await b.rpc.call('acquire', { name: 'v' });
      assert.equal(r.acquired, true);
      await b.rpc.call('release', { handle: r.handle });
    } finally {
      await b.close();
    }
    assert.equal(readFileSync(victim, 'utf8'), 'precious', 'a member wrote its record through a planted symlink');
  });
});

describe('another user and a run agent', () => {
  const t = tempDir('agentperm');
  before(() => chmodSync(t.dir, 0o755));
  after(() => t.cleanup());

  test('the runtime directory is 0700, the socket 0600, and another user cannot connect', needRoot, async () => {
    const rt = join(t.dir, 'rt');
    const agent = await startAgent({ HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: rt });
    try {
      assert.equal(mode(rt), '700');
      assert.equal(mode(agent.socket), '600');
      const { rpc, sock } = await agent.connect();
      await rpc.call('acquire', { name: 'held', scope: 'run', member: 'web1' });
      const probe = spawnSync(
        'setpriv',
        [
          '--reuid',
          String(NOBODY.uid),
          '--regid',
          String(NOBODY.gid),
          '--clear-groups',
          runnableByOthers().node,
          '-e',
          `
          const s = require('net').connect(${JSON.stringify(agent.socket)});
          s.on('connect', () => { s.write('{"jsonrpc":"2.0","id":1,"method":"release","params":{"name":"held","scope":"run","member":"web1"}}\\n'); s.on('data', (d) => { process.stdout.write(String(d)); process.exit(0); }); });
          s.on('error', (e) => { process.stdout.write(e.code); process.exit(3); });`,
        ],
        { encoding: 'utf8', timeout: 10000 },
      );
      assert.equal(probe.status, 3, `another user reached the agent: ${probe.stdout}`);
      assert.equal(probe.stdout, 'EACCES');
      assert.ok(lockedByOthers(join(t.dir, 'held.lock')), 'the run hold is still held');
      sock.destroy();
    } finally {
      await agent.stop();
    }
  });

  test('an agent refuses a runtime directory others can write to', needRoot, () => {
    const rt = join(t.dir, 'open-rt');
    mkdirSync(rt, { mode: 0o777 });
    chmodSync(rt, 0o777);
    const owner = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const r = spawnSync(process.execPath, [CLI, 'agent', '--owner-pid', String(owner.pid)], {
        env: { ...process.env, HOSTLOCK_RUNTIME_DIR: rt },
        encoding: 'utf8',
        timeout: 10000,
      });
      assert.notEqual(r.status, 0, 'the agent started in a world-writable directory');
      assert.match(r.stderr, /mode 0700/);
      assert.equal(readdirSync(rt).length, 0, 'it left files there');
    } finally {
      owner.kill('SIGKILL');
    }
  });
});
