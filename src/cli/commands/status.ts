// `hostlock status`: every lock of a directory, its holders, and its queue of
// waiters in order.
import type { Holder } from '../../store/types';
import { LockManager } from '../../policy/manager';
import type { Waiter } from '../../store/contract';

export function statusCommand(dir: string | undefined, json: boolean): number {
  const m = new LockManager();
  const res = m.list(dir);
  m.shutdown();
  if (json) {
    process.stdout.write(JSON.stringify(res, null, 2) + '\n');
    return 0;
  }
  const rows = res.locks.map((l) => ({
    cells: [
      l.name,
      l.slots !== undefined
        ? `${l.holders.filter((h) => h.slot !== undefined && !h.lost).length}/${l.slots} slots`
        : l.held
          ? (l.mode ?? 'held')
          : 'free',
      l.holders.map(describeHolder).join('; '),
      l.holders.find((h) => h.since)?.since ?? '',
    ],
    waiters: l.waiters,
  }));
  process.stdout.write(`lock directory ${res.dir}: ${res.locks.length} lock(s)\n`);
  if (!rows.length) return 0;
  const head = ['NAME', 'STATE', 'HOLDERS', 'SINCE'];
  const width = head.map((h, i) => Math.min(48, Math.max(h.length, ...rows.map((r) => r.cells[i]?.length ?? 0))));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 3 ? c : c.padEnd(width[i] ?? 0)))
      .join('  ')
      .trimEnd() + '\n';
  process.stdout.write(line(head));
  for (const { cells, waiters } of rows) {
    process.stdout.write(line(cells));
    for (const [n, w] of waiters.entries()) process.stdout.write(`    ${n + 1}. ${describeWaiter(w)}\n`);
  }
  return 0;
}

function who(h: Holder | Waiter): string {
  return [
    h.run ? `run ${h.run}` : '',
    h.playbook ?? '',
    h.task ? `[${h.task}]` : '',
    h.host ? `host ${h.host}` : '',
    `${h.user}@${h.controller} pid ${h.pid}`,
  ]
    .filter(Boolean)
    .join(' ');
}

export function describeHolder(h: Holder): string {
  const base = h.foreign ? `pid ${h.pid}${h.command ? ` ${h.command}` : ''} (${h.user}, not hostlock)` : who(h);
  return `${h.slot !== undefined ? `slot ${h.slot}: ` : ''}${base}${h.lost ? ' LOST' : ''}${h.stopped ? ' STOPPED' : ''}${h.run_ended ? ' (run ended: releasing when its last process exits)' : ''}`;
}

export function describeWaiter(w: Waiter): string {
  const secs = Math.max(0, (Date.now() - Date.parse(w.since)) / 1000);
  return `${who(w)} waiting ${w.mode === 'shared' ? 'shared ' : ''}since ${w.since} (${secs.toFixed(0)}s)`;
}
