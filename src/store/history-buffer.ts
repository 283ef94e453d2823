// The one way a store keeps history: `record` never blocks the grant path and
// never throws; records wait a moment to be written together through the
// store's own `write(batch)`, a batch that fails is retried a few times, then
// dropped with one report. `flush` writes what is pending (a reader calls it
// first, so a store reads its own records); `close` flushes and stops.
import { historyRecordOf } from './records';
import type { HistoryEvent, HistoryRecord } from './types';

export interface HistoryBufferOptions {
  // Writes one batch, oldest first; rejects if none of it was written.
  write(batch: HistoryRecord[]): Promise<void>;
  // Reports records that were given up on (the store's logger).
  report(message: string): void;
  delayMs?: number; // how long a record waits for others to join its batch
  batchMax?: number; // records per write
  pendingMax?: number; // records kept while the store cannot write; the oldest go first
  tries?: number; // writes of one batch before it is dropped
  retryMs?: number; // wait between two tries
}

export class HistoryBuffer {
  private pending: HistoryRecord[] = [];
  private timer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private failures = 0;
  private closed = false;
  private readonly o: Required<HistoryBufferOptions>;

  constructor(options: HistoryBufferOptions) {
    this.o = { delayMs: 20, batchMax: 100, pendingMax: 10_000, tries: 3, retryMs: 1000, ...options };
  }

  get size(): number {
    return this.pending.length;
  }

  record(e: HistoryEvent): void {
    if (this.closed) return;
    try {
      this.add(historyRecordOf(e));
    } catch {
      // history is best effort: a record that cannot be made is not worth a failed grant
    }
  }

  // A record made by the caller (the store fills in what only it knows).
  add(rec: HistoryRecord): void {
    if (this.closed) return;
    this.pending.push(rec);
    if (this.pending.length > this.o.pendingMax) this.pending.shift();
    this.schedule(this.o.delayMs);
  }

  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.writing = this.writing.then(() => this.drain());
    return this.writing;
  }

  // Closed first, so that a batch that fails now is reported, not kept for a
  // retry that will never come.
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => void this.flush(), ms);
    this.timer.unref();
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, this.o.batchMax);
      try {
        await this.o.write(batch);
        this.failures = 0;
      } catch (err) {
        if (++this.failures >= this.o.tries || this.closed) {
          this.failures = 0;
          this.o.report(`${batch.length} history record(s) not written: ${(err as Error).message}`);
        } else {
          this.pending = batch.concat(this.pending).slice(-this.o.pendingMax);
          this.schedule(this.o.retryMs);
        }
        return;
      }
    }
  }
}
