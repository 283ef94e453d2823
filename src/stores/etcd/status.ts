// What any controller can learn and do about a lock name from its keys alone:
// who holds and waits (one name, or every name under a prefix), and breaking
// one hold by its token.
import { ErrorCode, HostlockError } from '../../core/errors';
import type { KeyStatus } from '../../store/contract';
import type { HistoryEvent, Holder, LockKey, Requester } from '../../store/types';
import type { EtcdClient, TxnResponse } from './client';
import { b64, unb64 } from './gateway';
import { parseRecord, rev, statusOf, tokenOf, type KeyRecord, type Kv } from './queue';

export async function nameStatus(c: EtcdClient, key: LockKey): Promise<KeyStatus> {
  const { kvs } = await c.rangeName(c.namePrefix(key.id));
  return statusOf(key, kvs);
}

// Every name that starts with `prefix`, sorted by name.
export async function listNames(c: EtcdClient, prefix = ''): Promise<KeyStatus[]> {
  const base = c.locksBase;
  const { kvs } = await c.rangeName(base + encodeURIComponent(prefix));
  const byName = new Map<string, Kv[]>();
  for (const kv of kvs) {
    const rest = unb64(kv.key).slice(base.length);
    const slash = rest.indexOf('/');
    if (slash < 0) continue;
    const name = decodeURIComponent(rest.slice(0, slash));
    if (!byName.has(name)) byName.set(name, []);
    byName.get(name)!.push(kv);
  }
  return [...byName.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, list]) => statusOf({ id: name, name }, list));
}

// Ends one hold, from any controller: its key is marked with who broke it
// and why, then deleted, each step only if the key has not changed since
// (the holder's own "held" write may land in between: then both again).
// The holder's lease and its other keys stay; its watch sees the deletion
// and reports the hold lost, and the next waiter is let in by the same
// deletion.
export async function breakHold(
  c: EtcdClient,
  record: (e: HistoryEvent) => void,
  key: LockKey,
  token: number,
  by: Requester,
  reason: string,
): Promise<Holder> {
  const prefix = c.namePrefix(key.id);
  const who = `${by.user} (pid ${by.pid}) on controller ${by.controller}`;
  const name = key.name ?? key.id;
  for (let tries = 0; tries < 20; tries++) {
    const { kvs } = await c.rangeName(prefix);
    const st = statusOf(key, kvs);
    const victim = st.holders.find((h) => h.token === token);
    const kv = kvs.find((k) => rev(k.create_revision) === token || tokenOf(k, parseRecord(k)) === token);
    const rec = kv && parseRecord(kv);
    if (!victim || !kv || !rec) {
      const why = kv ? `token ${token} is a waiter's, not a hold's` : `no hold of it has token ${token}`;
      const tokens = st.holders.map((h) => h.token).join(', ');
      throw new HostlockError(
        ErrorCode.InvalidParams,
        `cannot break '${name}' (backend ${c.describe}): ${why}; ` +
          (st.holders.length ? `its holders' tokens: ${tokens}` : 'it is not held') +
          ' (see hostlock status --backend)',
        { name, token, holders: st.holders.map((h) => h.token ?? null) },
      );
    }
    const k64 = kv.key;
    const marked: KeyRecord = { ...rec, token, broken: { by: who, reason } };
    const t1 = await c.call<TxnResponse>('/v3/kv/txn', {
      compare: [{ key: k64, target: 'MOD', mod_revision: kv.mod_revision, result: 'EQUAL' }],
      success: [{ request_put: { key: k64, value: b64(JSON.stringify(marked)), ignore_lease: true } }],
      failure: [],
    });
    if (!t1.succeeded) continue;
    const t2 = await c.call<TxnResponse>('/v3/kv/txn', {
      compare: [{ key: k64, target: 'MOD', mod_revision: t1.header.revision, result: 'EQUAL' }],
      success: [{ request_delete_range: { key: k64 } }],
      failure: [],
    });
    if (!t2.succeeded) continue;
    record({ event: 'break', key, mode: victim.mode, who: by, token, reason, victim });
    return victim;
  }
  throw new HostlockError(
    ErrorCode.StoreUnavailable,
    `cannot break '${name}' (backend ${c.describe}): the hold with token ${token} kept changing; try again`,
    { name, token },
  );
}
