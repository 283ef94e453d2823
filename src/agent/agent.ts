// `hostlock agent`: one helper per playbook run, serving every worker of the
// run over a Unix socket. It owns the run's holds and ends, releasing all,
// when the run has ended (ansible-playbook and every process of the run are
// gone, see runlife.ts) or when idle with nothing held.
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeSync,
  chmodSync,
} from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { ErrorCode, HostlockError } from '../core/errors';
import { LockFile } from '../stores/flock/lockfile';
import { log } from '../core/log';
import { ensurePrivateDir, runtimeDir } from '../sys/paths';
import { processStartTime } from '../sys/proc';
import { AGENT_STOPPED, LostHolds, type LostHold } from '../policy/lostholds';
import { Server } from '../server/server';
import { RunLife } from './runlife';
import { guardProcess } from '../server/serve';
import { nowMs } from '../core/time';

export interface AgentOptions {
  ownerPid: number;
  runtime?: string;
  idleTimeout?: number; // seconds
}

export interface AgentPaths {
  id: string;
  dir: string;
  socket: string;
  pidFile: string;
  holdsFile: string;
}

export function agentPaths(opts: AgentOptions): AgentPaths {
  const start = processStartTime(opts.ownerPid);
  if (start === null) {
    throw new HostlockError(ErrorCode.InvalidParams, `owner process ${opts.ownerPid} is not running`);
  }
  const dir = ensurePrivateDir(opts.runtime ?? runtimeDir());
  const id = `${opts.ownerPid}-${start}`;
  const paths = {
    id,
    dir,
    socket: join(dir, `agent-${id}.sock`),
    pidFile: join(dir, `agent-${id}.pid`),
    holdsFile: join(dir, `agent-${id}.holds.json`),
  };
  if (Buffer.byteLength(paths.socket) > 107) {
    throw new HostlockError(
      ErrorCode.LockDirUnusable,
      `agent socket path ${paths.socket} is longer than a Unix socket allows (107 bytes); set HOSTLOCK_RUNTIME_DIR to a shorter directory`,
      { path: paths.socket },
    );
  }
  return paths;
}

// Resolves when the agent has stopped; exit code 0 also when another agent already serves this run.
export function runAgent(opts: AgentOptions): Promise<number> {
  const paths = agentPaths(opts);
  const ownerStart = paths.id.slice(paths.id.indexOf('-') + 1);

  // Exactly one agent per run: the one that holds this flock for its whole life.
  let pidLock: LockFile | undefined;
  for (let i = 0; i < 10 && !pidLock; i++) {
    const f = LockFile.open(paths.pidFile);
    if (!f.tryLock('exclusive')) {
      f.close();
      log.debug('another agent serves this run', { path: paths.socket });
      return Promise.resolve(0);
    }
    if (f.stillAtPath()) pidLock = f;
    else f.close(); // a previous agent unlinked it as we opened it: take the new file
  }
  if (!pidLock) return Promise.resolve(1);

  const lostHolds = new LostHolds();
  let life: RunLife | undefined;
  const server = new Server({
    agent: {
      lostHolds,
      // The exit watcher matters only once the run holds something: started then, not on the agent's start path.
      onRunHoldsChange: () => {
        if (saveHolds() > 0) life?.watchSoon();
      },
    },
  });
  // Holds recorded by a predecessor that died without releasing them were
  // lost when it died: the run's next tasks must hear of it.
  try {
    const prev = JSON.parse(readFileSync(paths.holdsFile, 'utf8')) as { holds: LostHold[] };
    for (const h of prev.holds ?? []) if (h.members?.length) lostHolds.add({ ...h, reason: AGENT_STOPPED });
    if (lostHolds.size) log.warn(`the previous agent of this run died holding ${lostHolds.size} lock(s)`);
  } catch {
    /* no predecessor */
  }

  // Rewritten before every reply that changes a run hold, so it is on the
  // path of every task: one pwrite at offset 0 of a kept descriptor, padded
  // with spaces (JSON ignores them) to the longest record the file has held,
  // replaces the record at once without the create + rename of a new file
  // each time (~1 ms on the 2-core build machine).
  let holdsFd: number | undefined;
  let holdsLen = 0;
  function saveHolds(): number {
    const holds = server.runHolds.snapshot();
    try {
      if (holdsFd !== undefined && fstatSync(holdsFd).nlink === 0) {
        // removed under us: make a new one
        closeSync(holdsFd);
        holdsFd = undefined;
      }
      if (holdsFd === undefined) {
        holdsFd = openSync(paths.holdsFile, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
        holdsLen = fstatSync(holdsFd).size;
      }
      const text = Buffer.from(JSON.stringify({ pid: process.pid, holds }));
      const record = text.length >= holdsLen ? text : Buffer.concat([text, Buffer.alloc(holdsLen - text.length, 0x20)]);
      writeSync(holdsFd, record, 0, record.length, 0);
      holdsLen = record.length;
    } catch (err) {
      log.warn(`cannot record the run's holds in ${paths.holdsFile}: ${(err as Error).message}`);
    }
    return holds.length;
  }
  if (lostHolds.size === 0) saveHolds();

  try {
    if (existsSync(paths.socket)) unlinkSync(paths.socket); // stale: its agent no longer holds the pid lock
  } catch {
    /* raced away */
  }

  const sockets = new Set<Socket>();
  const net = createServer((sock) => {
    sockets.add(sock);
    const session = server.openSession((line) => {
      if (!sock.destroyed) sock.write(line);
    });
    sock.on('data', (c: Buffer) => session.feed(c));
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      sockets.delete(sock);
      session.close();
    });
  });

  return new Promise<number>((resolve) => {
    let stopping = false;
    let idleSince = nowMs();
    const idleMs = (opts.idleTimeout ?? 60) * 1000;

    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      log.info(`agent stopping: ${why}`);
      clearInterval(watch);
      runLife.end();
      const released = server.shutdown();
      for (const s of sockets) s.destroy();
      net.close();
      // Clean up while still holding the pid lock, so no successor is misled (the
      // `.helper` beside the socket: the helper command the shim started us with).
      for (const f of [paths.socket, `${paths.socket}.helper`, paths.holdsFile]) {
        try {
          unlinkSync(f);
        } catch {
          /* gone */
        }
      }
      try {
        unlinkSync(paths.pidFile);
      } catch {
        /* gone */
      }
      if (holdsFd !== undefined) closeSync(holdsFd);
      // Server stores end their sessions and leases before the agent goes.
      void released.finally(() => {
        pidLock.close();
        resolve(0);
      });
    };

    const runLife = new RunLife(opts.ownerPid, ownerStart, stop);
    life = runLife;
    const watch = setInterval(() => {
      runLife.tick();
      if (stopping) return;
      if (sockets.size > 0 || server.busy()) idleSince = nowMs();
      else if (nowMs() - idleSince > idleMs) stop('idle');
    }, 200);

    net.on('error', (err) => {
      log.error(`agent cannot listen on ${paths.socket}: ${err.message}`);
      stop('listen failed');
    });
    net.listen(paths.socket, () => {
      try {
        chmodSync(paths.socket, 0o600);
      } catch {
        /* dir is 0700 anyway */
      }
      log.info('agent ready', { path: paths.socket });
    });
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      /* the terminal went away; the owner check decides */
    });
    guardProcess();
  });
}
