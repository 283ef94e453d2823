// Shared test fixtures: real helper processes spoken to over real pipes and
// sockets. Nothing here mocks flock or the helper.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli.js');

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
  private readonly pending = new Map<string | number, (m: RpcMessage) => void>();
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
  }

  private dispatch(m: RpcMessage): void {
    if (m.method) {
      this.notifications.push(m);
      this.onNotification?.(m);
    } else if (m.id !== null && m.id !== undefined && this.pending.has(m.id)) {
      const cb = this.pending.get(m.id)!;
      this.pending.delete(m.id);
      cb(m);
    } else {
      const w = this.orphanWaiters.shift();
      if (w) w(m);
      else this.orphans.push(m);
    }
  }

  // Sends a request and resolves with the whole reply (result or error).
  raw(method: string, params?: unknown, id: string | number = ++this.nextId): Promise<RpcMessage> {
    return new Promise((res) => {
      this.pending.set(id, res);
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
  proc.stderr!.on('data', (c) => (err += c));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    proc,
    rpc: new RpcClient(proc.stdin!, proc.stdout!),
    stderr: () => err,
    exited,
    close: () => {
      proc.stdin!.end();
      return exited;
    },
  };
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
