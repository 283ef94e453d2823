// Each benchmark in bench/ runs in smoke mode (tiny sizes) and prints its
// figures and anchors, so the benchmarks cannot rot. No timing is asserted:
// that is for `make bench`, whose comparison with the baseline is checked
// here on doctored figures.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { keys, makeBaseline, readBaseline, type Baseline } from '../bench/compare';
import { ROOT, tempDir } from './rpc';

function runBench(name: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(ROOT, 'build', 'bench', `${name}.js`)], {
      env: { ...process.env, HOSTLOCK_BENCH_SMOKE: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c) => (stdout += c));
    p.stderr.on('data', (c) => (stderr += c));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function figures(stdout: string): any[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('BENCH '))
    .map((l) => JSON.parse(l.slice(6)));
}

const EXPECTED: Record<string, string[]> = {
  startup: ['1a', '1c', '1f', '1d', '1g', '1e', '1h', '1i', '1b'],
  playbook: ['2', '2b', '2b-floor', '2b-null-node', '2b-null-python'],
  'playbook-stores': ['st-pg', 'st-etcd'],
  handoff: ['3a', '3a', '3a-hot', '3b', '3b'],
  hosts200: ['4a', '4b'],
  waiters500: ['5'],
  contention: ['6a', '6b', '6c'],
  'flock-api': ['fl-a', 'fl-b'],
  'pg-store': ['pg-1', 'pg-2', 'pg-3', 'pg-4'],
  'etcd-handoff': ['etcd-a', 'etcd-b'],
};

describe('benchmarks in smoke mode', () => {
  for (const [name, goals] of Object.entries(EXPECTED)) {
    test(`${name} completes and prints its figures against their anchors`, { timeout: 300000 }, async () => {
      const r = await runBench(name);
      assert.equal(r.code, 0, `bench ${name} failed:\n${r.stderr}`);
      const rows = figures(r.stdout);
      assert.deepEqual(
        rows.map((f) => f.goal),
        goals,
      );
      for (const f of rows) {
        if (f.skipped) continue; // goal 2 without the venv
        assert.equal(f.smoke, true);
        assert.ok(Number.isFinite(f.figure) && Number.isFinite(f.anchor), `${f.goal}: ${JSON.stringify(f)}`);
        assert.equal(typeof f.met, 'boolean');
        assert.match(r.stdout, new RegExp(`goal ${f.goal}: .*anchor .*ratio`));
      }
    });
  }

  const line = (goal: string, ratio = 2, extra: object = {}) =>
    'BENCH ' +
    JSON.stringify({
      goal,
      what: 'w',
      figure: ratio,
      anchor: 1,
      unit: 'ms',
      ratio,
      target: '≤ 3×',
      met: true,
      ...extra,
    });
  const table = (input: string, env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [join(ROOT, 'build', 'bench', 'table.js')], {
      input,
      encoding: 'utf8',
      env: { ...process.env, BENCH_STRICT: '', ...env },
    });

  test('the table lists every figure', () => {
    const r = table(`${line('1a')}\nnoise\n${line('6b')}\n`, { HOSTLOCK_BENCH_BASELINE: '/nonexistent/baseline.json' });
    assert.equal(r.status, 0);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 4);
    assert.match(lines[1]!, /^1a\s+2\.000 ms\s+1\.000 ms\s+2\.00×\s+≤ 3×\s+yes/);
    assert.match(lines[3]!, /^no baseline at \/nonexistent\/baseline\.json: not compared/);
  });

  describe('against the baseline', () => {
    const t = tempDir('bench-baseline');
    after(() => t.cleanup());
    const path = join(t.dir, 'baseline.json');
    const fig = (ratio: number, spread: number, better: 'lower' | 'higher' = 'lower') => ({
      what: 'w',
      unit: better === 'higher' ? 'cycles/s' : 'ms',
      better,
      ratio,
      spread,
      runs: [ratio],
      figure: ratio,
    });
    const baseline: Baseline = {
      machine: 'test',
      measured: 'now',
      command: 'by hand',
      figures: { '1a': fig(2, 0.1), '3a p50': fig(8, 0.2), '3a p99': fig(4, 0.2), '6a': fig(0.01, 0.2, 'higher') },
    };
    writeFileSync(path, JSON.stringify(baseline));
    const env = { HOSTLOCK_BENCH_BASELINE: path };
    const p50 = { what: 'handoff p50, in-helper' };
    const p99 = { what: 'handoff p99, in-helper' };
    const cycles = { unit: 'cycles/s' };
    const flags = (out: string) => out.split('\n').filter((l) => l.startsWith('FLAG '));

    test('a figure made worse than its spread is flagged; one within it is not', () => {
      // 1a 15 % worse (spread 10 %); 3a p50 10 % worse (spread 20 %); 3a p99 and 6a as measured.
      const input = [line('1a', 2.3), line('3a', 8.8, p50), line('3a', 4, p99), line('6a', 0.01, cycles)].join('\n');
      const r = table(input, env);
      assert.equal(r.status, 0, 'a flag alone does not fail make bench');
      const f = flags(r.stdout);
      assert.equal(f.length, 1, r.stdout);
      assert.match(f[0]!, /^FLAG 1a: WORSE: ratio 2\.300× against 2\.000× ± 10 % \(\+15 %; lower is better\)/);
      assert.match(r.stdout, /: 1 worse, 0 better, 3 within their spread\n/);
      const strict = table(input, { ...env, BENCH_STRICT: '1' });
      assert.equal(strict.status, 1, 'BENCH_STRICT=1 fails on a worse figure');
    });

    test('a figure better than its spread is flagged better, and fails nothing', () => {
      // Fewer ms, and more cycles/s, are better.
      const input = [line('1a', 1.5), line('3a', 8, p50), line('3a', 4, p99), line('6a', 0.013, cycles)].join('\n');
      const r = table(input, { ...env, BENCH_STRICT: '1' });
      assert.equal(r.status, 0);
      const f = flags(r.stdout);
      assert.equal(f.length, 2, r.stdout);
      assert.match(f[0]!, /^FLAG 1a: BETTER: .*\(−25 %; lower is better\)/);
      assert.match(f[1]!, /^FLAG 6a: BETTER: .*\(\+30 %; higher is better\)/);
      assert.match(r.stdout, /: 0 worse, 2 better, 2 within their spread\n/);
    });

    test('a figure not in the baseline, and one not measured, are named', () => {
      const r = table([line('1a', 2), line('9z', 1)].join('\n'), env);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /^FLAG 9z: ratio 1\.000×, not in the baseline$/m);
      assert.match(r.stdout, /, 1 not in the baseline, 3 of the baseline not measured \(3a p50, 3a p99, 6a\)/);
    });

    test('smoke figures are not compared', () => {
      const r = table(line('1a', 9, { smoke: true }), { ...env, BENCH_STRICT: '1' });
      assert.equal(r.status, 0);
      assert.deepEqual(flags(r.stdout), []);
      assert.match(r.stdout, /smoke sizes: not compared/);
    });

    test('the baseline of several runs: median ratio, spread the largest distance from it', () => {
      const row = (goal: string, ratio: number, what = 'w') => ({
        goal,
        what,
        ratio,
        figure: ratio,
        unit: 'ms',
        target: '',
      });
      const runs = [
        [row('1a', 1.0), row('3a', 8, 'p50'), row('3a', 4, 'p99')],
        [row('1a', 1.2), row('3a', 8.2, 'p50'), row('3a', 4, 'p99')],
        [row('1a', 1.1), row('3a', 8.1, 'p50')],
      ];
      assert.deepEqual(keys(runs[0]!), ['1a', '3a p50', '3a p99']);
      const b = makeBaseline(runs, { machine: 'm', measured: 't', command: 'c' });
      assert.equal(b.figures['1a']!.ratio, 1.1);
      assert.equal(b.figures['1a']!.spread, 0.1, '0.1 / 1.1, rounded up to a whole per cent');
      assert.equal(b.figures['3a p99']!.spread, 0.05, 'no spread narrower than the floor');
      assert.deepEqual(b.figures['3a p99']!.runs, [4, 4]);
      const once = makeBaseline([[row('1a', 2)]], { machine: 'm', measured: 't', command: 'c' });
      assert.equal(once.figures['1a']!.spread, 0.3, 'one run: the wide stand-in spread');
    });

    test('the committed baseline names every figure the benchmarks print', () => {
      const committed = readBaseline(join(ROOT, 'bench', 'baseline.json'));
      const all = Object.values(EXPECTED).flatMap((goals) =>
        keys(goals.map((goal, i) => ({ goal, what: goals.indexOf(goal) === i ? 'p50' : 'p99', target: '' }))),
      );
      for (const k of all) {
        const f = committed.figures[k];
        assert.ok(f, `${k} is missing from bench/baseline.json`);
        assert.ok(f.ratio > 0 && f.spread >= 0.05 && f.runs.length >= 1, `${k}: ${JSON.stringify(f)}`);
      }
    });
  });
});
