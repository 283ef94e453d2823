// The protocol's methods, one handler each, typed by their parameters
// (src/protocol/schemas/params.json has already checked them).
import { ErrorCode, HostlockError, invalidParams } from '../core/errors';
import { log } from '../core/log';
import type { HandleTable } from './handles';
import { controllerName, currentUser } from '../sys/proc';
import { type Holder } from '../store/types';
import type { AcquireParams, Params, TargetParams } from '../protocol/params';
import type { Id } from '../protocol/jsonrpc';
import { flockApi } from '../stores/flock/lockfile';
import { type Mode } from '../core/mode';
import type { LockManager } from '../policy/manager';
import type { AcquireOutcome, AcquireRequest, Hold } from '../policy/requests';
import type { RunOutcome } from '../policy/runhold';
import type { RunHolds } from '../policy/runholds';
import type { Target } from '../policy/targets';
import { AGENT_STOPPED, type LostHolds } from '../policy/lostholds';
import type { KeyStatus } from '../store/contract';
import type { Method } from '../protocol/validate';
import { PROTOCOL, VERSION } from '../core/version';
import { isoTime } from '../core/time';

// A request whose reply is sent later by its own code (a wait), not by the session.
export const REPLIED_LATER = Symbol('replied later');

// What a handler may use of the server it runs in.
export interface ServerContext {
  readonly manager: LockManager;
  readonly runHolds: RunHolds;
  readonly isAgent: boolean;
  readonly lostHolds?: LostHolds;
  runHoldLost(hold: Hold, reason: string): void;
}

// What a handler may use of the connection it serves.
export interface Connection {
  readonly server: ServerContext;
  readonly handles: HandleTable;
  readonly requestId: Id; // of the request being handled
  reply(id: Id, result?: unknown, err?: unknown): void;
  notify(method: string, params: unknown): void;
}

export type Handlers = { [M in Method]: (p: Params[M]) => unknown };

export function methods(c: Connection): Handlers {
  const { server, handles } = c;
  const manager = server.manager;

  const target = (p: TargetParams): Target =>
    p.path !== undefined ? manager.targetForPath(p.path) : manager.targetForName(p.name!, p.dir, p.backend);

  const waitingNotice = (handle: string, req: AcquireRequest) => {
    req.onWaiting = (info) => c.notify('waiting', { handle, name: req.target.name, path: req.target.path, ...info });
  };

  // A request that names the client's protocol is refused by a helper of
  // another one before it does anything (a helper older than the parameter
  // refuses the unknown key): clients need no `hello` first.
  function checkProtocol(p: { protocol?: number }): void {
    if (p.protocol === undefined || p.protocol === PROTOCOL) return;
    throw new HostlockError(
      ErrorCode.ProtocolMismatch,
      `this hostlock helper (${VERSION}) speaks protocol ${PROTOCOL}, the client protocol ${p.protocol}: ` +
        'install the helper and the collection of one release',
      { protocol: PROTOCOL, version: VERSION },
    );
  }

  // A member whose holds were lost hears of it on its next run-scope request,
  // which is refused before it does anything (as `hello` with `member` reports it).
  function checkLost(member: string | undefined): void {
    if (member === undefined) return;
    const lost = server.lostHolds?.take(member) ?? [];
    if (!lost.length) return;
    const names = lost.map((l) => `'${l.name ?? l.path}' (${l.reason ?? AGENT_STOPPED})`).join(', ');
    throw new HostlockError(
      ErrorCode.LockLost,
      `lock lost: ${member} held ${names}; another run may have entered the guarded section`,
      { lost: lost.map(({ name, path, mode, since, reason }) => ({ name, path, mode, since, reason })) },
    );
  }

  function acquire(p: AcquireParams, wait: boolean): unknown {
    checkProtocol(p);
    if (!wait && p.timeout !== undefined && p.timeout !== null && p.timeout > 0) {
      throw invalidParams('params.timeout does not apply to "try", which never waits; use "acquire" or "block"');
    }
    if (p.slots !== undefined && p.shared) {
      throw invalidParams(
        'params.slots and params.shared do not combine: slots are exclusive each; leave out one of them',
      );
    }
    const req: AcquireRequest = {
      target: target(p),
      mode: p.shared ? 'shared' : 'exclusive',
      wait,
      slots: p.slots,
      timeout: p.timeout,
      owner: p.owner,
      prefix: p.prefix,
      notifyEvery: p.notify,
    };
    if (p.scope === 'run') {
      checkLost(p.member ?? p.owner?.host ?? '-');
      return acquireRun(p, req, handles.issue('r'));
    }
    return acquireOwn(handles.issue('h'), req, p);
  }

  // A connection's own lock. Settled at once: answered now, so that replies
  // keep the order of the requests. Settled later: answered from inside the
  // release that granted it, so the new holder hears before the releaser does.
  function acquireOwn(handle: string, req: AcquireRequest, p: AcquireParams): unknown {
    waitingNotice(handle, req);
    req.onLost = (hold, reason) => {
      if (!handles.lost(handle, reason)) return;
      const name = hold.target.name ?? hold.target.path;
      log.error(`lock '${name}' lost under its holder (${reason}); another holder may be inside`, {
        path: hold.target.path,
      });
      c.notify('lost', { handle, name: hold.target.name, path: hold.target.path, reason });
    };
    const id = c.requestId;
    let settled: { out?: AcquireOutcome; err?: unknown } | undefined;
    let later = false;
    req.onSettled = (out, err) => {
      settled = { out, err };
      handles.settled(handle, out, req, p);
      if (later) {
        if (out) c.reply(id, result(handle, req.target, req.mode, out, true));
        else c.reply(id, undefined, err);
      }
    };
    const attempt = manager.acquire(req);
    attempt.outcome.catch(() => {}); // failures are reported through onSettled
    if (!settled) {
      later = true;
      handles.waiting(handle, () => attempt.cancel());
      return REPLIED_LATER;
    }
    if (!settled.out) throw settled.err;
    return result(handle, req.target, req.mode, settled.out, true);
  }

  // A member's share of a run hold: it outlives the connection.
  async function acquireRun(p: AcquireParams, req: AcquireRequest, handle: string) {
    const member = p.member ?? p.owner?.host ?? '-';
    waitingNotice(handle, req);
    req.onLost = (hold, reason) => server.runHoldLost(hold, reason);
    const batch = p.batch && {
      id: p.batch.id,
      entries: (p.batch.members ?? []).map((m) => ({
        member: m.member,
        target: target({ name: m.name, dir: p.dir, backend: p.backend }),
      })),
    };
    const attempt = server.runHolds.acquire(req, member, batch);
    handles.waiting(handle, () => attempt.cancel());
    let out;
    try {
      out = await attempt.outcome;
    } catch (err) {
      handles.settled(handle, undefined, req, p, member);
      throw err;
    }
    handles.settled(handle, out, req, p, member);
    return result(out.acquired || out.reason !== 'cancelled' ? handle : null, req.target, req.mode, out, out.changed);
  }

  function result(handle: string | null, t: Target, mode: Mode, out: RunOutcome | AcquireOutcome, changed: boolean) {
    const r: Record<string, unknown> = {
      acquired: out.acquired,
      handle,
      path: t.path,
      mode,
      waited: out.waited,
      changed: out.acquired && changed,
    };
    if (t.name !== undefined) r.name = t.name;
    if (out.acquired && out.hold) {
      r.token = out.hold.held.token;
      if (out.hold.held.slot !== undefined) Object.assign(r, { slot: out.hold.held.slot, slots: out.hold.slots });
      r.holders = [selfHolder(out.hold)];
    } else {
      r.reason = out.reason;
      r.holders = out.holders;
      if (out.reason === 'deadlock') Object.assign(r, { message: out.message, cycle: out.cycle });
      if ('behind' in out && out.behind !== undefined) r.behind = out.behind;
    }
    return r;
  }

  function selfHolder(h: Hold): Holder {
    return {
      ...h.owner,
      pid: h.owner.pid ?? process.pid,
      user: h.owner.user ?? currentUser(),
      controller: controllerName(),
      mode: h.mode,
      since: isoTime(h.since),
      helper_pid: process.pid,
    };
  }

  function statusResult(t: Target, st: KeyStatus) {
    const { key: _key, ...s } = st;
    const run = server.runHolds.held.get(t.path);
    if (run) {
      for (const h of s.holders) if (h.helper_pid === process.pid && !h.foreign) h.members = [...run.members];
    }
    const r: Record<string, unknown> = { path: t.path, ...s };
    if (t.name !== undefined) r.name = t.name;
    return r;
  }

  return {
    hello(p) {
      const lost = server.lostHolds?.take(p.member) ?? [];
      return {
        version: VERSION,
        protocol: PROTOCOL,
        pid: process.pid,
        agent: server.isAgent,
        flock: flockApi(),
        lost,
      };
    },

    acquire: (p) => acquire(p, true),
    try: (p) => acquire(p, false),

    block(p) {
      const st = handles.own(p.handle);
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
      if (st.params.scope === 'run') return acquireRun(st.params, req, p.handle);
      return acquireOwn(p.handle, req, st.params);
    },

    release(p) {
      checkProtocol(p);
      if (p.scope === 'run') checkLost(p.member);
      if (p.batch) server.runHolds.batchSeen(p.batch.id);
      if (p.handle !== undefined) {
        const st = handles.own(p.handle);
        handles.drop(p.handle);
        switch (st.kind) {
          case 'held': {
            const released = manager.release(st.hold);
            if (st.lost === undefined) return { released, path: st.hold.target.path };
            return { released: false, lost: true, reason: st.lost, path: st.hold.target.path };
          }
          case 'run':
            return { released: server.runHolds.release(st.path, st.member), path: st.path };
          case 'waiting':
            st.cancel();
            return { released: false };
          case 'pending':
            return { released: false };
        }
      }
      const t = target(p);
      const r: Record<string, unknown> = { released: server.runHolds.release(t.path, p.member), path: t.path };
      if (t.name !== undefined) r.name = t.name;
      return r;
    },

    status(p) {
      const t = target(p);
      const s = manager.status(t);
      return s instanceof Promise ? s.then((st) => statusResult(t, st)) : statusResult(t, s);
    },

    list(p) {
      return p.backend !== undefined && p.backend !== 'local' ? manager.listStore(p.backend) : manager.list(p.dir);
    },
  };
}
