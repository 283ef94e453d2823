// `etcd://` and `etcd+https://` backend URLs: members, credentials, options.
//
//   etcd://[user[:password]@]host1[:2379][,host2[:2379]...][/][?option=value&...]
//
// Options: prefix (key prefix, default "hostlock/"), ttl (lease seconds,
// default 10, at least 2), timeout_ms (per request, before the next member),
// history (history records kept, default 10000, 0 = none), cacert, cert, key
// (PEM files, as etcdctl's --cacert/--cert/--key).
import { invalidParams } from '../../core/errors';
import { maskUrl } from '../../store/mask';

export interface EtcdConfig {
  endpoints: string[]; // http(s)://host:port
  user?: string;
  password?: string;
  prefix: string;
  ttlSeconds: number;
  timeoutMs: number;
  // How many history records the store keeps (the oldest go first); 0 keeps none.
  historyCap: number;
  cacert?: string;
  cert?: string;
  key?: string;
  // The URL with its password masked: safe for logs, errors and status.
  masked: string;
}

const OPTIONS = new Set(['prefix', 'ttl', 'timeout_ms', 'history', 'cacert', 'cert', 'key']);

export function parseEtcdUrl(url: string): EtcdConfig {
  const masked = maskUrl(url);
  const bad = (why: string) =>
    invalidParams(
      `bad etcd backend URL ${masked}: ${why}; expected etcd://[user[:password]@]host1:2379[,host2:2379...][?prefix=P&ttl=S]` +
        ' or etcd+https://...?cacert=CA.pem&cert=CERT.pem&key=KEY.pem',
    );
  const m = /^(etcd|etcd\+https|etcd\+http):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]*)\/?(?:\?([^#]*))?$/i.exec(url);
  if (!m) throw bad('not an etcd:// URL');
  const [, scheme, user, password, hostList, query] = m;
  const proto = scheme!.toLowerCase() === 'etcd+https' ? 'https' : 'http';
  if (!hostList) throw bad('no host');
  const endpoints = hostList.split(',').map((h) => {
    const hm = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(\d{1,5}))?$/i.exec(h.trim());
    if (!hm) throw bad(`"${h}" is not host[:port]`);
    const port = hm[2] ? Number(hm[2]) : 2379;
    if (port < 1 || port > 65535) throw bad(`port ${port} out of range`);
    return `${proto}://${hm[1]}:${port}`;
  });
  const cfg: EtcdConfig = {
    endpoints,
    prefix: 'hostlock/',
    ttlSeconds: 10,
    timeoutMs: 3000,
    historyCap: 10_000,
    masked,
  };
  if (user) cfg.user = decodeURIComponent(user);
  if (password !== undefined) cfg.password = decodeURIComponent(password);
  for (const [k, v] of new URLSearchParams(query ?? '')) {
    if (!OPTIONS.has(k)) throw bad(`unknown option "${k}" (known: ${[...OPTIONS].join(', ')})`);
    if (k === 'ttl') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 2)
        throw bad(`ttl must be a whole number of seconds, at least 2 (etcd's minimum)`);
      cfg.ttlSeconds = n;
    } else if (k === 'timeout_ms') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 100) throw bad('timeout_ms must be a whole number, at least 100');
      cfg.timeoutMs = n;
    } else if (k === 'history') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw bad('history must be a whole number of records (0 keeps none)');
      cfg.historyCap = n;
    } else if (k === 'prefix') {
      cfg.prefix = v;
    } else {
      cfg[k as 'cacert' | 'cert' | 'key'] = v;
    }
  }
  if (proto === 'http' && (cfg.cacert || cfg.cert || cfg.key)) throw bad('cacert/cert/key need etcd+https://');
  if (!!cfg.cert !== !!cfg.key) throw bad('cert and key go together');
  return cfg;
}
