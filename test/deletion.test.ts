// Deleting lock files. A cleaner that deletes the file while it holds the lock
// is safe: hostlock re-checks after every flock that the path still names the
// inode it locked, so nobody is left holding an orphan while a newcomer locks
// a fresh file. A file deleted or replaced under a holder by someone who does
// not hold it breaks exclusion for every flock scheme; the holder cannot
// prevent that, but it must say so: a warning in its log and `lost: true` in
// `status`, also when another helper asks.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startAgent, type TestAgent } from './agents';
import { checkJournal } from './journal';
import { CLI, cli, FIXTURES, lockedByOthers, sleep, startServe, tempDir, until, type Helper } from './rpc';

const WORKER_JS = join(__dirname, 'fixtures', 'stress-worker.js');

// Python cleaner: locks, checks it locked the file the path names, unlinks while holding.
function exitCode(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<number | null> {
  return new Promise((r) =>
    spawn(cmd, args, { stdio: 'ignore', env: env && { ...process.env, ...env } }).on('exit', r),
  );
}

describe('a cleaner deleting lock files while holding them', () => {
  test('never two holders: serve and agent clients contend while flock(1), fcntl and hostlock run cleaners delete', async () => {
    const t = tempDir('del');
    const dir = t.dir;
    const path = join(dir, 'ctr.lock');
    const counter = join(dir, 'counter');
    const journal = join(dir, 'journal');
    writeFileSync(counter, '0');
    writeFileSync(journal, '');
    const env = { HOSTLOCK_DIR: dir, HOSTLOCK_RUNTIME_DIR: join(dir, 'rt') };
    const agent = await startAgent(env);
    const SECTIONS = 100;
    const workers = ['serve', 'serve', 'agent', 'agent'].map(
      (kind) =>
        new Promise<number | null>((r) => {
          spawn(process.execPath, [WORKER_JS, kind, dir, counter, journal, String(SECTIONS), '0', agent.socket], {
            env: { ...process.env, ...env },
            stdio: ['ignore', 'ignore', 'inherit'],
          }).on('exit', r);
        }),
    );
    let cleaning = true;
    const deletions = { flock: 0, python: 0, hostlock: 0 };
    // One cleaner at a time: each re-checks or holds what it deletes; two
    // naive cleaners (flock(1) does not re-check) could delete each other's.
    const cleaner = (async () => {
      for (let i = 0; cleaning; i++) {
        if (i % 4 === 3) {
          if ((await exitCode(process.execPath, [CLI, 'run', 'ctr', '--', 'rm', '-f', path], env)) === 0)
            deletions.hostlock++;
        } else if (i % 2 === 0) {
          if ((await exitCode('flock', ['-x', path, 'rm', '-f', path])) === 0) deletions.flock++;
        } else if ((await exitCode('python3', [join(FIXTURES, 'flock.py'), 'clean', path])) === 0) {
          deletions.python++;
        }
        await sleep(2);
      }
    })();
    try {
      const codes = await Promise.all(workers);
      assert.deepEqual(codes, [0, 0, 0, 0], 'a worker failed');
    } finally {
      cleaning = false;
      await cleaner;
      await agent.stop();
    }
    const v = checkJournal(readFileSync(journal, 'utf8'), Number(readFileSync(counter, 'utf8')));
    assert.equal(v.completed, 4 * SECTIONS);
    process.stderr.write(`# deletions while held: ${JSON.stringify(deletions)}\n`);
    // Each kind of cleaner must have deleted while held at least once; how often depends on the machine's load.
    assert.ok(deletions.flock > 0 && deletions.python > 0 && deletions.hostlock > 0, JSON.stringify(deletions));
    assert.ok(deletions.flock + deletions.python + deletions.hostlock >= 6, JSON.stringify(deletions));
    t.cleanup();
  });
});

describe('a lock file deleted or replaced under its holder', () => {
  const t = tempDir('lost');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt'), LOG_LEVEL: 'warn' };
  let h: Helper;
  let other: Helper;
  let agent: TestAgent;
  before(async () => {
    h = startServe(env);
    other = startServe(env);
    agent = await startAgent(env, 'pipe');
  });
  after(async () => {
    await h.close();
    await other.close();
    await agent.stop();
    t.cleanup();
  });

  async function expectLost(ask: Helper['rpc'], name: string, log: () => string) {
    // The holder checks every 2 s.
    await until(
      () => /was deleted or replaced while held/.test(log()) && log().includes(join(t.dir, `${name}.lock`)),
      5000,
      50,
    );
    const own = await ask.call('status', { name });
    assert.equal(own.lost, true, `the holder's status: ${JSON.stringify(own)}`);
    const seen = await other.rpc.call('status', { name });
    assert.equal(seen.lost, true, `another helper's status: ${JSON.stringify(seen)}`);
    assert.ok(
      seen.holders.some((x: any) => x.lost === true),
      `another helper's status names the lost holder: ${JSON.stringify(seen)}`,
    );
  }

  test('deleted: the holder warns in its log, status says lost', async () => {
    const a = await h.rpc.call('acquire', { name: 'gone' });
    unlinkSync(join(t.dir, 'gone.lock'));
    await expectLost(h.rpc, 'gone', h.stderr);
    const listed = JSON.parse(cli(['status', '--json'], env).stdout).locks.find((l: any) => l.name === 'gone');
    assert.ok(
      listed?.holders.some((x: any) => x.lost),
      `hostlock status lists the deleted lock's lost holder: ${JSON.stringify(listed)}`,
    );
    // A newcomer now locks a fresh file: exactly the hazard we warned of.
    const b = await other.rpc.call('try', { name: 'gone' });
    assert.equal(b.acquired, true);
    await other.rpc.call('release', { handle: b.handle });
    // Its holder was told, and its release says it was lost.
    const told = h.rpc.notifications.find((m) => m.method === 'lost' && m.params.handle === a.handle);
    assert.match(told?.params.reason ?? '', /was deleted or replaced while held/);
    const rel = await h.rpc.call('release', { handle: a.handle });
    assert.deepEqual([rel.released, rel.lost], [false, true]);
  });

  test('replaced by rename: the holder warns, status and `hostlock status` say lost', async () => {
    const a = await h.rpc.call('acquire', { name: 'swapped' });
    const tmp = join(t.dir, 'tmp-swap');
    writeFileSync(tmp, '');
    renameSync(tmp, join(t.dir, 'swapped.lock'));
    await expectLost(h.rpc, 'swapped', h.stderr);
    const r = cli(['status', '--json'], env);
    assert.equal(r.status, 0, r.stderr);
    const lock = JSON.parse(r.stdout).locks.find((l: any) => l.name === 'swapped');
    assert.ok(
      lock?.holders.some((x: any) => x.lost),
      `hostlock status: ${JSON.stringify(lock)}`,
    );
    assert.equal(lockedByOthers(join(t.dir, 'swapped.lock')), false, 'the new file is free');
    await h.rpc.call('release', { handle: a.handle });
  });

  test("the agent says so too; a run hold lost this way fails the member's next task", async () => {
    const { rpc, sock } = await agent.connect();
    let log = '';
    agent.agent.stderr!.on('data', (c) => (log += c));
    await rpc.call('acquire', { name: 'ag1' });
    await rpc.call('acquire', { name: 'ag2', scope: 'run', member: 'web1' });
    unlinkSync(join(t.dir, 'ag1.lock'));
    unlinkSync(join(t.dir, 'ag2.lock'));
    await expectLost(rpc, 'ag1', () => log);
    // The run hold is dropped at once and reported to the member that held it, once.
    await until(() => /lock 'ag2' lost under this run/.test(log), 5000, 50);
    const lost = (await rpc.call('hello', { member: 'web1' })).lost;
    assert.deepEqual(
      lost.map((l: any) => l.name),
      ['ag2'],
    );
    assert.deepEqual((await rpc.call('hello', { member: 'web1' })).lost, []);
    assert.equal((await rpc.call('release', { name: 'ag2', scope: 'run', member: 'web1' })).released, false);
    sock.destroy();
  });
});
