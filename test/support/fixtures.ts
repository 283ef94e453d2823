// Test fixtures, one per resource, each with its own cleanup: a temporary
// directory, a private PostgreSQL server, a private etcd cluster, and lock
// stores of each kind on them. A suite starts a server in `before` and stops
// it in `after`; a test takes what it needs from `storesFor(t)`, and whatever
// it opened (stores, waits, child processes, directories) is closed when the
// test ends, pass or fail.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { LockStore, StoreAcquire, StoreHold, WaitTicket } from '../../src/store/contract';
import type { HistoryRecord, LockKey, Requester } from '../../src/store/types';
import type { Mode } from '../../src/core/mode';
import { FlockStore } from '../../src/stores/flock/store';
import { flushHistory, readHistory } from '../../src/stores/flock/journal';
import { lockPathFor } from '../../src/stores/flock/names';
import { PostgresStore, setup } from '../../src/stores/postgres/store';
import { EtcdStore } from '../../src/stores/etcd/store';
import { ROOT, tempDir } from '../rpc';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from '../servers/postgres';
import { etcdForTests, type EtcdCluster } from '../servers/etcd';

// What a test hands its cleanups to: node:test's TestContext.
export interface Cleanups {
  after(fn: () => unknown): void;
}

// A directory of its own, removed when the test ends.
export function tempDirFor(t: Cleanups, tag = 'hl'): string {
  const d = tempDir(tag);
  t.after(d.cleanup);
  return d.dir;
}

// A private PostgreSQL with hostlock's schema, its lock role granted.
export async function postgresServer(): Promise<PgServer> {
  const pg = await startPostgres();
  try {
    await setup(pg.url(), { grantTo: LOCK_ROLE });
  } catch (err) {
    await pg.stop();
    throw err;
  }
  return pg;
}

// A private etcd cluster (or the one HOSTLOCK_TEST_ETCD names).
export function etcdCluster(): Promise<EtcdCluster> {
  return etcdForTests();
}

export type StoreKind = 'flock' | 'postgres' | 'etcd';
export const STORE_KINDS: readonly StoreKind[] = ['flock', 'postgres', 'etcd'];

// The etcd stores' lease TTL in the tests (seconds): the bound within which a dead run's keys go.
export const ETCD_TTL = 2;

// The servers a kind of store needs, started once per test file.
export interface StoreServer {
  readonly kind: StoreKind;
  stop(): Promise<void>;
  // How a store of this kind is opened: see StoreSpec.
  spec(tag: string, dir: string): StoreSpec;
  // What only this kind can do to a store from outside.
  readonly admin: Admin;
}

// Where one test's stores live: a lock directory, or a key prefix on the server.
export interface StoreSpec {
  kind: StoreKind;
  // flock: the lock directory; server stores: the backend URL.
  where: string;
  // The key a lock name maps to.
  key: (name: string) => LockKey;
}

interface Admin {
  // Makes the store lose `hold` under its holder, as a person or an admin would.
  lose(store: LockStore, hold: StoreHold): Promise<void>;
  // The key's recorded history, once everything recorded so far is readable.
  history(store: LockStore, key: LockKey): Promise<HistoryRecord[]>;
  // A store whose URL carries `secret` as its password and whose first request fails
  // (flock: a plain store, it has no URL).
  secretStore(secret: string): LockStore;
  // How long after its owner's death a hold or wait may still be reported.
  deadWithinMs: number;
  // How long after the loss `onLost` may come.
  lostWithinMs: number;
}

export function storeServer(kind: StoreKind): Promise<StoreServer> {
  if (kind === 'flock') return Promise.resolve(flockServer());
  if (kind === 'postgres') return postgresStoreServer();
  return etcdStoreServer();
}

function flockServer(): StoreServer {
  return {
    kind: 'flock',
    stop: () => Promise.resolve(),
    spec: (tag, dir) => storeSpec('flock', dir, tag),
    admin: {
      lose: (_store, hold) => {
        unlinkSync(hold.key.id);
        return Promise.resolve();
      },
      history: (_store, key) => {
        flushHistory();
        const dir = key.id.slice(0, key.id.lastIndexOf('/'));
        return Promise.resolve(readHistory(dir).filter((r) => r.name === key.name));
      },
      secretStore: () => new FlockStore(),
      deadWithinMs: 1000,
      // The store looks at its lock files every 2 s.
      lostWithinMs: 3000,
    },
  };
}

async function postgresStoreServer(): Promise<StoreServer> {
  const pg = await postgresServer();
  const url = pg.url(LOCK_ROLE, LOCK_PASSWORD, '?sslmode=disable');
  return {
    kind: 'postgres',
    stop: () => pg.stop(),
    spec: (tag) => storeSpec('postgres', url, tag),
    admin: {
      lose: async (store) => {
        await pg.query('SELECT pg_terminate_backend($1)', [(store as PostgresStore).backendPid]);
      },
      history: (store, key) => (store as PostgresStore).history({ name: key.name }),
      secretStore: (secret) =>
        new PostgresStore(pg.url(LOCK_ROLE, secret, '?sslmode=disable'), { controller: 'secret', log: () => {} }),
      deadWithinMs: 3000,
      lostWithinMs: 1000,
    },
  };
}

async function etcdStoreServer(): Promise<StoreServer> {
  const cluster = await etcdCluster();
  const etcdctl = (...args: string[]) => {
    const r = spawnSync('etcdctl', ['--endpoints', cluster.endpoints.join(','), ...args], {
      encoding: 'utf8',
      env: { ...process.env, ETCDCTL_API: '3' },
      timeout: 10_000,
    });
    if (r.status !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.error?.message ?? r.stderr}`);
    return r.stdout;
  };
  return {
    kind: 'etcd',
    stop: () => cluster.stop(),
    spec: (tag) => storeSpec('etcd', `${cluster.url}?ttl=${ETCD_TTL}&prefix=${encodeURIComponent(`${tag}/`)}`, tag),
    admin: {
      lose: (store) => {
        etcdctl('lease', 'revoke', BigInt((store as EtcdStore).leaseId!).toString(16));
        return Promise.resolve();
      },
      history: (store, key) => (store as EtcdStore).history({ name: key.name }),
      // No member listens on port 1: the request fails naming the URL.
      secretStore: (secret) => new EtcdStore(`etcd://hostlock:${secret}@127.0.0.1:1?timeout_ms=500`),
      deadWithinMs: ETCD_TTL * 1000 + 1500,
      lostWithinMs: 1000,
    },
  };
}

// One test's place: its own lock directory (flock), its own key prefix (the
// etcd store's option) or its own names (PostgreSQL, one schema for all).
export function storeSpec(kind: StoreKind, where: string, tag: string): StoreSpec {
  const key =
    kind === 'flock'
      ? (name: string) => ({ id: lockPathFor(where, name), name })
      : kind === 'postgres'
        ? (name: string) => ({ id: `${tag}/${name}`, name: `${tag}/${name}` })
        : (name: string) => ({ id: name, name });
  return { kind, where, key };
}

// A store object of the kind `spec` names, as its own controller.
export function openStore(spec: StoreSpec, controller: string): LockStore {
  if (spec.kind === 'flock') return new FlockStore();
  if (spec.kind === 'postgres') return new PostgresStore(spec.where, { controller, log: () => {} });
  return new EtcdStore(spec.where);
}

export interface WaitOptions {
  mode?: Mode;
  slots?: number;
  onLost?: (reason: string) => void;
  signal?: AbortSignal;
}

// One test's view of one kind of store: everything it opens is closed when it ends.
export interface Stores {
  readonly kind: StoreKind;
  readonly spec: StoreSpec;
  readonly admin: Admin;
  key(name: string): LockKey;
  // A store object of its own (controller `controller`) and the requester it asks as.
  open(controller: string): Controller;
  // A store object in a child process holding `hold` and waiting for `wait`,
  // that the test can kill.
  child(controller: string, hold: string, wait?: string): Promise<ChildOwner>;
}

export interface Controller {
  readonly store: LockStore;
  readonly who: Requester;
  // One try: the hold, or null when busy.
  try(name: string, opts?: WaitOptions): Promise<StoreHold | null>;
  // Waits as the policy does: visible among the key's waiters (`enqueue`, where
  // the store has it) until the wait has ended. Aborted when the test ends.
  wait(name: string, opts?: WaitOptions): Pending;
}

export interface Pending {
  readonly result: Promise<StoreHold | null>;
  abort(): void;
  // Whether the wait has ended, within `ms`.
  settledWithin(ms: number): Promise<boolean>;
}

export interface ChildOwner {
  readonly pid: number;
  kill(): Promise<void>;
}

let testSeq = 0;

export function storesFor(t: Cleanups, server: StoreServer): Stores {
  const tag = `c${process.pid}-${++testSeq}`;
  const dir = server.kind === 'flock' ? tempDirFor(t, 'contract') : '';
  const spec = server.spec(tag, dir);
  const opened: LockStore[] = [];
  const waits: AbortController[] = [];
  const children: ChildProcess[] = [];
  t.after(async () => {
    for (const ac of waits) ac.abort();
    for (const c of children) c.kill('SIGKILL');
    await Promise.allSettled(opened.map(async (s) => s.close()));
  });
  const request = (who: Requester, key: LockKey, wait: boolean, o: WaitOptions): StoreAcquire => ({
    key,
    mode: o.mode ?? 'exclusive',
    requester: who,
    wait,
    signal: o.signal,
    onLost: o.onLost,
    slots: o.slots,
  });
  return {
    kind: server.kind,
    spec,
    admin: server.admin,
    key: (name) => spec.key(name),
    open(controller) {
      const store = openStore(spec, controller);
      opened.push(store);
      const who: Requester = {
        pid: process.pid,
        user: 'tester',
        controller,
        run: `run-${controller}`,
        playbook: 'site.yml',
        play: 'deploy',
        task: `task of ${controller}`,
        host: 'web1',
      };
      return {
        store,
        who,
        // A store may throw at once (the local store answers synchronously): a rejection too.
        try: async (name, o = {}) => store.acquire(request(who, spec.key(name), false, o)),
        wait(name, o = {}) {
          const ac = new AbortController();
          waits.push(ac);
          const signal = o.signal ? AbortSignal.any([o.signal, ac.signal]) : ac.signal;
          const key = spec.key(name);
          const result = (async () => {
            const ticket: WaitTicket | undefined = await store.enqueue?.(key, who, o.mode ?? 'exclusive', o.slots);
            try {
              return await store.acquire(request(who, key, true, { ...o, signal }));
            } finally {
              await ticket?.remove();
            }
          })();
          result.catch(() => {}); // the test asserts on it, or the wait was abandoned
          let settled = false;
          void result.then(
            () => (settled = true),
            () => (settled = true),
          );
          return {
            result,
            abort: () => ac.abort(),
            settledWithin: async (ms) => {
              const end = Date.now() + ms;
              while (!settled && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
              return settled;
            },
          };
        },
      };
    },
    async child(controller, hold, wait) {
      const script = join(ROOT, 'build', 'test', 'support', 'store-child.js');
      const args = JSON.stringify({ kind: spec.kind, where: spec.where, tag, controller, hold, wait });
      const proc = spawn(process.execPath, [script, args], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(proc);
      let err = '';
      proc.stderr.on('data', (c) => (err += c));
      await new Promise<void>((resolve, reject) => {
        let out = '';
        proc.stdout.on('data', (c) => {
          out += c;
          if (out.includes('ready\n')) resolve();
        });
        proc.once('exit', (code) => reject(new Error(`store child exited ${code} before it was ready: ${err}`)));
      });
      return {
        pid: proc.pid!,
        kill: () =>
          new Promise<void>((resolve) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
            proc.once('exit', () => resolve());
            proc.kill('SIGKILL');
          }),
      };
    },
  };
}
