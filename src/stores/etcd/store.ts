// The etcd lock store: locks as keys in a shared etcd cluster.
//
// One lease per store object (= per run), kept alive at TTL/3; every key it
// writes is attached to it, so a dead run's keys go within the TTL. A request
// for lock N writes a key under `<prefix>locks/<N>/` in a transaction that
// also reads the queue: those keys in create-revision order, with the
// reader/writer rule of etcd's RWMutex recipe (a shared request waits for
// earlier exclusive keys only, an exclusive one for every earlier key). Keys
// ahead of a request can only go, so it waits for their deletions, which one
// watch per store object on `<prefix>locks/` delivers; the deletion that
// clears its way is the grant, with no further request. The fencing token is
// the key's create revision: exclusive grants follow create order, and every
// grant after an exclusive one comes from a later key.
//
// The same watch reports a held key deleted (lease revoked by an admin, or
// the key itself) as a lost hold; the keepalive reports a lease the cluster
// has not renewed for a TTL.
//
// History records are keys under `<prefix>history/`, named by time so that a
// range read returns them oldest first, written in batches off every grant's
// path and pruned to a count cap.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrorCode, HostlockError } from '../../core/errors';
import { fitRecord, historyRecordOf } from '../../store/records';
import { type HistoryRecord, type Holder, type HistoryEvent, type Requester, type LockKey } from '../../store/types';
import { log } from '../../core/log';
import {
  type KeyStatus,
  type LockStore,
  type StoreAcquire,
  type StoreHold,
  type Waiter,
  unlessAborted,
} from '../../store/contract';
import { type Mode } from '../../core/mode';
import { EtcdError, Gateway, b64, prefixEnd, unb64, type WatchResult, type WatchStream } from './gateway';
import { parseEtcdUrl, type EtcdConfig } from './url';

// What a key's value says about its owner.
interface KeyRecord {
  mode: Mode;
  held: boolean;
  since: string; // waiting since, then held since
  pid: number;
  user: string;
  controller: string;
  run?: string;
  playbook?: string;
  play?: string;
  task?: string;
  host?: string;
  // With slots: how many the lock has (every key of a name agrees), and,
  // once held, which one this key took.
  slots?: number;
  slot?: number;
  // Written by `breakHold` just before it deletes the key, so that the
  // holder's watch (which sees the value a deleted key had) can say who broke it.
  broken?: { by: string; reason: string };
  // The hold's token, kept by that mark (which changes the key's mod revision).
  token?: number;
  // Written by a try: its key goes at once unless it holds, so it is never a waiter.
  trying?: boolean;
}

interface Kv {
  key: string; // base64, as etcd sends it
  create_revision: string;
  mod_revision: string;
  value?: string;
  lease?: string;
}

interface TxnResponse {
  header: { revision: string };
  succeeded?: boolean;
  responses?: { response_range?: { kvs?: Kv[] }; response_put?: unknown }[];
}

interface Lease {
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

interface Entry {
  etcdKey: string;
  hold: EtcdHold | null;
  // Wakes a waiter to read the queue again: its own key went, or the watch restarted.
  wake: (() => void) | null;
  fail: ((err: Error) => void) | null;
}

class AbortError extends Error {
  constructor() {
    super('the wait was aborted');
    this.name = 'AbortError';
  }
}

const rev = (s: string | undefined) => Number(s ?? 0);

// A history record's value stays below this many bytes: long fields are cut.
const HISTORY_VALUE_MAX = 8000;

export class EtcdHold implements StoreHold {
  lost = false;
  released = false;
  constructor(
    readonly key: LockKey,
    readonly mode: Mode,
    readonly token: number,
    readonly since: Date,
    readonly slot: number | undefined,
    readonly etcdKey: string,
    private readonly onLost: ((reason: string) => void) | undefined,
    private readonly drop: (h: EtcdHold) => Promise<void>,
  ) {}

  markLost(reason: string): void {
    if (this.lost || this.released) return;
    this.lost = true;
    this.onLost?.(reason);
  }

  release(): Promise<void> {
    if (this.released) return Promise.resolve();
    this.released = true;
    return this.drop(this);
  }
}

export interface EtcdStoreOptions {
  // Overrides of the URL's options.
  ttlSeconds?: number;
  prefix?: string;
}

export class EtcdStore implements LockStore {
  readonly kind = 'etcd';
  readonly describe: string;
  private readonly cfg: EtcdConfig;
  private readonly gw: Gateway;
  private lease: Lease | null = null;
  private leasing: Promise<Lease> | null = null;
  private seq = 0;
  private watch: WatchStream | null = null;
  private watchFrom = 0;
  private watchRetry: NodeJS.Timeout | null = null;
  private watchFailures = 0;
  // Deletion callbacks for keys other requests wait behind.
  private readonly deletions = new Map<string, Set<() => void>>();
  // Keys the watch saw deleted lately (key -> when), for a request whose
  // snapshot of the queue is older than the watch's news.
  private readonly recentlyDeleted = new Map<string, number>();
  // Keys to delete and leases to revoke that no member could take yet.
  private readonly leftovers = new Set<string>();
  private readonly oldLeases = new Set<string>();
  private cleanupTimer: NodeJS.Timeout | null = null;
  private closed = false;
  // History records not yet written, and the writer draining them.
  private historyQueue: HistoryRecord[] = [];
  private historyWriter: Promise<void> = Promise.resolve();
  private historyWriting = false;
  private historySeq = 0;
  private historySincePrune = 0;
  // Tells this store object's records apart from others written the same millisecond.
  private readonly historyTag = randomBytes(4).toString('hex');

  constructor(url: string, opts: EtcdStoreOptions = {}) {
    this.cfg = parseEtcdUrl(url);
    if (opts.ttlSeconds !== undefined) this.cfg.ttlSeconds = Math.max(2, Math.round(opts.ttlSeconds));
    if (opts.prefix !== undefined) this.cfg.prefix = opts.prefix;
    this.describe = this.cfg.masked;
    const file = (what: string, path?: string) => {
      if (!path) return undefined;
      try {
        return readFileSync(path);
      } catch (e) {
        throw new Error(
          `etcd backend ${this.describe}: cannot read the ${what} file ${path}: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
    };
    this.gw = new Gateway({
      endpoints: this.cfg.endpoints,
      user: this.cfg.user,
      password: this.cfg.password,
      timeoutMs: this.cfg.timeoutMs,
      tls: {
        ca: file('CA', this.cfg.cacert),
        cert: file('certificate', this.cfg.cert),
        key: file('key', this.cfg.key),
      },
    });
  }

  get ttlSeconds(): number {
    return this.cfg.ttlSeconds;
  }

  // The lease ID of this store object's current lease (for tests and status).
  get leaseId(): string | null {
    return this.lease?.id ?? null;
  }

  private namePrefix(id: string): string {
    return `${this.cfg.prefix}locks/${encodeURIComponent(id)}/`;
  }

  private call<T>(path: string, body: unknown, timeoutMs?: number, budgetMs?: number): Promise<T> {
    return this.gw.call<T>(path, body, timeoutMs, budgetMs).catch((e: unknown) => {
      // Every error names the backend (password masked) and the member.
      if (e instanceof EtcdError)
        throw new EtcdError(`${e.message} (backend ${this.describe})`, e.endpoint, e.grpcCode);
      throw e;
    });
  }

  // ---- the lease -------------------------------------------------------

  private getLease(): Promise<Lease> {
    if (this.closed) return Promise.reject(new Error(`etcd backend ${this.describe}: store closed`));
    if (this.lease && !this.lease.lost) return Promise.resolve(this.lease);
    this.leasing ??= this.grantLease().finally(() => (this.leasing = null));
    return this.leasing;
  }

  private async grantLease(): Promise<Lease> {
    const sentAt = Date.now();
    const r = await this.call<{ ID: string; TTL: string; header: { revision: string } }>('/v3/lease/grant', {
      TTL: this.cfg.ttlSeconds,
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
    if (this.closed) {
      clearInterval(lease.timer);
      void this.revoke(lease.id);
      throw new Error(`etcd backend ${this.describe}: store closed`);
    }
    this.lease = lease;
    if (!this.watch && !this.watchRetry) {
      this.watchFrom = rev(r.header.revision) + 1;
      this.startWatch();
    }
    return lease;
  }

  private async keepAlive(lease: Lease): Promise<void> {
    if (lease.lost) return;
    this.retryLeftovers();
    const sentAt = Date.now();
    try {
      const third = Math.max(200, lease.ttlMs / 3);
      const r = await this.call<{ result?: { TTL?: string } }>(
        '/v3/lease/keepalive',
        { ID: lease.id },
        Math.min(this.cfg.timeoutMs, third),
        third,
      );
      if (!(Number(r.result?.TTL ?? 0) > 0)) {
        this.loseLease(lease, 'its etcd lease was revoked or expired');
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
        this.loseLease(
          lease,
          `no etcd member renewed its lease within its ${lease.ttlMs / 1000} s TTL: ${lease.lastError || 'no answer'}`,
        ),
      Math.max(0, at - Date.now()),
    );
    lease.deadline.unref();
  }

  // Every hold on the lease is lost and every wait fails; the lease is revoked
  // as soon as a member answers, so a cluster that kept it frees its keys.
  private loseLease(lease: Lease, reason: string): void {
    if (lease.lost) return;
    lease.lost = true;
    clearInterval(lease.timer);
    if (lease.deadline) clearTimeout(lease.deadline);
    if (this.lease === lease) this.lease = null;
    this.oldLeases.add(lease.id);
    this.retryLeftovers();
    for (const entry of [...lease.entries.values()]) {
      lease.entries.delete(entry.etcdKey);
      if (entry.hold) entry.hold.markLost(`lock lost: ${reason}`);
      else entry.fail?.(new EtcdError(`lock lost while waiting: ${reason} (backend ${this.describe})`, ''));
    }
  }

  private async revoke(id: string): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: id });
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
    if (this.cleanupTimer || this.closed) return;
    this.cleanupTimer = setInterval(
      () => {
        if (this.oldLeases.size === 0 && this.leftovers.size === 0) {
          clearInterval(this.cleanupTimer!);
          this.cleanupTimer = null;
        } else this.retryLeftovers();
      },
      Math.max(200, (this.cfg.ttlSeconds * 1000) / 3),
    );
    this.cleanupTimer.unref();
  }

  private async deleteKey(k: string): Promise<void> {
    try {
      await this.call('/v3/kv/deleterange', { key: b64(k) });
      this.leftovers.delete(k);
    } catch (e) {
      this.leftovers.add(k);
      this.scheduleCleanup();
      throw e;
    }
  }

  // ---- the watch -------------------------------------------------------

  private startWatch(): void {
    this.watchRetry = null;
    if (this.closed) return;
    const base = `${this.cfg.prefix}locks/`;
    this.watch = this.gw.watch(
      {
        create_request: {
          key: b64(base),
          range_end: prefixEnd(base),
          start_revision: String(this.watchFrom),
          filters: ['NOPUT'],
          prev_kv: true,
        },
      },
      (r) => this.onWatch(r),
      (err) => {
        this.watch = null;
        if (this.closed) return;
        // Waiters learn of releases only through the watch: say when it is
        // down (once per outage), and retry ever more slowly up to 2 s.
        if (err.message === 'closed') {
          // Closed by us to restart after a compaction.
          this.watchRetry = setTimeout(() => this.startWatch(), 0);
          return;
        }
        if (this.watchFailures++ === 0) {
          log.warn(`etcd watch on ${this.describe} ended (${err.message}); waiters wait until it is back`);
        }
        this.watchRetry = setTimeout(() => this.startWatch(), Math.min(2000, 100 * 2 ** (this.watchFailures - 1)));
        this.watchRetry.unref();
      },
    );
  }

  private onWatch(r: WatchResult): void {
    if (r.canceled) {
      // Compacted past our revision: start at the present, and have every
      // waiter and holder look again for what the gap may have hidden.
      this.watchFrom = Math.max(this.watchFrom, rev(r.compact_revision), rev(r.header?.revision) + 1);
      this.watch?.close();
      void this.recheckAll();
      return;
    }
    if (r.created) {
      if (this.watchFailures > 0) log.info(`etcd watch on ${this.describe} is back`);
      this.watchFailures = 0;
      void this.recheckAll();
    }
    for (const ev of r.events ?? []) {
      this.watchFrom = Math.max(this.watchFrom, rev(ev.kv.mod_revision) + 1);
      if (ev.type !== 'DELETE') continue;
      this.deleted(unb64(ev.kv.key), ev.prev_kv?.value);
    }
  }

  private deleted(k: string, lastValue?: string): void {
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
    const entry = this.lease?.entries.get(k);
    if (!entry) return;
    if (entry.hold) {
      this.lease!.entries.delete(k);
      const broken = lastValue ? parseRecord({ value: lastValue })?.broken : undefined;
      entry.hold.markLost(
        broken
          ? `lock lost: broken by ${broken.by}: ${broken.reason}`
          : `lock lost: its etcd key ${k} was deleted (by an admin, or its lease was revoked)`,
      );
    } else {
      entry.wake?.();
    }
  }

  // After a watch (re)start: wake every waiter to look again, and check that
  // every held key still exists.
  private async recheckAll(): Promise<void> {
    const lease = this.lease;
    if (!lease) return;
    for (const entry of [...lease.entries.values()]) {
      if (!entry.hold) {
        entry.wake?.();
        continue;
      }
      try {
        const r = await this.call<{ kvs?: Kv[] }>('/v3/kv/range', { key: b64(entry.etcdKey), keys_only: true });
        if (!r.kvs?.length) this.deleted(entry.etcdKey);
      } catch {
        // The keepalive decides when an unreachable cluster means a lost lease.
      }
    }
  }

  private onDelete(k: string, cb: () => void): () => void {
    let set = this.deletions.get(k);
    if (!set) this.deletions.set(k, (set = new Set()));
    set.add(cb);
    return () => {
      set.delete(cb);
      if (set.size === 0) this.deletions.delete(k);
    };
  }

  // ---- acquire ---------------------------------------------------------

  async acquire(req: StoreAcquire): Promise<StoreHold | null> {
    if (req.signal?.aborted) throw new AbortError();
    let lease = await unlessAborted(
      this.getLease(),
      req.signal,
      () =>
        new EtcdError(
          `no etcd member answered before the wait ended: ${this.gw.lastFailure ?? 'no answer yet'} (backend ${this.describe})`,
          this.gw.endpoints.join(','),
        ),
    );
    try {
      return await this.acquireOn(lease, req);
    } catch (e) {
      // The lease went between grant and use: once more on a fresh one.
      if (!(e instanceof EtcdError) || !/lease not found/i.test(e.message)) throw e;
      this.loseLease(lease, 'its etcd lease was revoked or expired');
      lease = await this.getLease();
      return this.acquireOn(lease, req);
    }
  }

  private async rangeName(prefix: string): Promise<{ kvs: Kv[]; revision: number }> {
    const r = await this.call<{ kvs?: Kv[]; header: { revision: string } }>('/v3/kv/range', {
      key: b64(prefix),
      range_end: prefixEnd(prefix),
      sort_target: 'CREATE',
      sort_order: 'ASCEND',
    });
    return { kvs: r.kvs ?? [], revision: rev(r.header.revision) };
  }

  private async acquireOn(lease: Lease, req: StoreAcquire): Promise<StoreHold | null> {
    const prefix = this.namePrefix(req.key.id);
    const etcdKey = `${prefix}${BigInt(lease.id).toString(16)}-${++this.seq}`;
    const { requester } = req;
    const slots = req.slots;
    const mode: Mode = slots === undefined ? req.mode : 'exclusive';
    const room = slots ?? 1;
    const record: KeyRecord = {
      mode,
      held: false,
      since: new Date().toISOString(),
      pid: requester.pid,
      user: requester.user,
      controller: requester.controller,
      run: requester.run,
      playbook: requester.playbook,
      play: requester.play,
      task: requester.task,
      host: requester.host,
      ...(slots !== undefined && { slots }),
    };
    const entry: Entry = { etcdKey, hold: null, wake: null, fail: null };
    lease.entries.set(etcdKey, entry);
    const k64 = b64(etcdKey);
    let written = false;
    try {
      // Created only if absent, so a retry after a lost answer cannot queue twice.
      const t = await this.call<TxnResponse>('/v3/kv/txn', {
        compare: [{ key: k64, target: 'CREATE', create_revision: '0', result: 'EQUAL' }],
        success: [
          {
            request_put: {
              key: k64,
              value: b64(JSON.stringify(req.wait ? record : { ...record, trying: true })),
              lease: lease.id,
            },
          },
          {
            request_range: {
              key: b64(prefix),
              range_end: prefixEnd(prefix),
              sort_target: 'CREATE',
              sort_order: 'ASCEND',
            },
          },
        ],
        failure: [],
      });
      written = true;
      const kvs = t.succeeded
        ? (t.responses?.[1]?.response_range?.kvs ?? [])
        : await this.whileLeased(lease, etcdKey, req.signal, () => this.rangeName(prefix).then((r) => r.kvs));
      let mine = kvs.find((kv) => unb64(kv.key) === etcdKey);
      if (!mine || lease.lost) throw this.lostWaiting(lease, etcdKey);
      // Every key written before ours is in this snapshot: of two requests
      // that disagree on slots, the later one always sees the earlier.
      for (const kv of kvs) {
        const other = kv === mine ? null : parseRecord(kv);
        if (other && other.slots !== slots) throw slotsMismatch(req.key, slots, other);
      }
      const ahead = blockersOf(kvs, mine, mode);
      for (const k of ahead) if (this.recentlyDeleted.has(k)) ahead.delete(k);
      if (ahead.size >= room) {
        if (!req.wait) {
          lease.entries.delete(etcdKey);
          await this.deleteKey(etcdKey).catch(() => {});
          return null;
        }
        req.onQueued?.(waitId(mine));
        mine = await this.waitClear(lease, entry, ahead, room, prefix, mine, mode, req.signal);
      }
      if (lease.lost) throw this.lostWaiting(lease, etcdKey);
      if (req.signal?.aborted) throw new AbortError();
      let since = new Date();
      let token = rev(mine.create_revision);
      record.held = true;
      record.since = since.toISOString();
      if (slots !== undefined) {
        // The slot is written before the grant is told: it is the hold's identity.
        const claim = await this.claimSlot(lease, prefix, etcdKey, record, slots, req.signal);
        record.slot = claim.slot;
        token = claim.token;
        since = new Date(record.since);
        if (lease.lost) throw this.lostWaiting(lease, etcdKey);
        if (req.signal?.aborted) throw new AbortError();
      }
      const hold = new EtcdHold(
        req.key,
        mode,
        token,
        since,
        record.slot,
        etcdKey,
        (reason) => {
          this.record({ event: 'lost', key: req.key, mode, who: requester, token: hold.token, reason });
          req.onLost?.(reason);
        },
        (h) => this.dropHold(lease, h),
      );
      entry.hold = hold;
      if (slots === undefined) {
        // Mark the key held, for status; off the handoff's path. Only while the
        // key is still ours, so a release or loss racing it resurrects nothing.
        void this.call<TxnResponse>('/v3/kv/txn', {
          compare: [{ key: k64, target: 'LEASE', lease: lease.id, result: 'EQUAL' }],
          success: [{ request_put: { key: k64, value: b64(JSON.stringify(record)), lease: lease.id } }],
          failure: [],
        }).catch(() => {});
      }
      return hold;
    } catch (e) {
      lease.entries.delete(etcdKey);
      // Nothing stays behind for a request that did not end in a hold.
      if (written || !(e instanceof EtcdError && e.transport)) await this.deleteKey(etcdKey).catch(() => {});
      else {
        this.leftovers.add(etcdKey);
        this.scheduleCleanup();
      }
      throw e;
    } finally {
      entry.wake = entry.fail = null;
    }
  }

  // Once queued, a request rides out members that cannot answer: it fails
  // only when its lease is lost (the keepalive decides) or it is aborted.
  private async whileLeased<T>(
    lease: Lease,
    etcdKey: string,
    signal: AbortSignal | undefined,
    op: () => Promise<T>,
  ): Promise<T> {
    for (;;) {
      try {
        return await op();
      } catch (e) {
        if (!(e instanceof EtcdError && e.transport)) throw e;
        if (lease.lost) throw this.lostWaiting(lease, etcdKey);
        if (signal?.aborted) throw new AbortError();
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  private lostWaiting(lease: Lease, etcdKey: string): Error {
    // Closing the store revokes its lease: a request still on its way back says so.
    if (this.closed) return new Error(`etcd backend ${this.describe}: store closed while waiting`);
    return new EtcdError(
      `lock lost while waiting: the etcd key ${etcdKey} or its lease ${lease.id} is gone (backend ${this.describe})`,
      '',
    );
  }

  // Takes the lowest slot that no other holder of the name has written into
  // its key. The write succeeds only if no holder's key changed since the
  // read, so of two holders granted at once, the second reads again and sees
  // the first one's slot. The write's revision is the hold's token: holders
  // let in by one release may notice it at different times, but whoever
  // writes its slot after another holder has released gets a greater token.
  private async claimSlot(
    lease: Lease,
    prefix: string,
    etcdKey: string,
    record: KeyRecord,
    n: number,
    signal: AbortSignal | undefined,
  ): Promise<{ slot: number; token: number }> {
    const k64 = b64(etcdKey);
    for (let tries = 0; tries < 100; tries++) {
      const { kvs } = await this.whileLeased(lease, etcdKey, signal, () => this.rangeName(prefix));
      const holders = kvs.slice(0, n);
      const mine = holders.find((kv) => unb64(kv.key) === etcdKey);
      if (!mine) throw this.lostWaiting(lease, etcdKey);
      const taken = new Set(holders.filter((kv) => kv !== mine).map((kv) => parseRecord(kv)?.slot));
      let slot = 1;
      while (taken.has(slot)) slot++;
      const claimed = { ...record, slot, since: new Date().toISOString() };
      const t = await this.whileLeased(lease, etcdKey, signal, () =>
        this.call<TxnResponse>('/v3/kv/txn', {
          compare: holders.map((kv) => ({
            key: kv.key,
            target: 'MOD',
            mod_revision: kv.mod_revision,
            result: 'EQUAL',
          })),
          success: [{ request_put: { key: k64, value: b64(JSON.stringify(claimed)), lease: lease.id } }],
          failure: [],
        }),
      );
      if (t.succeeded) {
        record.since = claimed.since;
        return { slot, token: rev(t.header.revision) };
      }
      if (lease.lost) throw this.lostWaiting(lease, etcdKey);
      if (signal?.aborted) throw new AbortError();
    }
    throw new EtcdError(
      `etcd backend ${this.describe}: could not take a slot of ${etcdKey}: its holders keep changing`,
      '',
    );
  }

  // Waits until fewer than `room` keys of `ahead` are left (none for a plain
  // lock; with slots, fewer than the slot count), or the wait is aborted, or
  // the lease is lost, and returns our key as last seen. Keys ahead can only
  // go, never come, so the watch's deletions suffice: a release costs no
  // request to anyone but the waiter it lets in. After a watch restart
  // (`wake`), the queue is read again in case the gap hid a deletion.
  private async waitClear(
    lease: Lease,
    entry: Entry,
    ahead: Set<string>,
    room: number,
    prefix: string,
    mine: Kv,
    mode: Mode,
    signal: AbortSignal | undefined,
  ): Promise<Kv> {
    const offs = new Map<string, () => void>();
    let onAbort = () => {};
    try {
      await new Promise<void>((resolve, reject) => {
        const gone = (k: string) => {
          offs.get(k)?.();
          offs.delete(k);
          ahead.delete(k);
          if (ahead.size < room) resolve();
        };
        for (const k of ahead)
          offs.set(
            k,
            this.onDelete(k, () => gone(k)),
          );
        entry.wake = () => {
          this.whileLeased(lease, entry.etcdKey, signal, () => this.rangeName(prefix)).then((now) => {
            const found = now.kvs.find((kv) => unb64(kv.key) === entry.etcdKey);
            if (!found) return reject(this.lostWaiting(lease, entry.etcdKey));
            mine = found;
            const still = blockersOf(now.kvs, found, mode);
            for (const k of [...ahead]) if (!still.has(k)) gone(k);
          }, reject);
        };
        entry.fail = reject;
        onAbort = () => reject(new AbortError());
        signal?.addEventListener('abort', onAbort, { once: true });
        if (signal?.aborted) onAbort();
      });
      return mine;
    } finally {
      for (const off of offs.values()) off();
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private async dropHold(lease: Lease, h: EtcdHold): Promise<void> {
    lease.entries.delete(h.etcdKey);
    if (h.lost || lease.lost) return;
    await this.deleteKey(h.etcdKey);
  }

  // ---- status ----------------------------------------------------------

  async status(key: LockKey): Promise<KeyStatus> {
    const { kvs } = await this.rangeName(this.namePrefix(key.id));
    return statusOf(key, kvs);
  }

  // Deadlock detection (the policy's) looks at every name of the store: a
  // run's hosts hold and wait by name, whatever the name.
  waitGraph(): Promise<KeyStatus[]> {
    return this.list();
  }

  async list(prefix = ''): Promise<KeyStatus[]> {
    const base = `${this.cfg.prefix}locks/`;
    const { kvs } = await this.rangeName(base + encodeURIComponent(prefix));
    const byName = new Map<string, Kv[]>();
    for (const kv of kvs) {
      const rest = unb64(kv.key).slice(base.length);
      const slash = rest.indexOf('/');
      if (slash < 0) continue;
      const name = decodeURIComponent(rest.slice(0, slash));
      if (!byName.has(name)) byName.set(name, []);
      byName.get(name)!.push(kv);
    }
    return [...byName.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, list]) => statusOf({ id: name, name }, list));
  }

  // ---- break -----------------------------------------------------------

  // Ends one hold, from any controller: its key is marked with who broke it
  // and why, then deleted, each step only if the key has not changed since
  // (the holder's own "held" write may land in between: then both again).
  // The holder's lease and its other keys stay; its watch sees the deletion
  // and reports the hold lost, and the next waiter is let in by the same
  // deletion.
  async breakHold(key: LockKey, token: number, by: Requester, reason: string): Promise<Holder> {
    const prefix = this.namePrefix(key.id);
    const who = `${by.user} (pid ${by.pid}) on controller ${by.controller}`;
    const name = key.name ?? key.id;
    for (let tries = 0; tries < 20; tries++) {
      const { kvs } = await this.rangeName(prefix);
      const st = statusOf(key, kvs);
      const victim = st.holders.find((h) => h.token === token);
      const kv = kvs.find((k) => rev(k.create_revision) === token || tokenOf(k, parseRecord(k)) === token);
      const rec = kv && parseRecord(kv);
      if (!victim || !kv || !rec) {
        const why = kv ? `token ${token} is a waiter's, not a hold's` : `no hold of it has token ${token}`;
        const tokens = st.holders.map((h) => h.token).join(', ');
        throw new HostlockError(
          ErrorCode.InvalidParams,
          `cannot break '${name}' (backend ${this.describe}): ${why}; ` +
            (st.holders.length ? `its holders' tokens: ${tokens}` : 'it is not held') +
            ' (see hostlock status --backend)',
          { name, token, holders: st.holders.map((h) => h.token ?? null) },
        );
      }
      const k64 = kv.key;
      const marked: KeyRecord = { ...rec, token, broken: { by: who, reason } };
      const t1 = await this.call<TxnResponse>('/v3/kv/txn', {
        compare: [{ key: k64, target: 'MOD', mod_revision: kv.mod_revision, result: 'EQUAL' }],
        success: [{ request_put: { key: k64, value: b64(JSON.stringify(marked)), ignore_lease: true } }],
        failure: [],
      });
      if (!t1.succeeded) continue;
      const t2 = await this.call<TxnResponse>('/v3/kv/txn', {
        compare: [{ key: k64, target: 'MOD', mod_revision: t1.header.revision, result: 'EQUAL' }],
        success: [{ request_delete_range: { key: k64 } }],
        failure: [],
      });
      if (!t2.succeeded) continue;
      this.record({ event: 'break', key, mode: victim.mode, who: by, token, reason, victim });
      return victim;
    }
    throw new HostlockError(
      ErrorCode.StoreUnavailable,
      `cannot break '${name}' (backend ${this.describe}): the hold with token ${token} kept changing; try again`,
      { name, token },
    );
  }

  // ---- history ---------------------------------------------------------

  private get historyBase(): string {
    return `${this.cfg.prefix}history/`;
  }

  // Queued and written at the end of this turn of the event loop, in one
  // transaction per batch: a grant never waits for its line.
  record(e: HistoryEvent): void {
    try {
      if (this.cfg.historyCap === 0 || this.closed) return;
      const rec = historyRecordOf(e);
      if (rec.name === undefined) delete rec.name;
      this.historyQueue.push(rec);
      if (!this.historyWriting) {
        this.historyWriting = true;
        this.historyWriter = new Promise<void>((r) => setImmediate(r)).then(() => this.writeHistory());
      }
    } catch {
      /* history is best effort */
    }
  }

  private async writeHistory(): Promise<void> {
    try {
      while (this.historyQueue.length > 0) {
        // etcd refuses transactions of more than 128 operations by default.
        const batch = this.historyQueue.splice(0, 100);
        const puts = batch.map((rec) => ({
          request_put: { key: b64(this.historyKey(rec)), value: b64(fitRecord(rec, HISTORY_VALUE_MAX)) },
        }));
        try {
          await this.call('/v3/kv/txn', { compare: [], success: puts, failure: [] });
          this.historySincePrune += batch.length;
        } catch (e) {
          // What is queued goes too: a cluster that cannot take one batch
          // would make `close` wait a request's whole budget per batch.
          const lost = batch.length + this.historyQueue.splice(0).length;
          log.debug(`etcd history on ${this.describe}: ${lost} record(s) not written: ${(e as Error).message}`);
        }
        // Pruned now and then, not on every write: a count per batch would
        // double the requests.
        if (this.historySincePrune >= Math.max(1, Math.min(500, this.cfg.historyCap / 10))) {
          this.historySincePrune = 0;
          await this.pruneHistory().catch((e: Error) =>
            log.debug(`etcd history prune on ${this.describe}: ${e.message}`),
          );
        }
      }
    } finally {
      // Reset with no await after the last look at the queue: a record
      // queued after it starts a writer of its own.
      this.historyWriting = false;
    }
  }

  // `<prefix>history/<ms since epoch, 15 digits>-<store tag>-<seq>`: key
  // order is time order (by the recording controller's clock).
  private historyKey(rec: HistoryRecord): string {
    const ms = String(Date.parse(rec.t)).padStart(15, '0');
    return `${this.historyBase}${ms}-${this.historyTag}-${String(++this.historySeq).padStart(10, '0')}`;
  }

  // Deletes the oldest records beyond the cap, in one range delete.
  private async pruneHistory(): Promise<void> {
    const base = this.historyBase;
    const { count } = await this.call<{ count?: string }>('/v3/kv/range', {
      key: b64(base),
      range_end: prefixEnd(base),
      count_only: true,
    });
    const excess = Number(count ?? 0) - this.cfg.historyCap;
    if (excess <= 0) return;
    const r = await this.call<{ kvs?: Kv[] }>('/v3/kv/range', {
      key: b64(base),
      range_end: prefixEnd(base),
      keys_only: true,
      limit: String(excess),
    });
    const last = r.kvs?.at(-1);
    if (!last) return;
    await this.call('/v3/kv/deleterange', {
      key: b64(base),
      range_end: b64(unb64(last.key) + '\0'),
    });
  }

  // Records of one name or of every name, oldest first; `since` in ms since
  // the epoch. Read in pages, from the first key at or after `since`.
  async history(query: { name?: string; since?: number } = {}): Promise<HistoryRecord[]> {
    const base = this.historyBase;
    const since = Math.max(0, Math.floor(query.since ?? 0));
    let from = b64(`${base}${String(since).padStart(15, '0')}`);
    const out: HistoryRecord[] = [];
    for (;;) {
      const r = await this.call<{ kvs?: Kv[]; more?: boolean }>('/v3/kv/range', {
        key: from,
        range_end: prefixEnd(base),
        limit: '500',
      });
      for (const kv of r.kvs ?? []) {
        let rec: HistoryRecord;
        try {
          rec = JSON.parse(unb64(kv.value)) as HistoryRecord;
        } catch {
          continue;
        }
        if (typeof rec?.t !== 'string' || typeof rec.event !== 'string') continue;
        if (query.name !== undefined && rec.name !== query.name) continue;
        if (Date.parse(rec.t) < since) continue;
        out.push(rec);
      }
      const last = r.kvs?.at(-1);
      if (!r.more || !last) break;
      from = b64(unb64(last.key) + '\0');
    }
    // Records written the same millisecond by several controllers: by time, then as read.
    return out.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.cleanupTimer) clearInterval(this.cleanupTimer);
    if (this.watchRetry) clearTimeout(this.watchRetry);
    this.watch?.close();
    const lease = this.lease ?? (await this.leasing?.catch(() => null)) ?? null;
    this.lease = null;
    if (lease) {
      clearInterval(lease.timer);
      if (lease.deadline) clearTimeout(lease.deadline);
      lease.lost = true;
      for (const entry of lease.entries.values()) {
        if (entry.hold) entry.hold.released = true;
        else entry.fail?.(new Error(`etcd backend ${this.describe}: store closed while waiting`));
      }
      lease.entries.clear();
      this.oldLeases.add(lease.id);
    }
    // Revoking deletes every key at once; if no member answers, the keys go
    // with the lease TTL since nothing keeps it alive any more.
    // What was recorded before the close is written too.
    await Promise.all([...[...this.oldLeases].map((id) => this.revoke(id)), this.historyWriter]);
    this.gw.close();
  }
}

function parseRecord(kv: { value?: string }): KeyRecord | null {
  try {
    return JSON.parse(unb64(kv.value)) as KeyRecord;
  } catch {
    return null;
  }
}

// The keys that `mine` waits behind: for an exclusive request every earlier
// key, for a shared one every earlier exclusive key; none: it may hold.
function blockersOf(kvs: Kv[], mine: Kv, mode: Mode): Set<string> {
  const out = new Set<string>();
  const r = rev(mine.create_revision);
  for (const kv of kvs) {
    if (rev(kv.create_revision) >= r) continue;
    // An unreadable record blocks like an exclusive one.
    if (mode === 'exclusive' || parseRecord(kv)?.mode !== 'shared') out.add(unb64(kv.key));
  }
  return out;
}

// A waiter's id: its key's create revision, padded so that ids sort as numbers.
function waitId(kv: Kv): string {
  return String(rev(kv.create_revision)).padStart(20, '0');
}

function statusOf(key: LockKey, kvs: Kv[]): KeyStatus {
  // Who holds follows from the queue by the same rule the requests apply; the
  // record's `held` mark (written after the grant) only dates the grant.
  const holders: Holder[] = [];
  const waiters: Waiter[] = [];
  for (const kv of kvs) {
    const r = parseRecord(kv);
    if (!r) continue;
    const who = {
      pid: r.pid,
      user: r.user,
      controller: r.controller,
      mode: r.mode,
      since: r.since,
      ...(r.run !== undefined && { run: r.run }),
      ...(r.playbook !== undefined && { playbook: r.playbook }),
      ...(r.play !== undefined && { play: r.play }),
      ...(r.task !== undefined && { task: r.task }),
      ...(r.host !== undefined && { host: r.host }),
      ...(r.slots !== undefined && { slots: r.slots }),
    };
    if (blockersOf(kvs, kv, r.mode).size < (r.slots ?? 1)) {
      holders.push({
        ...who,
        token: tokenOf(kv, r),
        ...(r.slot !== undefined && r.held && { slot: r.slot }),
      });
    } else if (!r.trying) waiters.push({ ...who, id: waitId(kv) });
  }
  const slots = holders.find((h) => h.slots !== undefined)?.slots;
  return {
    key,
    held: holders.length > 0,
    mode: holders[0]?.mode ?? null,
    holders,
    waiters,
    ...(slots !== undefined && { slots }),
  };
}

function slotsMismatch(key: LockKey, asked: number | undefined, other: KeyRecord): HostlockError {
  const say = (n: number | undefined) => (n === undefined ? 'without slots' : `with slots: ${n}`);
  const by = [
    `pid ${other.pid}`,
    `controller ${other.controller}`,
    other.run ? `run ${other.run}` : '',
    other.task ? `task ${other.task}` : '',
  ]
    .filter(Boolean)
    .join(', ');
  return new HostlockError(
    ErrorCode.SlotsMismatch,
    `'${key.name ?? key.id}' is in use ${say(other.slots)} (${by}), but this request asks ${say(asked)}: every user of a lock must give the same slots`,
    { asked: asked ?? null, found: other.slots ?? null },
  );
}

// A hold's fencing token: its key's create revision; with slots, the revision
// of the write that took its slot (the key's mod revision, kept in the value
// once a break marks it).
function tokenOf(kv: Kv, r: KeyRecord | null): number {
  if (r?.token !== undefined) return r.token;
  return r?.slot !== undefined && r.held ? rev(kv.mod_revision) : rev(kv.create_revision);
}
