// etcd store handoff: two processes take turns on one lock on a 3-member
// cluster; the handoff is the time from the holder's release to the other
// process's grant (p50). Anchor: etcd's own lock recipe, `etcdctl lock`,
// between two processes on the same cluster (its command prints the times,
// so the anchor also pays the start of a bash; see docs/ETCD.md).
// Also the cost of loading the store module against bare Node (`node -e 0`).
// A private cluster is started (test/servers/etcd.ts) unless HOSTLOCK_TEST_ETCD names one.
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { etcdForTests } from '../test/servers/etcd';
import { median, note, quantile, report, size, waitExit } from './lib';

const HOLD_MS = 100; // long enough that the other side is surely queued

interface Mark {
  kind: 'G' | 'R';
  at: number;
  pid: string;
}

function handoffs(marks: Mark[]): number[] {
  const sorted = [...marks].sort((a, b) => a.at - b.at);
  const out: number[] = [];
  let prev: Mark | undefined;
  for (const next of sorted) {
    if (prev?.kind === 'R' && next.kind === 'G' && prev.pid !== next.pid) out.push(next.at - prev.at);
    prev = next;
  }
  return out;
}

function parse(text: string): Mark[] {
  return text
    .split('\n')
    .filter((l) => /^[GR] /.test(l))
    .map((l) => {
      const [kind, at, pid = ''] = l.split(' ');
      return { kind: kind as 'G' | 'R', at: Number(at) * 1000, pid };
    });
}

async function pair(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Mark[]> {
  const outs = ['', ''];
  const procs = [0, 1].map((i) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    p.stdout.on('data', (c) => (outs[i] += c));
    return p;
  });
  const codes = await Promise.all(procs.map((p) => waitExit(p)));
  if (codes.some((c) => c !== 0)) throw new Error(`${cmd} exited ${codes.join(', ')}`);
  return parse(outs.join('\n'));
}

function loadMs(code: string): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['-e', code], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`node -e ${code} failed`);
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const rounds = size(30, 3);
  const cluster = await etcdForTests();
  try {
    const prefix = `bench-${process.pid}/`;
    const url = `${cluster.url}?prefix=${prefix}`;
    note(`etcd handoff: 2 processes x ${rounds} rounds, hold ${HOLD_MS} ms`);
    const ours = handoffs(
      await pair(process.execPath, [join(__dirname, 'etcd-peer.js'), url, String(rounds), String(HOLD_MS)]),
    );
    // etcdctl's command prints the times from inside its lock (bash's EPOCHREALTIME).
    const script =
      `for ((i=0; i<${rounds}; i++)); do ETCDCTL_API=3 etcdctl --endpoints=${cluster.endpoints.join(',')} lock ${prefix}anchor -- ` +
      `bash -c 'echo G $EPOCHREALTIME $PPID; sleep ${HOLD_MS / 1000}; echo R $EPOCHREALTIME $PPID'; done`;
    const anchor = handoffs(await pair('bash', ['-c', script]));
    if (!ours.length || !anchor.length) throw new Error('no handoff observed');
    const p50 = median(ours);
    const a50 = median(anchor);
    note(
      `ours p99 ${quantile(ours, 0.99).toFixed(2)} ms over ${ours.length}; etcdctl p99 ${quantile(anchor, 0.99).toFixed(2)} ms over ${anchor.length}`,
    );
    report({
      goal: 'etcd-a',
      what: 'etcd store handoff p50 between two processes',
      figure: p50,
      anchor: a50,
      anchorWhat: 'etcdctl lock handoff p50',
      unit: 'ms',
      target: '≤ 1.5×',
      met: p50 <= 1.5 * a50,
    });
    const n = size(15, 3);
    const bare: number[] = [];
    const loaded: number[] = [];
    const mod = JSON.stringify(join(__dirname, '..', 'src', 'stores', 'etcd', 'store.js'));
    for (let i = 0; i < n; i++) {
      bare.push(loadMs('0'));
      loaded.push(loadMs(`require(${mod})`));
    }
    report({
      goal: 'etcd-b',
      what: 'node start with the etcd store loaded',
      figure: median(loaded),
      anchor: median(bare),
      anchorWhat: 'node -e 0',
      unit: 'ms',
      target: '≤ 1.5×',
      met: median(loaded) <= 1.5 * median(bare),
    });
  } finally {
    await cluster.stop();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`etcd-handoff: ${e.stack ?? String(e)}\n`);
  process.exit(1);
});
