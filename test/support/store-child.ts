// A store object in a process of its own, for the tests of dead owners:
//
//   node store-child.js '{"kind":…,"where":…,"tag":…,"controller":…,"hold":NAME,"wait":NAME}'
//
// holds `hold` exclusively, then (with `wait`) waits for `wait` as the policy
// does (visible among its waiters), prints "ready" and stays until killed.
import { openStore, storeSpec, type StoreKind } from './fixtures';
import type { Requester } from '../../src/store/types';

interface Args {
  kind: StoreKind;
  where: string;
  tag: string;
  controller: string;
  hold: string;
  wait?: string;
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2] ?? '{}') as Args;
  const spec = storeSpec(a.kind, a.where, a.tag);
  const store = openStore(spec, a.controller);
  const who: Requester = { pid: process.pid, user: 'tester', controller: a.controller, run: `run-${a.controller}` };
  const held = await store.acquire({ key: spec.key(a.hold), mode: 'exclusive', requester: who, wait: true });
  if (!held) throw new Error(`${a.hold} was not granted`);
  if (a.wait) {
    const key = spec.key(a.wait);
    await store.enqueue?.(key, who, 'exclusive');
    void Promise.resolve(store.acquire({ key, mode: 'exclusive', requester: who, wait: true })).catch(() => {});
    // A store that queues its waits itself shows them once they are in its queue.
    for (;;) {
      const st = await store.status(key);
      if (st.waiters.some((w) => w.pid === process.pid)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  process.stdout.write('ready\n');
  setInterval(() => {}, 60_000);
}

main().catch((err: unknown) => {
  process.stderr.write(`store child: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
