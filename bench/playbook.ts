// Goal 2: playbook overhead. The same playbook — TASKS tasks (acquired and
// released in turn) on HOSTS local hosts — once with hostlock.core.lock
// (per-run agent over its socket) and once with a pure-Python fcntl action
// plugin (bench/action_plugins/fcntl_lock.py); whole ansible-playbook wall
// time, runs alternating, medians. Needs the venv (make venv).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, median, note, report, size } from './lib';

const PLAYBOOK_BIN = join(ROOT, '.venv', 'bin', 'ansible-playbook');

function writePlaybook(path: string, action: string, tasks: number): void {
  const lines = ['- hosts: all', '  gather_facts: false', '  tasks:'];
  for (let i = 0; i < tasks; i++) {
    const state = i % 2 === 0 ? 'acquired' : 'released';
    lines.push(`    - name: lock ${i} ${state}`, `      ${action}:`, `        state: ${state}`);
  }
  writeFileSync(path, lines.join('\n') + '\n');
}

function run(playbook: string, inventory: string, env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(PLAYBOOK_BIN, ['-i', inventory, playbook], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (out += c));
    p.on('exit', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0 || !/failed=0/.test(out))
        reject(new Error(`ansible-playbook ${playbook} failed (${code}):\n${out.slice(-3000)}`));
      else resolve(ms);
    });
  });
}

async function main(): Promise<void> {
  if (!existsSync(PLAYBOOK_BIN)) {
    note(`skipped: ${PLAYBOOK_BIN} is missing (make venv)`);
    process.stdout.write('goal 2: skipped, no ansible-playbook in .venv (run make venv)\n');
    process.stdout.write(
      'BENCH ' + JSON.stringify({ goal: '2', skipped: true, what: 'playbook overhead', target: '≤ 1.15×' }) + '\n',
    );
    return;
  }
  const tasks = size(10, 2);
  const hosts = size(4, 1);
  const rounds = size(9, 1);
  // bench/out is gitignored; one directory per run, so concurrent runs (two
  // `make test`) do not trip on each other; the runtime dir stays short for the agent's socket path.
  const out = join(ROOT, 'bench', 'out', `playbook-${process.pid}`);
  mkdirSync(join(out, 'collections', 'ansible_collections', 'hostlock'), { recursive: true });
  const link = join(out, 'collections', 'ansible_collections', 'hostlock', 'core');
  rmSync(link, { force: true });
  // HOSTLOCK_BENCH_COLLECTION: try a modified copy of the collection instead of ansible/.
  symlinkSync(process.env.HOSTLOCK_BENCH_COLLECTION ?? join(ROOT, 'ansible'), link);
  const inventory = join(out, 'inventory.ini');
  writeFileSync(
    inventory,
    '[all]\n' +
      Array.from(
        { length: hosts },
        (_, i) => `host${i} ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"`,
      ).join('\n') +
      '\n',
  );
  const withHostlock = join(out, 'hostlock.yml');
  const withFcntl = join(out, 'fcntl.yml');
  writePlaybook(withHostlock, 'hostlock.core.lock', tasks);
  writePlaybook(withFcntl, 'fcntl_lock', tasks);
  const tmp = mkdtempSync(join(tmpdir(), 'hl-pb-'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ANSIBLE_COLLECTIONS_PATH: join(out, 'collections'),
    ANSIBLE_ACTION_PLUGINS: join(ROOT, 'bench', 'action_plugins'),
    ANSIBLE_RETRY_FILES_ENABLED: 'false',
    ANSIBLE_LOCALHOST_WARNING: 'false',
    ANSIBLE_NOCOLOR: '1',
    HOSTLOCK_HELPER: `${process.execPath} ${CLI}`,
    HOSTLOCK_DIR: join(tmp, 'locks'),
    HOSTLOCK_RUNTIME_DIR: join(tmp, 'run'),
  };
  mkdirSync(join(tmp, 'locks'), { mode: 0o700 });
  const hl: number[] = [];
  const py: number[] = [];
  try {
    await run(withFcntl, inventory, env); // warm caches (Python bytecode, page cache)
    await run(withHostlock, inventory, env);
    for (let i = 0; i < rounds; i++) {
      if (i % 2) {
        hl.push(await run(withHostlock, inventory, env));
        py.push(await run(withFcntl, inventory, env));
      } else {
        py.push(await run(withFcntl, inventory, env));
        hl.push(await run(withHostlock, inventory, env));
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
  note(
    `hostlock.core.lock: ${hl.map((x) => x.toFixed(0)).join(' ')} ms; fcntl plugin: ${py.map((x) => x.toFixed(0)).join(' ')} ms`,
  );
  const a = median(hl);
  const b = median(py);
  report({
    goal: '2',
    what: `playbook ${tasks} tasks × ${hosts} hosts, hostlock.core.lock (median of ${rounds})`,
    figure: a,
    unit: 'ms',
    anchor: b,
    anchorWhat: 'same playbook, pure-Python fcntl action plugin',
    target: '≤ 1.15×',
    met: a / b <= 1.15,
  });
}

main().catch((err) => {
  process.stderr.write(`playbook benchmark failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
