// The campaign's ansible-playbook client: each run of a real `ansible-playbook`
// takes one lock with `hostlock.core.lock` (from the built collection tarball,
// installed as users install it, with its bundled helper), runs the fenced
// section as a `command` task with the grant's token, and releases. The run's
// exit tells how the release came out: 0 released; a failure saying "lock
// lost" lost (the task told its user); any other failure an error.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { collectionTarball, VENV_BIN } from '../rpc';
import { ACQUIRE_TIMEOUT, choose, done, sectionArgv, type ClientContext } from './clients';
import type { Rng } from './rng';
import type { Controller } from './world';

const PLAYBOOK = `- hosts: all
  gather_facts: false
  tasks:
    - name: Take the lock
      hostlock.core.lock:
        name: "{{ pick.name }}"
        backend: "{{ backend | default(omit, true) }}"
        shared: "{{ pick.shared }}"
        slots: "{{ pick.slots | default(omit) }}"
        timeout: ${ACQUIRE_TIMEOUT}
      register: held
    - name: The fenced section
      ansible.builtin.command:
        argv: "{{ section }}"
      environment:
        HOSTLOCK_TOKEN: "{{ held.token }}"
        HOSTLOCK_SLOT: "{{ held.slot | default(0) }}"
    - name: Let the next one in
      hostlock.core.lock:
        name: "{{ pick.name }}"
        backend: "{{ backend | default(omit, true) }}"
        state: released
`;

export interface Playbooks {
  playbook: string;
  inventory: string;
  env: NodeJS.ProcessEnv;
}

// The collection installed from its tarball into the world's own collections
// path, the playbook and a one-host local inventory.
export function preparePlaybooks(root: string): Playbooks {
  const tarball = collectionTarball();
  if (!existsSync(join(VENV_BIN, 'ansible-playbook'))) throw new Error('no ansible-playbook in .venv: run `make venv`');
  const dir = join(root, 'ansible');
  mkdirSync(dir, { recursive: true });
  const env = {
    ANSIBLE_COLLECTIONS_PATH: join(dir, 'collections'),
    ANSIBLE_HOME: join(dir, 'home'),
    ANSIBLE_LOCAL_TEMP: join(dir, 'tmp'),
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_HOST_KEY_CHECKING: 'False',
    ANSIBLE_RETRY_FILES_ENABLED: 'False',
    PATH: `${VENV_BIN}:${process.env.PATH ?? ''}`,
  };
  execFileSync(
    join(VENV_BIN, 'ansible-galaxy'),
    ['collection', 'install', '-p', env.ANSIBLE_COLLECTIONS_PATH, tarball],
    { env: { ...process.env, ...env }, stdio: 'ignore' },
  );
  const playbook = join(dir, 'section.yml');
  writeFileSync(playbook, PLAYBOOK);
  const inventory = join(dir, 'hosts');
  writeFileSync(inventory, `h1 ansible_connection=local ansible_python_interpreter=${join(VENV_BIN, 'python')}\n`);
  return { playbook, inventory, env };
}

export async function playbookLoop(
  ctl: Controller,
  client: string,
  r: Rng,
  ctx: ClientContext,
  pb: Playbooks,
): Promise<void> {
  let n = 0;
  while (!ctx.stopping()) {
    const p = choose(r);
    const id = `${client}-${n++}`;
    const vars = {
      pick: { name: p.name, shared: p.shared, ...(p.slots ? { slots: p.slots } : {}) },
      backend: ctl.backend ?? '',
      section: sectionArgv(ctx, id, client, p),
    };
    const argv = [
      ...ctl.wrap,
      join(VENV_BIN, 'ansible-playbook'),
      '-i',
      pb.inventory,
      pb.playbook,
      '-e',
      JSON.stringify(vars),
    ];
    const proc = spawn(argv[0]!, argv.slice(1), {
      env: { ...process.env, ...ctl.env, ...pb.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    ctx.victims.add('playbook', proc);
    let out = '';
    for (const s of [proc.stdout, proc.stderr])
      s.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
    const [code, signal] = await new Promise<[number | null, string | null]>((res) =>
      proc.once('close', (c, s) => res([c, s])),
    );
    const outcome = signal ? 'killed' : code === 0 ? 'released' : /lock lost/.test(out) ? 'lost' : 'error';
    done(ctx, id, client, p.name, outcome);
    if (code !== 0) await new Promise((res) => setTimeout(res, 200));
  }
}
