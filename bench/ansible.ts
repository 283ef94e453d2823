// Playbook benchmarks' common ground: a collection tree, an inventory of local
// hosts, lock/release playbooks, and whole ansible-playbook runs timed.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT } from './lib';

export const PLAYBOOK_BIN = join(ROOT, '.venv', 'bin', 'ansible-playbook');

export function haveAnsible(): boolean {
  return existsSync(PLAYBOOK_BIN);
}

// TASKS tasks on every host, acquired and released in turn; `args` go to every task.
export function writePlaybook(path: string, action: string, tasks: number, args: Record<string, string> = {}): void {
  const lines = ['- hosts: all', '  gather_facts: false', '  tasks:'];
  for (let i = 0; i < tasks; i++) {
    const state = i % 2 === 0 ? 'acquired' : 'released';
    lines.push(`    - name: lock ${i} ${state}`, `      ${action}:`, `        state: ${state}`);
    for (const [k, v] of Object.entries(args)) lines.push(`        ${k}: ${JSON.stringify(v)}`);
  }
  writeFileSync(path, lines.join('\n') + '\n');
}

export interface Stage {
  dir: string; // playbooks and the inventory go here
  inventory: string;
  env: NodeJS.ProcessEnv;
  cleanup(): void;
}

// A directory per run under bench/out (gitignored), so concurrent runs do not
// collide; the runtime dir stays short for the agent's socket path.
export function stage(name: string, hosts: number): Stage {
  const dir = join(ROOT, 'bench', 'out', `${name}-${process.pid}`);
  mkdirSync(join(dir, 'collections', 'ansible_collections', 'hostlock'), { recursive: true });
  const link = join(dir, 'collections', 'ansible_collections', 'hostlock', 'core');
  rmSync(link, { force: true });
  // HOSTLOCK_BENCH_COLLECTION: try a modified copy of the collection instead of ansible/.
  symlinkSync(process.env.HOSTLOCK_BENCH_COLLECTION ?? join(ROOT, 'ansible'), link);
  const inventory = join(dir, 'inventory.ini');
  writeFileSync(
    inventory,
    '[all]\n' +
      Array.from(
        { length: hosts },
        (_, i) => `host${i} ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"`,
      ).join('\n') +
      '\n',
  );
  const tmp = mkdtempSync(join(tmpdir(), 'hl-pb-'));
  mkdirSync(join(tmp, 'locks'), { mode: 0o700 });
  return {
    dir,
    inventory,
    env: {
      ...process.env,
      ANSIBLE_COLLECTIONS_PATH: join(dir, 'collections'),
      ANSIBLE_ACTION_PLUGINS: join(ROOT, 'bench', 'action_plugins'),
      ANSIBLE_RETRY_FILES_ENABLED: 'false',
      ANSIBLE_LOCALHOST_WARNING: 'false',
      ANSIBLE_NOCOLOR: '1',
      HOSTLOCK_HELPER: `${process.execPath} ${CLI}`,
      HOSTLOCK_DIR: join(tmp, 'locks'),
      HOSTLOCK_RUNTIME_DIR: join(tmp, 'run'),
    },
    cleanup: () => {
      rmSync(tmp, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// One whole ansible-playbook run: its wall time in ms; fails unless every host succeeded.
export function runPlaybook(playbook: string, s: Stage): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(PLAYBOOK_BIN, ['-i', s.inventory, playbook], { env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
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

// Subject and anchor alternate, after one warm-up each; returns every time.
export async function alternate(
  subject: () => Promise<number>,
  anchor: () => Promise<number>,
  rounds: number,
): Promise<{ subject: number[]; anchor: number[] }> {
  const a: number[] = [];
  const b: number[] = [];
  await anchor(); // warm caches (Python bytecode, page cache)
  await subject();
  for (let i = 0; i < rounds; i++) {
    if (i % 2) {
      a.push(await subject());
      b.push(await anchor());
    } else {
      b.push(await anchor());
      a.push(await subject());
    }
  }
  return { subject: a, anchor: b };
}
