// The nemesis: one fault at a time, chosen by the seeded generator, each
// bounded in time and healed before the next, with a quiet gap between.
// Every fault is journalled with its monotonic start and end.
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Fault } from './checker';
import type { Victims } from './clients';
import type { Rng } from './rng';
import type { World } from './world';

const now = () => Number(process.hrtime.bigint());
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function faultKinds(w: World): string[] {
  const procs = ['kill-helper', 'kill-agent', 'kill-run', 'kill-playbook', 'stop-holder'];
  if (w.store === 'flock') return [...procs, 'full-fs'];
  const net = ['cut', 'loss', 'delay'];
  if (w.store === 'postgres') return [...procs, ...net, 'pg-restart', 'pg-terminate'];
  return [...procs, ...net, 'member-kill', 'leader-kill', 'majority-down'];
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* exited meanwhile */
  }
}

const inNs = (w: World, ns: string, args: string[]) =>
  execFileSync('ip', ['netns', 'exec', ns, ...args], { stdio: 'ignore' });

async function etcdLeader(w: World): Promise<number> {
  for (const [i, e] of w.etcd!.endpoints.entries()) {
    try {
      const r = await fetch(`${e}/v3/maintenance/status`, {
        method: 'POST',
        body: '{}',
        signal: AbortSignal.timeout(1000),
      });
      const s = (await r.json()) as { header?: { member_id?: string }; leader?: string };
      if (s.leader && s.header?.member_id === s.leader) return i;
    } catch {
      /* down or busy: ask the next */
    }
  }
  return 0;
}

// Injects one fault and heals it. Returns false when it had nothing to act on.
async function inject(kind: string, w: World, victims: Victims, r: Rng): Promise<boolean> {
  const ctl = r.pick(w.controllers);
  const ns = ctl.ns?.name;
  // Longer than the store's keepalive or TTL, so a stopped or cut-off holder loses its hold.
  const past = (w.holdBound + 1.5) * 1000;
  switch (kind) {
    case 'kill-helper':
    case 'kill-agent':
    case 'kill-run':
    case 'kill-playbook': {
      const of = victims.list().filter((v) => v.kind === kind.slice(5));
      if (!of.length) return false;
      signal(r.pick(of).pid, 'SIGKILL');
      return true;
    }
    case 'stop-holder': {
      const all = victims.list();
      if (!all.length) return false;
      const v = r.pick(all);
      signal(v.pid, 'SIGSTOP');
      await sleep(w.holdBound ? past : 2000);
      signal(v.pid, 'SIGCONT');
      return true;
    }
    case 'full-fs': {
      const filler = join(w.lockDir, '.filler');
      const fd = openSync(filler, 'w');
      try {
        const chunk = Buffer.alloc(64 * 1024);
        for (;;) writeSync(fd, chunk);
      } catch {
        /* ENOSPC: full */
      } finally {
        closeSync(fd);
      }
      await sleep(r.int(1000, 3000));
      rmSync(filler, { force: true });
      return true;
    }
    case 'cut':
      ctl.ns!.cut();
      await sleep(past + r.int(0, 2000));
      ctl.ns!.restore();
      return true;
    case 'loss':
    case 'delay': {
      // No netem in this kernel: loss is an nftables rule dropping a share of
      // the packets at random, delay a tbf rate limit that queues them.
      const dev = spawnSync('ip', ['netns', 'exec', ns!, 'ip', '-o', 'link', 'show', 'type', 'veth'], {
        encoding: 'utf8',
      })
        .stdout.split(':')[1]!
        .trim()
        .replace(/@.*/, '');
      if (kind === 'loss') {
        inNs(w, ns!, ['nft', 'add', 'table', 'inet', 'chaos']);
        inNs(w, ns!, ['nft', 'add', 'chain', 'inet', 'chaos', 'out', '{ type filter hook output priority 0; }']);
        inNs(w, ns!, [
          'nft',
          'add',
          'rule',
          'inet',
          'chaos',
          'out',
          'numgen',
          'random',
          'mod',
          '100',
          '<',
          String(r.int(10, 40)),
          'drop',
        ]);
      } else {
        inNs(w, ns!, [
          'tc',
          'qdisc',
          'add',
          'dev',
          dev,
          'root',
          'tbf',
          'rate',
          '64kbit',
          'burst',
          '1600',
          'latency',
          '400ms',
        ]);
      }
      await sleep(r.int(2000, 5000));
      if (kind === 'loss') inNs(w, ns!, ['nft', 'delete', 'table', 'inet', 'chaos']);
      else inNs(w, ns!, ['tc', 'qdisc', 'del', 'dev', dev, 'root']);
      return true;
    }
    case 'pg-restart':
      w.pg!.restart();
      return true;
    case 'pg-terminate':
      await w.pg!.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid() AND random() < 0.5',
        ['hl_lock'],
      );
      return true;
    case 'member-kill':
    case 'leader-kill': {
      const i = kind === 'leader-kill' ? await etcdLeader(w) : r.int(0, 2);
      await w.etcd!.kill(i);
      await sleep(r.int(1000, 3000));
      await w.etcd!.restart(i);
      return true;
    }
    case 'majority-down': {
      const keep = r.int(0, 2);
      const down = [0, 1, 2].filter((i) => i !== keep);
      for (const i of down) await w.etcd!.kill(i);
      await sleep(r.int(2000, 4000));
      for (const i of down) await w.etcd!.restart(i);
      return true;
    }
    default:
      throw new Error(`unknown fault ${kind}`);
  }
}

export async function nemesis(w: World, victims: Victims, r: Rng, until: () => boolean): Promise<Fault[]> {
  const faults: Fault[] = [];
  const kinds = faultKinds(w);
  while (!until()) {
    await sleep(r.int(1500, 4000));
    if (until()) break;
    const kind = r.pick(kinds);
    const start = now();
    let acted = false;
    try {
      acted = await inject(kind, w, victims, r);
    } catch (e) {
      process.stderr.write(`[chaos] ${w.store}: fault ${kind} failed: ${(e as Error).message}\n`);
    }
    if (acted) faults.push({ kind, start, end: now() });
  }
  return faults;
}
