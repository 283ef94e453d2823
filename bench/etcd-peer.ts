// One side of the etcd handoff benchmark: takes lock "ping" <rounds> times on
// the etcd store, holding it <hold> ms each time, and prints
// `G <epoch s> <pid>` on each grant and `R <epoch s> <pid>` just before each release.
// Usage: node etcd-peer.js <etcd url> <rounds> <hold ms>
import { EtcdStore } from '../src/stores/etcd/store';

async function main([url, roundsArg, holdArg]: string[]): Promise<void> {
  if (!url) throw new Error('usage: node etcd-peer.js <etcd url> <rounds> <hold ms>');
  const store = new EtcdStore(url);
  const requester = { pid: process.pid, user: 'bench', controller: `peer-${process.pid}` };
  const now = () => ((performance.timeOrigin + performance.now()) / 1000).toFixed(6);
  for (let i = 0; i < Number(roundsArg); i++) {
    const h = await store.acquire({ key: { id: 'ping' }, mode: 'exclusive', requester, wait: true });
    process.stdout.write(`G ${now()} ${process.pid}\n`);
    await new Promise((r) => setTimeout(r, Number(holdArg)));
    process.stdout.write(`R ${now()} ${process.pid}\n`);
    await h!.release();
  }
  await store.close();
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e: Error) => {
    process.stderr.write(`etcd-peer: ${e.stack ?? String(e)}\n`);
    process.exit(1);
  });
}
