// Driver and server errors turned into the store's own: a HostlockError with
// code StoreUnavailable whose message names the backend (password masked),
// what failed, and what the user can do about it.
import { ErrorCode, HostlockError } from '../../core/errors';
import { SCHEMA } from './schema';
import { isSocket, type PgTarget } from './url';

export interface PgErrorLike {
  code?: string;
  message?: string;
  severity?: string;
}

export function storeError(message: string, data: Record<string, unknown> = {}): HostlockError {
  return new HostlockError(ErrorCode.StoreUnavailable, message, data);
}

// The row of a statement that always returns exactly one (a SELECT of
// expressions, a function with OUT parameters).
export function onlyRow<T>(rows: T[], statement: string): T {
  const row = rows[0];
  if (row === undefined) throw new Error(`${statement} returned no row`);
  return row;
}

// A role name as SQL reads it: bare when it is a plain lower-case name.
function sqlRole(role: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(role) ? role : '"' + role.replace(/"/g, '""') + '"';
}

// How a role comes to exist and to lock, for a message about a missing one.
export function createRoleAdvice(role: string): string {
  return (
    `have a superuser create it (CREATE ROLE ${sqlRole(role)} LOGIN PASSWORD '…'), then give it what locking needs ` +
    `(hostlock setup --backend URL --grant ${role}, as the schema's owner)`
  );
}

// Where the password came from, and where to fix it.
function passwordOrigin(target: PgTarget): { from: string; fix: string } {
  switch (target.passwordSource) {
    case 'url':
      return { from: 'the URL', fix: 'fix the password in the URL' };
    case 'PGPASSWORD':
      return { from: 'PGPASSWORD', fix: 'fix PGPASSWORD' };
    case 'passfile':
      return { from: target.passfile, fix: `fix the password in ${target.passfile}` };
    default:
      return { from: 'nowhere', fix: `give it in the URL, PGPASSWORD or ${target.passfile}` };
  }
}

// Why a connection failed, in words a user can act on; never the password.
export function explainConnectError(err: unknown, target: PgTarget, host: string, port: number): string {
  const e = err as PgErrorLike;
  const where = isSocket(host) ? `socket ${host}/.s.PGSQL.${port}` : `${host}:${port}`;
  const msg = String(e?.message ?? err).replace(target.password ? target.password : '\u0000', '***');
  const code = e?.code ?? '';
  const head = `PostgreSQL backend ${target.masked}`;
  if (code === '28P01') {
    const { from, fix } = passwordOrigin(target);
    return (
      `${head}: password authentication failed for user "${target.user}" (password from ${from}); ${fix}. ` +
      `A role that does not exist is refused the same way: if "${target.user}" is new, ${createRoleAdvice(target.user)}`
    );
  }
  if (code === '28000' && /role ".*" does not exist/.test(msg)) {
    return `${head}: role "${target.user}" does not exist on ${where}; ${createRoleAdvice(target.user)}`;
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
    const none = `${head}: the server asks user "${target.user}" for a password and none was given`;
    if (target.passfileIgnored) return `${none}: ${target.passfileIgnored}`;
    return `${none}; put it in ${target.passfile} (mode 0600) or PGPASSWORD`;
  }
  return `${head}: cannot connect to ${where}: ${msg}`;
}

// What a failed statement means for the user.
export function explainQueryError(err: unknown, target: PgTarget, what: string): HostlockError {
  const e = err as PgErrorLike;
  const head = `PostgreSQL backend ${target.masked}`;
  if (e?.code === '42501') {
    return storeError(
      `${head}: permission denied while ${what} (${e.message}); ` +
        `have the database owner run \`hostlock setup --backend URL\` and grant this role USAGE on schema ${SCHEMA} ` +
        `and EXECUTE on its functions (docs/STORES.md)`,
    );
  }
  const role = e?.code === '42704' ? /role "((?:[^"]|"")*)" does not exist/.exec(e.message ?? '') : null;
  if (role) {
    const name = role[1]!.replace(/""/g, '"');
    return storeError(`${head}: ${what} failed: role "${name}" does not exist; ${createRoleAdvice(name)}`);
  }
  return storeError(`${head}: ${what} failed: ${e?.message ?? String(err)}`);
}
