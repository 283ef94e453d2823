// Each benchmark in bench/ runs in smoke mode (tiny sizes) and prints its
// figures and anchors, so the benchmarks cannot rot. No timing is asserted:
// that is for `make bench`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT } from './rpc';

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
  startup: ['1a', '1c', '1d', '1e', '1b'],
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

  test('the table lists every figure', async () => {
    const { spawnSync } = await import('node:child_process');
    const line = (goal: string) =>
      'BENCH ' +
      JSON.stringify({ goal, what: 'w', figure: 2, anchor: 1, unit: 'ms', ratio: 2, target: '≤ 3×', met: true });
    const r = spawnSync(process.execPath, [join(ROOT, 'build', 'bench', 'table.js')], {
      input: `${line('1a')}\nnoise\n${line('6b')}\n`,
      encoding: 'utf8',
    });
    assert.equal(r.status, 0);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[1]!, /^1a\s+2\.000 ms\s+1\.000 ms\s+2\.00×\s+≤ 3×\s+yes/);
  });
});
