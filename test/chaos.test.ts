// The short fault campaign (test/chaos/run.ts) on every store, with a fixed
// seed: no violation. `make chaos` runs the long one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { campaign } from './chaos/run';
import { table } from './chaos/table';
import { requireNft, startFenceServer, type StoreKind } from './chaos/world';

const SECONDS = 40;
const SEED = 20;

for (const [i, store] of (['flock', 'postgres', 'etcd'] as StoreKind[]).entries()) {
  test(`${SECONDS} s of faults on the ${store} store: no violation`, { timeout: 240_000 }, async (ctx) => {
    let fence: Awaited<ReturnType<typeof startFenceServer>> | undefined;
    if (store !== 'flock') {
      requireNft();
      fence = await startFenceServer();
    }
    try {
      const r = await campaign(store, SECONDS, SEED + i, fence?.spec ?? '');
      ctx.diagnostic(table([r]).split('\n')[2]!);
      assert.deepEqual(
        r.verdict.violations,
        [],
        `seed ${SEED + i}: replay with CHAOS_SEED=${SEED + i} CHAOS_STORES=${store}`,
      );
      assert.ok(r.verdict.accepted > 20, `only ${r.verdict.accepted} sections accepted`);
    } finally {
      await fence?.pg.stop();
    }
  });
}
