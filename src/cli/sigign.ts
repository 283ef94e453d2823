// The signals hostlock inherited as ignored (SIG_IGN), as a shell user means
// them: `nohup` ignores SIGHUP, a shell's background job ignores SIGINT and
// SIGQUIT. Node sets every disposition back to the default as it starts, so
// the executable's first line (a shell, see scripts/build.mjs) reads them from
// /proc before it execs node and passes them as HOSTLOCK_PROC=PID:START:MASK
// (the mask in decimal, as /proc/PID/stat prints it), with the process's start
// time, which holder records carry and which would otherwise cost a read of
// /proc; the PID makes a value inherited by another process worthless. The
// executable takes the value out of the environment at once, so no command of
// ours inherits it.
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { fromPrelude, knowOwnStartTime } from '../sys/proc';

const KEY = Symbol.for('hostlock.inheritedSigIgn');

// Called once, first thing, by the executable's main.
export function takeInheritedIgnored(): void {
  const m = /^(\d{1,20}):(\d{1,20})$/.exec(fromPrelude('HOSTLOCK_PROC') ?? '');
  if (m) {
    knowOwnStartTime(m[1]!);
    (globalThis as Record<symbol, unknown>)[KEY] = BigInt(m[2]!);
  }
}

// Is `sig` one hostlock inherited as ignored?
export function inheritedIgnored(sig: NodeJS.Signals): boolean {
  const store = globalThis as Record<symbol, unknown>;
  // Started as `node cli.js`: what is ignored now (Node reset the rest), read
  // when first asked (only `hostlock run` asks), not at every start.
  store[KEY] ??= ignoredNow();
  const mask = store[KEY];
  const n = (constants.signals as Record<string, number>)[sig];
  return typeof mask === 'bigint' && n !== undefined && ((mask >> BigInt(n - 1)) & 1n) === 1n;
}

function ignoredNow(): bigint {
  try {
    const v = /^SigIgn:\s*([0-9a-fA-F]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1];
    return v ? BigInt(`0x${v}`) : 0n;
  } catch {
    return 0n; // no /proc
  }
}
