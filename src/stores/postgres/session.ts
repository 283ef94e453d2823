// One run's server session and the holds and waits on it.
//
// A session-level advisory lock on the run's id keeps its queue rows alive
// (schema.ts), so they vanish with the session however it ends. A wait is a
// queue row: its grant comes as a NOTIFY on the run's own channel, and a poll
// every half second catches grants made possible by a holder whose session
// died. A hold is lost when the session ends (server restart,
// pg_terminate_backend, network cut) or its row is deleted (by an admin, or
// by another controller's break, which tells the run at once); a heartbeat
// finds a silent server within half the keepalive bound, before the server,
// told to wait the whole bound, can drop the session and grant the lock to
// another.
import type { Client, Notification } from 'pg';
import type { Mode } from '../../core/mode';
import type { StoreAcquire, StoreHold } from '../../store/contract';
import { AbortError, storeClosed } from '../../store/errors';
import type { HistoryEvent, LockKey, Requester } from '../../store/types';
import { onlyRow, storeError } from './explain';
import { brokenBy, deadlockError, mismatchError, type CycleStep, type Mismatch } from './messages';
import { SCHEMA } from './schema';
import type { PgTarget } from './url';

// How often a waiting run polls for grants that a dead holder made possible.
const POLL_MS = 500;

// What a session needs of the store that opened it.
export interface SessionOwner {
  readonly target: PgTarget;
  readonly describe: string;
  readonly controller: string;
  record(e: HistoryEvent): void;
  // Logs, password masked.
  report(msg: string): void;
  mask(text: string): string;
  sessionEnded(s: Session): void;
}

interface Wait {
  seq: number;
  req: StoreAcquire;
  resolve: (hold: StoreHold) => void;
  reject: (err: Error) => void;
}

class PgHold implements StoreHold {
  readonly since = new Date();
  readonly key: LockKey;
  readonly mode: Mode;
  lost = false;
  released = false;
  constructor(
    private readonly session: Session,
    readonly seq: number,
    private readonly req: StoreAcquire,
    readonly token: number,
    readonly slot: number | undefined,
  ) {
    this.key = req.key;
    this.mode = req.slots === undefined ? req.mode : 'exclusive';
  }

  markLost(reason: string): void {
    if (this.lost || this.released) return;
    this.lost = true;
    this.session.store.record({
      event: 'lost',
      key: this.key,
      mode: this.mode,
      who: this.req.requester,
      token: this.token,
      reason,
    });
    try {
      this.req.onLost?.(reason);
    } catch {
      /* the policy's handler must not break the store */
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.drop(this.seq, this);
  }
}

// One server session = one run: its lock, its channel, its holds and waits.
export class Session {
  readonly holds = new Map<number, PgHold>();
  readonly waits = new Map<number, Wait>();
  // Grants that arrived before their enqueue call returned: token and slot.
  private readonly early = new Map<number, [number, number | undefined]>();
  // Breaks whose notice came before the hold was ours (a grant still on its
  // way to its caller): why, by row.
  private readonly brokenEarly = new Map<number, string>();
  private poller?: NodeJS.Timeout;
  private beat?: NodeJS.Timeout;
  private beating = false;
  private tail: Promise<unknown> = Promise.resolve();
  ended = false;
  backendPid = 0;

  constructor(
    readonly client: Client,
    readonly runId: number,
    readonly store: SessionOwner,
  ) {
    client.on('notification', (n: Notification) => this.onNotify(n));
    client.on('error', (err: Error) => this.lose(`the PostgreSQL session failed: ${store.mask(err.message)}`));
    client.on('end', () => this.lose('the PostgreSQL session ended (server restart, pg_terminate_backend or network)'));
    const period = (store.target.keepaliveSec * 1000) / 6;
    this.beat = setInterval(() => void this.heartbeat(), period);
    this.beat.unref();
  }

  // Every statement of the session, with a deadline: a server that does not
  // answer within a third of the keepalive bound is taken for gone.
  async query<T extends object>(text: string, values?: unknown[]): Promise<T[]> {
    if (this.ended) throw storeError(`PostgreSQL backend ${this.store.describe}: the session has ended`);
    const limit = (this.store.target.keepaliveSec * 1000) / 3;
    const seconds = Number((limit / 1000).toFixed(2)); // 1.33, not 1.3333333333333333
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.lose(`the PostgreSQL server did not answer within ${seconds} s`);
        reject(storeError(`PostgreSQL backend ${this.store.describe}: no answer within ${seconds} s`));
      }, limit);
    });
    // One statement at a time on the wire, in the order asked.
    const run = this.tail.then(() => this.client.query(text, values));
    this.tail = run.catch(() => undefined);
    try {
      const r = await Promise.race([run, timeout]);
      return r.rows as T[];
    } finally {
      clearTimeout(timer);
    }
  }

  private onNotify(n: Notification): void {
    if (n.channel !== `hostlock_${this.runId}` || !n.payload) return;
    if (n.payload.startsWith('lost ')) return this.onBroken(n.payload.slice(5));
    const [seq, token, slot] = n.payload.split(' ').map(Number);
    if (seq === undefined || token === undefined) return;
    const s = Number.isInteger(slot) ? slot : undefined;
    if (!this.grant(seq, token, s)) this.early.set(seq, [token, s]);
  }

  // Another controller ended one of our holds (break_hold).
  private onBroken(payload: string): void {
    let b: { seq: number; by: Partial<Requester>; reason: string };
    try {
      b = JSON.parse(payload) as typeof b;
    } catch {
      return;
    }
    const why = brokenBy(b.by, b.reason);
    const h = this.holds.get(Number(b.seq));
    if (h) this.breakLocal(h, why);
    else this.brokenEarly.set(Number(b.seq), why);
  }

  private breakLocal(h: PgHold, why: string): void {
    if (this.holds.get(h.seq) !== h) return;
    this.holds.delete(h.seq);
    this.store.report(`lock ${h.key.name ?? h.key.id} lost: ${why}`);
    h.markLost(why);
  }

  // A new hold whose break was told first is lost once its caller has it.
  private adopt(hold: PgHold): void {
    this.holds.set(hold.seq, hold);
    const why = this.brokenEarly.get(hold.seq);
    if (why === undefined) return;
    this.brokenEarly.delete(hold.seq);
    setImmediate(() => this.breakLocal(hold, why));
  }

  // Turns a granted row into a hold for the wait that asked for it.
  private grant(seq: number, token: number, slot: number | undefined): boolean {
    const w = this.waits.get(seq);
    if (!w) return false;
    this.waits.delete(seq);
    this.stopPollingIfIdle();
    const hold = new PgHold(this, seq, w.req, token, slot);
    this.adopt(hold);
    w.resolve(hold);
    return true;
  }

  async acquire(req: StoreAcquire): Promise<StoreHold | null> {
    const owner = { ...req.requester, controller: req.requester.controller || this.store.controller };
    const rows = await this.query<{
      seq: string | null;
      token: string | null;
      granted: boolean;
      cycle: CycleStep[] | null;
      slot: number | null;
      mismatch: Mismatch | null;
    }>(`SELECT * FROM ${SCHEMA}.enqueue($1, $2, $3, $4, $5, $6)`, [
      req.key.id,
      req.key.name ?? null,
      req.slots === undefined ? req.mode : 'exclusive',
      req.wait,
      JSON.stringify(owner),
      req.slots ?? null,
    ]);
    const r = onlyRow(rows, `${SCHEMA}.enqueue`);
    if (r.mismatch) throw mismatchError(req.key, req.slots, r.mismatch);
    if (r.granted) {
      const hold = new PgHold(this, Number(r.seq), req, Number(r.token), r.slot ?? undefined);
      this.adopt(hold);
      if (req.signal?.aborted) {
        await hold.release();
        throw new AbortError();
      }
      return hold;
    }
    if (r.cycle) throw deadlockError(req.key, r.cycle, this.store.describe);
    if (r.seq === null) return null;
    const seq = Number(r.seq);
    return new Promise<StoreHold>((resolve, reject) => {
      const onAbort = () => {
        if (!this.waits.delete(seq)) return;
        this.stopPollingIfIdle();
        // Nothing is left held: the row goes, granted or not, before we answer.
        this.drop(seq).then(
          () => reject(new AbortError()),
          () => reject(new AbortError()),
        );
      };
      this.waits.set(seq, {
        seq,
        req,
        resolve: (h) => {
          req.signal?.removeEventListener('abort', onAbort);
          resolve(h);
        },
        reject: (e) => {
          req.signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      });
      req.signal?.addEventListener('abort', onAbort, { once: true });
      const early = this.early.get(seq);
      if (early !== undefined) {
        this.early.delete(seq);
        this.grant(seq, ...early);
      } else this.startPolling();
      if (req.signal?.aborted) onAbort();
    });
  }

  // Removes a row of this run (a release or an abandoned wait).
  async drop(seq: number, hold?: PgHold): Promise<void> {
    if (hold) this.holds.delete(seq);
    this.early.delete(seq);
    this.brokenEarly.delete(seq);
    if (this.ended) return; // the session's end already freed it
    try {
      await this.query(`SELECT ${SCHEMA}.release($1)`, [seq]);
    } catch (err) {
      // A row we could not delete must not outlive us: end the session.
      this.lose(`releasing failed: ${this.store.mask(String((err as Error).message))}`);
    }
  }

  private startPolling(): void {
    if (this.poller) return;
    this.poller = setInterval(() => void this.poll(), POLL_MS);
    this.poller.unref();
  }

  private stopPollingIfIdle(): void {
    if (this.waits.size === 0 && this.poller) {
      clearInterval(this.poller);
      this.poller = undefined;
    }
  }

  private async poll(): Promise<void> {
    if (this.ended || this.waits.size === 0) return;
    try {
      const rows = await this.query<{ seq: string; token: string; slot: number | null }>(
        `SELECT * FROM ${SCHEMA}.poll()`,
      );
      for (const r of rows) this.grant(Number(r.seq), Number(r.token), r.slot ?? undefined);
    } catch {
      /* a failing session reports itself through lose() */
    }
  }

  // Checks that the session still answers, is still the same server backend
  // (a pooler in transaction mode would swap it), and still has every hold's row.
  private async heartbeat(): Promise<void> {
    if (this.ended || this.beating) return;
    this.beating = true;
    const before = [...this.holds.values()];
    try {
      const rows = await this.query<{ pid: number; held: string[] }>(
        `SELECT pg_backend_pid() AS pid, ${SCHEMA}.held() AS held`,
      );
      const now = onlyRow(rows, 'the heartbeat');
      if (now.pid !== this.backendPid) {
        this.lose(
          `the server session changed under the run (backend ${this.backendPid} became ${now.pid}): ` +
            'a pooler in transaction mode sits between; point the URL at PostgreSQL or a session-mode pool',
        );
        return;
      }
      const held = new Set(now.held.map(Number));
      const gone = before.filter((h) => !h.released && !held.has(h.seq));
      // A break's notice may follow this answer on the wire: it says who broke the hold.
      if (gone.length) await new Promise((r) => setTimeout(r, 50));
      for (const h of gone) {
        if (this.holds.get(h.seq) !== h || h.lost || h.released) continue;
        this.holds.delete(h.seq);
        h.markLost(`its row in ${SCHEMA}.queue was deleted on the server`);
        this.store.report(`lock ${h.key.name ?? h.key.id} lost: its row in ${SCHEMA}.queue was deleted`);
      }
    } catch {
      /* reported through lose() */
    } finally {
      this.beating = false;
    }
  }

  // The session is gone: every hold is lost and every wait fails, once.
  lose(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.beat);
    if (this.poller) clearInterval(this.poller);
    this.store.sessionEnded(this);
    const holds = [...this.holds.values()];
    this.holds.clear();
    if (holds.length) this.store.report(`${holds.length} lock(s) lost on ${this.store.describe}: ${reason}`);
    for (const h of holds) h.markLost(reason);
    const waits = [...this.waits.values()];
    this.waits.clear();
    for (const w of waits) w.reject(storeError(`PostgreSQL backend ${this.store.describe}: ${reason} while waiting`));
    // Make sure the server side ends too, so that nothing stays held there.
    const stream = (this.client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
    stream?.destroy();
  }

  async end(): Promise<void> {
    if (this.ended) return;
    for (const w of [...this.waits.values()]) {
      this.waits.delete(w.seq);
      w.reject(storeClosed(`PostgreSQL backend ${this.store.describe}`, 'while waiting'));
    }
    for (const h of this.holds.values()) h.released = true;
    this.holds.clear();
    try {
      await this.query(`SELECT ${SCHEMA}.end_run()`);
    } catch {
      /* the session's end frees everything anyway */
    }
    this.ended = true;
    clearInterval(this.beat);
    if (this.poller) clearInterval(this.poller);
    this.store.sessionEnded(this);
    await this.client.end().catch(() => undefined);
  }
}
