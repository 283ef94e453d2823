// Goal 6: 8 clients × 500 lock/unlock cycles on one lock through the helper,
// in cycles per second, against 8 Python processes × 500 cycles of
// (open, fcntl.flock LOCK_EX, LOCK_UN, close) on the same file.
//  - 6a: the 8 clients are connections of one agent (the playbook path);
//  - 6b: each client has its own `serve` helper (the Python Lock path), so
//    every contended acquire waits in the kernel.
// For information (6c): the same clients against a Node echo server that
// answers each line at once: the ceiling of any line-per-message protocol.
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { type RpcClient, startServe, tempDir } from '../test/rpc';
import { connectSocket, median, note, report, runPython, size, startAgent } from './lib';

async function cycles(clients: RpcClient[], n: number, name: string): Promise<number> {
  let inside = 0;
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (c) => {
      for (let i = 0; i < n; i++) {
        const r = await c.call('acquire', { name });
        if (!r.acquired) throw new Error('not acquired');
        if (++inside > 1) throw new Error('two holders at once');
        inside--;
        await c.call('release', { handle: r.handle });
      }
    }),
  );
  return (clients.length * n) / ((performance.now() - t0) / 1000);
}

// 2 round trips per cycle, like acquire + release, against the echo server.
async function echoCycles(socket: string, clients: number, n: number): Promise<number> {
  const socks = await Promise.all(
    Array.from(
      { length: clients },
      () =>
        new Promise<Socket>((r, j) => {
          const s = connect(socket, () => r(s));
          s.once('error', j);
        }),
    ),
  );
  const line = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'acquire', params: { name: 'echo' } }) + '\n';
  const trip = (s: Socket) =>
    new Promise<void>((r) => {
      let got = '';
      const on = (d: Buffer) => {
        got += d.toString('utf8');
        if (got.endsWith('\n')) {
          s.off('data', on);
          r();
        }
      };
      s.on('data', on);
      s.write(line);
    });
  const t0 = performance.now();
  await Promise.all(
    socks.map(async (s) => {
      for (let i = 0; i < n; i++) {
        await trip(s);
        await trip(s);
      }
    }),
  );
  const rate = (clients * n) / ((performance.now() - t0) / 1000);
  for (const s of socks) s.destroy();
  return rate;
}

async function main(): Promise<void> {
  const nClients = 8;
  const n = size(500, 5);
  const rounds = size(3, 1);
  const t = tempDir('hl-bench-cont');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'run') };
  const agent = await startAgent(join(t.dir, 'run'), env);
  const helpers = Array.from({ length: nClients }, () => startServe(env));
  const echoSocket = join(t.dir, 'echo.sock');
  const echo = spawn(process.execPath, [join(__dirname, 'echo-server.js'), echoSocket], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((r) => echo.stdout.once('data', () => r()));
  try {
    const conns = await Promise.all(Array.from({ length: nClients }, () => connectSocket(agent.socket)));
    for (const h of helpers) await h.rpc.call('hello', {});
    const viaAgent: number[] = [];
    const viaServe: number[] = [];
    const py: number[] = [];
    const viaEcho: number[] = [];
    for (let r = 0; r < rounds; r++) {
      viaAgent.push(
        await cycles(
          conns.map((c) => c.rpc),
          n,
          'agent',
        ),
      );
      py.push(runPython('fcntl_anchor.py', ['loop', join(t.dir, 'py.lock'), String(nClients), String(n)]).cycles_per_s);
      viaServe.push(
        await cycles(
          helpers.map((h) => h.rpc),
          n,
          'serve',
        ),
      );
      viaEcho.push(await echoCycles(echoSocket, nClients, n));
      py.push(runPython('fcntl_anchor.py', ['loop', join(t.dir, 'py.lock'), String(nClients), String(n)]).cycles_per_s);
    }
    for (const c of conns) c.sock.destroy();
    note(
      `cycles/s via agent ${viaAgent.map((x) => x.toFixed(0)).join(' ')}; via serve ${viaServe.map((x) => x.toFixed(0)).join(' ')}; ` +
        `python ${py.map((x) => x.toFixed(0)).join(' ')}; echo ${viaEcho.map((x) => x.toFixed(0)).join(' ')}`,
    );
    const a = median(viaAgent);
    const s = median(viaServe);
    const p = median(py);
    const pyWhat = `${nClients} Python procs × ${n} fcntl open/lock/unlock/close`;
    report({
      goal: '6a',
      what: `${nClients} clients × ${n} cycles, 1 agent (cycles/s)`,
      figure: a,
      unit: 'cycles/s',
      anchor: p,
      anchorWhat: pyWhat,
      target: '≥ 0.2×',
      met: a / p >= 0.2,
    });
    report({
      goal: '6b',
      what: `${nClients} clients × ${n} cycles, ${nClients} serve helpers (cycles/s)`,
      figure: s,
      unit: 'cycles/s',
      anchor: p,
      anchorWhat: pyWhat,
      target: '≥ 0.2×',
      met: s / p >= 0.2,
    });
    const e = median(viaEcho);
    report({
      goal: '6c',
      what: `${nClients} clients × ${n} cycles of 2 round trips to a Node echo server (ceiling)`,
      figure: e,
      unit: 'cycles/s',
      anchor: p,
      anchorWhat: pyWhat,
      target: 'info: the most any socket helper can reach',
      met: true,
      info: true,
    });
  } finally {
    for (const h of helpers) await h.close();
    echo.kill();
    await agent.stop();
    t.cleanup();
  }
}

main().catch((err) => {
  process.stderr.write(`contention benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
