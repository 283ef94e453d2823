// The fault campaign: for each store, simulated controllers run their client
// loops while the nemesis injects faults; then every client stops, the
// checker reads the journal, the fenced resource, hostlock's history and what
// is left, and a table of figures is printed. Exit 1 on any violation.
//
// CHAOS_SEED (default 1) replays a schedule, CHAOS_DURATION seconds per store
// (default 300), CHAOS_STORES (default flock,postgres,etcd), CHAOS_PARALLEL=1
// runs the stores at once. Needs root (namespaces, a tmpfs mount).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseJournal } from '../journal';
import { CLI, lockedByOthers } from '../rpc';
import type { PgServer } from '../servers/postgres';
import { check, type HistoryRecord } from './checker';
import { agentLoop, runLoop, serveLoop, SLOTS, Victims, type ClientContext } from './clients';
import { openFence } from './fence';
import { nemesis } from './nemesis';
import { playbookLoop, preparePlaybooks } from './playbook';
import { rng } from './rng';
import { table, type StoreResult } from './table';
import { buildWorld, requireNft, startFenceServer, type StoreKind, type World } from './world';

const CONTROLLERS = 3;
const log = (m: string) => process.stderr.write(`[chaos] ${m}\n`);
const now = () => Number(process.hrtime.bigint());
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function hostlock(w: World, args: string[]): unknown {
  const r = spawnSync(process.execPath, [CLI, ...args, ...w.backendArgs, '--json'], {
    encoding: 'utf8',
    timeout: 60_000,
    maxBuffer: 512 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`hostlock ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// What is still held, queued or running once every client has stopped.
function leftovers(w: World, victims: Victims): string[] {
  const out: string[] = [];
  const list = hostlock(w, ['status']) as { locks: { name: string; holders?: unknown[]; waiters?: unknown[] }[] };
  for (const l of list.locks) {
    if (l.holders?.length) out.push(`${l.name} still held: ${JSON.stringify(l.holders)}`);
    if (l.waiters?.length) out.push(`${l.name} still queued: ${JSON.stringify(l.waiters)}`);
  }
  if (victims.count()) out.push(`${victims.count()} client processes still running: ${JSON.stringify(victims.list())}`);
  for (const c of w.controllers) {
    const dir = String(c.env.HOSTLOCK_RUNTIME_DIR);
    // A live agent holds the flock of its pid file (a killed one leaves its files, unlocked).
    const live = existsSync(dir)
      ? readdirSync(dir).filter((f) => f.endsWith('.pid') && lockedByOthers(join(dir, f)))
      : [];
    if (live.length) out.push(`${c.label}: agents still running: ${live.join(', ')}`);
  }
  return out;
}

export async function campaign(
  store: StoreKind,
  seconds: number,
  seed: number,
  serverFence: string,
): Promise<StoreResult> {
  const w = await buildWorld(store, CONTROLLERS, serverFence);
  log(`${store}: ${CONTROLLERS} controllers, ${seconds} s, seed ${seed}, in ${w.root}`);
  const journal = join(w.root, 'journal.jsonl');
  writeFileSync(journal, '');
  const fence = openFence(w.fenceSpec);
  const victims = new Victims();
  const r = rng(seed);
  const end = Date.now() + seconds * 1000;
  let stopping = false;
  const ctx: ClientContext = { journal, fence, fenceSpec: w.fenceSpec, victims, stopping: () => stopping };
  try {
    const playbooks = preparePlaybooks(w.root);
    const loops: Promise<void>[] = [];
    w.controllers.forEach((c, i) => {
      loops.push(serveLoop(c, `${c.label}-serve`, r.fork(10 + i), ctx));
      loops.push(agentLoop(c, `${c.label}-agent`, r.fork(20 + i), ctx));
      loops.push(runLoop(c, `${c.label}-run`, r.fork(30 + i), ctx));
      // One ansible-playbook loop per store: a run's Python start costs as much as a dozen sections.
      if (i === 0) loops.push(playbookLoop(c, `${c.label}-playbook`, r.fork(40 + i), ctx, playbooks));
    });
    const faults = await nemesis(w, victims, r.fork(1), () => Date.now() >= end);
    stopping = true;
    const stoppedAt = now();
    log(`${store}: ${faults.length} faults injected; stopping the clients`);
    await Promise.race([Promise.all(loops), sleep(120_000)]);
    // Holds of killed clients end within the store's bound.
    await sleep((w.holdBound + 2) * 1000);
    const left = leftovers(w, victims);
    const history = (hostlock(w, ['history']) as { events: HistoryRecord[] }).events;
    const boundS = w.holdBound + 5;
    const verdict = check({
      journal: parseJournal(readFileSync(journal, 'utf8')),
      resource: await fence.state(),
      history,
      faults,
      leftovers: left,
      slots: SLOTS,
      recoveryBoundMs: boundS * 1000,
      stoppedAt,
    });
    for (const v of verdict.violations) log(`${store}: VIOLATION ${v.kind}: ${v.detail}`);
    const counts = new Map<string, number>();
    for (const f of faults) counts.set(f.kind, (counts.get(f.kind) ?? 0) + 1);
    return { store, seconds, seed, faults: counts, boundS, verdict };
  } finally {
    stopping = true;
    await fence.close();
    if (process.env.CHAOS_KEEP === '1') log(`${store}: kept ${w.root} (CHAOS_KEEP)`);
    else await w.close();
  }
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<StoreResult[]> {
  const seed = Number(env.CHAOS_SEED ?? 1);
  const seconds = Number(env.CHAOS_DURATION ?? 300);
  const stores = (env.CHAOS_STORES ?? 'flock,postgres,etcd').split(',').map((s) => s.trim()) as StoreKind[];
  for (const s of stores)
    if (!['flock', 'postgres', 'etcd'].includes(s))
      throw new Error(`CHAOS_STORES: unknown store ${s} (flock, postgres, etcd)`);
  if (process.getuid?.() !== 0)
    throw new Error('the campaign mounts a tmpfs and simulates controllers in network namespaces: run it as root');
  if (stores.some((s) => s !== 'flock')) requireNft();
  let fenceDb: PgServer | undefined;
  let serverFence = '';
  if (stores.some((s) => s !== 'flock')) ({ pg: fenceDb, spec: serverFence } = await startFenceServer());
  try {
    const one = (s: StoreKind, i: number) => campaign(s, seconds, seed + i, serverFence);
    const results =
      env.CHAOS_PARALLEL === '1'
        ? await Promise.all(stores.map(one))
        : await stores.reduce<Promise<StoreResult[]>>(
            async (acc, s, i) => [...(await acc), await one(s, i)],
            Promise.resolve([]),
          );
    return results;
  } finally {
    await fenceDb?.stop();
  }
}

if (require.main === module) {
  main()
    .then((results) => {
      process.stdout.write(table(results) + '\n');
      const bad = results.reduce((n, r) => n + r.verdict.violations.length, 0);
      process.exit(bad ? 1 : 0);
    })
    .catch((e: unknown) => {
      process.stderr.write(`chaos: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(2);
    });
}
