// The clients of one simulated controller, each a loop until the campaign
// stops: a `hostlock serve` helper spoken to over stdio, a run agent spoken to
// over its socket (run-scope holds), `hostlock run` around a section process
// that reads its token from HOSTLOCK_TOKEN, and ansible-playbook (playbook.ts).
// Each takes exclusive, shared and slot locks on a few names, does a fenced
// section while holding (section.ts), releases, and journals how the release
// came out as it saw it: `released` (success), `lost` (it was told), `error`,
// `killed`.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { startAgent } from '../agents';
import { journalAppend } from '../journal';
import { CLI, RpcClient, type RpcMessage } from '../rpc';
import type { Fence } from './fence';
import type { Rng } from './rng';
import { fencedSection } from './section';
import type { Controller } from './world';

export const NAMES: { name: string; slots?: number }[] = [{ name: 'x1' }, { name: 'x2' }, { name: 's1', slots: 2 }];
export const SLOTS = new Map(NAMES.filter((n) => n.slots).map((n) => [n.name, n.slots!]));
const SECTION_JS = join(__dirname, 'section.js');
export const ACQUIRE_TIMEOUT = 20;

export type VictimKind = 'helper' | 'agent' | 'run' | 'playbook';

// The processes the nemesis may kill or stop, as they come and go.
export class Victims {
  private readonly live = new Map<number, { kind: VictimKind; proc: ChildProcess }>();
  add(kind: VictimKind, proc: ChildProcess): void {
    if (proc.pid === undefined) return;
    const pid = proc.pid;
    this.live.set(pid, { kind, proc });
    proc.once('exit', () => this.live.delete(pid));
  }
  list(): { kind: VictimKind; pid: number }[] {
    return [...this.live.entries()].map(([pid, v]) => ({ kind: v.kind, pid }));
  }
  count(): number {
    return this.live.size;
  }
}

export interface ClientContext {
  journal: string;
  fence: Fence;
  fenceSpec: string;
  victims: Victims;
  stopping: () => boolean;
}

interface Pick {
  name: string;
  shared: boolean;
  slots?: number;
  holdMs: number;
}

export function choose(r: Rng): Pick {
  const n = r.pick(NAMES);
  return { name: n.name, shared: !n.slots && r.next() < 0.3, slots: n.slots, holdMs: r.int(20, 250) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms))),
  ]);
}

// A request for a lock as its client makes it, and its end without a grant.
export const ask = (ctx: ClientContext, id: string, client: string, name: string, ev: 'ask' | 'giveup' = 'ask') =>
  journalAppend(ctx.journal, { ev, id, pid: process.pid, client, lock_name: name });

// A failed request, said once per client and message (faults make many).
const said = new Set<string>();
function failed(client: string, e: unknown): void {
  const m = `${client}: acquire failed: ${(e as Error).message ?? String(e)}`.slice(0, 300);
  if (said.has(m)) return;
  said.add(m);
  process.stderr.write(`[chaos] ${m}\n`);
}

// The section process a command-running client runs under its lock (section.ts's main).
export function sectionArgv(ctx: ClientContext, id: string, client: string, p: Pick): string[] {
  const mode = p.shared ? 'shared' : 'exclusive';
  return [process.execPath, SECTION_JS, ctx.fenceSpec, ctx.journal, id, client, p.name, mode, String(p.holdMs)];
}

export const done = (ctx: ClientContext, id: string, client: string, name: string, outcome: string) =>
  journalAppend(ctx.journal, { ev: 'done', id, pid: process.pid, client, lock_name: name, outcome });

function lockParams(ctl: Controller, p: Pick): Record<string, unknown> {
  return {
    name: p.name,
    ...(ctl.backend ? { backend: ctl.backend } : {}),
    ...(p.shared ? { shared: true } : {}),
    ...(p.slots ? { slots: p.slots } : {}),
  };
}

// A section by a client that holds through a connection: the section, then the release.
async function section(
  ctx: ClientContext,
  client: string,
  id: string,
  p: Pick,
  r: { token: number; slot?: number },
  release: () => Promise<string>,
): Promise<void> {
  const mode = p.shared ? 'shared' : 'exclusive';
  await fencedSection(ctx.fence, ctx.journal, {
    id,
    client,
    name: p.name,
    mode,
    token: r.token,
    slot: r.slot,
    holdMs: p.holdMs,
  });
  done(ctx, id, client, p.name, await release().catch(() => 'error'));
}

export async function serveLoop(ctl: Controller, client: string, r: Rng, ctx: ClientContext): Promise<void> {
  let n = 0;
  while (!ctx.stopping()) {
    const argv = [...ctl.wrap, process.execPath, CLI, 'serve'];
    const proc = spawn(argv[0]!, argv.slice(1), {
      env: { ...process.env, ...ctl.env },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    proc.stdin.on('error', () => undefined);
    ctx.victims.add('helper', proc);
    const exited = new Promise<void>((res) => proc.once('exit', () => res()));
    let gone = false;
    void exited.then(() => (gone = true));
    const rpc = new RpcClient(proc.stdin, proc.stdout);
    const told = new Set<string>();
    rpc.onNotification = (m: RpcMessage) => {
      if (m.method === 'lost' && m.params?.handle) told.add(String(m.params.handle));
    };
    try {
      while (!ctx.stopping() && !gone) {
        const p = choose(r);
        const id = `${client}-${n++}`;
        ask(ctx, id, client, p.name);
        const got = await within(
          rpc.call('acquire', { ...lockParams(ctl, p), timeout: ACQUIRE_TIMEOUT, owner: { task: 'chaos' } }),
          (ACQUIRE_TIMEOUT + 30) * 1000,
          'acquire',
        ).catch(async (e: unknown) => {
          failed(client, e);
          await sleep(200);
          return undefined;
        });
        if (!got?.acquired) {
          ask(ctx, id, client, p.name, 'giveup');
          continue;
        }
        await section(ctx, client, id, p, got, async () => {
          const rel = await within(rpc.call('release', { handle: got.handle }), 60_000, 'release');
          return told.has(String(got.handle)) || !rel.released ? 'lost' : 'released';
        });
      }
    } finally {
      proc.stdin.end();
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
  }
}

export async function agentLoop(ctl: Controller, client: string, r: Rng, ctx: ClientContext): Promise<void> {
  let n = 0;
  while (!ctx.stopping()) {
    const agent = await startAgent(ctl.env, 'ignore', ctl.wrap).catch(async () => {
      await sleep(500);
      return undefined;
    });
    if (!agent) continue;
    ctx.victims.add('agent', agent.agent);
    let gone = false;
    agent.agent.once('exit', () => (gone = true));
    try {
      const { sock, rpc } = await agent.connect();
      sock.on('error', () => undefined);
      try {
        while (!ctx.stopping() && !gone) {
          const p = choose(r);
          const id = `${client}-${n++}`;
          const member = `m${n % 3}`;
          const params = { ...lockParams(ctl, p), scope: 'run', member };
          const which = { name: p.name, ...(ctl.backend ? { backend: ctl.backend } : {}), scope: 'run', member };
          ask(ctx, id, client, p.name);
          const got = await within(
            rpc.call('acquire', { ...params, timeout: ACQUIRE_TIMEOUT, owner: { task: 'chaos', host: member } }),
            (ACQUIRE_TIMEOUT + 30) * 1000,
            'acquire',
          ).catch(async (e: unknown) => {
            failed(client, e);
            await sleep(200);
            return undefined;
          });
          if (!got?.acquired) {
            ask(ctx, id, client, p.name, 'giveup');
            continue;
          }
          await section(ctx, client, id, p, got, async () => {
            try {
              const rel = await within(rpc.call('release', which), 60_000, 'release');
              return rel.released ? 'released' : 'lost';
            } catch (e) {
              return (e as { code?: number }).code === -32003 ? 'lost' : 'error';
            }
          });
        }
      } finally {
        sock.destroy();
      }
    } catch {
      /* the agent died under us: start another */
    } finally {
      await agent.stop();
    }
  }
}

export async function runLoop(ctl: Controller, client: string, r: Rng, ctx: ClientContext): Promise<void> {
  let n = 0;
  while (!ctx.stopping()) {
    const p = choose(r);
    const id = `${client}-${n++}`;
    const argv = [
      ...ctl.wrap,
      process.execPath,
      CLI,
      'run',
      p.name,
      ...(ctl.backend ? ['--backend', ctl.backend] : []),
      ...(p.shared ? ['--shared'] : []),
      ...(p.slots ? ['--slots', String(p.slots)] : []),
      '--timeout',
      String(ACQUIRE_TIMEOUT),
      '--quiet',
      '--lost-grace',
      '1',
      '--',
      ...sectionArgv(ctx, id, client, p),
    ];
    ask(ctx, id, client, p.name);
    const proc = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...ctl.env }, stdio: 'ignore' });
    ctx.victims.add('run', proc);
    const [code, signal] = await new Promise<[number | null, string | null]>((res) =>
      proc.once('exit', (c, s) => res([c, s])),
    );
    // Only a run that granted journals a section; the outcome of one that did not is not looked at.
    done(ctx, id, client, p.name, signal ? 'killed' : code === 0 ? 'released' : code === 75 ? 'lost' : 'error');
    if (code !== 0) await sleep(100);
  }
}
