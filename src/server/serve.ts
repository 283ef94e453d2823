// `hostlock serve`: a private helper on stdin/stdout. Stdin EOF, SIGTERM or
// SIGINT release everything and exit 0; if we die, the kernel releases for us.
import { log } from '../core/log';
import { Server } from './server';

export function serveStdio(): void {
  const server = new Server();
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    void server.shutdown().finally(() => process.exit(0));
  };
  const session = server.openSession((line) => {
    if (!done) process.stdout.write(line);
  });
  process.stdout.on('error', finish); // the client went away (EPIPE)
  process.stdin.on('data', (chunk: Buffer) => session.feed(chunk));
  process.stdin.on('end', finish);
  process.stdin.on('error', finish);
  process.on('SIGTERM', finish);
  process.on('SIGINT', finish);
  process.on('SIGHUP', finish);
  guardProcess();
}

// Input never crashes the helper; a bug that escapes a handler is logged, not fatal.
export function guardProcess(): void {
  process.on('uncaughtException', (err) => log.error('uncaught exception', { error: String(err?.stack ?? err) }));
  process.on('unhandledRejection', (err) =>
    log.error('unhandled rejection', { error: String((err as Error)?.stack ?? err) }),
  );
}
