// One watch per etcd store object on `<prefix>locks/`, for deletions only.
// Keys ahead of a request can only go, so a waiter needs nothing but their
// deletions to know when its way is clear: a release costs no request to
// anyone but the waiter it lets in. The same deletions tell a holder that its
// key went under it. A watch that ends is restarted from its last revision,
// ever more slowly up to 2 s; one compacted past that revision starts at the
// present, and a restart has everyone look again for what the gap may hide.
import { log } from '../../core/log';
import type { EtcdClient } from './client';
import { b64, prefixEnd, unb64, type WatchResult, type WatchStream } from './gateway';
import { rev } from './queue';

export interface WatchHandlers {
  // A key was deleted; `lastValue` is the value it had (base64), when known.
  deleted(k: string, lastValue?: string): void;
  // The watch (re)started: deletions in between may have gone unseen.
  restarted(): void;
}

export class LockWatch {
  private stream: WatchStream | null = null;
  private from = 0;
  private retry: NodeJS.Timeout | null = null;
  private failures = 0;
  private closed = false;
  // Deletion callbacks for keys other requests wait behind.
  private readonly deletions = new Map<string, Set<() => void>>();
  // Keys the watch saw deleted lately (key -> when), for a request whose
  // snapshot of the queue is older than the watch's news.
  private readonly recentlyDeleted = new Map<string, number>();

  constructor(
    private readonly c: EtcdClient,
    private readonly on: WatchHandlers,
  ) {}

  // Starts watching at `revision`, unless the watch runs already.
  start(revision: number): void {
    if (this.stream || this.retry || this.closed) return;
    this.from = revision + 1;
    this.open();
  }

  // Calls `cb` when `k` is deleted, until the returned function is called.
  onDelete(k: string, cb: () => void): () => void {
    let set = this.deletions.get(k);
    if (!set) this.deletions.set(k, (set = new Set()));
    set.add(cb);
    return () => {
      set.delete(cb);
      if (set.size === 0) this.deletions.delete(k);
    };
  }

  wasDeleted(k: string): boolean {
    return this.recentlyDeleted.has(k);
  }

  // `k` is gone: seen by the watch, or found missing after a restart.
  gone(k: string, lastValue?: string): void {
    const now = Date.now();
    this.recentlyDeleted.set(k, now);
    if (this.recentlyDeleted.size > 1000) {
      for (const [key, at] of this.recentlyDeleted) {
        if (now - at < 60_000) break;
        this.recentlyDeleted.delete(key);
      }
    }
    const cbs = this.deletions.get(k);
    if (cbs) for (const cb of [...cbs]) cb();
    this.on.deleted(k, lastValue);
  }

  close(): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.stream?.close();
  }

  private open(): void {
    this.retry = null;
    if (this.closed) return;
    const base = this.c.locksBase;
    this.stream = this.c.watch(
      {
        create_request: {
          key: b64(base),
          range_end: prefixEnd(base),
          start_revision: String(this.from),
          filters: ['NOPUT'],
          prev_kv: true,
        },
      },
      (r) => this.onMessage(r),
      (err) => {
        this.stream = null;
        if (this.closed) return;
        if (err.message === 'closed') {
          // Closed by us to restart after a compaction.
          this.retry = setTimeout(() => this.open(), 0);
          return;
        }
        // Waiters learn of releases only through the watch: say when it is
        // down (once per outage).
        if (this.failures++ === 0) {
          log.warn(`etcd watch on ${this.c.describe} ended (${err.message}); waiters wait until it is back`);
        }
        this.retry = setTimeout(() => this.open(), Math.min(2000, 100 * 2 ** (this.failures - 1)));
        this.retry.unref();
      },
    );
  }

  private onMessage(r: WatchResult): void {
    if (r.canceled) {
      // Compacted past our revision: start at the present.
      this.from = Math.max(this.from, rev(r.compact_revision), rev(r.header?.revision) + 1);
      this.stream?.close();
      this.on.restarted();
      return;
    }
    if (r.created) {
      if (this.failures > 0) log.info(`etcd watch on ${this.c.describe} is back`);
      this.failures = 0;
      this.on.restarted();
    }
    for (const ev of r.events ?? []) {
      this.from = Math.max(this.from, rev(ev.kv.mod_revision) + 1);
      if (ev.type !== 'DELETE') continue;
      this.gone(unb64(ev.kv.key), ev.prev_kv?.value);
    }
  }
}
