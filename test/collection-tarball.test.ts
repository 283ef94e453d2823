// The collection as a new user gets it: the built tarball (`make collection`)
// installed with `ansible-galaxy collection install` into a fresh HOME, PATH
// holding nothing but the system's directories and one Node, no hostlock
// installed anywhere, no HOSTLOCK_HELPER. A playbook then locks, tries, shows
// status and releases, on the local store and on a PostgreSQL store, once for
// each Node major the README names: the collection's own helper must be what
// runs, with flock(1) standing in for the native addon it does not carry.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { collectionTarball, NODES, tempDir, VENV_BIN } from './rpc';
import { LOCK_PASSWORD, LOCK_ROLE, startPostgres, type PgServer } from './servers/postgres';

const PLAYBOOK = `
- hosts: all
  gather_facts: false
  tasks:
    - name: Lock this host
      hostlock.core.lock:
        timeout: 30
      register: taken
    - name: A second name, tried without waiting
      hostlock.core.lock:
        name: "{{ inventory_hostname }}-extra"
        state: try
      register: tried
    - name: Who holds it
      hostlock.core.lock:
        state: status
      register: shown
    - name: The helper is the collection's own, on the Node on PATH
      ansible.builtin.assert:
        that:
          - taken.acquired
          - taken.token is defined
          - tried.acquired
          - shown.holders | length == 1
    - name: Release both
      hostlock.core.lock:
        name: "{{ item }}"
        state: released
      loop: ["{{ inventory_hostname }}", "{{ inventory_hostname }}-extra"]
    - name: Nothing left held
      hostlock.core.lock:
        state: status
      register: after
    - ansible.builtin.assert:
        that: after.holders | length == 0
`;

// Runs a command as a user would, with only what `env` gives (no inherited variables).
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string) {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 240000 });
}

describe('the built collection tarball alone, on every supported Node', () => {
  let pg: PgServer;
  before(async () => {
    pg = await startPostgres();
  });
  after(async () => {
    await pg?.stop();
  });

  test('a Node older than 20 on PATH fails the first task with one clear error', () => {
    const t = tempDir('tarball-old');
    try {
      const home = join(t.dir, 'home');
      const bin = join(t.dir, 'bin');
      mkdirSync(home);
      mkdirSync(bin);
      writeFileSync(join(bin, 'node'), '#!/bin/sh\necho v18.19.0\n', { mode: 0o755 });
      const env: NodeJS.ProcessEnv = {
        HOME: home,
        PATH: `${bin}:/usr/bin:/bin`,
        LANG: 'C.UTF-8',
        ANSIBLE_NOCOLOR: '1',
      };
      const inst = run(join(VENV_BIN, 'ansible-galaxy'), ['collection', 'install', collectionTarball()], env, t.dir);
      assert.equal(inst.status, 0, inst.stdout + inst.stderr);
      writeFileSync(join(t.dir, 'play.yml'), PLAYBOOK);
      writeFileSync(
        join(t.dir, 'hosts.ini'),
        `h1 ansible_connection=local ansible_python_interpreter=${join(VENV_BIN, 'python')}\n`,
      );
      const r = run(
        join(VENV_BIN, 'ansible-playbook'),
        ['-i', 'hosts.ini', 'play.yml', '-e', `hostlock_lock_dir=${t.dir}`],
        env,
        t.dir,
      );
      assert.notEqual(r.status, 0);
      assert.match(r.stdout, /needs Node\.js >= 20; \S+\/bin\/node is v18\.19\.0\. Install Node\.js 20 or newer/);
      assert.match(r.stdout, /dnf module enable -y nodejs:20/);
      assert.doesNotMatch(r.stdout, /Traceback/);
    } finally {
      t.cleanup();
    }
  });

  for (const [major, node] of NODES) {
    test(`Node ${major}: install from the tarball, then lock, try, status, release on the local and PostgreSQL stores`, () => {
      assert.ok(existsSync(node), `${node} is missing: run \`make nodes\` (Node ${major} from the npm registry)`);
      const t = tempDir(`tarball-${major}`);
      try {
        const home = join(t.dir, 'home');
        mkdirSync(home);
        const env: NodeJS.ProcessEnv = {
          HOME: home,
          PATH: `${dirname(node)}:/usr/bin:/bin`,
          LANG: 'C.UTF-8',
          ANSIBLE_NOCOLOR: '1',
        };
        const version = run('node', ['--version'], env, t.dir);
        assert.match(version.stdout, new RegExp(`^v${major}\\.`), 'the Node on PATH is not the one under test');
        const which = run('/bin/sh', ['-c', 'command -v hostlock || true'], env, t.dir);
        assert.equal(which.stdout.trim(), '', 'a hostlock on PATH would hide the collection helper');

        const inst = run(join(VENV_BIN, 'ansible-galaxy'), ['collection', 'install', collectionTarball()], env, t.dir);
        assert.equal(inst.status, 0, inst.stdout + inst.stderr);
        const installed = join(home, '.ansible', 'collections', 'ansible_collections', 'hostlock', 'core');
        assert.ok(existsSync(join(installed, 'helper', 'cli.js')), 'the installed collection carries no helper');
        assert.ok(!existsSync(join(installed, 'helper', 'node_modules')), 'the helper must need no node_modules');

        writeFileSync(join(t.dir, 'play.yml'), PLAYBOOK);
        const python = join(VENV_BIN, 'python');
        writeFileSync(
          join(t.dir, 'hosts.ini'),
          ['h1', 'h2'].map((h) => `${h} ansible_connection=local ansible_python_interpreter=${python}\n`).join(''),
        );

        const locks = join(t.dir, 'locks');
        mkdirSync(locks, { mode: 0o700 });
        const local = run(
          join(VENV_BIN, 'ansible-playbook'),
          ['-i', 'hosts.ini', 'play.yml', '-e', `hostlock_lock_dir=${locks}`],
          env,
          t.dir,
        );
        assert.equal(local.status, 0, `local store:\n${local.stdout}${local.stderr}`);
        assert.ok(existsSync(join(locks, 'h1.lock')), 'the local store locked nothing in its lock directory');

        // PostgreSQL, prepared by the collection's own helper; then locked by a role that may only lock.
        // Its URL names no password: that comes from the environment, as an AWX credential injects it.
        const helper = join(installed, 'helper', 'cli.js');
        const admin = pg.url('postgres', undefined, '?sslmode=disable');
        const setup = run('node', [helper, 'setup', '--backend', admin, '--grant', LOCK_ROLE], env, t.dir);
        assert.equal(setup.status, 0, setup.stdout + setup.stderr);
        const url = pg.url(LOCK_ROLE, '', '?sslmode=disable');
        assert.doesNotMatch(url, new RegExp(LOCK_PASSWORD));
        const server = run(
          join(VENV_BIN, 'ansible-playbook'),
          ['-i', 'hosts.ini', 'play.yml', '-e', `hostlock_backend=${url}`],
          { ...env, PGPASSWORD: LOCK_PASSWORD },
          t.dir,
        );
        assert.equal(server.status, 0, `PostgreSQL store:\n${server.stdout}${server.stderr}`);
        assert.doesNotMatch(server.stdout + server.stderr, new RegExp(LOCK_PASSWORD), 'a password was printed');
      } finally {
        t.cleanup();
      }
    });
  }
});
