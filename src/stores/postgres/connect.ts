// Connecting: the hosts in order, each with TLS as sslmode asks (prefer and
// allow fall back to the other as libpq does), until one lets us in, else
// the store error that explains the last refusal; then, for a store, the
// run's session on that connection.
import { userInfo } from 'node:os';
import { Client, type ClientConfig } from 'pg';
import { HostlockError } from '../../core/errors';
import { explainConnectError, explainQueryError, onlyRow, storeError, type PgErrorLike } from './explain';
import { ensureSchema } from './migrate';
import { LOCK_CLASS, SCHEMA } from './schema';
import { Session, type SessionOwner } from './session';
import { isSocket, tlsOptions, type PgTarget, type SslMode } from './url';

// The sslmodes to try on one host, in order.
function sslModes(target: PgTarget, host: string): SslMode[] {
  if (isSocket(host) || target.sslmode === 'disable') return ['disable'];
  if (target.sslmode === 'prefer') return ['require', 'disable'];
  if (target.sslmode === 'allow') return ['disable', 'require'];
  return [target.sslmode];
}

// Opens one session to the first host that answers, TLS as sslmode asks.
export async function openClient(target: PgTarget, applicationName: string): Promise<Client> {
  let last = '';
  for (const { host, port } of target.hosts) {
    const modes = sslModes(target, host);
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

// Opens the session of one run of this process: the schema checked, the
// server's keepalives set, the run begun, its session lock proven to stay
// with this session, and its grant channel listened to.
export async function openSession(owner: SessionOwner): Promise<Session> {
  const t = owner.target;
  const client = await openClient(t, `hostlock ${owner.controller} ${process.pid}`);
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
        owner.controller,
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
        `PostgreSQL backend ${owner.describe}: the run's session lock vanished between two statements: a pooler in ` +
          'transaction mode (PgBouncer pool_mode=transaction) sits between; point the URL at PostgreSQL directly or at a session-mode pool',
      );
    }
    await client.query(`LISTEN hostlock_${runId}`);
    const session = new Session(client, runId, owner);
    session.backendPid = check.pid;
    return session;
  } catch (err) {
    await client.end().catch(() => undefined);
    if (err instanceof HostlockError) throw err;
    throw explainQueryError(err, t, 'opening the run');
  }
}

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? '?';
  }
}
