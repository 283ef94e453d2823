// The commands that are started often, parsed by hand so that they never load
// yargs and start like bare Node: the two that start helpers — bare `serve`
// (once per Python Lock) and `agent` with its plain options (once per playbook
// run) —, `flock` (a drop-in for flock(1), started as often as a crontab or a
// script loop asks; its command line is flock(1)'s own, not yargs', so it is
// always here) and `run NAME [options] -- CMD…` with its plain options, for the
// same callers. Anything else, or any other spelling of these (--help,
// --owner-pid=N, repeated options), is left to the full CLI, which gives the
// same results for these forms.
//
// Each command's code is loaded when it runs: the build makes each its own
// bundle (scripts/build.mjs), so that a start compiles only the command it
// runs, and bundles.ts keeps a code cache of it.
import { loadBundle } from './bundles';
import { checkBackendArgs } from './backendarg';
import { exitNow, type Command } from './exit';
import type { RunOptions } from './run';

export function fastCommand(argv: string[]): Command | null {
  if (argv.length === 1 && argv[0] === 'serve') {
    // A failure to load is a rejection, as from every command.
    return () =>
      new Promise<number>((done) => {
        loadBundle<typeof import('../server/serve')>('serve').serveStdio();
        done(-1);
      });
  }
  if (argv[0] === 'flock') {
    return async () => exitNow(await loadBundle<typeof import('./flock')>('flock').flockCommand(argv.slice(1)));
  }
  if (argv[0] === 'run') {
    const opts = runArgs(argv.slice(1));
    if (!opts) return null;
    return async () => exitNow(await loadBundle<typeof import('./run')>('run').runLocked(opts));
  }
  if (argv[0] !== 'agent') return null;
  const opts = agentArgs(argv.slice(1));
  if (!opts) return null;
  return async () => {
    const agent = loadBundle<typeof import('../agent/agent')>('agent');
    const { print, ...o } = opts;
    if (print) {
      process.stdout.write(agent.agentPaths(o).socket + '\n');
      return 0;
    }
    return agent.runAgent(o);
  };
}

function agentArgs(args: string[]): { ownerPid: number; runtime?: string; idleTimeout: number; print: boolean } | null {
  const seen = new Map<string, string | true>();
  const rest = args.values();
  for (const a of rest) {
    if (seen.has(a)) return null;
    if (a === '--print-socket') {
      seen.set(a, true);
    } else if (a === '--owner-pid' || a === '--runtime-dir' || a === '--idle-timeout') {
      const v = rest.next().value;
      if (v === undefined || v === '' || v.startsWith('-')) return null;
      seen.set(a, v);
    } else {
      return null;
    }
  }
  const pid = seen.get('--owner-pid');
  const idle = seen.get('--idle-timeout') ?? '60';
  if (typeof pid !== 'string' || !/^[1-9][0-9]{0,9}$/.test(pid)) return null;
  if (typeof idle !== 'string' || !/^[0-9]{1,9}(\.[0-9]{1,9})?$/.test(idle)) return null;
  const runtime = seen.get('--runtime-dir') as string | undefined;
  return { ownerPid: Number(pid), runtime, idleTimeout: Number(idle), print: seen.has('--print-socket') };
}

// `run` with one name, options each spelt once and apart from its value, and the command
// after `--`; every value one that the full CLI accepts as it is.
function runArgs(args: string[]): RunOptions | null {
  const end = args.indexOf('--');
  if (end < 0 || end === args.length - 1) return null;
  const o: RunOptions = {
    name: '',
    shared: false,
    nonblock: false,
    conflictExitCode: 1,
    quiet: false,
    command: args.slice(end + 1),
  };
  const seen = new Set<string>();
  const rest = args.slice(0, end).values();
  let name: string | undefined;
  for (const a of rest) {
    const flag = RUN_FLAGS[a];
    if (flag === undefined) {
      if (name !== undefined || a.startsWith('-')) return null;
      name = a;
      continue;
    }
    if (seen.has(flag)) return null;
    seen.add(flag);
    if (flag === 'shared') o.shared = true;
    else if (flag === 'nonblock') o.nonblock = true;
    else if (flag === 'quiet') o.quiet = true;
    else {
      const v = rest.next().value;
      if (v === undefined || v === '' || v.startsWith('-')) return null;
      if (flag === 'dir') o.dir = v;
      else if (flag === 'backend') o.backend = v;
      else if (flag === 'timeout') {
        if (!/^[0-9]{1,9}(\.[0-9]{1,9})?$/.test(v)) return null;
        o.timeout = Number(v);
      } else {
        if (!/^[0-9]{1,3}$/.test(v) || Number(v) > 255) return null;
        o.conflictExitCode = Number(v);
      }
    }
  }
  // An empty name, a path, -w with -n and a wrong store get the full CLI's usage errors.
  if (!name || /^[.~]|\//.test(name) || (o.nonblock && o.timeout !== undefined)) return null;
  try {
    checkBackendArgs(o.backend, o.dir);
  } catch {
    return null;
  }
  o.name = name;
  o.backend ??= process.env.HOSTLOCK_BACKEND;
  return o;
}

const RUN_FLAGS: Record<string, string> = {
  '--dir': 'dir',
  '--backend': 'backend',
  '-s': 'shared',
  '--shared': 'shared',
  '-n': 'nonblock',
  '--nonblock': 'nonblock',
  '-w': 'timeout',
  '--timeout': 'timeout',
  '-E': 'conflict',
  '--conflict-exit-code': 'conflict',
  '-q': 'quiet',
  '--quiet': 'quiet',
};
