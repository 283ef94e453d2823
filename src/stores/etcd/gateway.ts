// A small client for etcd's HTTP/JSON gateway (`/v3/...`) on Node's own
// http/https: unary calls with failover across members, and watch streams of
// one JSON object per line. Loading it costs nothing beyond Node's core (the
// gRPC client weighs ~16 MB and 130-195 ms of `require`; see docs/ETCD.md).
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type ClientRequest } from 'node:http';
import { ErrorCode, HostlockError } from '../../core/errors';
import { defaultCas } from '../../sys/extraca';

// TLS costs its load time only to clusters that use it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const https = () => require('node:https') as typeof import('node:https');

export interface GatewayOptions {
  // http://host:port or https://host:port, one per member.
  endpoints: string[];
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  user?: string;
  password?: string;
  // Per request, before the next member is tried.
  timeoutMs: number;
}

// An error from etcd or from reaching it: names the member and the cause. To
// a client it is the store's error (StoreUnavailable), whatever etcd said.
export class EtcdError extends HostlockError {
  constructor(
    message: string,
    readonly endpoint: string,
    // gRPC status code from the gateway, or undefined for a transport failure.
    readonly grpcCode?: number,
  ) {
    super(ErrorCode.StoreUnavailable, message);
    this.name = 'EtcdError';
  }
  get transport(): boolean {
    return this.grpcCode === undefined;
  }
}

export const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
export const unb64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64').toString('utf8') : '');

// The first key after every key that starts with `prefix` (etcd's range_end for a prefix).
export function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    const byte = b.readUInt8(i);
    if (byte < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i] = byte + 1;
      return end.toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

// A member that cannot serve right now: the next one may (leader lost, overloaded).
const UNAVAILABLE = /no leader|leader changed|request timed out|not capable|too many requests|stopped/i;
const AUTH_EXPIRED = /invalid auth token|user name is empty|authentication failed, invalid/i;

function hostOf(endpoint: string): string {
  return endpoint.replace(/^https?:\/\//, '');
}

// Per member, for unary calls: a run's many holds share them.
const MAX_CONNECTIONS = 4;

export interface WatchStream {
  close(): void;
}

export class Gateway {
  private current = 0;
  // Unary calls share a few kept-alive connections; the watch has its own.
  private readonly agent: HttpAgent;
  private readonly watchAgent: HttpAgent;
  private token: string | null = null;
  private authing: Promise<string | null> | null = null;
  private closed = false;
  // Why the last unary call that found no member failed, until one succeeds.
  private failing: string | undefined;

  constructor(private readonly opts: GatewayOptions) {
    if (opts.endpoints.length === 0) throw new Error('an etcd gateway needs at least one member');
    const secure = opts.endpoints.some((e) => e.startsWith('https:'));
    const agent = (maxSockets: number) =>
      secure
        ? new (https().Agent)({
            keepAlive: true,
            maxSockets,
            ca: opts.tls?.ca ?? defaultCas(),
            cert: opts.tls?.cert,
            key: opts.tls?.key,
          })
        : new HttpAgent({ keepAlive: true, maxSockets });
    this.agent = agent(MAX_CONNECTIONS);
    this.watchAgent = agent(1);
  }

  get endpoints(): readonly string[] {
    return this.opts.endpoints;
  }

  // What the members said while no call could get through, or undefined.
  get lastFailure(): string | undefined {
    return this.failing;
  }

  // POST a unary call; on a transport failure or an unavailable member, the
  // next member is tried, round after round until `budgetMs` has passed (an
  // election after a member dies takes a moment). The error names every
  // member tried and why each failed.
  async call<T>(path: string, body: unknown, timeoutMs = this.opts.timeoutMs, budgetMs = 2 * timeoutMs): Promise<T> {
    const n = this.opts.endpoints.length;
    const deadline = Date.now() + budgetMs;
    let reauthed = false;
    let failures = new Map<string, string>();
    for (let tried = 0; ; tried++) {
      if (tried > 0 && tried % n === 0) {
        if (Date.now() + 50 >= deadline) break;
        await new Promise((r) => setTimeout(r, 50));
        failures = new Map();
      }
      const i = (this.current + tried) % n;
      const endpoint = this.opts.endpoints[i]!;
      try {
        const headers = await this.authHeaders(endpoint);
        const left = Math.round(Math.max(100, Math.min(timeoutMs, deadline - Date.now())));
        const out = await this.post<T>(endpoint, path, body, left, headers);
        this.current = i;
        this.failing = undefined;
        return out;
      } catch (e) {
        const err = e as EtcdError;
        if (!reauthed && this.opts.user && err.grpcCode !== undefined && AUTH_EXPIRED.test(err.message)) {
          // Simple tokens expire (5 min by default): authenticate again, once.
          this.token = null;
          reauthed = true;
          tried--;
          continue;
        }
        if (!err.transport && !UNAVAILABLE.test(err.message)) throw err;
        failures.set(endpoint, err.message);
        this.failing = [...failures.values()].join('; ');
      }
    }
    throw new EtcdError(`no etcd member answered: ${[...failures.values()].join('; ')}`, this.opts.endpoints.join(','));
  }

  private async authHeaders(endpoint: string): Promise<Record<string, string>> {
    if (!this.opts.user) return {};
    if (!this.token) {
      this.authing ??= this.post<{ token?: string }>(
        endpoint,
        '/v3/auth/authenticate',
        { name: this.opts.user, password: this.opts.password ?? '' },
        this.opts.timeoutMs,
        {},
      )
        .then((r) => r.token ?? null)
        .finally(() => (this.authing = null));
      this.token = await this.authing;
    }
    return this.token ? { Authorization: this.token } : {};
  }

  private send(endpoint: string, path: string, headers: Record<string, string>): ClientRequest {
    const url = endpoint + path;
    const req = (url.startsWith('https:') ? https().request : httpRequest)(url, {
      method: 'POST',
      agent: path === '/v3/watch' ? this.watchAgent : this.agent,
      headers: { 'Content-Type': 'application/json', ...headers },
    });
    return req;
  }

  private post<T>(
    endpoint: string,
    path: string,
    body: unknown,
    timeoutMs: number,
    headers: Record<string, string>,
  ): Promise<T> {
    const host = hostOf(endpoint);
    return new Promise<T>((resolve, reject) => {
      if (this.closed) {
        reject(new EtcdError(`etcd ${host}: client closed`, host));
        return;
      }
      const req = this.send(endpoint, path, headers);
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new EtcdError(`etcd ${host}: ${describeTransport(e)}`, host));
      });
      req.on('response', (res: IncomingMessage) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('error', () => {}); // the request's error handler reports it
        res.on('end', () => {
          clearTimeout(timer);
          let parsed: { error?: string; message?: string; code?: number; result?: unknown };
          try {
            parsed = JSON.parse(text) as typeof parsed;
          } catch {
            reject(new EtcdError(`etcd ${host}${path}: HTTP ${res.statusCode}, not JSON: ${text.slice(0, 200)}`, host));
            return;
          }
          if (parsed.error !== undefined || (res.statusCode ?? 500) >= 300) {
            const msg = parsed.message ?? parsed.error ?? `HTTP ${res.statusCode}`;
            reject(new EtcdError(`etcd ${host}: ${msg}`, host, parsed.code ?? 2));
            return;
          }
          resolve(parsed as T);
        });
      });
      req.end(JSON.stringify(body));
    });
  }

  // A watch: `onMessage` gets each `result` object; `onEnd` once when the
  // stream ends for any reason (the caller reconnects from its last revision).
  watch(body: unknown, onMessage: (r: WatchResult) => void, onEnd: (err: Error) => void): WatchStream {
    const n = this.opts.endpoints.length;
    const i = this.current % n;
    const endpoint = this.opts.endpoints[i]!;
    const host = hostOf(endpoint);
    let req: ClientRequest | null = null;
    let ended = false;
    const end = (err: Error) => {
      if (ended) return;
      ended = true;
      req?.destroy();
      // The next attempt goes to the next member.
      if (err.message !== 'closed') this.current = (i + 1) % n;
      onEnd(err);
    };
    this.authHeaders(endpoint).then(
      (headers) => {
        if (ended || this.closed) return end(new Error('closed'));
        req = this.send(endpoint, '/v3/watch', headers);
        req.on('error', (e: NodeJS.ErrnoException) =>
          end(new EtcdError(`etcd ${host}: ${describeTransport(e)}`, host)),
        );
        req.on('response', (res: IncomingMessage) => {
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            buf += c;
            let nl;
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              if (!line) continue;
              let msg: { result?: WatchResult; error?: { message?: string } | string; message?: string };
              try {
                msg = JSON.parse(line) as typeof msg;
              } catch {
                return end(new EtcdError(`etcd ${host}: watch sent non-JSON: ${line.slice(0, 200)}`, host));
              }
              if (msg.result) onMessage(msg.result);
              else {
                const why = typeof msg.error === 'string' ? msg.error : (msg.error?.message ?? msg.message);
                return end(new EtcdError(`etcd ${host}: watch failed: ${why}`, host, 2));
              }
            }
          });
          res.on('end', () => end(new EtcdError(`etcd ${host}: watch stream ended`, host)));
          res.on('error', (e) => end(new EtcdError(`etcd ${host}: ${describeTransport(e)}`, host)));
        });
        // The watch outlives the request body; it ends with the connection.
        req.end(JSON.stringify(body));
      },
      (e: Error) => end(e),
    );
    return { close: () => end(new Error('closed')) };
  }

  close(): void {
    this.closed = true;
    this.agent.destroy();
    this.watchAgent.destroy();
  }
}

export interface WatchResult {
  header?: { revision?: string };
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: {
    type?: 'PUT' | 'DELETE';
    kv: { key: string; mod_revision?: string };
    // The value before the event, when the watch asked for it.
    prev_kv?: { value?: string };
  }[];
}

function describeTransport(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ECONNREFUSED':
      return 'connection refused (is etcd running there?)';
    case 'ECONNRESET':
      return 'connection reset';
    case 'ENOTFOUND':
      return 'host not found';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    case 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE':
    case 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED':
      return `the server refused our client certificate or wants one (${e.code}): give cert= and key=`;
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return `the server's certificate is not trusted (${e.code}): give cacert= the CA that signed it`;
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `the server's certificate does not name this host (${e.code})`;
    default:
      if (/wrong version number/i.test(e.message)) return 'TLS to a server without TLS (use etcd:// for plain HTTP)';
      return e.code && !e.message.includes(e.code) ? `${e.message} (${e.code})` : e.message;
  }
}
