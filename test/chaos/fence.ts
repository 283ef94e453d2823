// The resource the critical sections write to, outside hostlock: it remembers
// the highest token it accepted per key and refuses lower ones. A writer
// (exclusive, or one slot of a slot name: its key is name#slot) is accepted
// above every token accepted before; a reader (shared) above every writer's.
// For the server stores it is a row of a PostgreSQL table whose CHECK and
// conditional UPDATE do the refusing; for the local store a JSON file
// rewritten under its own flock(2) (fs-ext, not hostlock's lock files).
import { closeSync, existsSync, openSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'pg';

// fs-ext's flock(2), the kernel lock on the resource's own lock file.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { flockSync } = require('fs-ext') as { flockSync: (fd: number, flags: 'ex' | 'un') => void };

export type FenceMode = 'exclusive' | 'shared';

export interface Fence {
  // true: accepted; false: refused (a higher token came first) or unreachable.
  write(key: string, mode: FenceMode, token: number): Promise<boolean>;
  // The highest token accepted per key.
  state(): Promise<Map<string, number>>;
  close(): Promise<void>;
}

// "pg:URL|PREFIX" or "file:DIR": how a section process finds the resource.
// PREFIX keeps the keys of campaigns sharing one table apart.
export function openFence(spec: string): Fence {
  if (spec.startsWith('pg:')) {
    const bar = spec.lastIndexOf('|');
    return new PgFence(spec.slice(3, bar), spec.slice(bar + 1));
  }
  if (spec.startsWith('file:')) return new FileFence(spec.slice(5));
  throw new Error(`unknown fence ${spec}: pg:URL or file:DIR`);
}

export const FENCE_TABLE_SQL = `CREATE TABLE IF NOT EXISTS chaos_fence (
  k text PRIMARY KEY,
  top bigint NOT NULL DEFAULT 0,
  wtop bigint NOT NULL DEFAULT 0,
  CHECK (wtop <= top)
)`;

class PgFence implements Fence {
  // A pool: sections of several loops write at once, each on a connection of its own.
  private readonly pool: Pool;
  constructor(
    url: string,
    private readonly prefix: string,
  ) {
    this.pool = new Pool({ connectionString: url, max: 6, connectionTimeoutMillis: 5000, statement_timeout: 5000 });
    this.pool.on('error', () => {});
  }

  async write(name: string, mode: FenceMode, token: number): Promise<boolean> {
    const key = `${this.prefix}/${name}`;
    try {
      await this.pool.query('INSERT INTO chaos_fence (k) VALUES ($1) ON CONFLICT DO NOTHING', [key]);
      const sql =
        mode === 'shared'
          ? 'UPDATE chaos_fence SET top = GREATEST(top, $2) WHERE k = $1 AND wtop < $2'
          : 'UPDATE chaos_fence SET top = $2, wtop = $2 WHERE k = $1 AND top <= $2';
      return (await this.pool.query(sql, [key, token])).rowCount === 1;
    } catch {
      return false;
    }
  }

  async state(): Promise<Map<string, number>> {
    const mine = `${this.prefix}/`;
    const rows = (await this.pool.query('SELECT k, top FROM chaos_fence WHERE starts_with(k, $1)', [mine])).rows as {
      k: string;
      top: string;
    }[];
    return new Map(rows.map((r) => [r.k.slice(mine.length), Number(r.top)]));
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}

class FileFence implements Fence {
  constructor(private readonly dir: string) {}

  private file(key: string): string {
    return join(this.dir, `${encodeURIComponent(key)}.json`);
  }

  write(key: string, mode: FenceMode, token: number): Promise<boolean> {
    const lock = openSync(join(this.dir, `${encodeURIComponent(key)}.lk`), 'a');
    try {
      flockSync(lock, 'ex');
      const f = this.file(key);
      const now = existsSync(f)
        ? (JSON.parse(readFileSync(f, 'utf8')) as { top: number; wtop: number })
        : { top: 0, wtop: 0 };
      const ok = mode === 'shared' ? now.wtop < token : now.top <= token;
      if (ok) {
        const next =
          mode === 'shared' ? { top: Math.max(now.top, token), wtop: now.wtop } : { top: token, wtop: token };
        writeFileSync(`${f}.tmp`, JSON.stringify(next));
        renameSync(`${f}.tmp`, f);
      }
      return Promise.resolve(ok);
    } catch {
      return Promise.resolve(false);
    } finally {
      closeSync(lock); // and its flock with it
    }
  }

  state(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const f of readdirSync(this.dir).filter((n) => n.endsWith('.json')))
      out.set(
        decodeURIComponent(f.slice(0, -5)),
        (JSON.parse(readFileSync(join(this.dir, f), 'utf8')) as { top: number }).top,
      );
    return Promise.resolve(out);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
