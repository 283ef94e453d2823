// The resource the critical sections write to, outside hostlock: it remembers
// the highest token it accepted per key and refuses lower ones. A writer
// (exclusive, or one slot of a slot name: its key is name#slot) is accepted
// above every token accepted before; a reader (shared) above every writer's.
// For the server stores it is a row of a PostgreSQL table whose CHECK and
// conditional UPDATE do the refusing; for the local store a JSON file
// rewritten under its own flock(2) (fs-ext, not hostlock's lock files).
import { closeSync, existsSync, openSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';

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
  private client: Client | undefined;
  constructor(
    private readonly url: string,
    private readonly prefix: string,
  ) {}

  private async db(): Promise<Client> {
    if (this.client) return this.client;
    const c = new Client({ connectionString: this.url, connectionTimeoutMillis: 5000, statement_timeout: 5000 });
    c.on('error', () => {
      if (this.client === c) this.client = undefined;
    });
    await c.connect();
    this.client = c;
    return c;
  }

  async write(name: string, mode: FenceMode, token: number): Promise<boolean> {
    const key = `${this.prefix}/${name}`;
    try {
      const c = await this.db();
      await c.query('INSERT INTO chaos_fence (k) VALUES ($1) ON CONFLICT DO NOTHING', [key]);
      const sql =
        mode === 'shared'
          ? 'UPDATE chaos_fence SET top = GREATEST(top, $2) WHERE k = $1 AND wtop < $2'
          : 'UPDATE chaos_fence SET top = $2, wtop = $2 WHERE k = $1 AND top <= $2';
      return (await c.query(sql, [key, token])).rowCount === 1;
    } catch {
      const c = this.client;
      this.client = undefined;
      await c?.end().catch(() => undefined);
      return false;
    }
  }

  async state(): Promise<Map<string, number>> {
    const mine = `${this.prefix}/`;
    const rows = (await (await this.db()).query('SELECT k, top FROM chaos_fence WHERE starts_with(k, $1)', [mine]))
      .rows as { k: string; top: string }[];
    return new Map(rows.map((r) => [r.k.slice(mine.length), Number(r.top)]));
  }

  async close(): Promise<void> {
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
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
