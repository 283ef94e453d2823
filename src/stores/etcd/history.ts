// An etcd store's history: records are keys under `<prefix>history/`, named
// by time so that a range read returns them oldest first. They go through
// the shared history buffer, off every grant's path, a batch in one
// transaction of puts; the oldest beyond the URL's `history=` cap are pruned
// now and then in one range delete.
import { randomBytes } from 'node:crypto';
import { log } from '../../core/log';
import { HistoryBuffer } from '../../store/history-buffer';
import { fitRecord } from '../../store/records';
import type { HistoryEvent, HistoryRecord } from '../../store/types';
import type { EtcdClient } from './client';
import { b64, prefixEnd, unb64 } from './gateway';
import type { Kv } from './queue';

// A history record's value stays below this many bytes: long fields are cut.
const HISTORY_VALUE_MAX = 8000;
// etcd refuses transactions of more than 128 operations by default.
const BATCH_MAX = 100;

export class EtcdHistory {
  private readonly buffer: HistoryBuffer;
  private seq = 0;
  private sincePrune = 0;
  // Tells this store object's records apart from others written the same millisecond.
  private readonly tag = randomBytes(4).toString('hex');

  constructor(private readonly c: EtcdClient) {
    this.buffer = new HistoryBuffer({
      write: (batch) => this.write(batch),
      report: (m) => log.debug(`etcd history on ${c.describe}: ${m}`),
      batchMax: BATCH_MAX,
    });
  }

  private get base(): string {
    return `${this.c.cfg.prefix}history/`;
  }

  record(e: HistoryEvent): void {
    if (this.c.cfg.historyCap === 0) return;
    this.buffer.record(e);
  }

  private async write(batch: HistoryRecord[]): Promise<void> {
    const puts = batch.map((rec) => ({
      request_put: { key: b64(this.keyOf(rec)), value: b64(fitRecord(rec, HISTORY_VALUE_MAX)) },
    }));
    await this.c.call('/v3/kv/txn', { compare: [], success: puts, failure: [] });
    this.sincePrune += batch.length;
    // Pruned now and then, not on every write: a count per batch would
    // double the requests.
    if (this.sincePrune >= Math.max(1, Math.min(500, this.c.cfg.historyCap / 10))) {
      this.sincePrune = 0;
      await this.prune().catch((e: Error) => log.debug(`etcd history prune on ${this.c.describe}: ${e.message}`));
    }
  }

  // `<prefix>history/<ms since epoch, 15 digits>-<store tag>-<seq>`: key
  // order is time order (by the recording controller's clock).
  private keyOf(rec: HistoryRecord): string {
    const ms = String(Date.parse(rec.t)).padStart(15, '0');
    return `${this.base}${ms}-${this.tag}-${String(++this.seq).padStart(10, '0')}`;
  }

  // Deletes the oldest records beyond the cap, in one range delete.
  private async prune(): Promise<void> {
    const base = this.base;
    const { count } = await this.c.call<{ count?: string }>('/v3/kv/range', {
      key: b64(base),
      range_end: prefixEnd(base),
      count_only: true,
    });
    const excess = Number(count ?? 0) - this.c.cfg.historyCap;
    if (excess <= 0) return;
    const r = await this.c.call<{ kvs?: Kv[] }>('/v3/kv/range', {
      key: b64(base),
      range_end: prefixEnd(base),
      keys_only: true,
      limit: String(excess),
    });
    const last = r.kvs?.at(-1);
    if (!last) return;
    await this.c.call('/v3/kv/deleterange', {
      key: b64(base),
      range_end: b64(unb64(last.key) + '\0'),
    });
  }

  // Records of one name or of every name, oldest first; `since` in ms since
  // the epoch. This store's own records are written first; then read in
  // pages, from the first key at or after `since`.
  async read(query: { name?: string; since?: number } = {}): Promise<HistoryRecord[]> {
    await this.buffer.flush();
    const base = this.base;
    const since = Math.max(0, Math.floor(query.since ?? 0));
    let from = b64(`${base}${String(since).padStart(15, '0')}`);
    const out: HistoryRecord[] = [];
    for (;;) {
      const r = await this.c.call<{ kvs?: Kv[]; more?: boolean }>('/v3/kv/range', {
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

  // What was recorded before the close is written too.
  close(): Promise<void> {
    return this.buffer.close();
  }
}
