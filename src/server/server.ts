// One request handler for every transport: a ClientConnection is one client
// (stdio for `serve`, a socket connection for the agent) speaking line-delimited
// JSON-RPC 2.0. Framing (framing.ts), the envelope (jsonrpc.ts), handle states
// (handles.ts) and the methods (methods.ts) each live in their own module;
// this one wires them. Bad input always gets an error reply; nothing here may
// throw out to the transport.
import { LineFramer } from '../protocol/framing';
import { HandleOwners, HandleTable } from './handles';
import { errorLine, notificationLine, overlongError, parseLine, resultLine, type Id } from '../protocol/jsonrpc';
import type { LostHolds } from '../policy/lostholds';
import { log } from '../core/log';
import { LockManager } from '../policy/manager';
import type { Hold } from '../policy/requests';
import { methods, REPLIED_LATER, type Connection, type Handlers } from './methods';
import { RunHolds } from '../policy/runholds';
import { closeStores } from '../stores';
import { isoTime } from '../core/time';

export interface ServerOptions {
  // The agent serves a whole run: run holds, and the holds the run lost.
  agent?: { lostHolds: LostHolds; onRunHoldsChange: () => void };
}

export class Server {
  readonly manager = new LockManager();
  readonly runHolds: RunHolds;
  readonly connections = new Set<ClientConnection>();
  readonly handleOwners = new HandleOwners();
  readonly isAgent: boolean;
  readonly lostHolds?: LostHolds;

  constructor(opts: ServerOptions = {}) {
    this.isAgent = !!opts.agent;
    this.lostHolds = opts.agent?.lostHolds;
    this.runHolds = new RunHolds(this.manager, opts.agent?.onRunHoldsChange);
  }

  openSession(write: (line: string) => void): ClientConnection {
    const s = new ClientConnection(this, write);
    this.connections.add(s);
    return s;
  }

  // A run hold lost under the run (lock file deleted, server session or lease
  // ended): said at once, dropped, and each member that held it fails "lock
  // lost" on its next task.
  runHoldLost(hold: Hold, reason: string): void {
    const run = this.runHolds.held.get(hold.target.path);
    if (!run || run.hold !== hold) return;
    const members = [...run.members];
    log.error(
      `lock '${hold.target.name ?? hold.target.path}' lost under this run (${reason}); ` +
        `the next hostlock task of ${members.join(', ')} fails "lock lost"`,
      { path: hold.target.path },
    );
    this.runHolds.release(hold.target.path);
    this.lostHolds?.add({
      name: hold.target.name,
      path: hold.target.path,
      mode: hold.mode,
      since: isoTime(hold.since),
      members,
      reason,
    });
  }

  busy(): boolean {
    return this.manager.heldCount() > 0 || this.runHolds.held.size > 0 || (this.lostHolds?.size ?? 0) > 0;
  }

  // Releases everything; server stores end their sessions and leases too.
  async shutdown(): Promise<void> {
    for (const s of [...this.connections]) s.close();
    this.runHolds.releaseAll();
    this.manager.shutdown();
    // Bounded: an unreachable server must not keep a helper from exiting; its
    // session or lease then ends on the server's own bound.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closeStores(), new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
  }
}

export class ClientConnection implements Connection {
  readonly handles: HandleTable;
  requestId: Id = null;
  private readonly framer: LineFramer;
  private readonly handlers: Handlers;
  private closed = false;

  constructor(
    readonly server: Server,
    private readonly write: (line: string) => void,
  ) {
    this.handles = new HandleTable(server.handleOwners, server.manager);
    this.handlers = methods(this);
    this.framer = new LineFramer(
      (line) => this.handleLine(line),
      () => this.reply(null, undefined, overlongError()),
    );
  }

  // Feeds raw bytes from the transport; complete lines are handled in order.
  feed(chunk: Buffer): void {
    this.framer.feed(chunk);
  }

  private handleLine(line: Buffer): void {
    const msg = parseLine(line);
    if (msg.kind === 'blank') return;
    if (msg.kind === 'error') return this.reply(msg.id, undefined, msg.error);
    let result: unknown;
    this.requestId = msg.id;
    try {
      const handler = this.handlers[msg.method] as (p: object) => unknown;
      result = handler(msg.params);
    } catch (err) {
      this.reply(msg.id, undefined, err);
      return;
    } finally {
      this.requestId = null;
    }
    if (result === REPLIED_LATER) return;
    if (result instanceof Promise) {
      result.then(
        (r) => this.reply(msg.id, r),
        (err) => this.reply(msg.id, undefined, err),
      );
    } else {
      this.reply(msg.id, result);
    }
  }

  notify(method: string, params: unknown): void {
    if (!this.closed) this.write(notificationLine(method, params));
  }

  reply(id: Id, result?: unknown, err?: unknown): void {
    if (this.closed) return;
    this.write(err !== undefined ? errorLine(id, err) : resultLine(id, result));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.handles.close();
    this.server.connections.delete(this);
  }
}
