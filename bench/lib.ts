// Shared by the benchmarks: sizes (smoke or full), statistics, and the one
// line per figure that bench/run.sh gathers into its table. Figures go to
// stdout; progress and diagnostics to stderr.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { CLI, ROOT, connectSocket, sleep } from '../test/rpc';

export { CLI, ROOT };

// HOSTLOCK_BENCH_SMOKE=1: tiny sizes, so a test can check a benchmark still runs.
export const SMOKE = process.env.HOSTLOCK_BENCH_SMOKE === '1';

const factor = (name: string) => {
  const v = Number(process.env[name] ?? '1');
  return Number.isFinite(v) && v > 0 ? v : 1;
};

// A size (hosts, tasks, waiters, cycles), scaled by HOSTLOCK_BENCH_SCALE.
export function size(full: number, smoke: number): number {
  return SMOKE ? smoke : Math.max(1, Math.round(full * factor('HOSTLOCK_BENCH_SCALE')));
}

// How often a slow measurement is repeated (its median is the figure), scaled
// by HOSTLOCK_BENCH_ROUNDS: fewer rounds change no figure's meaning, only its noise.
export function rounds(full: number, smoke: number): number {
  return SMOKE ? smoke : Math.max(1, Math.round(full * factor('HOSTLOCK_BENCH_ROUNDS')));
}

export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}

export const median = (v: number[]) => quantile(v, 0.5);

export interface Figure {
  goal: string; // "1", "3a", ...
  what: string; // what was measured
  figure: number;
  anchor: number;
  anchorWhat: string;
  unit: string;
  // The goal as a sentence and its verdict; `ratio` is figure/anchor unless given.
  target: string;
  met: boolean;
  ratio?: number;
  info?: boolean; // printed for insight, not a goal
}

// One human line and one machine line (`BENCH {json}`) per figure.
export function report(f: Figure): void {
  const ratio = f.ratio ?? f.figure / f.anchor;
  const verdict = f.info ? 'for information' : `goal ${f.target}: ${f.met ? 'met' : 'NOT met'}`;
  const n = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(3));
  process.stdout.write(
    `goal ${f.goal}: ${f.what}: ${n(f.figure)} ${f.unit}; anchor ${f.anchorWhat}: ${n(f.anchor)} ${f.unit}; ` +
      `ratio ${ratio.toFixed(2)}; ${verdict}\n`,
  );
  process.stdout.write('BENCH ' + JSON.stringify({ ...f, ratio, smoke: SMOKE }) + '\n');
}

// Node's start depends on its environment: NODE_EXTRA_CA_CERTS makes every
// start read and parse that file of certificates (on a machine that sets it
// to the system's bundle, `node -e 0` takes twice as long), and NODE_OPTIONS
// may add anything. The start-up figures are of Node as it starts bare, so
// both leave the environment of this process and of all it starts; their
// values are returned.
export function bareNodeEnvironment(): NodeJS.ProcessEnv {
  const removed: NodeJS.ProcessEnv = {};
  for (const k of ['NODE_EXTRA_CA_CERTS', 'NODE_OPTIONS']) {
    if (process.env[k] === undefined) continue;
    note(`${k} is set (${process.env[k]}): unset for these figures`);
    removed[k] = process.env[k];
    delete process.env[k];
  }
  return removed;
}

export function note(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

export function waitExit(p: ChildProcess): Promise<number | null> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(p.exitCode);
  return new Promise((r) => p.once('exit', (code) => r(code)));
}

// Peak RSS in KiB of a process, from /proc (VmHWM); null if it is gone.
export function peakRssKiB(pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function rssKiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function childrenOf(pid: number): number[] {
  try {
    const out: number[] = [];
    for (const t of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/))
      if (t) out.push(Number(t));
    return out;
  } catch {
    return [];
  }
}

export const TIME_BIN = ['/usr/bin/time'].find((p) => existsSync(p));

// Peak RSS (KiB) of a whole command run to its end, by /usr/bin/time -f %M.
export function commandPeakKiB(cmd: string[], input?: string, env?: NodeJS.ProcessEnv): number | null {
  if (!TIME_BIN) return null;
  const r = spawnSync(TIME_BIN, ['-f', 'HOSTLOCK_PEAK %M', ...cmd], {
    input,
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  const m = /HOSTLOCK_PEAK (\d+)/.exec(r.stderr ?? '');
  return m ? Number(m[1]) : null;
}

export interface Agent {
  proc: ChildProcess;
  socket: string;
  stop(): Promise<void>;
}

// A run agent owned by this process (its `--owner-pid`), ready to accept connections.
export async function startAgent(runtime: string, env: NodeJS.ProcessEnv = {}): Promise<Agent> {
  const args = [CLI, 'agent', '--owner-pid', String(process.pid), '--runtime-dir', runtime, '--idle-timeout', '600'];
  const sock = spawnSync(process.execPath, [...args, '--print-socket'], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  if (sock.status !== 0) throw new Error(`agent --print-socket failed: ${sock.stderr}`);
  const socket = sock.stdout.trim();
  // HOSTLOCK_BENCH_AGENT_NODE_ARGS: node options for the agent alone, e.g. --cpu-prof.
  const nodeArgs = (process.env.HOSTLOCK_BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const proc = spawn(process.execPath, [...nodeArgs, ...args], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, ...env },
  });
  const end = Date.now() + 15000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(socket);
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) break;
    if (Date.now() > end || proc.exitCode !== null) throw new Error('agent did not start');
    await sleep(10);
  }
  return {
    proc,
    socket,
    stop: async () => {
      proc.kill('SIGTERM');
      await waitExit(proc);
    },
  };
}

export { connectSocket, sleep };

// A Python interpreter for the anchors: the repo's venv if built, else python3.
export function python(): string {
  const venv = join(ROOT, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

// Runs a Python anchor script from bench/ and returns its JSON output.
export function runPython(script: string, args: string[]): any {
  const r = spawnSync(python(), [join(ROOT, 'bench', script), ...args], { encoding: 'utf8', timeout: 600000 });
  if (r.status !== 0) throw new Error(`${script} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}
