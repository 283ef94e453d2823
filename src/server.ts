// One request handler for every transport: a Session is one client connection
// (stdio for `serve`, a socket connection for the agent) speaking line-delimited
// JSON-RPC 2.0. Bad input always gets an error reply; nothing here may throw
// out to the transport.
import { ErrorCode, HostlockError, invalidParams } from './errors';
import type { Holder, Owner } from './holders';
import { controllerName } from './holders';
import type { Mode } from './lockfile';
import { log } from './log';
import { LockManager, type AcquireOutcome, type AcquireRequest, type Hold, type Target } from './manager';
import { currentUser } from './proc';
import type { FlockStatus } from './stores/flock';
import { RunHolds } from './runholds';
import { checkParams, checkRequest, METHODS, type Method } from './validate';
import { VERSION, PROTOCOL } from './version';

export const MAX_LINE = 1024 * 1024;

type HandleState =
  | { kind: 'held'; hold: Hold }
  | { kind: 'waiting'; cancel: () => void }
  | { kind: 'pending'; req: AcquireRequest; params: AcquireParams }
  | { kind: 'run'; path: string; member: string };

interface AcquireParams {
  path?: string;
  name?: string;
  dir?: string;
  shared?: boolean;
  timeout?: number | null;
  owner?: Owner;
  scope?: 'connection' | 'run';
  member?: string;
  notify?: number;
  prefix?: string;
  slots?: number;
}

export interface LostHold {
  name?: string;
  path: string;
  mode: Mode;
  since: string;
  members: string[];
}

type Id = string | number | null;

// A request whose reply is sent later by its own code (a wait), not by handleLine.
const REPLIED_LATER = Symbol('replied later');

export class Server {
  readonly manager = new LockManager();
  readonly runHolds: RunHolds;
  readonly sessions = new Set<Session>();
  readonly handleOwner = new Map<string, Session>();
  lost: LostHold[] = [];
  private nextHandle = 0;

  constructor(
    readonly isAgent: boolean,
    onRunHoldsChange: () => void = () => {},
  ) {
    this.runHolds = new RunHolds(this.manager, onRunHoldsChange);
  }

  newHandle(session: Session, prefix = 'h'): string {
    const h = `${prefix}${++this.nextHandle}`;
    this.handleOwner.set(h, session);
    return h;
  }

  openSession(write: (line: string) => void): Session {
    const s = new Session(this, write);
    this.sessions.add(s);
    return s;
  }

  busy(): boolean {
    return this.manager.heldCount() > 0 || this.runHolds.held.size > 0 || this.lost.length > 0;
  }

  shutdown(): void {
    for (const s of [...this.sessions]) s.close();
    this.runHolds.releaseAll();
    this.manager.shutdown();
  }
}

export class Session {
  private readonly handles = new Map<string, HandleState>();
  private buf: Buffer[] = [];
  private bufLen = 0;
  private skipping = false; // inside an over-long line: drop bytes up to its newline
  private closed = false;
  private dispatching: Id = null; // id of the request being dispatched

  constructor(
    private readonly server: Server,
    private readonly write: (line: string) => void,
  ) {}

  // Feeds raw bytes from the transport; complete lines are handled in order.
  feed(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const part = chunk.subarray(start, nl);
      start = nl + 1;
      if (this.skipping) {
        this.skipping = false;
        continue;
      }
      const line = this.bufLen ? Buffer.concat([...this.buf, part]) : part;
      this.buf = [];
      this.bufLen = 0;
      this.handleLine(line);
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0 || this.skipping) return;
    if (this.bufLen + rest.length > MAX_LINE) {
      this.buf = [];
      this.bufLen = 0;
      this.skipping = true;
      this.reply(
        null,
        undefined,
        new HostlockError(
          ErrorCode.InvalidRequest,
          `message longer than ${MAX_LINE} bytes: refused, and skipped up to the next newline`,
        ),
      );
      return;
    }
    this.buf.push(Buffer.from(rest));
    this.bufLen += rest.length;
  }

  private handleLine(line: Buffer): void {
    if (line.length > MAX_LINE) {
      this.reply(
        null,
        undefined,
        new HostlockError(ErrorCode.InvalidRequest, `message longer than ${MAX_LINE} bytes: refused`),
      );
      return;
    }
    let text = line.toString('utf8');
    if (text.includes('\ufffd') && !isValidUtf8(line)) {
      this.reply(null, undefined, new HostlockError(ErrorCode.ParseError, 'message is not valid UTF-8'));
      return;
    }
    text = text.trim();
    if (!text) return; // blank lines are keep-alives, not messages
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      this.reply(null, undefined, new HostlockError(ErrorCode.ParseError, `parse error: ${(err as Error).message}`));
      return;
    }
    const id = pickId(msg);
    const bad = checkRequest(msg);
    if (bad) {
      this.reply(
        id,
        undefined,
        new HostlockError(
          ErrorCode.InvalidRequest,
          Array.isArray(msg)
            ? 'batches are not supported: send one request per line'
            : `${bad} (expected {"jsonrpc":"2.0","id":…,"method":…,"params":{…}})`,
        ),
      );
      return;
    }
    const req = msg as { id: string | number; method: string; params?: object };
    if (!(METHODS as readonly string[]).includes(req.method)) {
      this.reply(
        req.id,
        undefined,
        new HostlockError(ErrorCode.MethodNotFound, `unknown method "${req.method}"; known: ${METHODS.join(', ')}`),
      );
      return;
    }
    const method = req.method as Method;
    const params = req.params ?? {};
    const problem = checkParams(method, params);
    if (problem) {
      this.reply(req.id, undefined, invalidParams(problem));
      return;
    }
    let result: unknown;
    this.dispatching = req.id;
    try {
      result = this.dispatch(method, params);
    } catch (err) {
      this.reply(req.id, undefined, err);
      return;
    }
    if (result === REPLIED_LATER) return;
    if (result instanceof Promise) {
      result.then(
        (r) => this.reply(req.id, r),
        (err) => this.reply(req.id, undefined, err),
      );
    } else {
      this.reply(req.id, result);
    }
  }

  private dispatch(method: Method, p: any): unknown {
    switch (method) {
      case 'hello':
        return this.hello(p);
      case 'acquire':
        return this.acquire(p, true);
      case 'try':
        return this.acquire(p, false);
      case 'block':
        return this.block(p);
      case 'release':
        return this.release(p);
      case 'status':
        return this.status(p);
      case 'list':
        return this.server.manager.list(p.dir);
    }
  }

  private hello(p: { client?: string; member?: string }) {
    let lost: LostHold[] = this.server.lost;
    if (p.member !== undefined) {
      // Each member of the run learns of a lost hold once, on its next task.
      lost = this.server.lost.filter((l) => l.members.includes(p.member!));
      for (const l of lost) l.members = l.members.filter((m) => m !== p.member);
      this.server.lost = this.server.lost.filter((l) => l.members.length > 0);
    }
    if (p.client) log.debug('hello', { client: p.client });
    return { version: VERSION, protocol: PROTOCOL, pid: process.pid, agent: this.server.isAgent, lost };
  }

  private target(p: { path?: string; name?: string; dir?: string }): Target {
    const m = this.server.manager;
    return p.path !== undefined ? m.targetForPath(p.path) : m.targetForName(p.name!, p.dir);
  }

  private acquire(p: AcquireParams, wait: boolean): unknown {
    if (!wait && p.timeout !== undefined && p.timeout !== null && p.timeout > 0) {
      throw invalidParams('params.timeout does not apply to "try", which never waits; use "acquire" or "block"');
    }
    if (p.slots !== undefined && p.shared) {
      throw invalidParams(
        'params.slots and params.shared do not combine: slots are exclusive each; leave out one of them',
      );
    }
    const target = this.target(p);
    const mode: Mode = p.shared ? 'shared' : 'exclusive';
    const req: AcquireRequest = {
      target,
      mode,
      wait,
      slots: p.slots,
      timeout: p.timeout,
      owner: p.owner,
      prefix: p.prefix,
      notifyEvery: p.notify,
    };
    if (p.scope === 'run') return this.acquireRun(p, req);
    const handle = this.server.newHandle(this);
    return this.run(handle, req, p);
  }

  private run(handle: string, req: AcquireRequest, p: AcquireParams): unknown {
    req.onWaiting = (info) => this.notify('waiting', { handle, name: req.target.name, path: req.target.path, ...info });
    const id = this.dispatching;
    let settled: { out?: AcquireOutcome; err?: unknown } | undefined;
    let waited = false;
    req.onSettled = (out, err) => {
      settled = { out, err };
      try {
        this.track(handle, req, p, out);
      } finally {
        // A wait ends: reply at once, from inside the release that granted it,
        // so the new holder hears before the releaser does (handoff latency).
        if (waited) {
          try {
            if (out) this.reply(id, this.result(handle, req.target, req.mode, out, true));
            else this.reply(id, undefined, err);
          } catch (e) {
            log.error('cannot reply to a granted wait', { error: String((e as Error)?.stack ?? e) });
          }
        }
      }
    };
    const attempt = this.server.manager.acquire(req);
    attempt.outcome.catch(() => {}); // failures are reported through `settled`
    if (!settled) {
      waited = true;
      this.handles.set(handle, { kind: 'waiting', cancel: attempt.cancel });
      return REPLIED_LATER;
    }
    // Settled at once: answer now, so replies keep the order of the requests.
    if (!settled.out) throw settled.err;
    return this.result(handle, req.target, req.mode, settled.out, true);
  }

  // Bookkeeping of a settled acquisition: the handle's new state.
  private track(handle: string, req: AcquireRequest, p: AcquireParams, out: AcquireOutcome | undefined): void {
    if (!out) {
      this.dropHandle(handle);
    } else if (this.closed) {
      if (out.hold) this.server.manager.release(out.hold);
      this.dropHandle(handle);
    } else if (out.hold) {
      this.handles.set(handle, { kind: 'held', hold: out.hold });
    } else if (out.reason === 'busy' || out.reason === 'timeout') {
      this.handles.set(handle, { kind: 'pending', req: { ...req, onSettled: undefined }, params: p });
    } else {
      this.dropHandle(handle);
    }
  }

  private async acquireRun(p: AcquireParams, req: AcquireRequest, handle = this.server.newHandle(this, 'r')) {
    const member = p.member ?? p.owner?.host ?? '-';
    req.onWaiting = (info) => this.notify('waiting', { handle, name: req.target.name, path: req.target.path, ...info });
    const attempt = this.server.runHolds.acquire(req, member);
    this.handles.set(handle, { kind: 'waiting', cancel: attempt.cancel });
    let out;
    try {
      out = await attempt.outcome;
    } catch (err) {
      this.dropHandle(handle);
      throw err;
    }
    // Run holds outlive this connection: the handle names the member's share.
    if (this.closed) this.dropHandle(handle);
    else if (out.acquired) this.handles.set(handle, { kind: 'run', path: req.target.path, member });
    else if (out.reason === 'busy' || out.reason === 'timeout')
      this.handles.set(handle, { kind: 'pending', req, params: p });
    else this.dropHandle(handle);
    return this.result(
      out.acquired || out.reason !== 'cancelled' ? handle : null,
      req.target,
      req.mode,
      out,
      out.changed,
    );
  }

  private result(handle: string | null, target: Target, mode: Mode, out: AcquireOutcome, changed: boolean) {
    const r: Record<string, unknown> = {
      acquired: out.acquired,
      handle,
      path: target.path,
      mode,
      waited: out.waited,
      changed: out.acquired && changed,
    };
    if (target.name !== undefined) r.name = target.name;
    if (out.acquired && out.hold) {
      r.token = out.hold.held.token;
      if (out.hold.held.slot !== undefined) Object.assign(r, { slot: out.hold.held.slot, slots: out.hold.slots });
      r.holders = [this.selfHolder(out.hold)];
    } else {
      r.reason = out.reason;
      r.holders = out.holders;
      if (out.reason === 'deadlock') Object.assign(r, { message: out.message, cycle: out.cycle });
    }
    return r;
  }

  private selfHolder(h: Hold): Holder {
    return {
      ...h.owner,
      pid: h.owner.pid ?? process.pid,
      user: h.owner.user ?? currentUser(),
      controller: controllerName(),
      mode: h.mode,
      since: h.since.toISOString(),
      helper_pid: process.pid,
    };
  }

  private block(p: { handle: string; timeout?: number | null; notify?: number }): unknown {
    const st = this.own(p.handle);
    if (st.kind !== 'pending') {
      throw invalidParams(
        `handle ${p.handle} is not a failed try (it is ${st.kind}); only a failed "try" can be blocked on`,
      );
    }
    const req: AcquireRequest = {
      ...st.req,
      wait: true,
      timeout: p.timeout,
      notifyEvery: p.notify ?? st.req.notifyEvery,
    };
    if (st.params.scope === 'run') return this.acquireRun(st.params, req, p.handle);
    return this.run(p.handle, req, st.params);
  }

  private release(p: { handle?: string; path?: string; name?: string; dir?: string; scope?: 'run'; member?: string }) {
    if (p.handle !== undefined) {
      const st = this.own(p.handle);
      this.dropHandle(p.handle);
      switch (st.kind) {
        case 'held':
          return { released: this.server.manager.release(st.hold), path: st.hold.target.path };
        case 'run':
          return { released: this.server.runHolds.release(st.path, st.member), path: st.path };
        case 'waiting':
          st.cancel();
          return { released: false };
        case 'pending':
          return { released: false };
      }
    }
    const target = this.target(p);
    const r: Record<string, unknown> = {
      released: this.server.runHolds.release(target.path, p.member),
      path: target.path,
    };
    if (target.name !== undefined) r.name = target.name;
    return r;
  }

  private status(p: { path?: string; name?: string; dir?: string }) {
    const target = this.target(p);
    const { key: _key, ...s } = this.server.manager.status(target) as FlockStatus;
    const run = this.server.runHolds.held.get(target.path);
    if (run) {
      for (const h of s.holders) if (h.helper_pid === process.pid && !h.foreign) h.members = [...run.members];
    }
    const r: Record<string, unknown> = { path: target.path, ...s };
    if (target.name !== undefined) r.name = target.name;
    return r;
  }

  private own(handle: string): HandleState {
    const st = this.handles.get(handle);
    if (st) return st;
    if (this.server.handleOwner.has(handle)) {
      throw invalidParams(`handle ${handle} belongs to another connection`);
    }
    throw invalidParams(`unknown handle ${handle}: it was never issued, or is already released`);
  }

  private dropHandle(handle: string): void {
    this.handles.delete(handle);
    this.server.handleOwner.delete(handle);
  }

  notify(method: string, params: unknown): void {
    if (!this.closed) this.write(JSON.stringify({ jsonrpc: '2.0', method, params }) + '\n');
  }

  private reply(id: Id, result?: unknown, err?: unknown): void {
    if (this.closed) return;
    let msg: object;
    if (err !== undefined) {
      const e =
        err instanceof HostlockError
          ? err
          : new HostlockError(ErrorCode.Internal, `internal error: ${(err as Error)?.message ?? String(err)}`);
      if (!(err instanceof HostlockError)) log.error('internal error', { error: String((err as Error)?.stack ?? err) });
      msg = { jsonrpc: '2.0', id, error: { code: e.code, message: e.message, data: e.data } };
    } else {
      msg = { jsonrpc: '2.0', id, result };
    }
    this.write(JSON.stringify(msg) + '\n');
  }

  // The connection is gone: its own locks go with it, its waits are abandoned.
  // Run holds stay: they belong to the run, not to the worker that asked.
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [handle, st] of this.handles) {
      if (st.kind === 'held') this.server.manager.release(st.hold);
      else if (st.kind === 'waiting') st.cancel();
      this.server.handleOwner.delete(handle);
    }
    this.handles.clear();
    this.server.sessions.delete(this);
  }
}

function pickId(msg: unknown): Id {
  if (msg && typeof msg === 'object' && !Array.isArray(msg)) {
    const id = (msg as { id?: unknown }).id;
    if (typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id))) return id;
  }
  return null;
}

function isValidUtf8(buf: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}
