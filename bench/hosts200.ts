// Goal 4: 200 hosts of one run take their per-host locks through one agent,
// each from its own short connection as Ansible workers do (connect, hello,
// run-scope acquire, disconnect), all at once. Figures: time until all are
// held, and total RSS of the hostlock processes. Anchors: one Python process
// taking the same 200 locks with fcntl.flock; bare Node's peak RSS.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from '../test/rpc';
import {
  childrenOf,
  connectSocket,
  median,
  note,
  peakRssKiB,
  report,
  rssKiB,
  runPython,
  size,
  startAgent,
} from './lib';

async function worker(socket: string, host: string, run: string): Promise<void> {
  const c = await connectSocket(socket);
  try {
    await c.rpc.call('hello', { client: 'bench', member: host });
    const r = await c.rpc.call('acquire', {
      name: host,
      scope: 'run',
      member: host,
      notify: 5,
      owner: { pid: process.pid, host, run, playbook: 'bench.yml', play: 'bench', task: 'lock host', user: 'bench' },
    });
    if (!r.acquired) throw new Error(`${host} not acquired`);
  } finally {
    c.sock.end();
  }
}

async function main(): Promise<void> {
  const hosts = size(200, 5);
  const rounds = size(3, 1);
  const times: number[] = [];
  const anchors: number[] = [];
  let totalKiB = 0;
  for (let round = 0; round < rounds; round++) {
    const t = tempDir('hl-bench-200');
    const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'run') };
    const agent = await startAgent(join(t.dir, 'run'), env);
    try {
      const names = Array.from({ length: hosts }, (_, i) => `host-${i}`);
      const t0 = performance.now();
      await Promise.all(names.map((h) => worker(agent.socket, h, `bench-${round}`)));
      const elapsed = performance.now() - t0;
      times.push(elapsed);
      // Every lock is held by the run, as the kernel sees it.
      const c = await connectSocket(agent.socket);
      const list = await c.rpc.call('list', {});
      c.sock.destroy();
      const held = list.locks.filter((l: { held: boolean }) => l.held).length;
      if (held !== hosts) throw new Error(`only ${held} of ${hosts} locks held`);
      const kids = childrenOf(agent.proc.pid!);
      const kib = (peakRssKiB(agent.proc.pid!) ?? NaN) + kids.reduce((s, p) => s + (rssKiB(p) ?? 0), 0);
      totalKiB = Math.max(totalKiB, kib);
      note(
        `round ${round}: ${hosts} hosts held after ${elapsed.toFixed(0)} ms; agent peak RSS ${(kib / 1024).toFixed(1)} MiB, ${kids.length} child process(es)`,
      );
    } finally {
      await agent.stop();
      t.cleanup();
    }
    const a = tempDir('hl-bench-200py');
    try {
      anchors.push(runPython('fcntl_anchor.py', ['many', a.dir, String(hosts)]).ms);
    } finally {
      a.cleanup();
    }
  }
  const ms = median(times);
  report({
    goal: '4a',
    what: `${hosts} hosts' run-scope acquires via 1 agent, ${hosts} connections (median of ${rounds})`,
    figure: ms,
    unit: 'ms',
    anchor: median(anchors),
    anchorWhat: `one Python process fcntl-locking the same ${hosts} files`,
    target: '≤ 2000 ms',
    met: ms <= 2000,
  });
  const bare = spawnSync(
    process.execPath,
    ['-e', "process.stdout.write(/VmHWM:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1])"],
    { encoding: 'utf8' },
  );
  const mib = totalKiB / 1024;
  report({
    goal: '4b',
    what: 'total RSS of hostlock processes (agent peak + children)',
    figure: mib,
    unit: 'MiB',
    anchor: Number(bare.stdout) / 1024,
    anchorWhat: 'bare Node peak RSS',
    target: '≤ 100 MiB',
    met: mib <= 100,
  });
}

main().catch((err) => {
  process.stderr.write(`hosts200 benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
