// The world a store's campaign runs in: the store's private servers, the
// fenced resource, and the simulated controllers, each with its own runtime
// and lock directory and, for a server store, its own network namespace
// (test/netns.ts) whose link reaches the servers. etcd members listen on
// 127.0.0.1 only, so a controller reaches each one through a relay on its
// link. The local store's controllers share one lock directory (that is what
// they contend for), on a small tmpfs the nemesis can fill.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../rpc';
import { createNetns, type Netns } from '../netns';
import { startEtcdCluster, type EtcdCluster } from '../servers/etcd';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from '../servers/postgres';
import { FENCE_TABLE_SQL } from './fence';

export type StoreKind = 'flock' | 'postgres' | 'etcd';

// The documented bounds the campaign sets: PostgreSQL's keepalive K and etcd's lease TTL.
export const PG_KEEPALIVE = 4;
export const ETCD_TTL = 3;
// The etcd store keeps the newest `history` records: enough for a whole run, for the checker.
const HISTORY_CAP = 1_000_000;

export interface Controller {
  label: string;
  env: NodeJS.ProcessEnv;
  // argv prefix that runs a process as this controller (inside its namespace)
  wrap: string[];
  backend?: string; // the store URL as this controller reaches it
  ns?: Netns;
}

export interface World {
  store: StoreKind;
  root: string;
  controllers: Controller[];
  // The store as the campaign itself reads it (history, list), from this side.
  backendArgs: string[];
  fenceSpec: string;
  // Seconds after which a cut-off or stopped holder has lost its hold (K, TTL; 0: never).
  holdBound: number;
  lockDir: string;
  pg?: PgServer;
  etcd?: EtcdCluster;
  close(): Promise<void>;
}

function relayTo(port: number, socks: Set<Socket>): Server {
  return createServer((s) => {
    const up = connect(port, '127.0.0.1');
    for (const x of [s, up]) {
      socks.add(x);
      x.on('error', () => x.destroy());
      x.on('close', () => {
        socks.delete(x);
        s.destroy();
        up.destroy();
      });
    }
    s.pipe(up).pipe(s);
  });
}

export function requireNft(): void {
  if (spawnSync('sh', ['-c', 'command -v nft']).status === 0) return;
  if (process.getuid?.() !== 0) throw new Error('nft is missing: sudo apt-get install -y nftables');
  process.stderr.write('[chaos] installing nftables\n');
  execFileSync('apt-get', ['install', '-y', '-q', 'nftables'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

// The fenced resource of the server stores: a PostgreSQL server of its own, so
// that the store's restarts do not make the resource unreachable.
export async function startFenceServer(): Promise<{ pg: PgServer; spec: string }> {
  const pg = await startPostgres();
  await pg.query(FENCE_TABLE_SQL);
  return { pg, spec: `pg:${pg.url('postgres', undefined, '?sslmode=disable')}` };
}

export async function buildWorld(store: StoreKind, controllers: number, serverFence: string): Promise<World> {
  const root = mkdtempSync(join(tmpdir(), `hl-chaos-${store}-`));
  const lockDir = join(root, 'locks');
  mkdirSync(lockDir);
  const cleanups: (() => Promise<void> | void)[] = [];
  const ctls: Controller[] = [];
  const env = (i: number): NodeJS.ProcessEnv => ({
    HOSTLOCK_RUNTIME_DIR: join(root, `ctl${i}`, 'run'),
    HOSTLOCK_CONTROLLER: `ctl${i}`,
    HOSTLOCK_DIR: store === 'flock' ? lockDir : join(root, `ctl${i}`, 'locks'),
    // The whole run's history in the journal and its one rotation, for the checker.
    HOSTLOCK_HISTORY_BYTES: String(8 * 1024 * 1024),
  });
  try {
    if (store === 'flock') {
      // A small file system of its own, for the nemesis to fill.
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m,mode=0755', 'hl-chaos', lockDir]);
      cleanups.push(() => void spawnSync('umount', ['-l', lockDir]));
      const fenceDir = join(root, 'fence');
      mkdirSync(fenceDir);
      for (let i = 0; i < controllers; i++) ctls.push({ label: `ctl${i}`, env: env(i), wrap: [] });
      return world({ fenceSpec: `file:${fenceDir}`, backendArgs: ['--dir', lockDir], holdBound: 0 });
    }
    const nss: Netns[] = [];
    for (let i = 0; i < controllers; i++) {
      const ns = createNetns(`c${i}`);
      nss.push(ns);
      cleanups.push(() => ns.remove());
    }
    const fenceSpec = `${serverFence}|${store}-${process.pid}`;
    if (store === 'postgres') {
      const pg = await startPostgres({ listen: nss.map((n) => n.hostAddr) });
      cleanups.push(() => pg.stop());
      const setup = cli(['setup', '--backend', pg.url(), '--grant', LOCK_ROLE]);
      if (setup.status !== 0) throw new Error(`hostlock setup failed: ${setup.stderr}`);
      const q = `?sslmode=disable&hostlock_keepalive=${PG_KEEPALIVE}`;
      nss.forEach((ns, i) =>
        ctls.push({
          label: `ctl${i}`,
          env: env(i),
          wrap: ns.exec,
          ns,
          backend: `postgresql://${LOCK_ROLE}:${LOCK_PASSWORD}@${ns.hostAddr}:${pg.port}/${pg.database}${q}`,
        }),
      );
      return world({
        fenceSpec,
        backendArgs: ['--backend', pg.url(LOCK_ROLE, LOCK_PASSWORD, q)],
        holdBound: PG_KEEPALIVE,
        pg,
      });
    }
    const etcd = await startEtcdCluster(3);
    cleanups.push(() => etcd.stop());
    const socks = new Set<Socket>();
    cleanups.unshift(() => {
      for (const s of socks) s.destroy();
    });
    const prefix = `&prefix=chaos-${process.pid}/`;
    for (const [i, ns] of nss.entries()) {
      const via: string[] = [];
      for (const e of etcd.endpoints) {
        const relay = relayTo(Number(new URL(e).port), socks);
        await new Promise<void>((r) => relay.listen(0, ns.hostAddr, r));
        cleanups.unshift(() => void relay.close());
        via.push(`${ns.hostAddr}:${(relay.address() as { port: number }).port}`);
      }
      ctls.push({
        label: `ctl${i}`,
        env: env(i),
        wrap: ns.exec,
        ns,
        backend: `etcd://${via.join(',')}?ttl=${ETCD_TTL}&history=${HISTORY_CAP}${prefix}`,
      });
    }
    return world({
      fenceSpec,
      backendArgs: ['--backend', `${etcd.url}?ttl=${ETCD_TTL}&history=${HISTORY_CAP}${prefix}`],
      holdBound: ETCD_TTL,
      etcd,
    });
  } catch (e) {
    for (const c of cleanups.reverse()) await c();
    rmSync(root, { recursive: true, force: true });
    throw e;
  }

  function world(w: Pick<World, 'fenceSpec' | 'backendArgs' | 'holdBound' | 'pg' | 'etcd'>): World {
    return {
      store,
      root,
      controllers: ctls,
      lockDir,
      ...w,
      close: async () => {
        for (const c of cleanups.reverse()) await c();
        rmSync(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
      },
    };
  }
}
