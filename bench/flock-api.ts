// The lock engine's two ways of taking flock(2) on a lock file, side by side:
// fs-ext's native binding (the npm-installed helper) and flock(1) run on a
// descriptor the helper lends it (the collection's bundled helper, or any Node
// the binding was not built for). Two `serve` helpers on one lock directory,
// one of each, take turns doing uncontended `try` + `release` of one name, in
// interleaved rounds; the figure is the time per cycle.
//  - fl-a: the flock(1) helper, anchored on the fs-ext helper: what the bundled
//    helper pays per lock for needing no compiler;
//  - fl-b (info): the fs-ext helper, anchored on one Python process doing
//    (open, fcntl.flock LOCK_EX, LOCK_UN, close) cycles on one file.
import { join } from 'node:path';
import { startServe, tempDir, type Helper } from '../test/rpc';
import { median, note, report, runPython, size } from './lib';

async function perCycleMs(h: Helper, name: string, n: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const r = await h.rpc.call('try', { name });
    if (!r.acquired) throw new Error(`${name}: not acquired`);
    await h.rpc.call('release', { handle: r.handle });
  }
  return (performance.now() - t0) / n;
}

async function main(): Promise<void> {
  const n = size(300, 5);
  const rounds = size(5, 1);
  const t = tempDir('hl-bench-flock');
  const env = { HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'run') };
  const native = startServe(env);
  const child = startServe({ ...env, HOSTLOCK_FLOCK: 'flock1' });
  try {
    const apis = [(await native.rpc.call('hello', {})).flock, (await child.rpc.call('hello', {})).flock];
    if (apis[0] !== 'fs-ext' || apis[1] !== 'flock(1)') throw new Error(`helpers use ${apis.join(', ')}`);
    const viaNative: number[] = [];
    const viaChild: number[] = [];
    const py: number[] = [];
    for (let r = 0; r < rounds; r++) {
      viaNative.push(await perCycleMs(native, 'n', n));
      viaChild.push(await perCycleMs(child, 'c', n));
      const loop = runPython('fcntl_anchor.py', ['loop', join(t.dir, 'py.lock'), '1', String(n)]);
      py.push(1000 / loop.cycles_per_s);
    }
    note(
      `ms per try+release: fs-ext ${viaNative.map((x) => x.toFixed(3)).join(' ')}; ` +
        `flock(1) ${viaChild.map((x) => x.toFixed(3)).join(' ')}; python ${py.map((x) => x.toFixed(3)).join(' ')}`,
    );
    const a = median(viaChild);
    const b = median(viaNative);
    report({
      goal: 'fl-a',
      what: `uncontended try + release through a serve helper taking flock(2) with flock(1), ${n} cycles`,
      figure: a,
      unit: 'ms',
      anchor: b,
      anchorWhat: 'the same through a helper with the fs-ext binding',
      target: 'information',
      met: true,
      info: true,
    });
    report({
      goal: 'fl-b',
      what: `uncontended try + release through a serve helper with fs-ext, ${n} cycles`,
      figure: b,
      unit: 'ms',
      anchor: median(py),
      anchorWhat: 'one Python process, open + fcntl.flock EX + UN + close',
      target: 'information',
      met: true,
      info: true,
    });
  } finally {
    await native.close();
    await child.close();
    t.cleanup();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
