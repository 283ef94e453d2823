// Goal 5: 500 connections of one agent wait for one lock, first held by a
// plain Python fcntl process (so the head waits in the kernel), then passed
// from waiter to waiter. Meanwhile another connection asks `status` every
// 10 ms. Figures: status p99 while they wait and drain, against status p99
// on the same agent and lock with no waiters; every waiter gets the lock;
// no two hold it at once.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from '../test/rpc';
import { connectSocket, note, quantile, report, size, sleep, startAgent, python, waitExit } from './lib';

async function main(): Promise<void> {
  const waiters = size(500, 10);
  const t = tempDir('hl-bench-500');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'run') };
  const agent = await startAgent(join(t.dir, 'run'), env);
  const path = join(t.dir, 'one.lock');
  const holder = spawn(
    python(),
    [
      '-c',
      `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print('held', flush=True)
sys.stdin.read()
`,
      path,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  try {
    await new Promise<void>((r) => holder.stdout.once('data', () => r()));
    const probe = await connectSocket(agent.socket);
    const statusOnce = async () => {
      const t0 = performance.now();
      const s = await probe.rpc.call('status', { name: 'one' });
      if (!s.held) throw new Error('status says the lock is free while it is held');
      return performance.now() - t0;
    };
    // Anchor: the same status on the same agent, lock held, nobody waiting.
    const idle: number[] = [];
    for (let i = 0; i < size(200, 10); i++) {
      idle.push(await statusOnce());
      await sleep(2);
    }

    const conns = await Promise.all(Array.from({ length: waiters }, () => connectSocket(agent.socket)));
    let inside = 0;
    let overlaps = 0;
    let granted = 0;
    const t0 = performance.now();
    const done = Promise.all(
      conns.map(async (c) => {
        const r = await c.rpc.call('acquire', { name: 'one' });
        if (!r.acquired) throw new Error('a waiter did not get the lock');
        if (++inside > 1) overlaps++;
        granted++;
        await sleep(0);
        inside--;
        await c.rpc.call('release', { handle: r.handle });
        c.sock.end();
      }),
    );
    let draining = true;
    const loaded: number[] = [];
    const poll = (async () => {
      while (draining) {
        loaded.push(await statusOnce().catch(() => NaN));
        await sleep(10);
      }
    })();
    // Everyone queued (the holder keeps it for a while), then the holder lets go.
    await sleep(SMOKE_WAIT(waiters));
    const queuedFor = performance.now() - t0;
    holder.stdin.end();
    const deadline = setTimeout(() => {
      draining = false;
    }, 300000);
    await done;
    clearTimeout(deadline);
    draining = false;
    await poll;
    const drainMs = performance.now() - t0 - queuedFor;
    probe.sock.end();
    const ok = loaded.filter((x) => !Number.isNaN(x));
    note(
      `${waiters} waiters: queued for ${queuedFor.toFixed(0)} ms, drained in ${drainMs.toFixed(0)} ms; ${granted} granted; ` +
        `${overlaps} overlaps; ${ok.length} status calls meanwhile, p50 ${quantile(ok, 0.5).toFixed(2)} ms, max ${Math.max(...ok).toFixed(2)} ms`,
    );
    const p99 = quantile(ok, 0.99);
    const a99 = quantile(idle, 0.99);
    const met = p99 <= 50 && granted === waiters && overlaps === 0 && ok.length === loaded.length;
    report({
      goal: '5',
      what: `status p99 with ${waiters} waiters (${granted}/${waiters} granted, ${overlaps} overlaps)`,
      figure: p99,
      unit: 'ms',
      anchor: a99,
      anchorWhat: 'status p99, same agent, no waiters',
      target: '≤ 50 ms, all granted, no overlap',
      met,
    });
  } finally {
    holder.kill();
    await waitExit(holder);
    await agent.stop();
    t.cleanup();
  }
}

// Long enough for every waiter's request to be queued and some `waiting` notifications to fire.
function SMOKE_WAIT(n: number): number {
  return Math.max(300, Math.min(3000, n * 5));
}

main().catch((err) => {
  process.stderr.write(`waiters500 benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
