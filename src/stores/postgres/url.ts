// A PostgreSQL backend URL turned into connection settings the way libpq does
// it: the URL first, then the PG* variables, then libpq's defaults, then the
// password file (PGPASSFILE, ~/.pgpass) for the password; and the same URL
// with its password masked, the only form that is ever printed.
import { readFileSync, statSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { ErrorCode, HostlockError } from '../../core/errors';
import { maskUrl } from '../../store/mask';
import { defaultCas } from '../../sys/extraca';

export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
const SSL_MODES: SslMode[] = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

// What a store needs to open its sessions. `password` is kept off the
// enumerable properties, so that no log or JSON dump of a target shows it.
export interface PgTarget {
  hosts: { host: string; port: number }[]; // tried in order, as libpq does
  database: string;
  user: string;
  readonly password?: string;
  passwordSource: 'url' | 'PGPASSWORD' | 'passfile' | 'none';
  // The password file looked in (passwordSource 'passfile': the one the
  // password came from), and why it was ignored if it was (too open).
  passfile: string;
  passfileIgnored?: string;
  sslmode: SslMode;
  sslrootcert?: string; // a file, or "system" for Node's default CAs
  sslcert?: string;
  sslkey?: string;
  connectTimeoutMs: number;
  applicationName?: string;
  options?: string;
  // How long a silent server may take before the store gives its holds up
  // (seconds); the server side is set to drop the session only after twice that.
  keepaliveSec: number;
  masked: string; // the URL as given, password replaced by ***
}

export class PgUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PgUrlError';
  }
}

// Parameters libpq accepts in a URL query that this store acts on; any other
// libpq keyword is refused by name rather than silently ignored.
const KNOWN = new Set([
  'host',
  'port',
  'dbname',
  'user',
  'password',
  'passfile',
  'connect_timeout',
  'application_name',
  'fallback_application_name',
  'options',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'hostlock_keepalive',
]);

export const DEFAULT_CONNECT_TIMEOUT_SEC = 10;
export const DEFAULT_KEEPALIVE_SEC = 30;

function decode(s: string, what: string, masked: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new PgUrlError(`${masked}: bad percent-encoding in the ${what}`);
  }
}

interface Raw {
  [k: string]: string | undefined;
}

// Splits a libpq URL into its keywords (host and port stay comma lists).
function parseUrl(url: string, masked: string): Raw {
  const m = /^(postgres(?:ql)?):\/\/([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/i.exec(url);
  if (!m) {
    throw new PgUrlError(
      `${masked}: not a PostgreSQL URL; write postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]`,
    );
  }
  const raw: Raw = {};
  let authority = m[2]!;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    authority = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = colon >= 0 ? userinfo.slice(0, colon) : userinfo;
    if (user) raw.user = decode(user, 'user name', masked);
    if (colon >= 0) raw.password = decode(userinfo.slice(colon + 1), 'password', masked);
  }
  if (authority) {
    const hosts: string[] = [];
    const ports: string[] = [];
    for (const part of authority.split(',')) {
      const hm = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(part);
      if (!hm) throw new PgUrlError(`${masked}: cannot read host "${part}"`);
      hosts.push(decode(hm[1]!.replace(/^\[(.*)\]$/, '$1'), 'host', masked));
      ports.push(hm[2] ?? '');
    }
    if (hosts.some((h) => h)) raw.host = hosts.join(',');
    if (ports.some((p) => p)) raw.port = ports.join(',');
  }
  if (m[3]) raw.dbname = decode(m[3], 'database name', masked);
  if (m[4]) {
    for (const pair of m[4].split('&')) {
      if (!pair) continue;
      const eq = pair.indexOf('=');
      if (eq < 0) throw new PgUrlError(`${masked}: parameter "${pair}" has no value`);
      const key = decode(pair.slice(0, eq), 'parameter name', masked);
      if (!KNOWN.has(key)) {
        throw new PgUrlError(`${masked}: unsupported parameter "${key}"; supported: ${[...KNOWN].sort().join(', ')}`);
      }
      raw[key] = decode(pair.slice(eq + 1).replace(/\+/g, ' '), `parameter ${key}`, masked);
    }
  }
  return raw;
}

// libpq's default socket directory on Debian builds, else TCP to localhost.
function defaultHost(): string {
  for (const dir of ['/var/run/postgresql', '/tmp']) {
    try {
      if (statSync(dir).isDirectory() && statSync(join(dir, '.s.PGSQL.5432')).isSocket()) return dir;
    } catch {
      /* not this one */
    }
  }
  return 'localhost';
}

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? 'postgres';
  }
}

function seconds(v: string | undefined, what: string, masked: string, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new PgUrlError(`${masked}: ${what} must be a number of seconds, not "${v}"`);
  return n;
}

export const isSocket = (host: string) => host.startsWith('/');

// libpq's passfile: host:port:database:user:password, `*` matches anything,
// `\` escapes `:` and `\`; the first matching line wins. A file that is not
// a regular file, or that group or others can read, is ignored, as libpq
// ignores it: `ignored` is told why, in words that say what to do.
export function passfileLookup(
  file: string,
  host: string,
  port: number,
  database: string,
  user: string,
  ignored?: (why: string) => void,
): string | undefined {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) {
      ignored?.(`password file ${file} was ignored: it is not a regular file`);
      return undefined;
    }
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      ignored?.(`password file ${file} was ignored: its permissions are too open (mode ${mode}); chmod 0600 ${file}`);
      return undefined;
    }
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // no such file: nothing to say, as with libpq
  }
  // A socket connection matches "localhost" as well as the socket directory.
  const hostNames = isSocket(host) ? ['localhost', host] : [host];
  for (const line of text.split('\n')) {
    if (!line.trim() || line.startsWith('#')) continue;
    const fields: string[] = [];
    let cur = '';
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (c === '\\' && i + 1 < line.length) cur += line[++i];
      else if (c === ':' && fields.length < 4) {
        fields.push(cur);
        cur = '';
      } else cur += c;
    }
    fields.push(cur.replace(/\r$/, ''));
    if (fields.length !== 5) continue;
    const [h, p, d, u, pw] = fields as [string, string, string, string, string];
    const ok = (pat: string, vals: string[]) => pat === '*' || vals.includes(pat);
    if (ok(h, hostNames) && ok(p, [String(port)]) && ok(d, [database]) && ok(u, [user])) return pw;
  }
  return undefined;
}

// The settings for `url`, with `env` standing for the PG* variables.
export function resolveTarget(url: string, env: NodeJS.ProcessEnv = process.env): PgTarget {
  const masked = maskUrl(url);
  const raw = parseUrl(url, masked);
  const pick = (key: string, envName: string) => raw[key] ?? (env[envName] || undefined);

  const hostList = (pick('host', 'PGHOST') ?? defaultHost()).split(',').map((h) => h || defaultHost());
  const portList = (pick('port', 'PGPORT') ?? '').split(',');
  if (portList.length !== 1 && portList.length !== hostList.length) {
    throw new PgUrlError(`${masked}: ${portList.length} ports for ${hostList.length} hosts`);
  }
  const hosts = hostList.map((host, i) => {
    const p = (portList.length === 1 ? portList[0] : portList[i]) || '5432';
    const port = Number(p);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new PgUrlError(`${masked}: bad port "${p}"`);
    return { host, port };
  });
  const user = pick('user', 'PGUSER') ?? osUser();
  const database = pick('dbname', 'PGDATABASE') ?? user;

  const sslmode = (pick('sslmode', 'PGSSLMODE') ?? 'prefer') as SslMode;
  if (!SSL_MODES.includes(sslmode)) {
    throw new PgUrlError(`${masked}: sslmode must be one of ${SSL_MODES.join(', ')}, not "${sslmode}"`);
  }
  const home = homedir();
  const inHome = (f: string) => {
    const p = join(home, '.postgresql', f);
    try {
      return statSync(p).isFile() ? p : undefined;
    } catch {
      return undefined;
    }
  };
  let sslrootcert = pick('sslrootcert', 'PGSSLROOTCERT') ?? inHome('root.crt');
  if (sslrootcert === undefined && (sslmode === 'verify-ca' || sslmode === 'verify-full')) {
    throw new PgUrlError(
      `${masked}: sslmode=${sslmode} needs the CA that signed the server's certificate: add ` +
        `sslrootcert=/path/to/ca.crt (or sslrootcert=system), or put it in ~/.postgresql/root.crt`,
    );
  }
  if (sslrootcert === '') sslrootcert = undefined;

  let password = raw.password;
  let passwordSource: PgTarget['passwordSource'] = password !== undefined ? 'url' : 'none';
  if (password === undefined && env.PGPASSWORD) {
    password = env.PGPASSWORD;
    passwordSource = 'PGPASSWORD';
  }
  const passfile = pick('passfile', 'PGPASSFILE') ?? join(home, '.pgpass');
  let passfileIgnored: string | undefined;
  if (password === undefined) {
    const { host, port } = hosts[0]!;
    password = passfileLookup(passfile, host, port, database, user, (why) => (passfileIgnored = why));
    if (password !== undefined) passwordSource = 'passfile';
  }

  const target: PgTarget = {
    hosts,
    database,
    user,
    passwordSource,
    passfile,
    ...(passfileIgnored ? { passfileIgnored } : {}),
    sslmode,
    sslrootcert,
    sslcert: pick('sslcert', 'PGSSLCERT') ?? inHome('postgresql.crt'),
    sslkey: pick('sslkey', 'PGSSLKEY') ?? inHome('postgresql.key'),
    connectTimeoutMs:
      seconds(pick('connect_timeout', 'PGCONNECT_TIMEOUT'), 'connect_timeout', masked, DEFAULT_CONNECT_TIMEOUT_SEC) *
        1000 || DEFAULT_CONNECT_TIMEOUT_SEC * 1000,
    applicationName: pick('application_name', 'PGAPPNAME') ?? raw.fallback_application_name,
    options: pick('options', 'PGOPTIONS'),
    keepaliveSec: Math.max(
      2,
      seconds(pick('hostlock_keepalive', 'HOSTLOCK_PG_KEEPALIVE'), 'hostlock_keepalive', masked, DEFAULT_KEEPALIVE_SEC),
    ),
    masked,
  };
  Object.defineProperty(target, 'password', { value: password, enumerable: false });
  return target;
}

// resolveTarget for a store: a bad URL is the caller's error (InvalidParams).
export function targetOf(url: string, env?: NodeJS.ProcessEnv): PgTarget {
  try {
    return resolveTarget(url, env);
  } catch (err) {
    if (err instanceof PgUrlError) throw new HostlockError(ErrorCode.InvalidParams, err.message);
    throw err;
  }
}

// Why a file could not be read, in a few words.
function unreadable(err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return code ?? (err as Error)?.message ?? String(err);
}

// Node TLS options for one host under the target's sslmode, or false for a
// plain connection. Unix sockets never use TLS (as with libpq). A file it
// names that cannot be read is the store's error, saying what to point it at.
export function tlsOptions(target: PgTarget, host: string, mode: SslMode): ConnectionOptions | false {
  if (mode === 'disable' || isSocket(host)) return false;
  const read = (file: string, what: 'sslrootcert' | 'sslcert' | 'sslkey') => {
    try {
      return readFileSync(file);
    } catch (err) {
      const fix =
        what === 'sslrootcert'
          ? "point sslrootcert at the CA certificate that signed the server's certificate (a PEM file this user " +
            "can read), or give sslrootcert=system for Node's default CAs"
          : 'point sslcert and sslkey at the client certificate and its key (PEM files this user can read, ' +
            'the key mode 0600), or leave both out';
      throw new HostlockError(
        ErrorCode.StoreUnavailable,
        `PostgreSQL backend ${target.masked}: cannot read ${what} ${file} (${unreadable(err)}); ${fix}`,
        { path: file },
      );
    }
  };
  const tls: ConnectionOptions = {};
  if (target.sslcert && target.sslkey) {
    tls.cert = read(target.sslcert, 'sslcert');
    tls.key = read(target.sslkey, 'sslkey');
  }
  // libpq: with a root certificate file, `require` verifies the chain like `verify-ca`.
  const verifyChain = mode === 'verify-ca' || mode === 'verify-full' || (mode === 'require' && !!target.sslrootcert);
  if (!verifyChain) {
    tls.rejectUnauthorized = false;
    return tls;
  }
  if (target.sslrootcert && target.sslrootcert !== 'system') tls.ca = read(target.sslrootcert, 'sslrootcert');
  else {
    const ca = defaultCas();
    if (ca) tls.ca = ca;
  }
  tls.rejectUnauthorized = true;
  // verify-full: pg itself checks the name (SNI for host names, the address for IPs).
  if (mode === 'verify-ca') tls.checkServerIdentity = () => undefined;
  return tls;
}
