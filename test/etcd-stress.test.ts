// Mutual exclusion on the etcd store between two simulated controllers: runs
// are separate processes (one store object, so one lease, each) named after
// controller A or B, doing non-atomic read-modify-writes of one counter file
// under lock "ctr" and appending to an independent journal (see
// fixtures/etcd-worker.ts). Some runs SIGKILL themselves while holding: their
// lease must free the lock within TTL + 1 s, nobody may overlap, and the
// grants' tokens must strictly increase in journal order.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { EtcdStore } from '../src/stores/etcd/store';
import { checkJournal, parseJournal } from './journal';
import { tempDir, until } from './rpc';
import { etcdForTests, type EtcdCluster } from './servers/etcd';

const WORKER_JS = join(__dirname, 'fixtures', 'etcd-worker.js');
const TTL = 2;
const LONG = process.env.HOSTLOCK_STRESS === 'long';
const PER_CONTROLLER = LONG ? 4 : 2;
const SECTIONS = LONG ? 60 : 15;

let cluster: EtcdCluster;
let seq = 0;
const urlFor = (tag: string) =>
  `${cluster.url}?ttl=${TTL}&prefix=${encodeURIComponent(`t${process.pid}-${tag}-${++seq}/`)}`;

function worker(args: string[]): ChildProcess {
  return spawn(process.execPath, [WORKER_JS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function lines(child: ChildProcess): { next: (re: RegExp, timeoutMs: number) => Promise<string>; err: () => string } {
  let out = '';
  let err = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (err += c));
  return {
    err: () => err,
    async next(re, timeoutMs) {
      await until(() => re.test(out), timeoutMs);
      return re.exec(out)![0];
    },
  };
}

const exit = (c: ChildProcess) =>
  new Promise<[number | null, string | null]>((r) => {
    if (c.exitCode !== null || c.signalCode !== null) r([c.exitCode, c.signalCode]);
    else c.once('exit', (code, sig) => r([code, sig]));
  });

before(async () => {
  cluster = await etcdForTests();
});
after(async () => {
  await cluster?.stop();
});

describe('etcd store: two controllers, one counter', { timeout: 240_000 }, () => {
  const running = new Set<ChildProcess>();
  after(() => {
    for (const c of running) c.kill('SIGKILL');
  });

  async function stress(killP: number, sharedP: number) {
    const t = tempDir('etcd-stress');
    const counter = join(t.dir, 'counter');
    const journal = join(t.dir, 'journal');
    writeFileSync(counter, '0');
    writeFileSync(journal, '');
    const url = urlFor('stress');
    const attempted = { n: 0 };
    const slot = async (controller: string) => {
      let left = SECTIONS;
      while (left > 0) {
        const child = worker([
          'stress',
          url,
          controller,
          counter,
          journal,
          String(left),
          String(killP),
          String(sharedP),
        ]);
        running.add(child);
        let done = 0;
        let err = '';
        child.stdout!.on('data', (c: Buffer) => (done += c.toString().split('.').length - 1));
        child.stderr!.on('data', (c) => (err += c));
        const [code, signal] = await exit(child);
        running.delete(child);
        if (signal === 'SIGKILL') {
          left -= done + 1;
          attempted.n += done + 1;
        } else {
          assert.equal(code, 0, `worker on controller ${controller} failed (${signal ?? code}): ${err}`);
          attempted.n += left;
          left = 0;
        }
      }
    };
    try {
      const started = performance.now();
      await Promise.all(
        ['A', 'B'].flatMap((ctl) => Array.from({ length: PER_CONTROLLER }, () => slot(`controller-${ctl}`))),
      );
      const seconds = (performance.now() - started) / 1000;
      const text = readFileSync(journal, 'utf8');
      const verdict = checkJournal(text, Number(readFileSync(counter, 'utf8')));
      const tokens = parseJournal(text)
        .filter((e) => e.ev === 'enter' && e.mode === 'exclusive')
        .map((e) => Number(e.token));
      return { ...verdict, tokens, attempted: attempted.n, seconds };
    } finally {
      t.cleanup();
    }
  }

  test('no overlap, no lost update, tokens strictly increase in grant order', async () => {
    const r = await stress(0, 0.25);
    assert.equal(r.completed + r.readSections, 2 * PER_CONTROLLER * SECTIONS);
    assert.ok(r.completed > 0 && r.readSections > 0, JSON.stringify(r));
    for (let i = 1; i < r.tokens.length; i++) {
      assert.ok(r.tokens[i]! > r.tokens[i - 1]!, `token ${r.tokens[i]} after ${r.tokens[i - 1]} (grant ${i})`);
    }
    process.stderr.write(
      `# etcd stress: ${r.completed} writes, ${r.readSections} reads in ${r.seconds.toFixed(1)} s\n`,
    );
  });

  test(`with random SIGKILLs of holders: no overlap, each kill frees the lock within TTL + 1 s`, async () => {
    const r = await stress(0.15, 0.25);
    assert.ok(r.kills > 0, `nothing was killed (${r.attempted} sections)`);
    const done = r.completed + r.readSections;
    assert.ok(done <= r.attempted && done >= r.attempted - r.kills, JSON.stringify(r));
    for (let i = 1; i < r.tokens.length; i++) {
      assert.ok(r.tokens[i]! > r.tokens[i - 1]!, `token ${r.tokens[i]} after ${r.tokens[i - 1]} (grant ${i})`);
    }
    const worst = Math.max(0, ...r.killLatenciesMs);
    process.stderr.write(
      `# etcd stress+kill: ${r.completed}/${r.attempted} sections, ${r.kills} kills, release after kill: ` +
        `max ${worst.toFixed(0)} ms over ${r.killLatenciesMs.length} measured, ${r.seconds.toFixed(1)} s\n`,
    );
    assert.ok(worst < TTL * 1000 + 1000, `a kill took ${worst.toFixed(0)} ms to free the lock (TTL ${TTL} s)`);
  });

  test("a SIGKILLed holder's waiter on the other controller gets the lock within TTL + 1 s", async () => {
    const url = urlFor('handoff');
    const holder = worker(['hold', url, 'controller-A', 'web1']);
    running.add(holder);
    const h = lines(holder);
    const held = await h.next(/held \d+ \d+/, 10_000);
    const waiter = worker(['wait', url, 'controller-B', 'web1']);
    running.add(waiter);
    const w = lines(waiter);
    const observer = new EtcdStore(url);
    try {
      await until(async () => (await observer.status({ id: 'web1' })).waiters.length === 1, 10_000, 50);
      const st = await observer.status({ id: 'web1' });
      assert.equal(st.holders[0]?.controller, 'controller-A');
      assert.equal(st.waiters[0]?.controller, 'controller-B');
      const killedAt = Date.now();
      holder.kill('SIGKILL');
      const got = await w.next(/held \d+ \d+/, (TTL + 5) * 1000);
      const [, token, at] = got.split(' ').map(Number);
      assert.ok(token !== undefined && at !== undefined, got);
      const latency = at - killedAt;
      process.stderr.write(`# etcd: waiter on the other controller got the lock ${latency} ms after the kill\n`);
      assert.ok(latency <= TTL * 1000 + 1000, `took ${latency} ms (TTL ${TTL} s): ${w.err()}`);
      assert.ok(token > Number(held.split(' ')[1]), 'the token did not increase');
      assert.deepEqual(await exit(waiter), [0, null]);
    } finally {
      holder.kill('SIGKILL');
      waiter.kill('SIGKILL');
      await observer.close();
    }
  });
});
