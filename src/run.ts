// `hostlock run NAME -- CMD`: flock(1) with names, timeouts and holder records.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { errorLine, EXIT, exitCodeFor, UsageError } from './exit';
import { log } from './log';
import { LockManager } from './manager';
import { closeStores } from './stores';

export interface RunOptions {
  name: string;
  dir?: string;
  backend?: string;
  shared: boolean;
  slots?: number;
  timeout?: number;
  nonblock: boolean;
  conflictExitCode: number;
  command: string[];
  quiet: boolean;
}

export async function runLocked(o: RunOptions): Promise<number> {
  const [file, ...args] = o.command;
  if (file === undefined) throw new UsageError('give the command after --, e.g. hostlock run db -- ./migrate.sh');
  const manager = new LockManager();
  let target;
  try {
    target = manager.targetForName(o.name, o.dir, o.backend);
  } catch (err) {
    process.stderr.write(errorLine(err));
    return exitCodeFor(err);
  }
  const mode = o.shared ? 'shared' : 'exclusive';
  const attempt = manager.acquire({
    target,
    mode,
    slots: o.slots,
    wait: !o.nonblock,
    timeout: o.timeout,
    prefix: o.name,
    owner: { task: o.command.join(' ').slice(0, 200) },
    notifyEvery: 5,
    onWaiting: ({ waited, holders, position }) => {
      if (o.quiet) return;
      const who = holders
        .map((h) => {
          const what = h.playbook || h.task || h.command;
          return `${h.user}@${h.controller} pid ${h.pid}${what ? ` (${what})` : ''}`;
        })
        .join(', ');
      const place = position ? ` (${ordinal(position)} in queue)` : '';
      process.stderr.write(
        `hostlock: waiting ${waited.toFixed(0)}s${place} for ${o.name}${who ? ` held by ${who}` : ''}\n`,
      );
    },
  });
  const cancel = () => attempt.cancel();
  process.once('SIGINT', cancel);
  process.once('SIGTERM', cancel);
  let out;
  try {
    out = await attempt.outcome;
  } catch (err) {
    process.stderr.write(errorLine(err));
    await closeStores();
    return exitCodeFor(err);
  } finally {
    process.off('SIGINT', cancel);
    process.off('SIGTERM', cancel);
  }
  if (!out.acquired || !out.hold) {
    if (!o.quiet && out.reason !== 'cancelled') {
      const who = out.holders.map((h) => `${h.user}@${h.controller} pid ${h.pid}`).join(', ') || 'another process';
      process.stderr.write(
        `hostlock: ${o.name} is held by ${who}${out.reason === 'timeout' ? `; gave up after ${out.waited.toFixed(1)}s` : ''}\n`,
      );
    }
    manager.shutdown();
    await closeStores();
    return out.reason === 'cancelled' ? EXIT.interrupted : o.conflictExitCode;
  }
  const hold = out.hold;
  const code = await new Promise<number>((resolve) => {
    // Like flock(1), the command inherits the lock (as its fd 3): if hostlock
    // itself is killed, the lock lasts as long as the command still runs.
    const fd = hold.held.fd;
    const child = spawn(file, args, {
      stdio: fd === undefined ? 'inherit' : ['inherit', 'inherit', 'inherit', fd],
      env: {
        ...process.env,
        HOSTLOCK_TOKEN: String(hold.held.token),
        ...(hold.held.slot !== undefined ? { HOSTLOCK_SLOT: String(hold.held.slot) } : {}),
      },
    });
    const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
    const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((s) => [s, forward(s)] as const);
    for (const [s, h] of handlers) process.on(s, h);
    child.on('error', (err: NodeJS.ErrnoException) => {
      process.stderr.write(`hostlock: cannot run ${file}: ${err.message}\n`);
      resolve(err.code === 'ENOENT' ? EXIT.notFound : EXIT.cannotExecute);
    });
    child.on('exit', (status, signal) => {
      for (const [s, h] of handlers) process.off(s, h);
      resolve(status ?? EXIT.signalBase + (signal ? osSignal(signal) : 0));
    });
  });
  manager.release(hold);
  manager.shutdown();
  await closeStores();
  log.debug('command finished', { code });
  return code;
}

// 1st, 2nd, 3rd, 4th ... 11th, 12th, 13th, 21st.
export function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? 'th' : (({ 1: 'st', 2: 'nd', 3: 'rd' } as Record<number, string>)[n % 10] ?? 'th');
  return `${n}${suffix}`;
}

function osSignal(sig: NodeJS.Signals): number {
  return (constants.signals as Record<string, number>)[sig] ?? 0;
}
