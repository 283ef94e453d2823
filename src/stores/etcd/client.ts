// One etcd store object's view of its cluster: the gateway made from its
// settings, calls whose errors name the backend (password masked), and where
// the keys of a lock name live.
import { EtcdError, Gateway, b64, prefixEnd, type WatchResult, type WatchStream } from './gateway';
import { etcdConfig, tlsFiles, type EtcdStoreOptions } from './config';
import { rev, type Kv } from './queue';
import type { EtcdConfig } from './url';

// The answer to a `/v3/kv/txn`.
export interface TxnResponse {
  header: { revision: string };
  succeeded?: boolean;
  responses?: { response_range?: { kvs?: Kv[] }; response_put?: unknown }[];
}

export class EtcdClient {
  readonly cfg: EtcdConfig;
  readonly describe: string;
  private readonly gw: Gateway;

  constructor(url: string, opts: EtcdStoreOptions = {}) {
    this.cfg = etcdConfig(url, opts);
    this.describe = this.cfg.masked;
    this.gw = new Gateway({
      endpoints: this.cfg.endpoints,
      user: this.cfg.user,
      password: this.cfg.password,
      timeoutMs: this.cfg.timeoutMs,
      tls: tlsFiles(this.cfg, this.describe),
    });
  }

  // Every lock name's keys are under this.
  get locksBase(): string {
    return `${this.cfg.prefix}locks/`;
  }

  namePrefix(id: string): string {
    return `${this.locksBase}${encodeURIComponent(id)}/`;
  }

  call<T>(path: string, body: unknown, timeoutMs?: number, budgetMs?: number): Promise<T> {
    return this.gw.call<T>(path, body, timeoutMs, budgetMs).catch((e: unknown) => {
      // Every error names the backend (password masked) and the member.
      if (e instanceof EtcdError)
        throw new EtcdError(`${e.message} (backend ${this.describe})`, e.endpoint, e.grpcCode);
      throw e;
    });
  }

  watch(body: unknown, onMessage: (r: WatchResult) => void, onEnd: (err: Error) => void): WatchStream {
    return this.gw.watch(body, onMessage, onEnd);
  }

  // The keys under `prefix` in create order (a name's queue), and the revision read.
  async rangeName(prefix: string): Promise<{ kvs: Kv[]; revision: number }> {
    const r = await this.call<{ kvs?: Kv[]; header: { revision: string } }>('/v3/kv/range', {
      key: b64(prefix),
      range_end: prefixEnd(prefix),
      sort_target: 'CREATE',
      sort_order: 'ASCEND',
    });
    return { kvs: r.kvs ?? [], revision: rev(r.header.revision) };
  }

  // A wait that ended before any member answered says so, and what the members said.
  unreached(): EtcdError {
    return new EtcdError(
      `no etcd member answered before the wait ended: ${this.gw.lastFailure ?? 'no answer yet'} (backend ${this.describe})`,
      this.gw.endpoints.join(','),
    );
  }

  close(): void {
    this.gw.close();
  }
}
