// `hostlock history [NAME]`: the journal of a lock directory (history.ts),
// oldest first, as lines or JSON.
import type { Argv, CommandModule } from 'yargs';
import { readHistory, type HistoryRecord } from '../history';
import { checkLockDir } from '../names';

// "90s", "15m", "2h", "3d" ago, or a date; null when the text is neither.
export function parseSince(text: string, now = Date.now()): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(text.trim());
  if (m) return now - Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as 's' | 'm' | 'h' | 'd'];
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

export interface HistoryQuery {
  dir?: string;
  name?: string;
  since?: string;
}

export function queryHistory(q: HistoryQuery): { dir: string; from: number | null; records: HistoryRecord[] } {
  const dir = checkLockDir(q.dir);
  let from: number | null = null;
  if (q.since !== undefined) {
    from = parseSince(q.since);
    if (from === null)
      throw new Error(`--since ${q.since}: give a duration (90s, 15m, 2h, 3d) or a date (2026-11-26T10:00)`);
  }
  const records = readHistory(dir).filter(
    (r) => (q.name === undefined || r.name === q.name) && (from === null || Date.parse(r.t) >= from),
  );
  return { dir, from, records };
}

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
  since?: string;
  json: boolean;
}

export const historyCommand: CommandModule<object, Args> = {
  command: 'history [name]',
  describe: 'list the history of a lock directory (grants, releases, waits, timeouts, lost holds, deadlocks, breaks)',
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', describe: 'only this lock' })
      .option('dir', { type: 'string', describe: 'lock directory' })
      .option('since', { type: 'string', describe: 'only events since: 90s, 15m, 2h, 3d ago or a date' })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
  handler: (a) => {
    const { dir, records } = queryHistory(a);
    if (a.json) process.stdout.write(JSON.stringify({ dir, events: records }, null, 2) + '\n');
    else for (const r of records) process.stdout.write(describeRecord(r) + '\n');
    process.exitCode = 0;
  },
};
