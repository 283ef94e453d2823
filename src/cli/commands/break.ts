// `hostlock break NAME --reason TEXT`: ends the current hold of a lock whose
// holder is stuck, by ending the holder's helper (the run's agent, a serve
// helper, a `hostlock run`) with SIGKILL, never by touching the lock file: the
// kernel then releases the lock and the next waiter proceeds. SIGKILL also
// ends a stopped (SIGSTOP, ^Z) helper, and leaves a run agent's record of its
// holds behind, so the run's next hostlock task fails "lock lost".
// With a server store (`--backend`), the holder's helper may run on another
// controller: the store itself ends that hold (its `breakHold`), and the
// holder's helper finds it lost.
import { createInterface } from 'node:readline/promises';
import type { Argv, CommandModule } from 'yargs';
import { controllerName, currentUser, processStartTime } from '../../sys/proc';
import { type Holder } from '../../store/types';
import { LockManager } from '../../policy/manager';
import { closeStores, isLocal, localStore } from '../../stores';
import { backendOption } from './history';
import { describeHolder } from './status';

interface Args {
  name: string;
  reason: string;
  dir?: string;
  backend?: string;
  yes: boolean;
}

// Asks on a terminal; elsewhere only --yes confirms. True to go on.
async function confirmed(a: Args, list: string, what: string): Promise<boolean> {
  if (a.yes) return true;
  if (!process.stdin.isTTY) {
    process.stderr.write(`hostlock: breaking ${a.name} ends:\n${list}\nconfirm with --yes (not on a terminal)\n`);
    return false;
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await rl.question(`Break ${a.name}? This ends ${what}:\n${list}\n[y/N] `);
  rl.close();
  if (/^y(es)?$/i.test(answer.trim())) return true;
  process.stderr.write('hostlock: not broken\n');
  return false;
}

async function breakInStore(a: Args, backend: string): Promise<number> {
  if (a.dir !== undefined) {
    process.stderr.write('hostlock: --dir applies to the local store only; omit it with --backend\n');
    return 64;
  }
  try {
    const target = new LockManager().targetForName(a.name, undefined, backend);
    const { store, key } = target;
    if (!store.breakHold) {
      process.stderr.write(`hostlock: the ${store.kind} store cannot end a hold from here\n`);
      return 1;
    }
    const holders = (await store.status(key)).holders.filter((h) => !h.lost && h.token !== undefined);
    if (!holders.length) {
      process.stderr.write(`hostlock: ${a.name} is not held in ${store.describe}; nothing to break\n`);
      return 1;
    }
    const list = holders.map((h) => `  ${describeHolder(h)} (token ${h.token}) since ${h.since}`).join('\n');
    if (!(await confirmed(a, list, `the hold in ${store.describe} of`))) return process.stdin.isTTY ? 1 : 64;
    const me = { pid: process.pid, user: currentUser(), controller: controllerName() };
    for (const h of holders) await store.breakHold(key, h.token!, me, a.reason);
    process.stderr.write(
      `hostlock: broke ${a.name} in ${store.describe}: ended ${holders.map((h) => `token ${h.token}`).join(', ')}; ` +
        'the holder finds its hold lost\n',
    );
    return 0;
  } finally {
    await closeStores();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function mayEnd(pid: number): string | null {
  if (pid === process.pid) return 'it is this process';
  try {
    process.kill(pid, 0);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EPERM' ? `you may not signal pid ${pid} (another user's process)` : `pid ${pid} is gone`;
  }
}

export async function breakLock(a: Args): Promise<number> {
  const backend = a.backend ?? process.env.HOSTLOCK_BACKEND;
  if (!isLocal(backend)) return breakInStore(a, backend!);
  const m = new LockManager();
  const target = m.targetForName(a.name, a.dir);
  const status = localStore().status(target.key);
  const holders = status.holders.filter((h) => !h.lost);
  if (!holders.length) {
    process.stderr.write(`hostlock: ${a.name} is not held; nothing to break\n`);
    return 1;
  }
  const ours = holders.filter((h) => !h.foreign && h.helper_pid !== undefined);
  const foreign = holders.filter((h) => h.foreign);
  if (!ours.length) {
    process.stderr.write(
      `hostlock: ${a.name} is held by ${foreign.map(describeHolder).join('; ')}: not a hostlock holder, so there is no helper to end; end that process yourself\n`,
    );
    return 1;
  }
  for (const h of ours) {
    const why = mayEnd(h.helper_pid!);
    if (why) {
      process.stderr.write(`hostlock: refusing to break ${a.name} held by ${describeHolder(h)}: ${why}\n`);
      return 1;
    }
  }
  const list = ours.map((h) => `  ${describeHolder(h)} (helper pid ${h.helper_pid}) since ${h.since}`).join('\n');
  if (!(await confirmed(a, list, '(SIGKILL) the helper of'))) return process.stdin.isTTY ? 1 : 64;
  const me = { pid: process.pid, user: currentUser(), controller: controllerName() };
  for (const h of ours) {
    localStore().record({
      event: 'break',
      key: target.key,
      mode: h.mode,
      who: me,
      token: h.token,
      reason: a.reason,
      victim: h,
    });
    try {
      process.kill(h.helper_pid!, 'SIGKILL');
    } catch (err) {
      process.stderr.write(`hostlock: cannot end pid ${h.helper_pid}: ${(err as Error).message}\n`);
      return 1;
    }
  }
  // The kernel releases once the helper has died: the lock is then free or
  // has a new hostlock holder. Still held with no new record after 2 s, it
  // was inherited by a command the helper started (hostlock run).
  const pids = new Set(ours.map((h) => h.helper_pid!));
  let left: Holder[] = [];
  for (let i = 0; i < 100; i++) {
    const now = localStore()
      .status(target.key)
      .holders.filter((h) => !h.lost);
    const dead = [...pids].every((p) => processStartTime(p) === null);
    const successor = now.some((h) => !h.foreign && !pids.has(h.helper_pid ?? -1));
    left = now.filter((h) => h.foreign || pids.has(h.helper_pid ?? -1));
    if (dead && (successor || now.length === 0)) {
      left = [];
      break;
    }
    await sleep(20);
  }
  if (left.length) {
    process.stderr.write(
      `hostlock: ended the helper, but ${a.name} is still held by ${left.map(describeHolder).join('; ')} (a command that inherited the lock, as under hostlock run): end it yourself\n`,
    );
    return 1;
  }
  process.stderr.write(`hostlock: broke ${a.name}: ended ${ours.map((h) => `pid ${h.helper_pid}`).join(', ')}\n`);
  return 0;
}

export const breakCommand: CommandModule<object, Args> = {
  command: 'break <name>',
  describe: "end a stuck hold: ends its holder's helper (never the lock file), recorded in the history",
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', describe: 'lock name' })
      .option('reason', { type: 'string', demandOption: true, describe: 'why (kept in the history)' })
      .option('dir', { type: 'string', describe: 'lock directory' })
      .option('backend', backendOption)
      .option('yes', { alias: 'y', type: 'boolean', default: false, describe: 'do not ask for confirmation' })
      .check((a) => {
        if (!String(a.reason ?? '').trim()) throw new Error('--reason must say why');
        return true;
      }) as unknown as Argv<Args>,
  handler: async (a) => {
    process.exitCode = await breakLock(a);
  },
};
