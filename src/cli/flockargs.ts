// `hostlock flock`'s command line: util-linux flock(1)'s, read the way its
// getopt_long("+sexnoFuw:E:hV?") reads it — options stop at the first
// operand, long options may be abbreviated to any unique prefix, `-c` and
// `--command` are recognised where flock(1) recognises them — with its
// messages and exit statuses (the installed 2.38's words; --fd, which came
// later, speaks as upstream's current flock.c). Pure: the caller prints and exits.
import type { Mode } from '../core/mode';

// <sysexits.h>, as flock(1) uses them.
export const EX = {
  ok: 0,
  usage: 64,
  dataErr: 65,
  noInput: 66,
  unavailable: 69,
  software: 70,
  osErr: 71,
  cantCreate: 73,
} as const;

export interface FlockArgs {
  op: Mode | 'unlock';
  nonblock: boolean;
  timeout?: number; // seconds, > 0 (-w 0 is -n)
  conflictExitCode: number;
  close: boolean;
  noFork: boolean;
  verbose: boolean;
  file?: string; // FILE|DIRECTORY to open
  fd?: number; // a descriptor we were given (`flock N`, `--fd N`)
  command?: string[];
}

export type Parsed =
  | { kind: 'lock'; args: FlockArgs }
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'error'; message: string; tryHelp: boolean; status: number };

interface LongOption {
  name: string;
  arg: boolean;
  val: string;
}

const LONG: LongOption[] = [
  { name: 'shared', arg: false, val: 's' },
  { name: 'exclusive', arg: false, val: 'x' },
  { name: 'unlock', arg: false, val: 'u' },
  { name: 'nonblocking', arg: false, val: 'n' },
  { name: 'nb', arg: false, val: 'n' },
  { name: 'timeout', arg: true, val: 'w' },
  { name: 'wait', arg: true, val: 'w' },
  { name: 'conflict-exit-code', arg: true, val: 'E' },
  { name: 'close', arg: false, val: 'o' },
  { name: 'no-fork', arg: false, val: 'F' },
  { name: 'verbose', arg: false, val: 'verbose' },
  { name: 'fd', arg: true, val: 'fd' },
  { name: 'help', arg: false, val: 'h' },
  { name: 'version', arg: false, val: 'V' },
];
const SHORT_WITH_ARG = new Set(['w', 'E']);
const SHORT = new Set(['s', 'e', 'x', 'n', 'o', 'F', 'u', 'w', 'E', 'h', 'V', '?']);

// One step of getopt: the option found ('?' unknown, ':' missing argument)
// and its argument; `index` is getopt's optind afterwards.
interface Step {
  opt: string;
  optarg?: string;
  error?: string; // what getopt says of a '?' or ':'
}

class Getopt {
  index = 1; // argv[0] is the program's name, as in C
  private cluster = 0; // position inside a cluster of short options

  constructor(private readonly argv: string[]) {}

  next(): Step | null {
    const argv = this.argv;
    if (this.cluster === 0) {
      const a = argv[this.index];
      if (a === undefined || a === '-' || !a.startsWith('-')) return null;
      if (a === '--') {
        this.index++;
        return null;
      }
      if (a.startsWith('--')) return this.long(a.slice(2));
      this.cluster = 1;
    }
    const a = argv[this.index]!;
    const c = a[this.cluster]!;
    this.cluster++;
    const last = this.cluster >= a.length;
    if (!SHORT.has(c) || c === '?') {
      if (last) this.endCluster();
      return { opt: '?', error: `invalid option -- '${c}'` };
    }
    if (!SHORT_WITH_ARG.has(c)) {
      if (last) this.endCluster();
      return { opt: c };
    }
    const rest = a.slice(this.cluster);
    this.endCluster();
    if (rest !== '') return { opt: c, optarg: rest };
    const v = argv[this.index];
    if (v === undefined) return { opt: ':', error: `option requires an argument -- '${c}'` };
    this.index++;
    return { opt: c, optarg: v };
  }

  private endCluster(): void {
    this.cluster = 0;
    this.index++;
  }

  private long(spec: string): Step {
    this.index++;
    const eq = spec.indexOf('=');
    const name = eq >= 0 ? spec.slice(0, eq) : spec;
    const exact = LONG.find((o) => o.name === name);
    // Abbreviations: a unique prefix, or prefixes of options that mean the same.
    const prefixed = LONG.filter((o) => o.name.startsWith(name)).filter(
      (o, i, all) => all.findIndex((p) => p.val === o.val && p.arg === o.arg) === i,
    );
    const unknown = { opt: '?', error: `unrecognized option '--${spec}'` };
    if (name === '' || (!exact && prefixed.length === 0)) return unknown;
    if (!exact && prefixed.length > 1) {
      const them = prefixed.map((o) => `'--${o.name}'`).join(' ');
      return { opt: '?', error: `option '--${name}' is ambiguous; possibilities: ${them}` };
    }
    const found = exact ?? prefixed[0]!;
    if (!found.arg) {
      if (eq < 0) return { opt: found.val };
      return { opt: '?', error: `option '--${found.name}' doesn't allow an argument` };
    }
    if (eq >= 0) return { opt: found.val, optarg: spec.slice(eq + 1) };
    const v = this.argv[this.index];
    if (v === undefined) return { opt: ':', error: `option '--${found.name}' requires an argument` };
    this.index++;
    return { opt: found.val, optarg: v };
  }
}

const isCommandOpt = (s: string | undefined) => s === '-c' || s === '--command';

// strtold: what C reads as a number, whole string (hex and exponents included).
function cNumber(s: string): number | null {
  const t = s.replace(/^[\t\n\v\f\r ]+/, '');
  if (t === '' || !/^[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|0x[0-9a-f]+|inf(inity)?|nan)$/i.test(t)) return null;
  const n = /^[+-]?0x/i.test(t) ? Number.parseInt(t, 16) : Number(t.replace(/^([+-]?)inf(inity)?$/i, '$1Infinity'));
  return Number.isNaN(n) && !/nan/i.test(t) ? null : n;
}

// strtou64/strtos64 in base 10: digits only, after optional blanks and sign.
function cInteger(s: string, signed: boolean): number | null {
  const m = /^[\t\n\v\f\r ]*([+-]?)(\d+)$/.exec(s);
  if (!m || (m[1] === '-' && !signed)) return null;
  return Number(`${m[1]}${m[2]}`);
}

export function parseFlockArgs(args: string[]): Parsed {
  const argv = ['flock', ...args];
  const usage = (message: string): Parsed => ({ kind: 'error', message, tryHelp: false, status: EX.usage });
  const tryHelp = (message: string): Parsed => ({ kind: 'error', message, tryHelp: true, status: EX.usage });
  if (argv.length < 2) return tryHelp('not enough arguments');
  const a: FlockArgs = {
    op: 'exclusive',
    nonblock: false,
    conflictExitCode: 1,
    close: false,
    noFork: false,
    verbose: false,
  };
  let useFd = false;
  let commandOpt = false;
  let timeout: number | undefined;
  const g = new Getopt(argv);
  for (let s = g.next(); s; s = g.next()) {
    const v = s.optarg ?? '';
    switch (s.opt) {
      case 's':
        a.op = 'shared';
        break;
      case 'e':
      case 'x':
        a.op = 'exclusive';
        break;
      case 'u':
        a.op = 'unlock';
        break;
      case 'o':
        a.close = true;
        break;
      case 'F':
        a.noFork = true;
        break;
      case 'n':
        a.nonblock = true;
        break;
      case 'w': {
        const n = cNumber(v);
        if (n === null) return usage(`invalid timeout value: '${v}'`);
        timeout = n;
        break;
      }
      case 'E': {
        const n = cInteger(v, true);
        if (n === null) return usage(`invalid exit code: '${v}'`);
        if (n < 0 || n > 255) return usage('exit code out of range (expected 0 to 255)');
        a.conflictExitCode = n;
        break;
      }
      case 'fd': {
        const n = cInteger(v, true);
        if (n === null) return usage(`invalid file descriptor: '${v}'`);
        if (n < 0 || n > 2 ** 31 - 1) return usage(`invalid file descriptor: '${v}': Numerical result out of range`);
        useFd = true;
        a.fd = n;
        break;
      }
      case 'verbose':
        a.verbose = true;
        break;
      case 'V':
        return { kind: 'version' };
      case 'h':
        return { kind: 'help' };
      default: {
        // -c before any operand names the command of the --fd form.
        if (useFd && isCommandOpt(argv[g.index - 1])) {
          commandOpt = true;
          break;
        }
        return tryHelp(s.error ?? `unrecognized option '${argv[g.index - 1]}'`);
      }
    }
  }
  if (a.noFork && a.close) return usage('the --no-fork and --close options are incompatible');
  const i = g.index;
  const argc = argv.length;
  if (commandOpt) {
    if (argc !== i + 1) return usage(`${argv[i - 1]} requires exactly one command argument`);
    a.command = shellCommand(argv[i]!);
  } else if (argc > i + 1 && !useFd) {
    if (isCommandOpt(argv[i + 1])) {
      if (argc !== i + 3) return usage(`${argv[i + 1]} requires exactly one command argument`);
      a.command = shellCommand(argv[i + 2]!);
    } else {
      a.command = argv.slice(i + 1);
    }
    a.file = argv[i]!;
  } else if (argc > i) {
    if (useFd) a.command = argv.slice(i);
    else {
      const n = cInteger(argv[i]!, true);
      if (n === null || n < 0 || n > 2 ** 31 - 1) return usage(`bad file descriptor: '${argv[i]}'`);
      a.fd = n;
    }
  } else {
    return usage(useFd ? 'missing command' : 'requires file descriptor, file or directory');
  }
  if (a.file === undefined && a.fd === undefined) return usage('requires file descriptor, file or directory');
  if (timeout !== undefined) {
    // -w 0 is -n, as in flock(1) (a zero timer would mean no timer at all).
    if (Math.trunc(timeout * 1e6) === 0) a.nonblock = true;
    else if (timeout < 0)
      return { kind: 'error', message: 'cannot set up timer: Invalid argument', tryHelp: false, status: EX.osErr };
    else if (!a.nonblock) a.timeout = timeout;
  }
  return { kind: 'lock', args: a };
}

// flock(1) runs `-c` strings with $SHELL, else /bin/sh.
function shellCommand(cmd: string): string[] {
  return [process.env.SHELL || '/bin/sh', '-c', cmd];
}

export const FLOCK_USAGE = `
Usage:
 hostlock flock [options] <file>|<directory> <command> [<argument>...]
 hostlock flock [options] <file>|<directory> -c <command>
 hostlock flock [options] <file descriptor number>
 hostlock flock [options] --fd <file descriptor number> -c <command>
 hostlock flock [options] --fd <file descriptor number> <command> [<argument>...]

util-linux flock(1)'s command line, with hostlock's holder records, history
and fencing token (HOSTLOCK_TOKEN) on top: \`hostlock status\` shows the holder.

Options:
 -s, --shared             get a shared lock
 -x, -e, --exclusive      get an exclusive lock (default)
 -u, --unlock             remove a lock
 -n, --nb, --nonblock     fail rather than wait
 -w, --timeout <secs>     wait for a limited amount of time (0: as -n)
 -E, --conflict-exit-code <number>  exit code after conflict or timeout
 -o, --close              close file descriptor before running command
 -c, --command <command>  run a single command string through the shell
 -F, --no-fork            the command holds the lock itself: hostlock exits
                          as it does, dying of the same signal
     --wait               same as --timeout
     --fd <number>        use the file descriptor number to wrap the
                          lock around the command execution
     --verbose            increase verbosity

 -h, --help               display this help
 -V, --version            display version

Exit status:
  0       success (with a command: the command's own status)
  1       the lock was not taken (-n) or -w expired; -E changes it
  64      usage error
  65      the lock could not be taken (bad descriptor, not lockable)
  66      the file cannot be opened
  69      the command cannot be executed (not found, not executable)
  71      out of descriptors or memory
  73      the file cannot be created (read-only file system, disk full)
  128+N   the command was killed by signal N
`;
