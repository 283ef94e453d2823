// Bad input never hurts the helper. More than 10,000 random and mutated
// messages go to `serve` and to a run agent (two connections, each using the
// other's handles): bad JSON, wrong types, huge and negative numbers, 10 MB
// lines, invalid UTF-8, deep nesting, unknown methods. Every line that is a
// message gets exactly one reply, a result or a JSON-RPC error (id null when
// the id could not be read; blank lines get nothing), never an internal error;
// the helper stays up, its memory stays bounded, and once the holds it granted
// are released nothing is held. HOSTLOCK_FUZZ_SEED replays a run.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startAgent, type TestAgent } from './agents';
import { CLI, lockedByOthers, sleep, tempDir } from './rpc';
import { rng } from './chaos/rng';

const MAX_LINE = 1024 * 1024;
const PER_TARGET = Number(process.env.HOSTLOCK_FUZZ_COUNT ?? 5200);
const BATCH = 200;
const HEAP_MB = 32;
const SEED = Number(process.env.HOSTLOCK_FUZZ_SEED ?? Date.now() % 1e9);

// The campaign's seeded generator, with the choices the fuzzer makes.
function prng(seed: number) {
  const r = rng(seed);
  const next = () => r.next();
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
    chance: (p: number) => next() < p,
  };
}

// What the helper must answer to one line: the id it must echo (JSON text,
// 'null' when unreadable), or undefined for a blank line (no reply).
function expectedReply(line: Buffer): string | undefined {
  if (line.length > MAX_LINE) return 'null';
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(line);
  } catch {
    return 'null';
  }
  text = text.trim();
  if (!text) return undefined;
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return 'null';
  }
  if (msg && typeof msg === 'object' && !Array.isArray(msg)) {
    const id = (msg as { id?: unknown }).id;
    if (typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id))) return JSON.stringify(id);
  }
  return 'null';
}

interface Conn {
  name: string;
  write(b: Buffer): void;
  replies: Map<string, number>; // id (JSON) -> replies seen
  errors: Map<number, number>; // error code -> count
  handles: string[]; // handles granted to this connection (acquired)
  pendingHandles: string[]; // failed try / timeout handles
  bad: string[]; // protocol violations seen in replies
  notifications: number;
}

function attach(name: string, write: (b: Buffer) => void, input: NodeJS.ReadableStream): Conn {
  const c: Conn = {
    name,
    write,
    replies: new Map(),
    errors: new Map(),
    handles: [],
    pendingHandles: [],
    bad: [],
    notifications: 0,
  };
  let buf = '';
  input.setEncoding?.('utf8');
  input.on('data', (chunk: string) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let m: any;
      try {
        m = JSON.parse(line);
      } catch {
        c.bad.push(`not JSON: ${line.slice(0, 200)}`);
        continue;
      }
      if (m.method) {
        c.notifications++;
        continue;
      }
      if (m.jsonrpc !== '2.0' || !('id' in m) || 'result' in m === 'error' in m)
        c.bad.push(`not a JSON-RPC reply: ${line.slice(0, 200)}`);
      const key = JSON.stringify(m.id);
      c.replies.set(key, (c.replies.get(key) ?? 0) + 1);
      if (m.error) {
        c.errors.set(m.error.code, (c.errors.get(m.error.code) ?? 0) + 1);
        if (typeof m.error.message !== 'string' || !m.error.message)
          c.bad.push(`error without message: ${line.slice(0, 200)}`);
      } else if (m.result && typeof m.result.handle === 'string') {
        (m.result.acquired ? c.handles : c.pendingHandles).push(m.result.handle);
      }
    }
  });
  return c;
}

// Messages: plausible requests built from pools, then mutated.
function generator(rand: ReturnType<typeof prng>, dir: string) {
  const names = [
    'a',
    'b',
    'c',
    'web1',
    'db',
    '../x',
    '/etc/passwd',
    'a\u0000b',
    'é',
    '.hidden',
    'x'.repeat(4096),
    '',
    'y'.repeat(5000),
    '%2F',
  ];
  const dirs = [
    dir,
    dir,
    join(dir, 'missing'),
    '/nonexistent-hostlock-fuzz',
    'relative',
    '',
    join(dir, 'plain-file'),
    join(dir, 'ro'),
  ];
  const paths = [
    join(dir, 'p1.lock'),
    join(dir, 'link.lock'),
    '/dev/null',
    dir,
    'relative.lock',
    join(dir, 'nosuch', 'x.lock'),
    join(dir, 'p\u0000.lock'),
  ];
  const weird = [
    null,
    true,
    false,
    0,
    -1,
    -0.5,
    1.5,
    1e308,
    -1e308,
    2 ** 53 + 1,
    31536001,
    '',
    'x',
    [],
    {},
    [1, 2],
    { a: 1 },
    'z'.repeat(70000),
    { __proto__: { polluted: true } },
    '\ud800',
    'h1',
    'r1',
  ];
  const numbers = [0, 0.001, 0.01, 0.05, -1, -0, 1e308, 2 ** 53 + 1, 31536000, 31536001, 1e-300, 0.049];
  let nextId = 0;
  const target = () =>
    rand.chance(0.75)
      ? { name: rand.pick(names), ...(rand.chance(0.3) ? { dir: rand.pick(dirs) } : {}) }
      : { path: rand.pick(paths) };
  const base = (handles: string[]): Record<string, unknown> => {
    const method = rand.pick([
      'hello',
      'acquire',
      'acquire',
      'try',
      'try',
      'block',
      'release',
      'release',
      'status',
      'list',
      'nope',
      'acquire ',
      '',
    ]);
    let params: Record<string, unknown> = {};
    switch (method) {
      case 'hello':
        params = rand.chance(0.5) ? { client: 'fuzz' } : { member: rand.pick(names) };
        break;
      case 'acquire':
      case 'try':
        params = { ...target() };
        if (rand.chance(0.4)) params.shared = true;
        // Most waits end soon; the rest wait until the end of the test releases everything.
        if (method === 'acquire' && rand.chance(0.8)) params.timeout = rand.pick([0, 0.01, 0.03]);
        if (rand.chance(0.2))
          params.owner = { pid: 1 + rand.int(99999), user: 'fuzz', host: rand.pick(names).slice(0, 100) };
        if (rand.chance(0.2)) {
          params.scope = 'run';
          params.member = rand.pick(['web1', 'web2', 'db']);
        }
        if (rand.chance(0.1)) params.notify = 0.05;
        if (rand.chance(0.1)) params.prefix = 'fz';
        break;
      case 'block':
        params = {
          handle: rand.chance(0.8) && handles.length ? rand.pick(handles) : rand.pick(['h1', 'r2', 'nope', 'h99999']),
          timeout: rand.pick([0, 0.01, 0.02]),
        };
        break;
      case 'release':
        params = rand.chance(0.8)
          ? { handle: handles.length ? rand.pick(handles) : 'h1' }
          : { ...target(), scope: 'run', member: 'web1' };
        break;
      case 'status':
        params = target();
        break;
      case 'list':
        params = rand.chance(0.5) ? {} : { dir: rand.pick(dirs) };
        break;
    }
    return { jsonrpc: '2.0', id: rand.chance(0.5) ? ++nextId : `f${++nextId}`, method, params };
  };
  const mutate = (msg: Record<string, any>): unknown => {
    const m: Record<string, any> = {
      ...msg,
      params: msg.params && typeof msg.params === 'object' ? { ...msg.params } : msg.params,
    };
    switch (rand.int(12)) {
      case 0: {
        // a key of params gets a value of the wrong type
        const keys = Object.keys(m.params ?? {});
        if (keys.length) m.params[rand.pick(keys)] = rand.pick(weird);
        break;
      }
      case 1: {
        // a key goes missing
        const keys = Object.keys(m.params ?? {});
        if (keys.length) delete m.params[rand.pick(keys)];
        break;
      }
      case 2:
        m.params = rand.pick(weird);
        break;
      case 3:
        if (rand.chance(0.5)) delete m.id;
        else m.id = rand.pick(weird);
        break;
      case 4:
        m.method = rand.pick([...weird, 'rpc.discover', 'constructor', '__proto__', 'toString', 'HELLO']);
        break;
      case 5:
        if (rand.chance(0.5)) delete m.jsonrpc;
        else m.jsonrpc = rand.pick(['1.0', 2, null, '2.0 ']);
        break;
      case 6:
        return [m]; // a batch
      case 7:
        m.params = {
          ...(m.params ?? {}),
          [rand.pick(['extra', '__proto__', 'constructor', 'timeout', 'shared'])]: rand.pick(weird),
        };
        break;
      case 8:
        if (m.params && typeof m.params === 'object') m.params.timeout = rand.pick(numbers);
        break;
      case 9:
        if (m.params && typeof m.params === 'object') m.params.notify = rand.pick(numbers);
        break;
      case 10:
        m.extra = rand.pick(weird);
        break;
      default:
        if (m.params && typeof m.params === 'object')
          m.params.owner = { pid: rand.pick(numbers), user: rand.pick(weird) };
    }
    return m;
  };
  // Byte-level damage to a serialised message.
  const damage = (b: Buffer): Buffer => {
    const at = rand.int(b.length + 1);
    switch (rand.int(9)) {
      case 0:
        return b.subarray(0, at); // truncated
      case 1: {
        const c = Buffer.from(b);
        if (c.length) c[rand.int(c.length)]! ^= 1 << rand.int(8);
        return c;
      }
      case 2:
        return Buffer.concat([
          b.subarray(0, at),
          Buffer.from(rand.pick([[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80]])),
          b.subarray(at),
        ]);
      case 3:
        return Buffer.concat([b.subarray(0, at), Buffer.from([0]), b.subarray(at)]);
      case 4:
        return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), b]); // BOM
      case 5:
        return Buffer.concat([b, Buffer.from('\r')]);
      case 6:
        return Buffer.concat([b, b]); // two objects on one line
      case 7:
        return Buffer.from(
          rand.pick(['', ' ', '\t', 'null', '0', '"x"', '[]', '{}', '{"jsonrpc":"2.0"}', 'true', '{"id":1}', '\u2028']),
        );
      default:
        return Buffer.from(
          b.toString('latin1').replace(/"/g, () => (rand.chance(0.2) ? "'" : '"')),
          'latin1',
        );
    }
  };
  return (handles: string[]): Buffer => {
    const r = rand.next();
    if (r < 0.002) return Buffer.from('['.repeat(50000) + ']'.repeat(50000)); // deep nesting
    if (r < 0.004)
      return Buffer.from(
        JSON.stringify({
          jsonrpc: '2.0',
          id: `deep${++nextId}`,
          method: 'status',
          params: { name: 'a', owner: JSON.parse('{"a":'.repeat(2000) + '1' + '}'.repeat(2000)) },
        }),
      );
    const msg = base(handles);
    if (r < 0.35) return Buffer.from(JSON.stringify(msg));
    if (r < 0.8) return Buffer.from(JSON.stringify(mutate(msg)) ?? 'undefined');
    return damage(Buffer.from(JSON.stringify(rand.chance(0.5) ? msg : mutate(msg)) ?? ''));
  };
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

// Sends PER_TARGET lines over the connections in batches, each batch once the
// last has gone quiet (so later messages can use handles granted earlier).
async function fuzz(conns: Conn[], pid: number, dir: string, rand: ReturnType<typeof prng>) {
  const gen = generator(rand, dir);
  const expected = conns.map(() => new Map<string, number>());
  let sent = 0;
  let hugeSent = 0;
  let peakRss = 0;
  const send = (i: number, bytes: Buffer) => {
    const conn = conns[i]!;
    const counts = expected[i]!;
    const stream = Buffer.concat([bytes, Buffer.from('\n')]);
    // Count what the helper will see: lines split at every newline, as it splits them.
    let start = 0;
    for (let nl = stream.indexOf(0x0a); nl >= 0; nl = stream.indexOf(0x0a, start)) {
      const key = expectedReply(stream.subarray(start, nl));
      start = nl + 1;
      if (key !== undefined) counts.set(key, (counts.get(key) ?? 0) + 1);
      sent++;
    }
    conn.write(stream);
  };
  const quiet = async () => {
    let last = -1;
    for (;;) {
      const n = conns.reduce((s, c) => s + [...c.replies.values()].reduce((a, b) => a + b, 0), 0);
      if (n === last) return;
      last = n;
      await sleep(60);
    }
  };
  for (let done = 0; done < PER_TARGET; done += BATCH) {
    for (let k = 0; k < BATCH; k++) {
      const i = rand.int(conns.length);
      const conn = conns[i]!;
      // Handles of this connection and of the other one: both must be safe to send.
      const handles = [...conn.handles, ...conn.pendingHandles, ...conns[(i + 1) % conns.length]!.handles];
      send(i, gen(handles));
    }
    if (done % (PER_TARGET / 2) < BATCH && hugeSent < 2) {
      // A 10 MB line: refused once, skipped to its newline, not buffered.
      send(
        hugeSent % conns.length,
        Buffer.from(
          `{"jsonrpc":"2.0","id":"huge","method":"status","params":{"name":"${'a'.repeat(10 * 1024 * 1024)}"}}`,
        ),
      );
      hugeSent++;
    }
    await quiet();
    peakRss = Math.max(peakRss, rssKb(pid));
  }
  // Release what was granted, until every wait has ended and been answered.
  const deadline = Date.now() + 20000;
  const missing = () => conns.some((c, i) => [...expected[i]!].some(([k, n]) => (c.replies.get(k) ?? 0) < n));
  while (missing() && Date.now() < deadline) {
    conns.forEach((c, i) => {
      for (const h of c.handles.splice(0))
        send(
          i,
          Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: `rel-${h}`, method: 'release', params: { handle: h } })),
        );
    });
    await sleep(100);
  }
  conns.forEach((c, i) => {
    for (const h of c.handles.splice(0))
      send(
        i,
        Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: `rel-${h}`, method: 'release', params: { handle: h } })),
      );
  });
  await quiet();
  return { expected, sent, peakRss };
}

function verify(conns: Conn[], expected: Map<string, number>[]) {
  for (const [i, c] of conns.entries()) {
    assert.deepEqual(c.bad, [], `${c.name}: malformed replies`);
    const counts = expected[i]!;
    const diffs: string[] = [];
    for (const key of new Set([...counts.keys(), ...c.replies.keys()])) {
      const want = counts.get(key) ?? 0;
      const got = c.replies.get(key) ?? 0;
      if (want !== got) diffs.push(`${key.slice(0, 40)}: expected ${want} replies, got ${got}`);
    }
    assert.deepEqual(diffs.slice(0, 20), [], `${c.name}: replies do not match the messages`);
    assert.equal(c.errors.get(-32603) ?? 0, 0, `${c.name}: internal errors`);
  }
}

function assertNothingHeld(dir: string) {
  const held = readdirSync(dir)
    .filter((f) => f.endsWith('.lock'))
    .filter((f) => lockedByOthers(join(dir, f)));
  assert.deepEqual(held, [], 'still held after everything was released');
}

function prepare(dir: string) {
  writeFileSync(join(dir, 'plain-file'), '');
  writeFileSync(join(dir, 'target'), 'untouched');
  symlinkSync(join(dir, 'target'), join(dir, 'link.lock'));
  mkdirSync(join(dir, 'ro'), { mode: 0o500 });
}

describe(`fuzz (seed ${SEED})`, () => {
  const t = tempDir('fuzz');
  // A small heap: a leak would end the helper (and the test) instead of only growing RSS.
  const heap = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --max-old-space-size=${HEAP_MB}`.trim() };
  const env = { ...process.env, HOSTLOCK_DIR: t.dir, HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt'), ...heap };
  before(() => prepare(t.dir));
  after(() => t.cleanup());

  test(`serve: ${PER_TARGET} messages`, async () => {
    const proc: ChildProcess = spawn(process.execPath, [CLI, 'serve'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (c) => {
      if (stderr.length < 1e6) stderr += c;
    });
    proc.stdin!.on('error', () => {});
    const exited = new Promise((res) => proc.on('exit', res));
    try {
      const conn = attach('serve', (b) => proc.stdin!.write(b), proc.stdout!);
      const startRss = await (async () => {
        await sleep(300);
        return rssKb(proc.pid!);
      })();
      const r = await fuzz([conn], proc.pid!, t.dir, prng(SEED));
      assert.equal(proc.exitCode, null, 'the helper exited');
      verify([conn], r.expected);
      process.stderr.write(
        `# fuzz serve: ${r.sent} lines, RSS ${startRss} -> peak ${r.peakRss} kB, errors ${JSON.stringify([...conn.errors])}\n`,
      );
      assert.ok(r.peakRss < startRss + 150 * 1024, `memory grew from ${startRss} to ${r.peakRss} kB`);
      assert.doesNotMatch(stderr, /uncaught|unhandled/i);
      assertNothingHeld(t.dir);
      proc.stdin!.end();
      assert.equal(await exited, 0);
      assert.equal(readFileSync(join(t.dir, 'target'), 'utf8'), 'untouched', 'the symlink target was written');
    } finally {
      proc.kill('SIGKILL');
    }
  });

  test(`agent: ${PER_TARGET} messages over two connections that use each other's handles`, async () => {
    const agent: TestAgent = await startAgent({
      HOSTLOCK_DIR: t.dir,
      HOSTLOCK_RUNTIME_DIR: join(t.dir, 'rt'),
      ...heap,
    });
    try {
      const socks: Socket[] = [];
      const conns: Conn[] = [];
      for (const name of ['agent-A', 'agent-B']) {
        const { sock } = await agent.connect();
        sock.removeAllListeners('data');
        sock.on('error', () => {});
        socks.push(sock);
        conns.push(attach(name, (b) => sock.write(b), sock));
      }
      // The exact case first: B can neither release nor block on A's handle.
      {
        const a = await agent.connect();
        const b = await agent.connect();
        const held = await a.rpc.call('acquire', { name: 'mine' });
        const tried = await a.rpc.call('try', { name: 'mine' });
        for (const [method, handle] of [
          ['release', held.handle],
          ['block', tried.handle],
          ['release', tried.handle],
        ]) {
          await assert.rejects(
            b.rpc.call(method, { handle }),
            (e: any) => e.code === -32602 && /another connection/.test(e.message),
          );
        }
        assert.ok(lockedByOthers(join(t.dir, 'mine.lock')), 'another connection released it');
        a.sock.destroy();
        b.sock.destroy();
        await sleep(100);
        assert.equal(lockedByOthers(join(t.dir, 'mine.lock')), false, 'the connection closed but its lock stayed');
      }
      const pid = agent.agent.pid!;
      const startRss = rssKb(pid);
      const r = await fuzz(conns, pid, t.dir, prng(SEED + 1));
      assert.equal(agent.agent.exitCode, null, 'the agent exited');
      verify(conns, r.expected);
      const errs = conns.map((c) => JSON.stringify([...c.errors]));
      process.stderr.write(
        `# fuzz agent: ${r.sent} lines, RSS ${startRss} -> peak ${r.peakRss} kB, errors ${errs.join(' / ')}\n`,
      );
      assert.ok(r.peakRss < startRss + 150 * 1024, `memory grew from ${startRss} to ${r.peakRss} kB`);
      for (const s of socks) s.destroy();
      await sleep(200);
      assertNothingHeld(t.dir);
      assert.equal(agent.agent.exitCode, null, 'the agent exited');
    } finally {
      await agent.stop();
    }
  });
});
