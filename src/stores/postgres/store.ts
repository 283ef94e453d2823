// The PostgreSQL lock store: locks that runs on many controllers share.
//
// One store object is one run, and one run is one server session: a
// session-level advisory lock on the run's id keeps its queue rows alive
// (src/stores/pgschema.ts), so they vanish with the session however it ends.
// Waiting never blocks the session: a wait is a queue row, the grant comes as
// a NOTIFY on the run's own channel, and a poll every half second catches
// grants made possible by a holder whose session died. So a run that holds or
// waits for any number of names uses exactly one connection.
//
// A hold is lost when the session ends (server restart, pg_terminate_backend,
// network cut) or its row is deleted (by an admin, or by another controller's
// break, which tells the run at once); a heartbeat on the session finds a
// silent server within half the keepalive bound, before the server, told to
// wait the whole bound, can drop the session and grant the lock to another.
import { hostname, userInfo } from 'node:os';
import { Client, type ClientConfig, type Notification } from 'pg';
import { ErrorCode, HostlockError } from '../../core/errors';
import { type Holder, type HistoryRecord, type HistoryEvent, type Requester, type LockKey } from '../../store/types';
import { historyRecordOf } from '../../store/records';
import {
  type KeyStatus,
  type LockStore,
  type StoreAcquire,
  type StoreHold,
  type Waiter,
  unlessAborted,
} from '../../store/contract';
import { type Mode } from '../../core/mode';
import { CREATE_SQL, LOCK_CLASS, SCHEMA, SCHEMA_VERSION, upgradeSql } from './schema';
import { PgUrlError, isSocket, resolveTarget, tlsOptions, type PgTarget, type SslMode } from './url';

// How often a waiting run polls for grants that a dead holder made possible.
const POLL_MS = 500;

// History records wait this long to be written together, in one statement
// after the replies that caused them; at most HISTORY_PENDING wait (the
// oldest go first when the server cannot take them), tried HISTORY_TRIES times.
const HISTORY_BATCH_MS = 50;
const HISTORY_PENDING = 2000;
const HISTORY_TRIES = 3;
// A record's text fields are cut to this many characters, a cycle to 8 links.
const HISTORY_FIELD_MAX = 1000;

export interface PostgresStoreOptions {
  controller?: string;
  env?: NodeJS.ProcessEnv;
  // Where a lost hold or session is reported at once (the policy logs it).
  log?: (msg: string) => void;
}

interface Wait {
  seq: number;
  req: StoreAcquire;
  resolve: (hold: StoreHold) => void;
  reject: (err: Error) => void;
}

function storeError(message: string, data: Record<string, unknown> = {}): HostlockError {
  return new HostlockError(ErrorCode.StoreUnavailable, message, data);
}

// The row of a statement that always returns exactly one (a SELECT of
// expressions, a function with OUT parameters).
function onlyRow<T>(rows: T[], statement: string): T {
  const row = rows[0];
  if (row === undefined) throw new Error(`${statement} returned no row`);
  return row;
}

function abortError(): Error {
  const err = new Error('the wait was aborted');
  err.name = 'AbortError';
  return err;
}

interface PgErrorLike {
  code?: string;
  message?: string;
  severity?: string;
}

// Why a connection failed, in words a user can act on; never the password.
export function explainConnectError(err: unknown, target: PgTarget, host: string, port: number): string {
  const e = err as PgErrorLike;
  const where = isSocket(host) ? `socket ${host}/.s.PGSQL.${port}` : `${host}:${port}`;
  const msg = String(e?.message ?? err).replace(target.password ? target.password : '\u0000', '***');
  const code = e?.code ?? '';
  const head = `PostgreSQL backend ${target.masked}`;
  if (code === '28P01') {
    const from = { url: 'the URL', PGPASSWORD: 'PGPASSWORD', passfile: '~/.pgpass', none: 'nowhere' }[
      target.passwordSource
    ];
    return `${head}: password authentication failed for user "${target.user}" (password from ${from}); fix the password in the URL, PGPASSWORD or ~/.pgpass`;
  }
  if (code === '28000')
    return `${head}: the server refused user "${target.user}": ${msg}; ask the DBA for a pg_hba.conf entry`;
  if (code === '3D000') {
    return `${head}: database "${target.database}" does not exist on ${where}; create it (createdb ${target.database}) or name another in the URL`;
  }
  if (code === '53300')
    return `${head}: the server has no free connection slot (${msg}); raise max_connections or end idle sessions`;
  if (code === '57P03') return `${head}: the server at ${where} is starting up or shutting down; try again shortly`;
  if (/^(ECONNREFUSED|ENOENT|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|ECONNRESET|EAI_AGAIN|ENOTFOUND)$/.test(code)) {
    return `${head}: cannot reach the server at ${where} (${code}); check the host and port and that PostgreSQL is running there`;
  }
  if (/timeout/i.test(msg)) {
    return `${head}: no answer from ${where} within ${target.connectTimeoutMs / 1000} s (connect_timeout); check the host, port and firewall`;
  }
  if (/certificate|self.signed|CERT_|altname|unable to (get|verify)/i.test(msg + code)) {
    return `${head}: the server's TLS certificate did not verify (${msg}); point sslrootcert at the CA that signed it${target.sslmode === 'verify-full' ? ' and make sure the host name in the URL is in the certificate' : ''}`;
  }
  if (/does not support SSL/i.test(msg)) {
    return `${head}: the server at ${where} does not offer TLS but sslmode=${target.sslmode} requires it; enable ssl on the server or lower sslmode`;
  }
  if (/password must be a string|no password/i.test(msg)) {
    return `${head}: the server asks user "${target.user}" for a password and none was given; put it in ~/.pgpass (mode 0600) or PGPASSWORD`;
  }
  return `${head}: cannot connect to ${where}: ${msg}`;
}

// What a failed statement means for the user.
function explainQueryError(err: unknown, target: PgTarget, what: string): HostlockError {
  const e = err as PgErrorLike;
  if (e?.code === '42501') {
    return storeError(
      `PostgreSQL backend ${target.masked}: permission denied while ${what} (${e.message}); ` +
        `have the database owner run \`hostlock setup --backend URL\` and grant this role USAGE on schema ${SCHEMA} ` +
        `and EXECUTE on its functions (docs/STORES.md)`,
    );
  }
  return storeError(`PostgreSQL backend ${target.masked}: ${what} failed: ${e?.message ?? String(err)}`);
}

// Opens one session to the first host that answers, TLS as sslmode asks.
async function openClient(target: PgTarget, applicationName: string): Promise<Client> {
  let last = '';
  for (const { host, port } of target.hosts) {
    // prefer/allow fall back to plain (or to TLS) as libpq does.
    const modes: SslMode[] =
      isSocket(host) || target.sslmode === 'disable'
        ? ['disable']
        : target.sslmode === 'prefer'
          ? ['require', 'disable']
          : target.sslmode === 'allow'
            ? ['disable', 'require']
            : [target.sslmode];
    for (const mode of modes) {
      const config: ClientConfig = {
        host,
        port,
        user: target.user,
        database: target.database,
        // A function, so that pg never falls back to its own ~/.pgpass reading.
        password: () => {
          if (target.password === undefined) throw new Error('no password');
          return target.password;
        },
        ssl: tlsOptions(target, host, mode),
        connectionTimeoutMillis: target.connectTimeoutMs,
        keepAlive: true,
        keepAliveInitialDelayMillis: Math.max(1000, (target.keepaliveSec * 1000) / 3),
        application_name: target.applicationName ?? applicationName,
        options: target.options,
      };
      const client = new Client(config);
      client.on('error', () => undefined); // a late socket error after a failed connect
      try {
        await client.connect();
        return client;
      } catch (err) {
        client.end().catch(() => undefined);
        last = explainConnectError(err, target, host, port);
        const e = err as PgErrorLike;
        const retry =
          modes.length > 1 &&
          mode === modes[0] &&
          (/does not support SSL/i.test(e?.message ?? '') || e?.code === '28000' || /SSL/i.test(e?.message ?? ''));
        if (!retry) break;
      }
    }
  }
  throw storeError(last);
}

// The schema's version, or null while there is none. A catalog query, not
// to_regclass: its cache may not yet see a schema another session created
// while we waited for the lock.
async function schemaVersion(client: Client): Promise<number | null> {
  const r = await client.query<{ present: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace ` +
      `WHERE n.nspname = '${SCHEMA}' AND c.relname = 'meta') AS present`,
  );
  if (!onlyRow(r.rows, 'the schema check').present) return null;
  const v = await client.query<{ version: number }>(`SELECT max(version) AS version FROM ${SCHEMA}.meta`);
  return onlyRow(v.rows, `the version of ${SCHEMA}.meta`).version;
}

// What ensureSchema did to the schema, for `hostlock setup` to report.
export interface SchemaChange {
  created?: boolean;
  upgradedFrom?: number;
}

// Creates or checks the schema; DDL only under the serialising lock.
export async function ensureSchema(client: Client, target: PgTarget, change?: SchemaChange): Promise<number> {
  const check = (v: number) => {
    if (v > SCHEMA_VERSION) {
      throw storeError(
        `PostgreSQL backend ${target.masked}: schema ${SCHEMA} is at version ${v}, newer than this hostlock knows (${SCHEMA_VERSION}); upgrade hostlock on this controller`,
      );
    }
    return v;
  };
  let what = `creating schema ${SCHEMA}`;
  try {
    const v = await schemaVersion(client);
    if (v === SCHEMA_VERSION) return v;
    if (v !== null) check(v);
    await client.query('BEGIN');
    try {
      await client.query(`SELECT pg_advisory_xact_lock(${LOCK_CLASS}, 0)`);
      const again = await schemaVersion(client);
      if (again === null) {
        await client.query(CREATE_SQL);
        if (change) change.created = true;
      } else if (again < SCHEMA_VERSION) {
        what = `upgrading schema ${SCHEMA} from version ${again} to ${SCHEMA_VERSION}`;
        await client.query(upgradeSql(again));
        if (change) change.upgradedFrom = again;
      }
      await client.query('COMMIT');
      return check(again === null ? SCHEMA_VERSION : Math.max(again, SCHEMA_VERSION));
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } catch (err) {
    if (err instanceof HostlockError) throw err;
    throw explainQueryError(err, target, what);
  }
}

export interface SetupResult {
  backend: string;
  schema: string;
  version: number;
  granted?: string;
  // Whether setup changed the store (with `check`, would change it), and how.
  changed: boolean;
  created: boolean;
  upgradedFrom?: number;
  grantChanged: boolean;
  check: boolean;
}

// Whether `role` holds, by grants of its own, what GRANT in setup gives: USAGE
// on the schema and EXECUTE on each of its functions.
async function hasLockGrants(client: Client, role: string): Promise<boolean> {
  const r = await client.query<{ granted: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a
        WHERE n.nspname = '${SCHEMA}' AND a.grantee = $1::regrole AND a.privilege_type = 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = '${SCHEMA}' AND NOT EXISTS (
          SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
          WHERE a.grantee = $1::regrole AND a.privilege_type = 'EXECUTE')) AS granted`,
    [role],
  );
  return onlyRow(r.rows, 'the grant check').granted;
}

// `hostlock setup --backend URL`: creates or upgrades the schema ahead of time
// (as a role allowed to), and with `grantTo` gives a lock-only role what it
// needs. It says what it changed; with `check` it only says what it would.
export async function setup(
  url: string,
  opts: { grantTo?: string; env?: NodeJS.ProcessEnv; check?: boolean } = {},
): Promise<SetupResult> {
  const target = resolveOrThrow(url, opts.env);
  const client = await openClient(target, 'hostlock setup');
  try {
    const change: SchemaChange = {};
    let version: number;
    if (opts.check) {
      let current: number | null;
      try {
        current = await schemaVersion(client);
      } catch (err) {
        throw explainQueryError(err, target, `reading schema ${SCHEMA}`);
      }
      if (current !== null && current > SCHEMA_VERSION) await ensureSchema(client, target); // fails, naming both versions
      if (current === null) change.created = true;
      else if (current < SCHEMA_VERSION) change.upgradedFrom = current;
      version = SCHEMA_VERSION;
    } else {
      version = await ensureSchema(client, target, change);
    }
    let grantChanged = false;
    if (opts.grantTo) {
      const role = '"' + opts.grantTo.replace(/"/g, '""') + '"';
      try {
        // A new or upgraded schema's functions are new: their grants are given again.
        if (opts.check && (change.created || change.upgradedFrom !== undefined)) {
          await roleExists(client, role);
          grantChanged = true;
        } else {
          grantChanged = !(await hasLockGrants(client, role));
        }
        if (grantChanged && !opts.check) {
          await client.query(
            `GRANT USAGE ON SCHEMA ${SCHEMA} TO ${role}; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${SCHEMA} TO ${role}`,
          );
        }
      } catch (err) {
        throw explainQueryError(err, target, `granting the lock role ${opts.grantTo}`);
      }
    }
    const created = !!change.created;
    return {
      backend: target.masked,
      schema: SCHEMA,
      version,
      granted: opts.grantTo,
      changed: created || change.upgradedFrom !== undefined || grantChanged,
      created,
      ...(change.upgradedFrom !== undefined ? { upgradedFrom: change.upgradedFrom } : {}),
      grantChanged,
      check: !!opts.check,
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

// Fails as GRANT would when `role` (quoted) does not exist.
async function roleExists(client: Client, role: string): Promise<void> {
  await client.query('SELECT $1::regrole', [role]);
}

function resolveOrThrow(url: string, env?: NodeJS.ProcessEnv): PgTarget {
  try {
    return resolveTarget(url, env);
  } catch (err) {
    if (err instanceof PgUrlError) throw new HostlockError(ErrorCode.InvalidParams, err.message);
    throw err;
  }
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
class Session {
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
    readonly store: PostgresStore,
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
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.lose(`the PostgreSQL server did not answer within ${limit / 1000} s`);
        reject(storeError(`PostgreSQL backend ${this.store.describe}: no answer within ${limit / 1000} s`));
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
    const by = `${b.by?.user ?? '?'}@${b.by?.controller ?? '?'} pid ${b.by?.pid ?? '?'}`;
    const why = `broken by ${by}: ${b.reason}`;
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
    if (r.mismatch) throw slotsMismatch(req.key, req.slots, r.mismatch);
    if (r.granted) {
      const hold = new PgHold(this, Number(r.seq), req, Number(r.token), r.slot ?? undefined);
      this.adopt(hold);
      if (req.signal?.aborted) {
        await hold.release();
        throw abortError();
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
          () => reject(abortError()),
          () => reject(abortError()),
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
      w.reject(abortError());
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

interface CycleStep {
  run: number;
  waits_for: string;
  controller?: string;
  pid?: number;
  user?: string;
}

// The live row that asked other slots than this request (enqueue's `mismatch`).
interface Mismatch {
  slots: number | null;
  granted: boolean;
  owner: Requester;
  controller: string | null;
}

function slotsMismatch(key: LockKey, asked: number | undefined, m: Mismatch): HostlockError {
  const say = (n: number | null | undefined) => (n === undefined || n === null ? 'without slots' : `with slots: ${n}`);
  const o = m.owner ?? {};
  const by = [
    `controller ${m.controller ?? o.controller ?? '?'}`,
    `pid ${o.pid ?? '?'}`,
    o.run ? `run ${o.run}` : '',
    o.task ? `task ${o.task}` : '',
  ]
    .filter(Boolean)
    .join(', ');
  return new HostlockError(
    ErrorCode.SlotsMismatch,
    `'${key.name ?? key.id}' is ${m.granted ? 'in use' : 'waited for'} ${say(m.slots)} (${by}), but this request asks ` +
      `${say(asked)}: every user of a lock must give the same slots`,
    { asked: asked ?? null, found: m.slots ?? null },
  );
}

function deadlockError(key: LockKey, cycle: CycleStep[], describe: string): HostlockError {
  const [mine, ...others] = cycle;
  if (!mine || others.length === 0) {
    return new HostlockError(
      ErrorCode.Deadlock,
      `deadlock: this run already holds or waits for "${key.name ?? key.id}" and would wait for itself; nothing was queued`,
      { backend: describe, cycle },
    );
  }
  const who = (s: CycleStep) => `run ${s.run} (${s.controller ?? '?'} pid ${s.pid ?? '?'}, user ${s.user ?? '?'})`;
  const steps = others.map((s) => `${who(s)} waits for "${s.waits_for}"`);
  return new HostlockError(
    ErrorCode.Deadlock,
    `deadlock: waiting for "${key.name ?? key.id}" would close a cycle: this run waits for "${mine.waits_for}", held or queued by ` +
      `${steps.join(', held or queued by ')}, held by this run; nothing was queued. ` +
      'Lock names in the same order in every play, or lock them in one task',
    { backend: describe, cycle },
  );
}

export class PostgresStore implements LockStore {
  readonly kind = 'postgresql';
  readonly describe: string;
  readonly target: PgTarget;
  readonly controller: string;
  private session: Session | null = null;
  private opening: Promise<Session> | null = null;
  private closed = false;
  private readonly log: (msg: string) => void;
  private pendingHistory: HistoryRecord[] = [];
  private historyTimer?: NodeJS.Timeout;
  private historyWrite: Promise<void> = Promise.resolve();
  private historyTries = 0;

  constructor(url: string, opts: PostgresStoreOptions = {}) {
    this.target = resolveOrThrow(url, opts.env);
    this.describe = this.target.masked;
    this.controller = opts.controller ?? hostname();
    this.log = opts.log ?? ((m) => process.stderr.write(`hostlock: ${m}\n`));
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
    if (this.closed) throw storeError(`PostgreSQL backend ${this.describe}: the store is closed`);
    if (this.session) return this.session;
    this.opening ??= this.connect().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async connect(): Promise<Session> {
    const t = this.target;
    const client = await openClient(t, `hostlock ${this.controller} ${process.pid}`);
    try {
      await ensureSchema(client, t);
      // The server drops a silent client only after the whole bound; the
      // heartbeat gives the holds up after half of it (see docs/STORES.md).
      const k = t.keepaliveSec;
      await client.query(
        `SET tcp_keepalives_idle = ${Math.ceil(k * 0.6)}; SET tcp_keepalives_interval = ${Math.ceil(k * 0.1)}; ` +
          `SET tcp_keepalives_count = 4`,
      );
      // Only PostgreSQL 12+ on Linux knows it; the keepalives alone keep the order.
      await client.query(`SET tcp_user_timeout = ${Math.round(k * 1000)}`).catch(() => undefined);
      let runId: number;
      try {
        const r = await client.query<{ id: number }>(`SELECT ${SCHEMA}.begin_run($1, $2, $3) AS id`, [
          this.controller,
          process.pid,
          osUser(),
        ]);
        runId = onlyRow(r.rows, `${SCHEMA}.begin_run`).id;
      } catch (err) {
        throw explainQueryError(err, t, 'starting a run');
      }
      // A session lock taken in one statement must still be ours in the
      // next: not so behind a pooler in transaction mode.
      const { rows } = await client.query<{ pid: number; mine: boolean }>(
        `SELECT pg_backend_pid() AS pid, EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() ` +
          `AND classid = ${LOCK_CLASS}::oid AND objid = $1::integer::oid AND objsubid = 2 AND granted) AS mine`,
        [runId],
      );
      const check = onlyRow(rows, 'the session check');
      if (!check.mine) {
        throw storeError(
          `PostgreSQL backend ${this.describe}: the run's session lock vanished between two statements: a pooler in ` +
            'transaction mode (PgBouncer pool_mode=transaction) sits between; point the URL at PostgreSQL directly or at a session-mode pool',
        );
      }
      await client.query(`LISTEN hostlock_${runId}`);
      const session = new Session(client, runId, this);
      session.backendPid = check.pid;
      this.session = session;
      return session;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (err instanceof HostlockError) throw err;
      throw explainQueryError(err, t, 'opening the run');
    }
  }

  async acquire(req: StoreAcquire): Promise<StoreHold | null> {
    if (req.signal?.aborted) throw abortError();
    const session = await unlessAborted(this.open(), req.signal, () =>
      storeError(
        `PostgreSQL backend ${this.describe}: no answer from the server before the wait ended (still connecting, ` +
          `connect_timeout ${this.target.connectTimeoutMs / 1000} s); check the host, port and firewall`,
      ),
    );
    try {
      return await session.acquire(req);
    } catch (err) {
      if (err instanceof HostlockError || (err as Error).name === 'AbortError') throw err;
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
    const session = await this.open();
    let rows: StatusRow[];
    try {
      rows = await session.query<StatusRow>(`SELECT * FROM ${SCHEMA}.status($1, $2)`, [k, prefix]);
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
      const slots = r.slots === null ? {} : { slots: r.slots };
      if (r.granted) {
        const h: Holder = {
          ...o,
          controller: r.controller ?? o.controller,
          mode,
          since: iso(r.granted_at ?? r.since),
          token: Number(r.token),
          ...(r.slot === null ? {} : { slot: r.slot }),
          ...slots,
        };
        st.holders.push(h);
        st.held = true;
        st.mode = mode;
        if (r.slots !== null) st.slots = r.slots;
      } else {
        const w: Waiter = { ...o, controller: r.controller ?? o.controller, mode, since: iso(r.since), ...slots };
        st.waiters.push(w);
      }
    }
    return out;
  }

  // Queues one history record; a timer writes the batch (never on the way
  // to a grant or a reply).
  record(e: HistoryEvent): void {
    try {
      if (this.closed) return;
      this.pendingHistory.push(historyRecord(e));
      if (this.pendingHistory.length > HISTORY_PENDING) this.pendingHistory.shift();
      this.historyTimer ??= setTimeout(() => void this.flushHistory(), HISTORY_BATCH_MS);
      this.historyTimer.unref();
    } catch {
      /* history is best effort */
    }
  }

  // Writes the queued records in one statement, one batch at a time; never rejects.
  flushHistory(): Promise<void> {
    clearTimeout(this.historyTimer);
    this.historyTimer = undefined;
    this.historyWrite = this.historyWrite.then(async () => {
      const batch = this.pendingHistory;
      if (!batch.length) return;
      this.pendingHistory = [];
      try {
        const session = await this.open();
        await session.query(`SELECT ${SCHEMA}.record_events($1::jsonb)`, [JSON.stringify(batch)]);
        this.historyTries = 0;
      } catch (err) {
        // Kept for another try unless the server has refused it enough times.
        if (++this.historyTries >= HISTORY_TRIES || this.closed) {
          this.historyTries = 0;
          this.report(`${batch.length} history record(s) not written: ${(err as Error).message}`);
          return;
        }
        this.pendingHistory = batch.concat(this.pendingHistory).slice(-HISTORY_PENDING);
        this.historyTimer ??= setTimeout(() => void this.flushHistory(), 1000);
        this.historyTimer.unref();
      }
    });
    return this.historyWrite;
  }

  async history(query: { name?: string; since?: number }): Promise<HistoryRecord[]> {
    await this.flushHistory(); // this store's own records first
    const session = await this.open();
    try {
      const rows = await session.query<{ rec: HistoryRecord }>(`SELECT ${SCHEMA}.history($1, $2) AS rec`, [
        query.name ?? null,
        query.since === undefined ? null : new Date(query.since),
      ]);
      return rows.map((r) => r.rec);
    } catch (err) {
      if (err instanceof HostlockError) throw err;
      throw explainQueryError(err, this.target, 'reading the history');
    }
  }

  // Ends another controller's (or our own) hold of `key` with `token`.
  async breakHold(key: LockKey, token: number, by: Requester, reason: string): Promise<Holder> {
    const session = await this.open();
    const rec = historyRecord({ event: 'break', key, who: by, token, reason });
    let victim: Holder | null;
    try {
      const rows = await session.query<{ victim: Holder | null }>(
        `SELECT ${SCHEMA}.break_hold($1, $2, $3::jsonb, $4, $5::jsonb) AS victim`,
        [key.id, token, JSON.stringify(by), reason, JSON.stringify(rec)],
      );
      victim = onlyRow(rows, `${SCHEMA}.break_hold`).victim;
    } catch (err) {
      if (err instanceof HostlockError) throw err;
      throw explainQueryError(err, this.target, `breaking ${key.name ?? key.id}`);
    }
    if (victim) return victim;
    const now = await this.status(key);
    const held = now.holders.map((h) => `token ${h.token} (${h.user}@${h.controller} pid ${h.pid})`);
    throw new HostlockError(
      ErrorCode.InvalidParams,
      `no hold of '${key.name ?? key.id}' on ${this.describe} has token ${token}: ` +
        (held.length ? `it is held with ${held.join(', ')}` : 'it is not held') +
        '; `hostlock status --backend URL` lists the holders and their tokens',
      { token, holders: now.holders },
    );
  }

  async close(): Promise<void> {
    if (!this.closed && (this.pendingHistory.length || this.historyTimer)) await this.flushHistory();
    this.closed = true;
    const s = this.session ?? (this.opening ? await this.opening.catch(() => null) : null);
    if (s) await s.end();
  }
}

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

// One history line as history.ts writes it, long fields cut.
function historyRecord(e: HistoryEvent): HistoryRecord {
  const cut = (v: string) => (v.length > HISTORY_FIELD_MAX ? v.slice(0, HISTORY_FIELD_MAX) + '…' : v);
  const rec = historyRecordOf(e);
  for (const k of [
    'name',
    'path',
    'wait',
    'reason',
    'user',
    'controller',
    'run',
    'playbook',
    'play',
    'task',
    'host',
  ] as const) {
    const v = rec[k];
    if (v !== undefined) rec[k] = cut(v);
  }
  rec.cycle = e.cycle?.slice(0, 8);
  return rec;
}

function iso(d: Date | string): string {
  return (d instanceof Date ? d : new Date(d)).toISOString();
}

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? '?';
  }
}
