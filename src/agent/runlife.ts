// The life of a playbook run, as the agent must see it to release like
// flock(1): the run lasts while ansible-playbook (the owner) lives and, after
// it is gone, while any of its workers or what they started still runs.
//
// ansible-core forks a worker per host and task; each worker calls setsid(),
// so it survives a SIGKILL or SIGHUP of the owner (or of the owner's process
// group) and goes on running its task. While the owner lives we learn its
// children (the workers) on every tick. When it dies, the run's remaining
// processes are: the workers still alive, any process forked by the owner in
// the last instant (same command line and uid, a PID handed out and a start
// time since the last look, now an orphan), every process in a session one of
// them leads, and the descendants of these that stay in their parent's
// session. A process that leaves for a session of its own (an ssh
// ControlPersist master, a daemon, the agent itself) is no longer the run's.
// A false positive of the last-instant rule only makes a hold last longer.
//
// Exits are seen at once through pidfds, held by a tiny Python watcher
// (pidwatch.py: Node has no pidfd), started once the run holds something; the
// tick remains as a backstop and to see processes change sessions.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { log } from '../core/log';
import {
  allProcesses,
  bootTicksNow,
  childrenOf,
  lastPid,
  pidMax,
  processIdentity,
  processStartTime,
  readProcStat,
  type ProcStat,
} from '../sys/proc';

export class RunLife {
  // Live children of the owner at the last look: PID -> start time.
  private workers = new Map<number, string>();
  private lastLook = 0;
  private lastPid: number | null = null;
  private identity: { cmdline: string; uid: number } | null = null;
  // Where an orphan of the owner can be reparented: init or a subreaper above the owner.
  private readonly adopters = new Set<number>([1]);
  private watcher?: ChildProcess;
  private watchStarted = false;
  private readonly watched = new Set<number>();
  private ended = false;
  private ownerGone = false;
  // PIDs still running after the owner died; empty while the owner lives.
  private remaining: number[] = [];

  constructor(
    private readonly ownerPid: number,
    private readonly ownerStart: string,
    private readonly onEnd: (why: string) => void,
  ) {
    for (let p = readProcStat(ownerPid)?.ppid; p && p > 1 && !this.adopters.has(p); p = readProcStat(p)?.ppid)
      this.adopters.add(p);
    this.learn();
  }

  // Starts the exit watcher once, after the reply in progress.
  watchSoon(): void {
    if (this.watchStarted || this.ended) return;
    this.watchStarted = true;
    setImmediate(() => {
      if (!this.ended) this.watch();
    });
  }

  private watch(): void {
    const script = join(__dirname, 'pidwatch.py');
    if (!existsSync(script)) {
      log.warn(`${script} is missing: the run's end is seen by polling only`);
      return;
    }
    let child: ChildProcess;
    try {
      child = spawn(this.python(), ['-I', '-S', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    } catch (err) {
      log.warn(`cannot start the exit watcher: ${(err as Error).message}; the run's end is seen by polling only`);
      return;
    }
    this.watcher = child;
    child.on('error', (err) => {
      log.warn(`cannot start the exit watcher: ${err.message}; the run's end is seen by polling only`);
      this.watcher = undefined;
    });
    child.on('exit', (code) => {
      if (this.watcher === child && !this.ended) log.warn(`the exit watcher ended (code ${code}); polling only`);
      if (this.watcher === child) this.watcher = undefined;
    });
    child.stdin!.on('error', () => {
      /* the watcher is gone: its exit says so */
    });
    let buf = '';
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) this.exited(Number(l));
    });
    this.send(this.ownerPid, this.ownerStart);
  }

  // The owner's interpreter: ansible-playbook runs on Python >= 3.11, which has os.pidfd_open.
  private python(): string {
    try {
      const exe = readlinkSync(`/proc/${this.ownerPid}/exe`);
      if (/^python3(\.\d+)?$/.test(basename(exe))) return exe;
    } catch {
      /* not ours to read */
    }
    return 'python3';
  }

  private send(pid: number, start: string): void {
    if (!this.watcher?.stdin?.writable || this.watched.has(pid)) return;
    this.watched.add(pid);
    this.watcher.stdin.write(`${pid} ${start}\n`);
  }

  private exited(pid: number): void {
    log.debug(`process ${pid} ended`);
    this.watched.delete(pid);
    if (this.ended) return;
    if (pid === this.ownerPid && !this.ownerGone) return this.ownerDied();
    if (!this.ownerGone) return;
    // A scan of /proc costs milliseconds: only once none of the processes last seen is left
    // (the tick's scans find newcomers and the ones that left for a session of their own).
    this.remaining = this.remaining.filter((p) => p !== pid);
    if (this.remaining.length === 0) this.check();
  }

  // Called every tick.
  tick(): void {
    if (this.ended) return;
    if (!this.ownerGone) {
      if (processStartTime(this.ownerPid) === this.ownerStart) this.learn();
      else this.ownerDied();
    } else this.check();
  }

  private learn(): void {
    // Read again each time: the owner may have exec'd since the agent started (a wrapper script).
    this.identity = processIdentity(this.ownerPid) ?? this.identity;
    // Taken before the children are read: whoever they miss starts at or after this tick,
    // with a PID handed out after this one.
    const now = bootTicksNow();
    const pid = lastPid();
    const seen = new Map<number, string>();
    for (const pid of childrenOf(this.ownerPid)) {
      const start = this.workers.get(pid) ?? processStartTime(pid);
      if (start !== null && start !== undefined) seen.set(pid, start);
    }
    this.lastLook = now;
    this.lastPid = pid;
    this.workers = seen;
  }

  private ownerDied(): void {
    this.ownerGone = true;
    // Only PIDs handed out since the last look can be a worker it missed: probe them rather
    // than all of /proc, which costs ~5 ms on the path of every release.
    const fresh = this.pidsSinceLastLook();
    const procs = fresh ? fresh.map(readProcStat).filter((p): p is ProcStat => p !== null) : allProcesses();
    // A worker forked after the last look: the owner's command line and uid, started since.
    if (this.identity) {
      for (const p of procs) {
        if (this.workers.has(p.pid) || Number(p.start) < this.lastLook - 1 || p.pid === this.ownerPid) continue;
        if (!this.adopters.has(p.ppid)) continue;
        const id = processIdentity(p.pid);
        if (id && id.tgid === p.pid && id.uid === this.identity.uid && id.cmdline === this.identity.cmdline) {
          log.info(`process ${p.pid} forked as the owner died: counted as a worker of the run`);
          this.workers.set(p.pid, p.start);
        }
      }
    }
    for (const [pid, start] of this.workers) if (processStartTime(pid) !== start) this.workers.delete(pid);
    // The sessions that count are those of the workers alive now: none, nothing to wait for.
    if (this.workers.size === 0) {
      this.remaining = [];
      this.end();
      this.onEnd(`the run ended: owner ${this.ownerPid} is gone and none of its workers runs`);
      return;
    }
    this.check(fresh ? allProcesses() : procs);
    if (!this.ended) {
      log.info(
        `owner ${this.ownerPid} is gone; the run's holds stay until its processes end: ${this.remaining.join(' ')}`,
      );
    }
  }

  // PIDs allocated since the last look (threads' too), or null when too many to probe.
  private pidsSinceLastLook(): number[] | null {
    const now = lastPid();
    if (now === null || this.lastPid === null) return null;
    const count = (now - this.lastPid + pidMax()) % pidMax();
    if (count > 4096) return null;
    const out: number[] = [];
    for (let i = 1; i <= count; i++) out.push(((this.lastPid + i - 1) % pidMax()) + 1);
    return out;
  }

  // With the owner gone: ends the run when none of its processes is left, else watches them.
  private check(procs = allProcesses()): void {
    if (this.ended) return;
    const members = this.members(procs);
    this.remaining = members.map((p) => p.pid);
    log.debug(`the run's processes left: ${this.remaining.join(' ') || 'none'}`);
    if (members.length === 0) {
      this.end();
      this.onEnd(`the run ended: owner ${this.ownerPid} and all its processes are gone`);
      return;
    }
    for (const p of members) this.send(p.pid, p.start);
  }

  private members(procs: ProcStat[]): ProcStat[] {
    const sessions = new Set(this.workers.keys());
    const ours = new Set<number>();
    const kids = new Map<number, ProcStat[]>();
    const todo: ProcStat[] = [];
    for (const p of procs) {
      if (p.pid === process.pid || p.pid === this.watcher?.pid) continue;
      if (this.workers.get(p.pid) === p.start || sessions.has(p.sid)) {
        ours.add(p.pid);
        todo.push(p);
      } else {
        const list = kids.get(p.ppid);
        if (list) list.push(p);
        else kids.set(p.ppid, [p]);
      }
    }
    // Descendants that stayed in their parent's session.
    for (const p of todo) {
      for (const c of kids.get(p.pid) ?? []) {
        if (!ours.has(c.pid) && c.sid === p.sid) {
          ours.add(c.pid);
          todo.push(c);
        }
      }
    }
    return todo;
  }

  // Stops watching (the agent is stopping).
  end(): void {
    this.ended = true;
    this.watcher?.stdin?.end();
    this.watcher = undefined;
  }
}
