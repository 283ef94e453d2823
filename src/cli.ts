// The `hostlock` command. Bare `serve` and plain `agent` take a fast path
// (fastpath.ts) that loads neither yargs nor anything else they do not need:
// they are started once per Python Lock or per run and must start like bare Node.
import { breakCommand } from './commands/break';
import { historyCommand } from './commands/history';
import { timelineCommand } from './commands/timeline';
import { fastCommand, runMain } from './fastpath';
import { VERSION } from './version';

const EXIT_HELP = `Exit codes:
  0      success (run: the command's own status)
  1      run: the lock is held by another (--nonblock) or --timeout expired; see --conflict-exit-code
  64     usage error
  73     the lock directory or lock file is unusable (missing, unwritable, a symlink)
  126    run: the command cannot be executed
  127    run: the command was not found
  128+N  run: the command was killed by signal N; 130 when the wait was interrupted`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const fast = fastCommand(argv);
  if (fast) return fast();
  const yargs = (await import('yargs')).default;
  let code = -1;
  const cli = yargs(argv)
    .scriptName('hostlock')
    .parserConfiguration({ 'populate--': true })
    .usage('$0 <command>\n\nflock(2) locks for concurrent Ansible runs.')
    .command(
      'status',
      'list the locks of a directory, free or held, with their holders',
      (y) =>
        y
          .option('dir', {
            type: 'string',
            describe: 'lock directory (default $HOSTLOCK_DIR or /tmp/hostlock-<uid>/locks)',
          })
          .option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
      async (a) => {
        code = await status(a.dir, a.json);
      },
    )
    .command(
      'run <name> [command..]',
      'run a command while holding the named lock (like flock(1))',
      (y) =>
        y
          .positional('name', { type: 'string', describe: 'lock name (any string)' })
          .positional('command', { type: 'string', array: true, describe: 'command and its arguments, after --' })
          .option('dir', { type: 'string', describe: 'lock directory' })
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
          .conflicts('timeout', 'nonblock')
          .check((a) => {
            a.command = [...(a.command ?? []), ...((a['--'] as string[] | undefined) ?? [])];
            if (!a.command || a.command.length === 0)
              throw new Error('give the command after --, e.g. hostlock run db -- ./migrate.sh');
            if (a.slots !== undefined && !(Number.isInteger(a.slots) && a.slots >= 1 && a.slots <= 64))
              throw new Error('--slots must be an integer from 1 to 64');
            if (a.slots !== undefined && a.shared)
              throw new Error('--slots and --shared do not combine: each slot is exclusive');
            if (a.timeout !== undefined && !(a.timeout >= 0 && Number.isFinite(a.timeout)))
              throw new Error('--timeout must be a number of seconds ≥ 0');
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
          shared: a.shared,
          slots: a.slots,
          timeout: a.timeout,
          nonblock: !!a.nonblock,
          conflictExitCode: a['conflict-exit-code'],
          command: (a.command ?? []).map(String),
          quiet: a.quiet,
        });
      },
    )
    .command(
      'serve',
      'serve the JSON-RPC protocol on stdin/stdout (see docs/PROTOCOL.md)',
      () => {},
      async () => {
        (await import('./serve')).serveStdio();
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
        const agent = await import('./agent');
        const opts = { ownerPid: a['owner-pid'], runtime: a['runtime-dir'], idleTimeout: a['idle-timeout'] };
        if (a['print-socket']) {
          process.stdout.write(agent.agentPaths(opts).socket + '\n');
          code = 0;
        } else {
          code = await agent.runAgent(opts);
        }
      },
    )
    .command(historyCommand)
    .command(timelineCommand)
    .command(breakCommand)
    .demandCommand(1, 'name a command: status, run, serve or agent')
    .strict()
    .epilogue(EXIT_HELP)
    .version(VERSION)
    .help()
    .exitProcess(false)
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      throw new UsageError(msg ?? err?.message ?? 'usage error');
    });
  try {
    await cli.parseAsync();
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`hostlock: ${err.message}\nTry: hostlock --help\n`);
      return 64;
    }
    process.stderr.write(`hostlock: ${(err as Error).message}\n`);
    return (err as { code?: number }).code !== undefined ? 73 : 1;
  }
  if (code === -1 && (argv.includes('--help') || argv.includes('--version') || argv.includes('-h'))) code = 0;
  return code;
}

async function status(dir: string | undefined, json: boolean): Promise<number> {
  return (await import('./commands/status')).statusCommand(dir, json);
}

runMain(() => main(process.argv.slice(2)));
