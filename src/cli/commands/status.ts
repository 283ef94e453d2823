// `hostlock status`: the locks of a lock directory or a server store, with
// their holders and their queue of waiters in order, in one layout for every
// store. Names and shell patterns pick the locks to show; `--held` leaves out
// the free ones.
import type { Waiter } from '../../store/contract';
import type { Holder } from '../../store/types';

// One lock as every store reports it.
export interface LockRow {
  name: string;
  held: boolean;
  mode?: string | null;
  holders: Holder[];
  waiters: Waiter[];
  slots?: number;
}

export interface StatusFilter {
  names: string[]; // names or shell patterns (*, ?, [...]); none: every lock
  held: boolean; // only locks that are held or waited for
}

const PATTERN = /[*?[]/;

export function isPattern(s: string): boolean {
  return PATTERN.test(s);
}

// A shell pattern as a regular expression over the whole name: `*` any run of
// characters, `?` one, `[...]` a class (`[!...]` negated); anything else literal.
export function patternRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        const body = pattern.slice(i + 1, end);
        const neg = body.startsWith('!') || body.startsWith('^');
        re += `[${neg ? '^' : ''}${(neg ? body.slice(1) : body).replace(/[\\\]^]/g, '\\$&')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

// The rows a filter keeps, in the store's order; a plain name that matches no
// lock is shown free (nobody has locked it yet, or its lock file was cleared).
export function selectRows(rows: LockRow[], f: StatusFilter): LockRow[] {
  let kept = rows;
  if (f.names.length) {
    const tests = f.names.map((n) => (isPattern(n) ? patternRegExp(n) : null));
    kept = rows.filter((r) => f.names.some((n, i) => (tests[i] ? tests[i].test(r.name) : r.name === n)));
    const present = new Set(rows.map((r) => r.name));
    for (const n of f.names)
      if (!isPattern(n) && !present.has(n)) kept.push({ name: n, held: false, holders: [], waiters: [] });
  }
  if (f.held) kept = kept.filter((r) => r.held || r.waiters.length > 0);
  return kept;
}

function stateOf(l: LockRow): string {
  if (l.slots !== undefined)
    return `${l.holders.filter((h) => h.slot !== undefined && !h.lost).length}/${l.slots} slots`;
  return l.held ? (l.mode ?? 'held') : 'free';
}

// `where` names the directory or the store; `total` is how many locks it has.
export function printStatus(where: string, total: number, rows: LockRow[], f: StatusFilter): void {
  const held = rows.filter((r) => r.held).length;
  const shown = f.names.length || f.held ? `, ${rows.length} shown` : '';
  process.stdout.write(`${where}: ${total} lock(s)${shown}, ${held} held\n`);
  if (!rows.length) return;
  const cells = rows.map((l) => [
    l.name,
    stateOf(l),
    l.holders.map(holderCell).join('; '),
    l.holders.find((h) => h.since)?.since ?? '',
  ]);
  const head = ['NAME', 'STATE', 'HOLDERS', 'SINCE'];
  const width = head.map((h, i) => Math.min(48, Math.max(h.length, ...cells.map((c) => c[i]?.length ?? 0))));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 3 ? c : c.padEnd(width[i] ?? 0)))
      .join('  ')
      .trimEnd() + '\n';
  process.stdout.write(line(head));
  rows.forEach((l, i) => {
    process.stdout.write(line(cells[i]!));
    for (const [n, w] of l.waiters.entries()) process.stdout.write(`    ${n + 1}. ${describeWaiter(w)}\n`);
  });
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
  return (
    `${h.slot !== undefined ? `slot ${h.slot}: ` : ''}${base}${h.lost ? ' LOST' : ''}${h.stopped ? ' STOPPED' : ''}` +
    `${h.run_ended ? ' (run ended: releasing when its last process exits)' : ''}`
  );
}

// A holder in the status table: with its fencing token, which the history and
// the fenced resource name too.
function holderCell(h: Holder): string {
  return `${describeHolder(h)}${h.token !== undefined && !h.foreign ? ` token ${h.token}` : ''}`;
}

export function describeWaiter(w: Waiter): string {
  const secs = Math.max(0, (Date.now() - Date.parse(w.since)) / 1000);
  return `${who(w)} waiting ${w.mode === 'shared' ? 'shared ' : ''}since ${w.since} (${secs.toFixed(0)}s)`;
}
