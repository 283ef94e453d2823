// A run's holds last until every process of the run is gone, like flock(1)'s
// inherited descriptor: the agent's owner here is a Python stand-in for
// ansible-playbook that forks a worker the way ansible-core does (fork, then
// setsid), is SIGKILLed, and leaves the worker's work running. A Python
// flock(2) waiter records the instant it gets the lock; the work records the
// instant it ends: the lock must come after, and soon after.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { processStartTime } from '../src/sys/proc';
import { CLI, cli, connectSocket, FIXTURES, sleep, tempDir, until } from './rpc';

// The owner (fixtures/run-owner.py) and the flock(2) waiter (fixtures/flock.py wait).
const OWNER = join(FIXTURES, 'run-owner.py');
const FLOCK = join(FIXTURES, 'flock.py');

// The interpreter itself, not a wrapper (pyenv's shim) that execs it after the agent looked.
const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();

describe('run lifetime: the holds outlive ansible-playbook while its workers run', () => {
  const t = tempDir('life');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt') };
  const procs: ChildProcess[] = [];
  const pidFiles: string[] = [];
  after(() => {
    for (const p of procs) p.kill('SIGKILL');
    for (const f of pidFiles) {
      try {
        process.kill(Number(readFileSync(f, 'utf8')), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    t.cleanup();
  });

  // Starts the owner and its agent, takes a run hold on `name`, and a waiter behind it.
  async function setUp(name: string, mode: string, secs: number) {
    const end = join(t.dir, `${name}.end`);
    const daemon = join(t.dir, `${name}.daemon`);
    pidFiles.push(daemon);
    const owner = spawn(PYTHON, [OWNER, mode, end, String(secs), daemon], {
      stdio: ['pipe', 'ignore', 'inherit'],
    });
    procs.push(owner);
    const agent = spawn(process.execPath, [CLI, 'agent', '--owner-pid', String(owner.pid)], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', process.env.HOSTLOCK_TEST_AGENT_LOG ? 'inherit' : 'ignore'],
      detached: true,
    });
    procs.push(agent);
    const sock = cli(['agent', '--owner-pid', String(owner.pid), '--print-socket'], env).stdout.trim();
    let c: Awaited<ReturnType<typeof connectSocket>> | undefined;
    await until(
      async () => {
        try {
          c = await connectSocket(sock);
          return true;
        } catch {
          return false;
        }
      },
      10000,
      20,
    );
    const run = `${owner.pid}-${processStartTime(owner.pid!)}`;
    await c!.rpc.call('acquire', { name, scope: 'run', member: 'h1', owner: { pid: owner.pid, run, host: 'h1' } });
    c!.sock.destroy(); // run holds outlive the connection
    const waiter = spawn(PYTHON, [FLOCK, 'wait', join(t.dir, `${name}.lock`)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    procs.push(waiter);
    let got = '';
    waiter.stdout.on('data', (b) => (got += b));
    const acquired = new Promise<bigint>((res) => waiter.on('exit', () => res(BigInt(got.trim() || '0'))));
    const agentExit = new Promise((res) => agent.on('exit', res));
    return { owner, end, daemon, acquired, agentExit, sock };
  }

  async function expectHeldUntilEnd(s: Awaited<ReturnType<typeof setUp>>, label: string) {
    const got = await s.acquired;
    assert.ok(existsSync(s.end), `${label}: the waiter got the lock while the killed run's work still ran`);
    const endNs = BigInt(readFileSync(s.end, 'utf8'));
    const ms = Number(got - endNs) / 1e6;
    process.stderr.write(`# ${label}: lock free ${ms.toFixed(1)} ms after the run's last process ended\n`);
    assert.ok(ms >= 0 && ms < 1000, `${label}: freed ${ms} ms after the end`);
    await s.agentExit;
    assert.equal(existsSync(s.sock), false, 'socket left behind');
    // The daemon that left the run's session still runs, and did not keep the hold.
    assert.ok(existsSync(`/proc/${readFileSync(s.daemon, 'utf8')}`), 'the daemon should still run');
  }

  test(
    'SIGKILL of the owner while its worker runs: the hold stays until the work ends, not for the daemon',
    { timeout: 60000 },
    async () => {
      const s = await setUp('learned', 'learned', 6);
      s.owner.stdin.write('go\n');
      await until(() => existsSync(s.daemon), 20000, 10);
      await sleep(700); // the agent has looked at the owner's children by now
      s.owner.kill('SIGKILL');
      await sleep(200);
      const st = JSON.parse(cli(['status', '--json'], env).stdout);
      assert.equal(existsSync(s.end), false, 'the machine is too slow for this test: the work ended before status ran');
      const held = st.locks.find((l: { name: string }) => l.name === 'learned');
      assert.equal(held.held, true, 'released while the work runs');
      assert.equal(held.holders[0].run_ended, true, `status must say the run ended: ${JSON.stringify(held)}`);
      assert.match(cli(['status'], env).stdout, /run ended/);
      await expectHeldUntilEnd(s, 'learned worker');
    },
  );

  test(
    'a worker forked in the last instant before the owner is SIGKILLed keeps the hold too',
    { timeout: 60000 },
    async () => {
      const s = await setUp('instant', 'last-instant', 1.5);
      s.owner.stdin.write('go\n'); // forks, and the owner kills itself at once
      await expectHeldUntilEnd(s, 'last-instant worker');
    },
  );

  test(
    'an owner that exits normally while its worker runs: released as soon as the work ends',
    { timeout: 60000 },
    async () => {
      const s = await setUp('normal', 'exit', 0.6);
      s.owner.stdin.write('go\n'); // the work (0.6 s) outlives the owner (0.2 s)
      await expectHeldUntilEnd(s, 'normal end');
    },
  );
});
