// The store's history: records wait a moment in the one history buffer and
// are written together in one statement, after the replies that caused them;
// a read writes this store's own records first. Long fields are cut, so that
// no record outgrows its row.
import { HostlockError } from '../../core/errors';
import { HistoryBuffer } from '../../store/history-buffer';
import { historyRecordOf } from '../../store/records';
import type { HistoryEvent, HistoryRecord } from '../../store/types';
import { explainQueryError } from './explain';
import { SCHEMA } from './schema';
import type { PgTarget } from './url';

// Records wait this long to be written together; at most HISTORY_PENDING
// wait (the oldest go first when the server cannot take them), all in one
// statement, tried HISTORY_TRIES times a second apart.
const HISTORY_BATCH_MS = 50;
const HISTORY_PENDING = 2000;
const HISTORY_TRIES = 3;
const HISTORY_RETRY_MS = 1000;
// A record's text fields are cut to this many characters, a cycle to 8 links.
const HISTORY_FIELD_MAX = 1000;
const HISTORY_CYCLE_MAX = 8;

// One statement on the store's session (opened if need be).
export type Query = <T extends object>(text: string, values?: unknown[]) => Promise<T[]>;

// One history line as every store writes it, long fields cut.
export function historyRecord(e: HistoryEvent): HistoryRecord {
  const cut = (v: string) => (v.length > HISTORY_FIELD_MAX ? v.slice(0, HISTORY_FIELD_MAX) + '…' : v);
  const rec = historyRecordOf(e);
  for (const k of [
    'name',
    'path',
    'wait',
    'reason',
    'user',
    'controller',
    'run',
    'playbook',
    'play',
    'task',
    'host',
  ] as const) {
    const v = rec[k];
    if (v !== undefined) rec[k] = cut(v);
  }
  rec.cycle = e.cycle?.slice(0, HISTORY_CYCLE_MAX);
  return rec;
}

export class PgHistory {
  private readonly buffer: HistoryBuffer;

  constructor(
    private readonly target: PgTarget,
    private readonly query: Query,
    report: (message: string) => void,
  ) {
    this.buffer = new HistoryBuffer({
      write: async (batch) => {
        await this.query(`SELECT ${SCHEMA}.record_events($1::jsonb)`, [JSON.stringify(batch)]);
      },
      report,
      delayMs: HISTORY_BATCH_MS,
      batchMax: HISTORY_PENDING,
      pendingMax: HISTORY_PENDING,
      tries: HISTORY_TRIES,
      retryMs: HISTORY_RETRY_MS,
    });
  }

  // Never throws: a lock is never refused for want of a history line.
  record(e: HistoryEvent): void {
    try {
      this.buffer.add(historyRecord(e));
    } catch {
      // history is best effort
    }
  }

  // Writes what is pending; never rejects.
  flush(): Promise<void> {
    return this.buffer.flush();
  }

  // The records of one name or of the whole store, oldest first, this
  // store's own included.
  async read(query: { name?: string; since?: number }): Promise<HistoryRecord[]> {
    await this.flush();
    try {
      const rows = await this.query<{ rec: HistoryRecord }>(`SELECT ${SCHEMA}.history($1, $2) AS rec`, [
        query.name ?? null,
        query.since === undefined ? null : new Date(query.since),
      ]);
      return rows.map((r) => r.rec);
    } catch (err) {
      if (err instanceof HostlockError) throw err;
      throw explainQueryError(err, this.target, 'reading the history');
    }
  }

  // Writes what is pending, then takes no more records.
  close(): Promise<void> {
    return this.buffer.close();
  }
}
