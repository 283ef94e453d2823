// The life of one etcd store object's lease, as etcd's concurrency.Session:
// granted on first use, kept alive at TTL/3, and given up a margin before
// the cluster could expire it unrenewed. Every key the store writes is
// attached to it, so a dead run's keys go within the TTL. When it is lost,
// every hold on it is lost and every wait on it fails; it is then revoked as
// soon as a member answers. Keys and leases that no member could take yet
// are retried until none remain.
import { storeClosed } from '../../store/errors';
import { EtcdError, b64 } from './gateway';
import type { EtcdClient } from './client';
import type { EtcdHold } from './hold';
import { parseRecord, rev, type Kv } from './queue';

export interface Lease {
  id: string;
  ttlMs: number;
  // Send time of the last keepalive the cluster confirmed: the cluster keeps
  // the lease at least TTL past it, so giving up then is never late.
  confirmedAt: number;
  lastError: string;
  timer: NodeJS.Timeout;
  // Fires a margin before the cluster could expire the lease unrenewed.
  deadline: NodeJS.Timeout | null;
  lost: boolean;
  // Requests waiting or holding on this lease, by etcd key (plain text).
  entries: Map<string, Entry>;
}

export interface Entry {
  etcdKey: string;
  hold: EtcdHold | null;
  // Wakes a waiter to read the queue again: its own key went, or the watch restarted.
  wake: (() => void) | null;
  fail: ((err: Error) => void) | null;
}

export class Session {
  private lease: Lease | null = null;
  private leasing: Promise<Lease> | null = null;
  // Keys to delete and leases to revoke that no member could take yet.
  private readonly leftovers = new Set<string>();
  private readonly oldLeases = new Set<string>();
  private cleanupTimer: NodeJS.Timeout | null = null;
  private closing = false;

  // `granted` learns the revision at which the store's first lease was granted.
  constructor(
    private readonly c: EtcdClient,
    private readonly granted: (revision: number) => void,
  ) {}

  get closed(): boolean {
    return this.closing;
  }

  // The current lease's ID (for tests and status).
  get leaseId(): string | null {
    return this.lease?.id ?? null;
  }

  // The live lease, granted if there is none.
  get(): Promise<Lease> {
    if (this.closing) return Promise.reject(storeClosed(this.c.describe));
    if (this.lease && !this.lease.lost) return Promise.resolve(this.lease);
    this.leasing ??= this.grant().finally(() => (this.leasing = null));
    return this.leasing;
  }

  private async grant(): Promise<Lease> {
    const sentAt = Date.now();
    const r = await this.c.call<{ ID: string; TTL: string; header: { revision: string } }>('/v3/lease/grant', {
      TTL: this.c.cfg.ttlSeconds,
    });
    const ttlMs = Number(r.TTL) * 1000;
    const lease: Lease = {
      id: r.ID,
      ttlMs,
      confirmedAt: sentAt,
      lastError: '',
      lost: false,
      entries: new Map(),
      timer: setInterval(() => void this.keepAlive(lease), Math.max(200, ttlMs / 3)),
      deadline: null,
    };
    lease.timer.unref();
    this.armDeadline(lease);
    if (this.closing) {
      clearInterval(lease.timer);
      if (lease.deadline) clearTimeout(lease.deadline);
      void this.revoke(lease.id);
      throw storeClosed(this.c.describe);
    }
    this.lease = lease;
    this.granted(rev(r.header.revision));
    return lease;
  }

  private async keepAlive(lease: Lease): Promise<void> {
    if (lease.lost) return;
    this.retryLeftovers();
    const sentAt = Date.now();
    try {
      const third = Math.max(200, lease.ttlMs / 3);
      const r = await this.c.call<{ result?: { TTL?: string } }>(
        '/v3/lease/keepalive',
        { ID: lease.id },
        Math.min(this.c.cfg.timeoutMs, third),
        third,
      );
      if (!(Number(r.result?.TTL ?? 0) > 0)) {
        this.lose(lease, 'its etcd lease was revoked or expired');
        return;
      }
      if (sentAt > lease.confirmedAt) {
        lease.confirmedAt = sentAt;
        this.armDeadline(lease);
      }
    } catch (e) {
      lease.lastError = (e as Error).message;
    }
  }

  // The cluster keeps a lease at least a TTL past the send time of its last
  // confirmed renewal; the holder gives up a sixth of the TTL before that, so
  // a cut-off controller has let go before anyone else can be granted.
  private armDeadline(lease: Lease): void {
    if (lease.deadline) clearTimeout(lease.deadline);
    const at = lease.confirmedAt + lease.ttlMs - Math.max(100, lease.ttlMs / 6);
    lease.deadline = setTimeout(
      () =>
        this.lose(
          lease,
          `no etcd member renewed its lease within its ${lease.ttlMs / 1000} s TTL: ${lease.lastError || 'no answer'}`,
        ),
      Math.max(0, at - Date.now()),
    );
    lease.deadline.unref();
  }

  // Every hold on the lease is lost and every wait fails; the lease is revoked
  // as soon as a member answers, so a cluster that kept it frees its keys.
  lose(lease: Lease, reason: string): void {
    if (lease.lost) return;
    lease.lost = true;
    clearInterval(lease.timer);
    if (lease.deadline) clearTimeout(lease.deadline);
    if (this.lease === lease) this.lease = null;
    this.oldLeases.add(lease.id);
    this.retryLeftovers();
    for (const entry of [...lease.entries.values()]) {
      lease.entries.delete(entry.etcdKey);
      if (entry.hold) entry.hold.markLost(reason);
      else entry.fail?.(new EtcdError(`lock lost while waiting: ${reason} (backend ${this.c.describe})`, ''));
    }
  }

  // A key of the store's prefix was deleted: a hold on it is lost (saying who
  // broke it, if a break did); a waiter on it looks at its queue again.
  keyDeleted(k: string, lastValue?: string): void {
    const lease = this.lease;
    const entry = lease?.entries.get(k);
    if (!lease || !entry) return;
    if (entry.hold) {
      lease.entries.delete(k);
      const broken = lastValue ? parseRecord({ value: lastValue })?.broken : undefined;
      entry.hold.markLost(
        broken
          ? `broken by ${broken.by}: ${broken.reason}`
          : `its etcd key ${k} was deleted (by an admin, or its lease was revoked)`,
      );
    } else {
      entry.wake?.();
    }
  }

  // After the watch (re)started: every waiter looks again, and every held key
  // that no longer exists is reported to `missing`.
  async recheck(missing: (k: string) => void): Promise<void> {
    const lease = this.lease;
    if (!lease) return;
    for (const entry of [...lease.entries.values()]) {
      if (!entry.hold) {
        entry.wake?.();
        continue;
      }
      try {
        const r = await this.c.call<{ kvs?: Kv[] }>('/v3/kv/range', { key: b64(entry.etcdKey), keys_only: true });
        if (!r.kvs?.length) missing(entry.etcdKey);
      } catch {
        // The keepalive decides when an unreachable cluster means a lost lease.
      }
    }
  }

  // Deletes a key now, or keeps retrying it in the background (and rejects).
  async deleteKey(k: string): Promise<void> {
    try {
      await this.c.call('/v3/kv/deleterange', { key: b64(k) });
      this.leftovers.delete(k);
    } catch (e) {
      this.leftBehind(k);
      throw e;
    }
  }

  // A key whose write may have landed unanswered: deleted once a member answers.
  leftBehind(k: string): void {
    this.leftovers.add(k);
    this.scheduleCleanup();
  }

  private async revoke(id: string): Promise<void> {
    try {
      await this.c.call('/v3/lease/revoke', { ID: id });
      this.oldLeases.delete(id);
    } catch (e) {
      // A lease etcd no longer knows is as good as revoked.
      if (/not found/i.test((e as Error).message)) this.oldLeases.delete(id);
      else {
        this.oldLeases.add(id);
        this.scheduleCleanup();
      }
    }
  }

  private retryLeftovers(): void {
    for (const id of this.oldLeases) void this.revoke(id);
    for (const k of this.leftovers) void this.deleteKey(k).catch(() => {});
  }

  // Retries leftovers until none remain, with or without a live lease.
  private scheduleCleanup(): void {
    if (this.cleanupTimer || this.closing) return;
    this.cleanupTimer = setInterval(
      () => {
        if (this.oldLeases.size === 0 && this.leftovers.size === 0) {
          clearInterval(this.cleanupTimer!);
          this.cleanupTimer = null;
        } else this.retryLeftovers();
      },
      Math.max(200, (this.c.cfg.ttlSeconds * 1000) / 3),
    );
    this.cleanupTimer.unref();
  }

  // Every hold is let go and every wait fails; revoking the lease deletes
  // every key at once. If no member answers, the keys go with the lease TTL,
  // since nothing keeps it alive any more.
  async close(): Promise<void> {
    this.closing = true;
    if (this.cleanupTimer) clearInterval(this.cleanupTimer);
    const lease = this.lease ?? (await this.leasing?.catch(() => null)) ?? null;
    this.lease = null;
    if (lease) {
      clearInterval(lease.timer);
      if (lease.deadline) clearTimeout(lease.deadline);
      lease.lost = true;
      for (const entry of lease.entries.values()) {
        if (entry.hold) entry.hold.released = true;
        else entry.fail?.(storeClosed(this.c.describe, 'while waiting'));
      }
      lease.entries.clear();
      this.oldLeases.add(lease.id);
    }
    await Promise.all([...this.oldLeases].map((id) => this.revoke(id)));
  }
}
