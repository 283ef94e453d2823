// `hostlock history [NAME]`: the journal of a lock directory (history.ts), or
// the history a server store keeps (`--backend`), oldest first, as lines or JSON.
import type { Argv, CommandModule } from 'yargs';
import { checkBackendArgs } from '../backendarg';
import { UsageError } from '../exit';
import { readHistory } from '../../stores/flock/journal';
import { type HistoryRecord } from '../../store/types';
import { checkLockDir } from '../../sys/paths';
import { closeStores, isLocal, storeFor } from '../../stores';

// "90s", "15m", "2h", "3d" ago, today, yesterday (from local midnight) or a
// date; null when the text is none of these.
export function parseSince(text: string, now = Date.now()): number | null {
  const word = text.trim().toLowerCase();
  if (word === 'today' || word === 'yesterday') {
    // Local midnight, as a person at this controller means it.
    const d = new Date(now);
    d.setHours(0, 0, 0, 0);
    if (word === 'yesterday') d.setDate(d.getDate() - 1);
    return d.getTime();
  }
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(text.trim());
  if (m) return now - Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

export const SINCE_FORMS = 'a duration ago (90s, 15m, 2h, 3d), today, yesterday or a date (2026-11-26T10:00)';

export interface HistoryQuery {
  dir?: string;
  backend?: string;
  name?: string;
  since?: string;
}

// `dir`: where the history was read, as shown to the user (a lock directory,
// or a server store's masked URL).
export async function queryHistory(
  q: HistoryQuery,
): Promise<{ dir: string; from: number | null; records: HistoryRecord[] }> {
  let from: number | null = null;
  if (q.since !== undefined) {
    from = parseSince(q.since);
    if (from === null) throw new UsageError(`--since ${q.since}: give ${SINCE_FORMS}`);
  }
  checkBackendArgs(q.backend, q.dir);
  const wanted = (r: HistoryRecord) =>
    (q.name === undefined || (r.name ?? r.path) === q.name) && (from === null || Date.parse(r.t) >= from);
  const backend = q.backend ?? process.env.HOSTLOCK_BACKEND;
  if (isLocal(backend)) {
    const dir = checkLockDir(q.dir);
    return { dir, from, records: readHistory(dir).filter(wanted) };
  }
  try {
    const store = storeFor(backend);
    if (!store.history) throw new Error(`the ${store.kind} store keeps no history`);
    const records = await store.history({ name: q.name, since: from ?? undefined });
    return { dir: store.describe, from, records: records.filter(wanted) };
  } finally {
    await closeStores();
  }
}

export const backendOption = {
  type: 'string',
  describe:
    'where the locks live: local (default: $HOSTLOCK_BACKEND, else lock files) or a postgresql:// or etcd:// URL',
} as const;

function who(r: HistoryRecord): string {
  return [
    r.run ? `run ${r.run}` : '',
    r.playbook ?? '',
    r.task ? `[${r.task}]` : '',
    r.host ? `host ${r.host}` : '',
    r.user ? `${r.user}@${r.controller ?? '?'} pid ${r.pid}` : '',
  ]
    .filter(Boolean)
    .join(' ');
}

export function describeRecord(r: HistoryRecord): string {
  const extra: string[] = [];
  if (r.mode === 'shared') extra.push('shared');
  if (r.token !== undefined) extra.push(`token ${r.token}`);
  if (r.waited !== undefined && r.event !== 'wait') extra.push(`waited ${r.waited.toFixed(1)}s`);
  if (r.event === 'break' && r.victim)
    extra.push(`broke pid ${r.victim.pid}${r.victim.run ? ` (run ${r.victim.run})` : ''}`);
  if (r.reason) extra.push(r.event === 'break' ? `reason: ${r.reason}` : r.reason);
  return `${r.t}  ${r.event.padEnd(8)} ${r.name ?? r.path}  ${who(r)}${extra.length ? '  ' + extra.join(', ') : ''}`;
}

interface Args {
  name?: string;
  dir?: string;
  backend?: string;
  since?: string;
  json: boolean;
}

export const historyCommand: CommandModule<object, Args> = {
  command: 'history [name]',
  describe:
    'list the history of a lock directory or server store (grants, releases, waits, timeouts, lost holds, deadlocks, breaks)',
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', describe: 'only this lock' })
      .option('dir', { type: 'string', describe: 'lock directory' })
      .option('backend', backendOption)
      .option('since', { type: 'string', describe: `only events since: ${SINCE_FORMS}` })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
  handler: async (a) => {
    const { dir, records } = await queryHistory(a);
    if (a.json) process.stdout.write(JSON.stringify({ dir, events: records }, null, 2) + '\n');
    else if (!records.length)
      process.stderr.write(
        `hostlock: no history in ${dir}${a.name !== undefined ? ` for ${a.name}` : ''}${a.since ? ` since ${a.since}` : ''}\n`,
      );
    else for (const r of records) process.stdout.write(describeRecord(r) + '\n');
    process.exitCode = 0;
  },
};
