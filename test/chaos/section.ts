// One critical section under a lock: journal the grant, write the token to
// the fenced resource, hold, write it again, each write's verdict in the
// journal. `enter` is stamped after the first write is answered and `exit`
// before the second is sent, so two sections the resource accepted both of
// can only overlap in the journal if the lock let them in together.
import { journalAppend } from '../journal';
import type { Fence, FenceMode } from './fence';

export interface SectionSpec {
  id: string;
  client: string;
  name: string;
  mode: 'exclusive' | 'shared';
  token: number;
  slot?: number;
  holdMs: number;
}

export const sectionKey = (s: { name: string; slot?: number }) => (s.slot ? `${s.name}#${s.slot}` : s.name);

export async function fencedSection(fence: Fence, journal: string, s: SectionSpec): Promise<boolean> {
  const base = { id: s.id, pid: process.pid, client: s.client, lock_name: s.name, mode: s.mode, token: s.token };
  const extra = { key: sectionKey(s), ...(s.slot ? { slot: s.slot } : {}) };
  journalAppend(journal, { ev: 'grant', ...base, ...extra });
  const how: FenceMode = s.slot ? 'exclusive' : s.mode;
  const first = await fence.write(sectionKey(s), how, s.token);
  journalAppend(journal, { ev: 'enter', ...base, ...extra, accepted: first });
  await new Promise((r) => setTimeout(r, s.holdMs));
  const t = Number(process.hrtime.bigint());
  const second = await fence.write(sectionKey(s), how, s.token);
  journalAppend(journal, { ev: 'exit', ...base, ...extra, t, accepted: second });
  return first && second;
}

// The command `hostlock run` runs: the section with the grant's HOSTLOCK_TOKEN.
// Usage: node section.js FENCE JOURNAL ID CLIENT NAME MODE HOLD_MS (the slot from HOSTLOCK_SLOT)
async function main(argv: string[]): Promise<void> {
  const [fenceSpec, journal, id, client, name, mode, holdMs] = argv;
  const slot = Number(process.env.HOSTLOCK_SLOT ?? 0);
  if (!holdMs) throw new Error('usage: node section.js FENCE JOURNAL ID CLIENT NAME MODE HOLD_MS');
  const token = Number(process.env.HOSTLOCK_TOKEN);
  if (!Number.isInteger(token)) throw new Error('no HOSTLOCK_TOKEN: not run by hostlock run');
  const { openFence } = await import('./fence');
  const fence = openFence(fenceSpec!);
  try {
    const spec = {
      id: id!,
      client: client!,
      name: name!,
      mode: mode as 'exclusive' | 'shared',
      token,
      holdMs: Number(holdMs),
    };
    await fencedSection(fence, journal!, slot ? { ...spec, slot } : spec);
  } finally {
    await fence.close();
  }
}

if (require.main === module)
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`section: ${(e as Error).message}\n`);
    process.exit(1);
  });
