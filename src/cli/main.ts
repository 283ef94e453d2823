// The full `hostlock` command line (yargs): every command and spelling that
// main.ts does not hand to the fast path. Errors go up to runMain (exit.ts).
import { constants } from 'node:os';
import { checkBackendArgs } from './backendarg';
import { EXIT, EXIT_HELP, UsageError } from './exit';
import { isPathLike, pathNameRefused, signalName } from './run';
import type { LockRow, StatusFilter } from './commands/status';
import { breakCommand } from './commands/break';
import { historyCommand } from './commands/history';
import { timelineCommand } from './commands/timeline';
import { VERSION } from '../core/version';
import { postgresModule } from '../stores';
import { serverStoreOf } from '../store/urls';

// What `hostlock run --help` says of what it promises, beyond the options.
const RUN_HELP = `Never two commands inside one name, on every store:
  local store   the command inherits the lock (fd 3), like flock(1): if hostlock is killed,
                the lock lasts until the command (and whatever inherited fd 3) exits.
  server store  (--backend postgresql://… or etcd://…) the lock lives in hostlock's session
                or lease, so the command cannot outlive hostlock: the kernel SIGKILLs it when
                hostlock dies (kill -9 included). What the command starts in the background
                and leaves running is not covered.
Lost lock: if the store ends the hold while the command runs (session terminated, lease
  expired, lock file removed), hostlock says so on stderr ("LOST the lock"), sends the
  command --on-lost (default SIGTERM), SIGKILL after --lost-grace seconds (default 10),
  and exits 75 when the command has ended, whatever its status.
Signals: SIGHUP, SIGINT and SIGTERM end the wait (exit 129, 130, 143); while the command
  runs they are forwarded to it, and hostlock exits with the command's status. A signal
  hostlock inherited as ignored (nohup, a background job's SIGINT and SIGQUIT) stays
  ignored by hostlock and by the command.`;

// What `hostlock clear --help` says of when clearing is safe.
const CLEAR_HELP = `Each file is removed while hostlock holds its lock, after checking that the path
still names the file it locked. Every hostlock user re-checks the same way after its
own flock and starts over on a new file, so clearing never lets two hostlock users in.
A flock(1) or fcntl user of the same files does not re-check: one that opened a file
just before it was cleared, and locks it just after, holds a file nobody else opens.
Clear a directory that flock(1) scripts use only while they are not running.`;

export async function main(argv: string[]): Promise<number> {
  // A reader that stops early (`hostlock status | head -1`) ends the output as
  // it ends coreutils' commands, with the status of a SIGPIPE, not a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(EXIT.signalBase + constants.signals.SIGPIPE);
  });
  const yargs = (await import('yargs')).default;
  let code = -1;
  const cli = yargs(argv)
    .scriptName('hostlock')
    .parserConfiguration({ 'populate--': true })
    .usage('$0 <command>\n\nflock(2) locks for concurrent Ansible runs.')
    .command(
      'status [names..]',
      'show the locks of a directory or store, free or held, with their holders and waiters',
      (y) =>
        y
          .positional('names', {
            type: 'string',
            array: true,
            describe: 'lock names or shell patterns (web*, db[12]) to show; default: every lock',
          })
          .option('held', { type: 'boolean', default: false, describe: 'only locks that are held or waited for' })
          .option('dir', {
            type: 'string',
            describe: 'lock directory (default $HOSTLOCK_DIR or /tmp/hostlock-<uid>/locks)',
          })
          .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
          .option('backend', {
            type: 'string',
            describe:
              'where the locks live: local (default: $HOSTLOCK_BACKEND, else lock files) or a postgresql:// or etcd:// URL',
          })
          .example('$0 status web1', 'who holds web1, and who waits for it')
          .example("$0 status 'db*' --held", 'the db locks in use'),
      async (a) => {
        checkBackendArgs(a.backend, a.dir);
        const filter = { names: (a.names ?? []).map(String), held: a.held };
        code = await status(a.dir, a.json, filter, a.backend ?? process.env.HOSTLOCK_BACKEND);
      },
    )
    .command(
      'clear [names..]',
      'remove the lock files nobody holds or waits for (local store)',
      (y) =>
        y
          .positional('names', {
            type: 'string',
            array: true,
            describe: 'lock names or shell patterns to clear; default: every free lock of the directory',
          })
          .option('dir', {
            type: 'string',
            describe: 'lock directory (default $HOSTLOCK_DIR or /tmp/hostlock-<uid>/locks)',
          })
          .option('dry-run', { type: 'boolean', default: false, describe: 'say what would be removed, remove nothing' })
          .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
          .option('backend', { type: 'string', hidden: true })
          .epilogue(CLEAR_HELP),
      async (a) => {
        if (a.backend && a.backend !== 'local')
          throw new UsageError(
            'clear applies to the local store: a server store keeps nothing for a lock nobody holds, so there is nothing to clear',
          );
        const { clearLocks, printClear } = await import('./commands/clear');
        const names = (a.names ?? []).map(String);
        printClear(clearLocks(a.dir, names, a['dry-run']), a['dry-run'], a.json);
        code = EXIT.ok;
      },
    )
    .command(
      'run <name> [command..]',
      'run a command while holding the named lock (like flock(1))',
      (y) =>
        y
          .positional('name', {
            type: 'string',
            describe: 'lock name: a word, not a path (to lock a file by its path: hostlock flock PATH cmd…)',
          })
          .positional('command', { type: 'string', array: true, describe: 'command and its arguments, after --' })
          .option('dir', { type: 'string', describe: 'lock directory' })
          .option('backend', {
            type: 'string',
            describe:
              'where the locks live: local (default: $HOSTLOCK_BACKEND, else lock files) or a postgresql:// or etcd:// URL',
          })
          .option('shared', { alias: 's', type: 'boolean', default: false, describe: 'take a shared (read) lock' })
          .option('slots', { type: 'number', describe: 'at most N holders at once (a counting semaphore)' })
          .option('timeout', { alias: 'w', type: 'number', describe: 'give up after S seconds' })
          .option('nonblock', { alias: 'n', type: 'boolean', describe: 'fail at once if the lock is held' })
          .option('conflict-exit-code', {
            alias: 'E',
            type: 'number',
            default: 1,
            describe: 'exit code when the lock is not taken',
          })
          .option('quiet', {
            alias: 'q',
            type: 'boolean',
            default: false,
            describe: 'say nothing about waiting or conflicts',
          })
          .option('on-lost', {
            type: 'string',
            default: 'SIGTERM',
            describe: 'signal sent to the command if the lock is lost while it runs (then exit 75)',
          })
          .option('lost-grace', {
            type: 'number',
            default: 10,
            describe: 'seconds the command has after --on-lost before SIGKILL',
          })
          .epilogue(`${RUN_HELP}\n\n${EXIT_HELP}`)
          .conflicts('timeout', 'nonblock')
          .check((a) => {
            if (a.name === '') throw new UsageError('the lock name cannot be empty');
            if (isPathLike(a.name!)) throw new UsageError(pathNameRefused(a.name!));
            checkBackendArgs(a.backend, a.dir);
            a.command = [...(a.command ?? []), ...((a['--'] as string[] | undefined) ?? [])];
            if (!a.command || a.command.length === 0)
              throw new Error('give the command after --, e.g. hostlock run db -- ./migrate.sh');
            if (a.slots !== undefined && !(Number.isInteger(a.slots) && a.slots >= 1 && a.slots <= 64))
              throw new Error('--slots must be an integer from 1 to 64');
            if (a.slots !== undefined && a.shared)
              throw new Error('--slots and --shared do not combine: each slot is exclusive');
            if (a.timeout !== undefined && !(a.timeout >= 0 && Number.isFinite(a.timeout)))
              throw new Error('--timeout must be a number of seconds ≥ 0');
            if (signalName(a['on-lost']) === undefined)
              throw new Error(`--on-lost: ${a['on-lost']} is not a signal (e.g. SIGTERM, INT, 9)`);
            const g = a['lost-grace'];
            if (!(g >= 0 && Number.isFinite(g))) throw new Error('--lost-grace must be a number of seconds ≥ 0');
            const e = a['conflict-exit-code'];
            if (!Number.isInteger(e) || e < 0 || e > 255)
              throw new Error('--conflict-exit-code must be an integer from 0 to 255');
            return true;
          }),
      async (a) => {
        const { runLocked } = await import('./run');
        code = await runLocked({
          name: a.name!,
          dir: a.dir,
          backend: a.backend ?? process.env.HOSTLOCK_BACKEND,
          shared: a.shared,
          slots: a.slots,
          timeout: a.timeout,
          nonblock: !!a.nonblock,
          conflictExitCode: a['conflict-exit-code'],
          command: (a.command ?? []).map(String),
          quiet: a.quiet,
          onLost: signalName(a['on-lost']),
          lostGrace: a['lost-grace'],
        });
      },
    )
    .command(
      'flock [options..]',
      "util-linux flock(1)'s command line, with holder records and HOSTLOCK_TOKEN: see hostlock flock --help",
      (y) => y.strict(false).help(false),
      async () => {
        code = await (await import('./flock')).flockCommand(argv.slice(argv.indexOf('flock') + 1));
      },
    )
    .command(
      'setup',
      'prepare a server store ahead of time: PostgreSQL schema, and grants for a lock-only role',
      (y) =>
        y
          .option('backend', {
            type: 'string',
            describe: 'the postgresql:// URL of a role allowed to create the schema (default $HOSTLOCK_BACKEND)',
          })
          .option('grant', { type: 'string', describe: 'role to give what locking needs (USAGE and EXECUTE only)' })
          .option('check', { type: 'boolean', default: false, describe: 'say what setup would change, change nothing' })
          .option('json', { type: 'boolean', default: false, describe: 'print the result as one JSON object' }),
      async (a) => {
        code = await setup(a.backend ?? process.env.HOSTLOCK_BACKEND, a.grant, a.check, a.json);
      },
    )
    .command(
      'serve',
      'serve the JSON-RPC protocol on stdin/stdout (see docs/PROTOCOL.md)',
      () => {},
      async () => {
        (await import('../server/serve')).serveStdio();
      },
    )
    .command(
      'agent',
      'the per-run helper started by the Ansible collection',
      (y) =>
        y
          .option('owner-pid', { type: 'number', demandOption: true, describe: 'PID of the ansible-playbook process' })
          .option('runtime-dir', {
            type: 'string',
            describe: 'socket directory (default $HOSTLOCK_RUNTIME_DIR or /tmp/hostlock-<uid>/run)',
          })
          .option('idle-timeout', {
            type: 'number',
            default: 60,
            describe: 'exit after S seconds with no client and nothing held',
          })
          .option('print-socket', { type: 'boolean', default: false, describe: 'print the socket path and exit' }),
      async (a) => {
        const agent = await import('../agent/agent');
        const opts = { ownerPid: a['owner-pid'], runtime: a['runtime-dir'], idleTimeout: a['idle-timeout'] };
        if (a['print-socket']) {
          process.stdout.write(agent.agentPaths(opts).socket + '\n');
          code = EXIT.ok;
        } else {
          code = await agent.runAgent(opts);
        }
      },
    )
    .command(historyCommand)
    .command(timelineCommand)
    .command(breakCommand)
    // Every command's --backend (and --dir beside it) is checked the same way, before it runs.
    .middleware((a) => {
      // flock's words are flock(1)'s and its command's, never hostlock options.
      if (argv[0] !== 'flock' && typeof a.backend === 'string')
        checkBackendArgs(a.backend, typeof a.dir === 'string' ? a.dir : undefined);
    })
    .demandCommand(1, 'name a command: status, run, flock, history, timeline, break, clear, setup, serve or agent')
    .strict()
    .epilogue(EXIT_HELP)
    .version(VERSION)
    .help()
    .exitProcess(false)
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err?.name === 'UsageError') throw err;
      let text = msg ?? err?.message ?? 'usage error';
      // `hostlock run db ls -la`: yargs reads -la as options of run.
      if (argv[0] === 'run' && !argv.includes('--') && /^Unknown arguments?:/.test(text))
        text += '; put the command and its options after --: hostlock run NAME [OPTIONS] -- COMMAND ARGS…';
      throw new UsageError(text);
    });
  await cli.parseAsync();
  if (code === -1 && (argv.includes('--help') || argv.includes('--version') || argv.includes('-h'))) code = EXIT.ok;
  return code;
}

// `hostlock setup`: a PostgreSQL store's schema created or upgraded, and a
// role granted what locking needs; with --check, only what it would change.
async function setup(
  backend: string | undefined,
  grant: string | undefined,
  check: boolean,
  json: boolean,
): Promise<number> {
  if (!backend || serverStoreOf(backend) !== 'postgresql') {
    throw new UsageError(
      'hostlock setup prepares a PostgreSQL store: give --backend postgresql://… (the local store and etcd need no setup)',
    );
  }
  const r = await postgresModule().setup(backend, { grantTo: grant, check });
  if (json) {
    process.stdout.write(JSON.stringify(r) + '\n');
  } else if (check) {
    const would = [
      r.created ? `create schema ${r.schema}` : '',
      r.upgradedFrom !== undefined ? `upgrade schema ${r.schema} from version ${r.upgradedFrom}` : '',
      r.grantChanged ? `grant role ${r.granted} what locking needs` : '',
    ].filter(Boolean);
    process.stdout.write(`${r.backend}: ${would.length ? `would ${would.join(', ')}` : 'nothing to change'}\n`);
  } else {
    const did = r.changed ? '' : ' (unchanged)';
    process.stdout.write(
      `schema ${r.schema} (version ${r.version}) ready on ${r.backend}${r.granted ? `; role ${r.granted} may lock` : ''}${did}\n`,
    );
  }
  return EXIT.ok;
}

async function status(dir: string | undefined, json: boolean, filter: StatusFilter, backend?: string): Promise<number> {
  const { LockManager } = await import('../policy/manager');
  const { printStatus, selectRows } = await import('./commands/status');
  const m = new LockManager();
  const show = (where: string, rows: LockRow[], all: number, out: Record<string, unknown>) => {
    if (json) process.stdout.write(JSON.stringify({ ...out, locks: rows }, null, 2) + '\n');
    else printStatus(where, all, rows, filter);
  };
  if (backend && backend !== 'local') {
    const { closeStores } = await import('../stores');
    try {
      const res = await m.listStore(backend);
      const rows = res.locks.map((l) => ({ ...l, name: l.key.name ?? l.key.id }));
      show(`backend ${res.backend}`, selectRows(rows, filter), rows.length, { backend: res.backend });
    } finally {
      await closeStores();
    }
    return EXIT.ok;
  }
  try {
    const res = m.list(dir);
    show(`lock directory ${res.dir}`, selectRows(res.locks, filter), res.locks.length, { dir: res.dir });
  } finally {
    m.shutdown();
  }
  return EXIT.ok;
}
