// Taking a lock: a request writes its key under the name's prefix, on the
// store's lease, in a transaction that also reads the queue (queue.ts says
// who may hold). Keys ahead of it can only go, so it waits for their
// deletions (watch.ts); the deletion that clears its way is the grant, with
// no further request. The fencing token is the key's create revision:
// exclusive grants follow create order, and every grant after an exclusive
// one comes from a later key. With slots, a granted request then writes the
// lowest free slot into its key, and that write's revision is its token.
import type { Mode } from '../../core/mode';
import { unlessAborted, type StoreAcquire, type StoreHold } from '../../store/contract';
import { AbortError, slotsMismatch, storeClosed } from '../../store/errors';
import type { HistoryEvent } from '../../store/types';
import type { EtcdClient, TxnResponse } from './client';
import { EtcdError, b64, prefixEnd, unb64 } from './gateway';
import { EtcdHold } from './hold';
import { blockersOf, freeSlot, rev, slotsConflict, waitId, waitingRecord, type KeyRecord, type Kv } from './queue';
import type { Entry, Lease, Session } from './session';
import type { LockWatch } from './watch';
import { isoTime } from '../../core/time';

export class Acquirer {
  private seq = 0;

  constructor(
    private readonly c: EtcdClient,
    private readonly session: Session,
    private readonly watch: LockWatch,
    private readonly record: (e: HistoryEvent) => void,
  ) {}

  async acquire(req: StoreAcquire): Promise<StoreHold | null> {
    if (req.signal?.aborted) throw new AbortError();
    let lease = await unlessAborted(this.session.get(), req.signal, () => this.c.unreached());
    try {
      return await this.acquireOn(lease, req);
    } catch (e) {
      // The lease went between grant and use: once more on a fresh one.
      if (!(e instanceof EtcdError) || !/lease not found/i.test(e.message)) throw e;
      this.session.lose(lease, 'its etcd lease was revoked or expired');
      lease = await this.session.get();
      return this.acquireOn(lease, req);
    }
  }

  private async acquireOn(lease: Lease, req: StoreAcquire): Promise<StoreHold | null> {
    const prefix = this.c.namePrefix(req.key.id);
    const etcdKey = `${prefix}${BigInt(lease.id).toString(16)}-${++this.seq}`;
    const { requester, slots } = req;
    const mode: Mode = slots === undefined ? req.mode : 'exclusive';
    const room = slots ?? 1;
    const record = waitingRecord(requester, mode, slots);
    const entry: Entry = { etcdKey, hold: null, wake: null, fail: null };
    lease.entries.set(etcdKey, entry);
    const k64 = b64(etcdKey);
    let written = false;
    try {
      // Created only if absent, so a retry after a lost answer cannot queue twice.
      const t = await this.c.call<TxnResponse>('/v3/kv/txn', {
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
        : await this.whileLeased(lease, etcdKey, req.signal, () => this.c.rangeName(prefix).then((r) => r.kvs));
      let mine = kvs.find((kv) => unb64(kv.key) === etcdKey);
      if (!mine || lease.lost) throw this.lostWaiting(lease, etcdKey);
      const conflict = slotsConflict(kvs, mine, slots);
      if (conflict) throw slotsMismatch(req.key, slots, conflict);
      const ahead = blockersOf(kvs, mine, mode);
      for (const k of ahead) if (this.watch.wasDeleted(k)) ahead.delete(k);
      if (ahead.size >= room) {
        if (!req.wait) {
          lease.entries.delete(etcdKey);
          await this.session.deleteKey(etcdKey).catch(() => {});
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
      record.since = isoTime(since);
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
        (h) => this.drop(lease, h),
      );
      entry.hold = hold;
      if (slots === undefined) {
        // Mark the key held, for status; off the handoff's path. Only while the
        // key is still ours, so a release or loss racing it resurrects nothing.
        void this.c
          .call<TxnResponse>('/v3/kv/txn', {
            compare: [{ key: k64, target: 'LEASE', lease: lease.id, result: 'EQUAL' }],
            success: [{ request_put: { key: k64, value: b64(JSON.stringify(record)), lease: lease.id } }],
            failure: [],
          })
          .catch(() => {});
      }
      return hold;
    } catch (e) {
      lease.entries.delete(etcdKey);
      // Nothing stays behind for a request that did not end in a hold.
      // After close, revoking the lease has deleted the key already.
      if (this.session.closed) throw e;
      if (written || !(e instanceof EtcdError && e.transport)) await this.session.deleteKey(etcdKey).catch(() => {});
      else this.session.leftBehind(etcdKey);
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
    if (this.session.closed) return storeClosed(this.c.describe, 'while waiting');
    return new EtcdError(
      `lock lost while waiting: the etcd key ${etcdKey} or its lease ${lease.id} is gone (backend ${this.c.describe})`,
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
      const { kvs } = await this.whileLeased(lease, etcdKey, signal, () => this.c.rangeName(prefix));
      const holders = kvs.slice(0, n);
      const mine = holders.find((kv) => unb64(kv.key) === etcdKey);
      if (!mine) throw this.lostWaiting(lease, etcdKey);
      const slot = freeSlot(holders, mine);
      const claimed = { ...record, slot, since: isoTime() };
      const t = await this.whileLeased(lease, etcdKey, signal, () =>
        this.c.call<TxnResponse>('/v3/kv/txn', {
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
      `etcd backend ${this.c.describe}: could not take a slot of ${etcdKey}: its holders keep changing`,
      '',
    );
  }

  // Waits until fewer than `room` keys of `ahead` are left (none for a plain
  // lock; with slots, fewer than the slot count), or the wait is aborted, or
  // the lease is lost, and returns our key as last seen. After a watch
  // restart (`wake`), the queue is read again in case the gap hid a deletion.
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
            this.watch.onDelete(k, () => gone(k)),
          );
        entry.wake = () => {
          this.whileLeased(lease, entry.etcdKey, signal, () => this.c.rangeName(prefix)).then((now) => {
            const found = now.kvs.find((kv) => unb64(kv.key) === entry.etcdKey);
            if (!found) return reject(this.lostWaiting(lease, entry.etcdKey));
            mine = found;
            const still = blockersOf(now.kvs, found, mode);
            for (const k of [...ahead]) if (!still.has(k)) gone(k);
          }, reject);
        };
        entry.fail = reject;
        // A close that came before the wait was set up: it found no `fail` to call.
        if (this.session.closed) reject(storeClosed(this.c.describe, 'while waiting'));
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

  private async drop(lease: Lease, h: EtcdHold): Promise<void> {
    lease.entries.delete(h.etcdKey);
    if (h.lost || lease.lost) return;
    await this.session.deleteKey(h.etcdKey);
  }
}
