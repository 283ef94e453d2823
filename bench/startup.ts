// Goal 1: `hostlock serve` cold start to the reply of its first `try`, and
// its peak RSS, against bare Node (`node -e 0`, start to exit); the agent's
// start; `hostlock flock` and `hostlock run` around `true`, start to exit.
// Anchor and subject runs alternate, so a noisy neighbour hits both alike; medians.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { processStartTime } from '../src/sys/proc';
import {
  bareNodeEnvironment,
  CLI,
  commandPeakKiB,
  connectSocket,
  median,
  note,
  peakRssKiB,
  report,
  size,
  sleep,
  waitExit,
} from './lib';
import { tempDir } from '../test/rpc';

// The floor of 1d and 1e: what any Node program pays to run `true` and wait for it.
const FLOOR =
  "require('node:child_process').spawn('true', { stdio: 'inherit' }).on('exit', (c) => process.exit(c ?? 1))";

async function bare(): Promise<number> {
  return whole(['-e', '0']);
}

// How many certificates a PEM bundle holds.
function rootCount(file: string): number {
  return readFileSync(file, 'latin1').split('-----BEGIN CERTIFICATE-----').length - 1;
}

// Milliseconds from spawning `node ARGS` (or, first CLI, the executable as
// users start it) to its exit; `env` on top of this process's environment.
async function whole(args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  const t0 = performance.now();
  const opts = { stdio: 'ignore' as const, env: env && { ...process.env, ...env } };
  const p = args[0] === CLI ? spawn(CLI, args.slice(1), opts) : spawn(process.execPath, args, opts);
  const code = await waitExit(p);
  if (code !== 0) throw new Error(`${args.join(' ')} exited ${code}`);
  return performance.now() - t0;
}

// Medians of several commands (`whole` arguments), each started `rounds`
// times, all of them in every round, the order rotating from round to round.
type Command = string[] | { args: string[]; env: NodeJS.ProcessEnv };
async function interleaved(cmds: Command[], rounds: number): Promise<number[]> {
  const times: number[][] = cmds.map(() => []);
  const start = (c: Command) => (Array.isArray(c) ? whole(c) : whole(c.args, c.env));
  for (const c of cmds) await start(c);
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < cmds.length; j++) {
      const k = (i + j) % cmds.length;
      times[k]!.push(await start(cmds[k]!));
    }
  }
  return times.map(median);
}

// Milliseconds from spawn to the first reply line; also the helper's peak RSS then.
async function serve(dir: string, n: number): Promise<{ ms: number; peakKiB: number | null }> {
  const t0 = performance.now();
  const p = spawn(process.execPath, [CLI, 'serve'], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, HOSTLOCK_DIR: dir },
  });
  p.stdin.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'try', params: { name: `start-${n}` } }) + '\n');
  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (c: string) => {
      buf += c;
      if (buf.includes('\n')) resolve(buf);
    });
    p.once('exit', () => reject(new Error(`serve exited before replying: ${buf}`)));
  });
  const ms = performance.now() - t0;
  const peakKiB = peakRssKiB(p.pid!);
  const reply = JSON.parse(line);
  if (reply.result?.acquired !== true) throw new Error(`first try not acquired: ${line}`);
  p.stdin.end();
  await waitExit(p);
  return { ms, peakKiB };
}

// Milliseconds from spawning `agent` to the reply of a first `hello` over its
// socket (polled every ms): the first hostlock task of every playbook run waits for this.
async function agent(runtime: string): Promise<number> {
  const t0 = performance.now();
  const p = spawn(
    process.execPath,
    [CLI, 'agent', '--owner-pid', String(process.pid), '--runtime-dir', runtime, '--idle-timeout', '1'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const socket = join(runtime, `agent-${process.pid}-${processStartTime(process.pid)}.sock`);
  let ms = NaN;
  while (p.exitCode === null) {
    const c = await connectSocket(socket).catch(() => null);
    if (c) {
      await c.rpc.call('hello', {});
      ms = performance.now() - t0;
      c.sock.destroy();
      break;
    }
    await sleep(1);
  }
  p.kill('SIGTERM');
  await waitExit(p);
  if (Number.isNaN(ms)) throw new Error('agent exited before answering');
  return ms;
}

async function main(): Promise<void> {
  const removed = bareNodeEnvironment();
  const rounds = size(25, 2);
  const t = tempDir('hl-bench-start');
  const bareMs: number[] = [];
  const serveMs: number[] = [];
  try {
    await bare(); // warm the page cache for both
    await serve(t.dir, -1);
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so neither always follows the other.
      if (i % 2) {
        bareMs.push(await bare());
        serveMs.push((await serve(t.dir, i)).ms);
      } else {
        serveMs.push((await serve(t.dir, i)).ms);
        bareMs.push(await bare());
      }
    }
    const mb = median(bareMs);
    const ms = median(serveMs);
    note(`node -e 0: ${bareMs.map((x) => x.toFixed(0)).join(' ')} ms`);
    note(`serve→try: ${serveMs.map((x) => x.toFixed(0)).join(' ')} ms`);
    report({
      goal: '1a',
      what: 'serve cold start to first try reply (median)',
      figure: ms,
      unit: 'ms',
      anchor: mb,
      anchorWhat: 'node -e 0 (median)',
      target: '≤ 1.3×',
      met: ms / mb <= 1.3,
    });

    // Agent start, for goal 2 (not a goal of its own): against bare Node again.
    const agentMs: number[] = [];
    const bare2: number[] = [];
    for (let i = 0; i < size(9, 1); i++) {
      bare2.push(await bare());
      agentMs.push(await agent(join(t.dir, 'run')));
    }
    report({
      goal: '1c',
      what: 'agent cold start to first hello reply over its socket (median)',
      figure: median(agentMs),
      unit: 'ms',
      anchor: median(bare2),
      anchorWhat: 'node -e 0 (median)',
      target: 'info (goal 2 pays it once per run)',
      met: true,
      info: true,
    });

    // What every flock(1)-style call pays: an uncontended lock around `true`,
    // start to exit, against bare Node and against the floor of any Node
    // program that runs a command (it loads child_process, spawns, waits).
    // All four alternate in each round, in a rotating order. Three times
    // serve's rounds: with 25 the ratios moved by 2 % between runs.
    const [bareM, floorM, flockM, runM] = (await interleaved(
      [
        ['-e', '0'],
        ['-e', FLOOR],
        [CLI, 'flock', join(t.dir, 'f.lock'), 'true'],
        [CLI, 'run', '--dir', t.dir, 'r', '--', 'true'],
      ],
      3 * rounds,
    )) as [number, number, number, number];
    report({
      goal: '1f',
      what: 'a Node program that runs true: loads child_process, spawns, waits (median)',
      figure: floorM,
      unit: 'ms',
      anchor: bareM,
      anchorWhat: 'node -e 0 (median)',
      target: 'info (the floor of 1d and 1e)',
      met: true,
      info: true,
    });
    for (const [goal, over, what, ms] of [
      ['1d', '1g', 'hostlock flock FILE true (the executable), uncontended, start to exit (median)', flockM],
      ['1e', '1h', 'hostlock run NAME -- true (the executable), uncontended, start to exit (median)', runM],
    ] as const) {
      report({
        goal,
        what,
        figure: ms,
        unit: 'ms',
        anchor: bareM,
        anchorWhat: 'node -e 0 (median)',
        target: '≤ 1.2×',
        met: ms / bareM <= 1.2,
      });
      report({
        goal: over,
        what: `${goal} over the floor 1f: hostlock's own cost (median)`,
        figure: ms,
        unit: 'ms',
        anchor: floorM,
        anchorWhat: 'the Node program of 1f (median)',
        target: 'info',
        met: true,
        info: true,
      });
    }

    // NODE_EXTRA_CA_CERTS, which Node would read as it starts, is kept from
    // the executable's start: 1d with the variable set against 1d without.
    // The file: the environment's, else Node's own bundled CAs (about as many
    // as a system's bundle).
    const caFile = removed.NODE_EXTRA_CA_CERTS ?? join(t.dir, 'bundled-cas.pem');
    if (removed.NODE_EXTRA_CA_CERTS === undefined) writeFileSync(caFile, rootCertificates.join('\n') + '\n');
    const flock = [CLI, 'flock', join(t.dir, 'f.lock'), 'true'];
    const [withCas, without] = (await interleaved(
      [{ args: flock, env: { NODE_EXTRA_CA_CERTS: caFile } }, flock],
      3 * rounds,
    )) as [number, number];
    report({
      goal: '1i',
      what: `1d with NODE_EXTRA_CA_CERTS naming ${rootCount(caFile)} CA certificates (median)`,
      figure: withCas,
      unit: 'ms',
      anchor: without,
      anchorWhat: '1d without it (median)',
      target: 'info (1.0×: the file costs hostlock nothing)',
      met: true,
      info: true,
    });

    // Peak RSS: /usr/bin/time -f %M around both whole processes (serve answers
    // the try, sees EOF, exits); else VmHWM of serve after its reply, against
    // VmHWM that bare Node reads of itself.
    const rssRounds = size(5, 1);
    const bareKiB: number[] = [];
    const serveKiB: number[] = [];
    const req = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'try', params: { name: 'rss' } }) + '\n';
    for (let i = 0; i < rssRounds; i++) {
      const b = commandPeakKiB([process.execPath, '-e', '0']);
      const s = commandPeakKiB([process.execPath, CLI, 'serve'], req, { HOSTLOCK_DIR: t.dir });
      if (b !== null && s !== null) {
        bareKiB.push(b);
        serveKiB.push(s);
      } else {
        const self = spawn(process.execPath, [
          '-e',
          "process.stdout.write(/VmHWM:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1])",
        ]);
        let out = '';
        self.stdout.on('data', (c) => (out += c));
        await waitExit(self);
        bareKiB.push(Number(out));
        serveKiB.push((await serve(t.dir, 1000 + i)).peakKiB ?? NaN);
      }
    }
    const rb = median(bareKiB) / 1024;
    const rs = median(serveKiB) / 1024;
    report({
      goal: '1b',
      what: 'serve peak RSS (median)',
      figure: rs,
      unit: 'MiB',
      anchor: rb,
      anchorWhat: 'node -e 0 peak RSS',
      target: '≤ 1.2×',
      met: rs / rb <= 1.2,
    });
  } finally {
    t.cleanup();
  }
}

main().catch((err) => {
  process.stderr.write(`startup benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
