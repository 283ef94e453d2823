// A controller cut off from etcd (its members behind relays that stop
// forwarding, as a partition does: no reset, only silence). Its run's hold is
// reported lost within 5/6 of the TTL after the cut, before the other
// controller's waiter is granted, and that grant comes within TTL + 1 s of
// the cut with a greater token.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { EtcdStore } from '../src/stores/etcd/store';
import { until } from './rpc';
import { blackholes, type Blackhole } from './servers/blackhole';
import { etcdForTests, type EtcdCluster } from './servers/etcd';

const WORKER_JS = join(__dirname, 'fixtures', 'etcd-worker.js');
const TTL = 2;
let cluster: EtcdCluster;
let relay: Blackhole;
const children: ChildProcess[] = [];

before(async () => {
  cluster = await etcdForTests();
  relay = await blackholes(cluster.endpoints);
});
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await relay?.close();
  await cluster?.stop();
});

function worker(args: string[]) {
  const child = spawn(process.execPath, [WORKER_JS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (err += c));
  return {
    async line(re: RegExp, timeoutMs: number): Promise<string> {
      await until(() => re.test(out), timeoutMs, 10).catch(() => {
        throw new Error(`no ${re} within ${timeoutMs} ms; stdout: ${out}; stderr: ${err}`);
      });
      return re.exec(out)![0];
    },
  };
}

test('a cut-off controller gives its hold up before the other controller is granted', { timeout: 60_000 }, async () => {
  const options = `?ttl=${TTL}&timeout_ms=300&prefix=partition-${process.pid}/`;
  const cutOff = worker(['hold', `etcd://${relay.hosts.join(',')}${options}`, 'controller-A', 'web1']);
  const held = await cutOff.line(/held \d+ \d+/, 10_000);
  const other = worker(['wait', `${cluster.url}${options}`, 'controller-B', 'web1']);
  const observer = new EtcdStore(`${cluster.url}${options}`);
  try {
    await until(async () => (await observer.status({ id: 'web1' })).waiters.length === 1, 10_000, 50);
    const cutAt = Date.now();
    relay.cut();
    const lost = await cutOff.line(/lost \d+ .*/, (TTL + 3) * 1000);
    const granted = await other.line(/held \d+ \d+/, (TTL + 3) * 1000);
    const lostAt = Number(lost.split(' ')[1]);
    const [, token, grantedAt] = granted.split(' ').map(Number);
    assert.ok(token !== undefined && grantedAt !== undefined, granted);
    process.stderr.write(
      `# etcd partition: cut-off holder gave up ${lostAt - cutAt} ms after the cut, ` +
        `the other controller was granted ${grantedAt - cutAt} ms after it\n`,
    );
    assert.match(lost, /^lost \d+ no etcd member renewed its lease/);
    assert.ok(lostAt < grantedAt, `granted at ${grantedAt}, before the cut-off holder gave up at ${lostAt}`);
    // It gives up 1/6 TTL before the lease could expire, counted from its last
    // renewal, which came before the cut: so within 5/6 TTL of the cut.
    assert.ok(lostAt - cutAt <= (TTL * 1000 * 5) / 6 + 150, `gave up ${lostAt - cutAt} ms after the cut`);
    assert.ok(grantedAt - cutAt <= TTL * 1000 + 1000, `granted ${grantedAt - cutAt} ms after the cut`);
    assert.ok(token > Number(held.split(' ')[1]));
  } finally {
    await observer.close();
  }
});
