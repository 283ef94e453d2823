// The etcd lock store: locks as keys in a shared etcd cluster, one concept
// a file, as etcd's client/v3/concurrency keeps them:
//
//   url.ts      the backend URL and its options
//   config.ts   those options with the caller's overrides, and the TLS files
//   gateway.ts  etcd's HTTP/JSON gateway: calls with failover, watch streams
//   client.ts   the cluster as this store sees it: calls that name the backend
//   session.ts  the store object's one lease: granted, kept alive, lost
//   watch.ts    one watch on every lock key, for deletions
//   queue.ts    who holds and who waits, from a name's keys
//   acquire.ts  a request: its key, its wait, its slot, its hold (hold.ts)
//   status.ts   holders and waiters, and breaking a hold
//   history.ts  the bounded history under `<prefix>history/`
import type { KeyStatus, LockStore, StoreAcquire, StoreHold } from '../../store/contract';
import type { HistoryEvent, HistoryRecord, Holder, LockKey, Requester } from '../../store/types';
import { Acquirer } from './acquire';
import { EtcdClient } from './client';
import type { EtcdStoreOptions } from './config';
import { EtcdHistory } from './history';
import { Session } from './session';
import { breakHold, listNames, nameStatus } from './status';
import { LockWatch } from './watch';

export type { EtcdStoreOptions } from './config';

export class EtcdStore implements LockStore {
  readonly kind = 'etcd';
  readonly describe: string;
  private readonly c: EtcdClient;
  private readonly session: Session;
  private readonly watch: LockWatch;
  private readonly acquirer: Acquirer;
  private readonly hist: EtcdHistory;
  private closed = false;

  constructor(url: string, opts: EtcdStoreOptions = {}) {
    this.c = new EtcdClient(url, opts);
    this.describe = this.c.describe;
    // The watch starts with the first lease, at the revision of its grant:
    // no deletion after any key of this store object was written goes unseen.
    this.session = new Session(this.c, (revision) => this.watch.start(revision));
    this.watch = new LockWatch(this.c, {
      deleted: (k, lastValue) => this.session.keyDeleted(k, lastValue),
      restarted: () => void this.session.recheck((k) => this.watch.gone(k)),
    });
    this.hist = new EtcdHistory(this.c);
    this.acquirer = new Acquirer(this.c, this.session, this.watch, (e) => this.record(e));
  }

  get ttlSeconds(): number {
    return this.c.cfg.ttlSeconds;
  }

  // The lease ID of this store object's current lease (for tests and status).
  get leaseId(): string | null {
    return this.session.leaseId;
  }

  acquire(req: StoreAcquire): Promise<StoreHold | null> {
    return this.acquirer.acquire(req);
  }

  status(key: LockKey): Promise<KeyStatus> {
    return nameStatus(this.c, key);
  }

  list(prefix = ''): Promise<KeyStatus[]> {
    return listNames(this.c, prefix);
  }

  // Deadlock detection (the policy's) looks at every name of the store: a
  // run's hosts hold and wait by name, whatever the name.
  waitGraph(): Promise<KeyStatus[]> {
    return this.list();
  }

  breakHold(key: LockKey, token: number, by: Requester, reason: string): Promise<Holder> {
    return breakHold(this.c, (e) => this.record(e), key, token, by, reason);
  }

  // Written shortly after, in one transaction per batch: a grant never waits for its line.
  record(e: HistoryEvent): void {
    if (!this.closed) this.hist.record(e);
  }

  history(query: { name?: string; since?: number } = {}): Promise<HistoryRecord[]> {
    return this.hist.read(query);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watch.close();
    await Promise.all([this.session.close(), this.hist.close()]);
    this.c.close();
  }
}
