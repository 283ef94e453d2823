// A private 3-member etcd cluster on free 127.0.0.1 ports for the store tests.
// Each member is a real `etcd` process with its own data directory; `stop`
// kills them all and removes the directories. HOSTLOCK_TEST_ETCD=URLs points
// the tests that do not kill members at an existing cluster instead.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdCluster {
  // http://127.0.0.1:PORT, one per member.
  endpoints: string[];
  // etcd://127.0.0.1:P1,127.0.0.1:P2,... (etcd+https:// with TLS) for the store.
  url: string;
  // With TLS: PEM files of the CA and of a client certificate it signed.
  tls?: TlsFiles;
  // Fault injection (a private cluster only).
  kill(i: number): Promise<void>;
  restart(i: number): Promise<void>;
  // SIGSTOP / SIGCONT of a member: it freezes, sockets open, answering nothing.
  pause(i: number): void;
  resume(i: number): void;
  stop(): Promise<void>;
}

export interface TlsFiles {
  cacert: string;
  cert: string;
  key: string;
}

// GET on a member, over TLS with the client certificate when given.
function get(
  url: string,
  tls: TlsFiles | undefined,
  timeoutMs: number,
  cb: (r: IncomingMessage) => void,
): ClientRequest {
  const opts: RequestOptions & { ca?: Buffer; cert?: Buffer; key?: Buffer } = { timeout: timeoutMs, agent: false };
  if (tls)
    Object.assign(opts, { ca: readFileSync(tls.cacert), cert: readFileSync(tls.cert), key: readFileSync(tls.key) });
  return (url.startsWith('https:') ? httpsRequest : httpRequest)(url, opts, cb);
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, by openssl.
function makeCerts(dir: string): { server: TlsFiles; client: TlsFiles } {
  mkdirSync(dir, { recursive: true });
  const ssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=hostlock-test-ca');
  for (const [who, ext] of [
    ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth'],
    ['client', 'extendedKeyUsage=clientAuth'],
  ]) {
    ssl('req', ...ec, '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`);
    writeFileSync(join(dir, `${who}.ext`), ext + '\n');
    ssl(
      'x509',
      '-req',
      '-in',
      `${who}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${who}.pem`,
      '-days',
      '2',
      '-extfile',
      `${who}.ext`,
    );
  }
  const files = (who: string) => ({
    cacert: join(dir, 'ca.pem'),
    cert: join(dir, `${who}.pem`),
    key: join(dir, `${who}.key`),
  });
  return { server: files('server'), client: files('client') };
}

// A port nobody listens on now, and none this process handed out before: the
// kernel may offer a port again once its listener is closed, and a cluster
// given one port twice does not start.
const handedOut = new Set<number>();
async function freePort(): Promise<number> {
  for (;;) {
    const port = await unusedPort();
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}

function unusedPort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

function etcdBinary(): string {
  const found = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).stdout.trim();
  if (found) return found;
  if (process.getuid?.() === 0) {
    const apt = (...args: string[]) =>
      spawnSync('apt-get', args, { encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    let r = apt('install', '-y', 'etcd-server', 'etcd-client');
    if (r.status !== 0) {
      // A fresh CI image may have no package lists yet.
      apt('update');
      r = apt('install', '-y', 'etcd-server', 'etcd-client');
    }
    const again = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).stdout.trim();
    if (again) return again;
    throw new Error(`etcd is missing and apt-get install etcd-server failed:\n${r.stderr}`);
  }
  throw new Error(
    'etcd is missing: install it (Debian/Ubuntu: sudo apt-get install etcd-server etcd-client), ' +
      'or set HOSTLOCK_TEST_ETCD=http://h1:2379,http://h2:2379 to use an existing cluster',
  );
}

export function healthy(endpoint: string, timeoutMs = 1000, tls?: TlsFiles): Promise<boolean> {
  return new Promise((res) => {
    const req = get(`${endpoint}/health`, tls, timeoutMs, (r) => {
      let body = '';
      r.on('data', (c) => (body += c));
      r.on('end', () => res(r.statusCode === 200 && /"health":\s*"true"/.test(body)));
    });
    req.on('error', () => res(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

async function waitHealthy(endpoints: string[], timeoutMs: number, log: () => string, tls?: TlsFiles): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (const e of endpoints) {
    while (!(await healthy(e, 1000, tls))) {
      if (Date.now() > end) throw new Error(`etcd member ${e} not healthy within ${timeoutMs} ms:\n${log()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once('exit', () => r()));
}

// An existing cluster (HOSTLOCK_TEST_ETCD) when given, else a private one.
export async function etcdForTests(): Promise<EtcdCluster> {
  const given = process.env.HOSTLOCK_TEST_ETCD;
  if (!given) return startEtcdCluster();
  const endpoints = given.split(',').map((u) => (/^https?:\/\//.test(u) ? u : `http://${u}`).replace(/\/$/, ''));
  await waitHealthy(endpoints, 10000, () => '');
  const none = () => Promise.reject(new Error('cannot kill members of the cluster given in HOSTLOCK_TEST_ETCD'));
  return {
    endpoints,
    url: 'etcd://' + endpoints.map((e) => e.replace(/^https?:\/\//, '')).join(','),
    kill: none,
    restart: none,
    pause: () => {
      throw new Error('cannot pause members of the cluster given in HOSTLOCK_TEST_ETCD');
    },
    resume: () => {},
    stop: async () => {},
  };
}

export async function startEtcdCluster(members = 3, opts: { tls?: boolean } = {}): Promise<EtcdCluster> {
  const bin = etcdBinary();
  const root = mkdtempSync(join(tmpdir(), 'etcd-'));
  const certs = opts.tls ? makeCerts(join(root, 'tls')) : null;
  const scheme = certs ? 'https' : 'http';
  const tlsFlags = certs
    ? [
        '--cert-file',
        certs.server.cert,
        '--key-file',
        certs.server.key,
        '--trusted-ca-file',
        certs.server.cacert,
        '--client-cert-auth',
      ]
    : [];
  const ports: { client: number; peer: number }[] = [];
  for (let i = 0; i < members; i++) ports.push({ client: await freePort(), peer: await freePort() });
  const initial = ports.map((p, i) => `n${i}=http://127.0.0.1:${p.peer}`).join(',');
  const procs: (ChildProcess | null)[] = [];
  const logs: string[] = ports.map(() => '');
  const start = (i: number, state: 'new' | 'existing') => {
    const p = ports[i];
    if (!p) throw new Error(`no etcd member ${i} in a cluster of ${members}`);
    const proc = spawn(
      bin,
      [
        '--name',
        `n${i}`,
        '--data-dir',
        join(root, `n${i}`),
        '--listen-client-urls',
        `${scheme}://127.0.0.1:${p.client}`,
        '--advertise-client-urls',
        `${scheme}://127.0.0.1:${p.client}`,
        ...tlsFlags,
        '--listen-peer-urls',
        `http://127.0.0.1:${p.peer}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${p.peer}`,
        '--initial-cluster',
        initial,
        '--initial-cluster-token',
        `hostlock-test-${process.pid}`,
        '--initial-cluster-state',
        state,
        // Quick elections after a member is killed keep the fault tests short.
        '--heartbeat-interval',
        '50',
        '--election-timeout',
        '500',
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    proc.stderr.on('data', (c) => {
      logs[i] = (logs[i] + c).slice(-4000);
    });
    procs[i] = proc;
  };
  const endpoints = ports.map((p) => `${scheme}://127.0.0.1:${p.client}`);
  const tls = certs?.client;
  const stop = async () => {
    for (const p of procs) p?.kill('SIGCONT');
    for (const p of procs) p?.kill('SIGKILL');
    await Promise.all(procs.map((p) => (p ? exited(p) : Promise.resolve())));
    rmSync(root, { recursive: true, force: true });
    process.removeListener('exit', reap);
  };
  // Members never outlive the test process, however it ends.
  const reap = () => {
    for (const p of procs) p?.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  };
  process.once('exit', reap);
  for (let i = 0; i < members; i++) start(i, 'new');
  try {
    await waitHealthy(endpoints, 20000, () => logs.join('\n'), tls);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    endpoints,
    url: (certs ? 'etcd+https://' : 'etcd://') + ports.map((p) => `127.0.0.1:${p.client}`).join(','),
    tls,
    async kill(i) {
      const p = procs[i];
      if (!p) return;
      p.kill('SIGKILL');
      await exited(p);
      procs[i] = null;
    },
    pause(i) {
      procs[i]?.kill('SIGSTOP');
    },
    resume(i) {
      procs[i]?.kill('SIGCONT');
    },
    async restart(i) {
      if (procs[i]) return;
      start(i, 'existing');
      const end = Date.now() + 20000;
      // Alone it cannot be healthy (no quorum), so wait for its port only.
      while (!(await reachable(endpoints[i]!, tls))) {
        if (Date.now() > end) throw new Error(`etcd member ${i} did not restart:\n${logs[i]}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop,
  };
}

function reachable(endpoint: string, tls?: TlsFiles): Promise<boolean> {
  return new Promise((res) => {
    const req = get(`${endpoint}/version`, tls, 1000, (r) => {
      r.resume();
      res(r.statusCode === 200);
    });
    req.on('error', () => res(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}
