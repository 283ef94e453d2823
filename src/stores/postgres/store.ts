// The PostgreSQL lock store: locks that runs on many controllers share.
//
// One store object is one run, and one run is one server session
// (session.ts): a run that holds or waits for any number of names uses
// exactly one connection, opened on first use (connect.ts) and again after a
// loss. Every error that leaves the store is a HostlockError (explain.ts), or
// the AbortError of a wait its caller aborted.
import { hostname } from 'node:os';
import { HostlockError } from '../../core/errors';
import type { Mode } from '../../core/mode';
import { type KeyStatus, type LockStore, type StoreAcquire, type StoreHold, unlessAborted } from '../../store/contract';
import { AbortError, isAbort, storeClosed } from '../../store/errors';
import type { Holder, HistoryEvent, HistoryRecord, LockKey, Requester } from '../../store/types';
import { openSession } from './connect';
import { explainQueryError, onlyRow, storeError } from './explain';
import { historyRecord, PgHistory } from './history';
import { noSuchHold } from './messages';
import { SCHEMA } from './schema';
import type { Session, SessionOwner } from './session';
import { targetOf, type PgTarget } from './url';
import { isoTime } from '../../core/time';

export { setup, type SetupResult } from './setup';

export interface PostgresStoreOptions {
  controller?: string;
  env?: NodeJS.ProcessEnv;
  // Where a lost hold or session is reported at once (the policy logs it).
  log?: (msg: string) => void;
}

// One row of the schema's status(): a key, and one of its holders or waiters.
interface StatusRow {
  key: string;
  name: string | null;
  seq: string | null;
  mode: string | null;
  granted: boolean | null;
  token: string | null;
  owner: unknown;
  since: Date;
  granted_at: Date | null;
  controller: string | null;
  slots: number | null;
  slot: number | null;
}

export class PostgresStore implements LockStore, SessionOwner {
  readonly kind = 'postgresql';
  readonly describe: string;
  readonly target: PgTarget;
  readonly controller: string;
  private session: Session | null = null;
  private opening: Promise<Session> | null = null;
  private closed = false;
  private warnedPassfile = false;
  private readonly log: (msg: string) => void;
  private readonly historyLog: PgHistory;

  constructor(url: string, opts: PostgresStoreOptions = {}) {
    this.target = targetOf(url, opts.env);
    this.describe = this.target.masked;
    this.controller = opts.controller ?? hostname();
    this.log = opts.log ?? ((m) => process.stderr.write(`hostlock: ${m}\n`));
    this.historyLog = new PgHistory(
      this.target,
      (text, values) => this.query(text, values),
      (m) => this.report(m),
    );
  }

  mask(text: string): string {
    const pw = this.target.password;
    return pw ? text.split(pw).join('***') : text;
  }

  report(msg: string): void {
    this.log(this.mask(msg));
  }

  sessionEnded(s: Session): void {
    if (this.session === s) this.session = null;
  }

  // Connections this store holds open right now (0 or 1).
  get connections(): number {
    return this.session ? 1 : 0;
  }

  // The run's server backend PID, for tests and status.
  get backendPid(): number | null {
    return this.session?.backendPid ?? null;
  }

  get runId(): number | null {
    return this.session?.runId ?? null;
  }

  // The run's session, opened on first use and again after a loss.
  private async open(): Promise<Session> {
    if (this.closed) throw storeClosed(`PostgreSQL backend ${this.describe}`);
    if (this.session) return this.session;
    this.opening ??= openSession(this)
      .then((s) => {
        // A password file passed over is worth a word even when no password was needed.
        if (this.target.passfileIgnored && !this.warnedPassfile) this.report(`warning: ${this.target.passfileIgnored}`);
        this.warnedPassfile = true;
        this.session = s;
        return s;
      })
      .finally(() => {
        this.opening = null;
      });
    return this.opening;
  }

  private async query<T extends object>(text: string, values?: unknown[]): Promise<T[]> {
    return (await this.open()).query<T>(text, values);
  }

  async acquire(req: StoreAcquire): Promise<StoreHold | null> {
    if (req.signal?.aborted) throw new AbortError();
    const session = await unlessAborted(this.open(), req.signal, () =>
      storeError(
        `PostgreSQL backend ${this.describe}: no answer from the server before the wait ended (still connecting, ` +
          `connect_timeout ${this.target.connectTimeoutMs / 1000} s); check the host, port and firewall`,
      ),
    );
    try {
      return await session.acquire(req);
    } catch (err) {
      if (err instanceof HostlockError || isAbort(err)) throw err;
      throw explainQueryError(err, this.target, `locking ${req.key.name ?? req.key.id}`);
    }
  }

  async status(key: LockKey): Promise<KeyStatus> {
    const all = await this.statusRows(key.id, false);
    return all.get(key.id) ?? { key, held: false, mode: null, holders: [], waiters: [] };
  }

  async list(prefix = ''): Promise<KeyStatus[]> {
    return [...(await this.statusRows(prefix, true)).values()];
  }

  private async statusRows(k: string, prefix: boolean): Promise<Map<string, KeyStatus>> {
    let rows: StatusRow[];
    try {
      rows = await this.query<StatusRow>(`SELECT * FROM ${SCHEMA}.status($1, $2)`, [k, prefix]);
    } catch (err) {
      if (err instanceof HostlockError) throw err;
      throw explainQueryError(err, this.target, 'reading the status');
    }
    const out = new Map<string, KeyStatus>();
    for (const r of rows) {
      let st = out.get(r.key);
      if (!st) {
        st = { key: { id: r.key, name: r.name ?? undefined }, held: false, mode: null, holders: [], waiters: [] };
        out.set(r.key, st);
      }
      if (r.seq === null) continue;
      const o = r.owner as Requester;
      const mode = r.mode as Mode;
      const controller = r.controller ?? o.controller;
      const slots = r.slots === null ? {} : { slots: r.slots };
      if (r.granted) {
        st.holders.push({
          ...o,
          controller,
          mode,
          since: iso(r.granted_at ?? r.since),
          token: Number(r.token),
          ...(r.slot === null ? {} : { slot: r.slot }),
          ...slots,
        });
        st.held = true;
        st.mode = mode;
        if (r.slots !== null) st.slots = r.slots;
      } else {
        st.waiters.push({ ...o, controller, mode, since: iso(r.since), ...slots });
      }
    }
    return out;
  }

  // Queues one history record, written with others after the replies.
  record(e: HistoryEvent): void {
    this.historyLog.record(e);
  }

  history(query: { name?: string; since?: number }): Promise<HistoryRecord[]> {
    return this.historyLog.read(query);
  }

  // Ends another controller's (or our own) hold of `key` with `token`.
  async breakHold(key: LockKey, token: number, by: Requester, reason: string): Promise<Holder> {
    const rec = historyRecord({ event: 'break', key, who: by, token, reason });
    let victim: Holder | null;
    try {
      const rows = await this.query<{ victim: Holder | null }>(
        `SELECT ${SCHEMA}.break_hold($1, $2, $3::jsonb, $4, $5::jsonb) AS victim`,
        [key.id, token, JSON.stringify(by), reason, JSON.stringify(rec)],
      );
      victim = onlyRow(rows, `${SCHEMA}.break_hold`).victim;
    } catch (err) {
      if (err instanceof HostlockError) throw err;
      throw explainQueryError(err, this.target, `breaking ${key.name ?? key.id}`);
    }
    if (victim) return victim;
    throw noSuchHold(key, token, this.describe, (await this.status(key)).holders);
  }

  async close(): Promise<void> {
    if (!this.closed) await this.historyLog.close();
    this.closed = true;
    const s = this.session ?? (this.opening ? await this.opening.catch(() => null) : null);
    if (s) await s.end();
  }
}

function iso(d: Date | string): string {
  return isoTime(d instanceof Date ? d : new Date(d));
}
