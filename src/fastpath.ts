// The two commands that start helpers — bare `serve` (once per Python Lock)
// and `agent` with its plain options (once per playbook run) — parsed by hand,
// so that they never load yargs and start like bare Node. Anything else, or
// any other spelling of these (--help, --owner-pid=N, repeated options), is
// left to the full CLI, which gives the same results for these forms.
// `flock` (a drop-in for flock(1), started as often as a crontab or a script
// loop asks) is always here: its command line is flock(1)'s own, not yargs'.
import type { Command } from './exit';

export function fastCommand(argv: string[]): Command | null {
  if (argv.length === 1 && argv[0] === 'serve') {
    return async () => {
      (await import('./serve')).serveStdio();
      return -1;
    };
  }
  if (argv[0] === 'flock') {
    return async () => (await import('./flock')).flockCommand(argv.slice(1));
  }
  if (argv[0] !== 'agent') return null;
  const opts = agentArgs(argv.slice(1));
  if (!opts) return null;
  return async () => {
    const agent = await import('./agent');
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
