// `hostlock setup --backend URL`: the schema created or upgraded ahead of
// time by a role allowed to, and the grants a lock-only role needs; or, with
// `check`, what setup would change.
import type { Client } from 'pg';
import { openClient } from './connect';
import { explainQueryError, onlyRow } from './explain';
import { ensureSchema, schemaVersion, type SchemaChange } from './migrate';
import { SCHEMA, SCHEMA_VERSION } from './schema';
import { targetOf } from './url';

export interface SetupResult {
  backend: string;
  schema: string;
  version: number;
  granted?: string;
  // Whether setup changed the store (with `check`, would change it), and how.
  changed: boolean;
  created: boolean;
  upgradedFrom?: number;
  grantChanged: boolean;
  check: boolean;
}

// Whether `role` holds, by grants of its own, what GRANT in setup gives: USAGE
// on the schema and EXECUTE on each of its functions.
async function hasLockGrants(client: Client, role: string): Promise<boolean> {
  const r = await client.query<{ granted: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a
        WHERE n.nspname = '${SCHEMA}' AND a.grantee = $1::regrole AND a.privilege_type = 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = '${SCHEMA}' AND NOT EXISTS (
          SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
          WHERE a.grantee = $1::regrole AND a.privilege_type = 'EXECUTE')) AS granted`,
    [role],
  );
  return onlyRow(r.rows, 'the grant check').granted;
}

// `hostlock setup --backend URL`: creates or upgrades the schema ahead of time
// (as a role allowed to), and with `grantTo` gives a lock-only role what it
// needs. It says what it changed; with `check` it only says what it would.
export async function setup(
  url: string,
  opts: { grantTo?: string; env?: NodeJS.ProcessEnv; check?: boolean } = {},
): Promise<SetupResult> {
  const target = targetOf(url, opts.env);
  const client = await openClient(target, 'hostlock setup');
  try {
    const change: SchemaChange = {};
    let version: number;
    if (opts.check) {
      let current: number | null;
      try {
        current = await schemaVersion(client);
      } catch (err) {
        throw explainQueryError(err, target, `reading schema ${SCHEMA}`);
      }
      if (current !== null && current > SCHEMA_VERSION) await ensureSchema(client, target); // fails, naming both versions
      if (current === null) change.created = true;
      else if (current < SCHEMA_VERSION) change.upgradedFrom = current;
      version = SCHEMA_VERSION;
    } else {
      version = await ensureSchema(client, target, change);
    }
    let grantChanged = false;
    if (opts.grantTo) {
      const role = '"' + opts.grantTo.replace(/"/g, '""') + '"';
      try {
        // A new or upgraded schema's functions are new: their grants are given again.
        if (opts.check && (change.created || change.upgradedFrom !== undefined)) {
          await roleExists(client, role);
          grantChanged = true;
        } else {
          grantChanged = !(await hasLockGrants(client, role));
        }
        if (grantChanged && !opts.check) {
          await client.query(
            `GRANT USAGE ON SCHEMA ${SCHEMA} TO ${role}; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${SCHEMA} TO ${role}`,
          );
        }
      } catch (err) {
        throw explainQueryError(err, target, `granting the lock role ${opts.grantTo}`);
      }
    }
    const created = !!change.created;
    return {
      backend: target.masked,
      schema: SCHEMA,
      version,
      granted: opts.grantTo,
      changed: created || change.upgradedFrom !== undefined || grantChanged,
      created,
      ...(change.upgradedFrom !== undefined ? { upgradedFrom: change.upgradedFrom } : {}),
      grantChanged,
      check: !!opts.check,
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

// Fails as GRANT would when `role` (quoted) does not exist.
async function roleExists(client: Client, role: string): Promise<void> {
  await client.query('SELECT $1::regrole', [role]);
}
