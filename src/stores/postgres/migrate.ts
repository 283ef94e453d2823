// The schema's life on a server: created on a store's first use (or by
// `hostlock setup`), upgraded in place, both under one lock so that
// controllers starting together do it once, and refused when newer than this
// hostlock knows.
import type { Client } from 'pg';
import { HostlockError } from '../../core/errors';
import { explainQueryError, onlyRow, storeError } from './explain';
import { CREATE_SQL, LOCK_CLASS, SCHEMA, SCHEMA_VERSION, upgradeSql } from './schema';
import type { PgTarget } from './url';

// The schema's version, or null while there is none. A catalog query, not
// to_regclass: its cache may not yet see a schema another session created
// while we waited for the lock.
export async function schemaVersion(client: Client): Promise<number | null> {
  const r = await client.query<{ present: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace ` +
      `WHERE n.nspname = '${SCHEMA}' AND c.relname = 'meta') AS present`,
  );
  if (!onlyRow(r.rows, 'the schema check').present) return null;
  const v = await client.query<{ version: number }>(`SELECT max(version) AS version FROM ${SCHEMA}.meta`);
  return onlyRow(v.rows, `the version of ${SCHEMA}.meta`).version;
}

// What ensureSchema did to the schema, for `hostlock setup` to report.
export interface SchemaChange {
  created?: boolean;
  upgradedFrom?: number;
}

// Creates or checks the schema; DDL only under the serialising lock.
export async function ensureSchema(client: Client, target: PgTarget, change?: SchemaChange): Promise<number> {
  const check = (v: number) => {
    if (v > SCHEMA_VERSION) {
      throw storeError(
        `PostgreSQL backend ${target.masked}: schema ${SCHEMA} is at version ${v}, newer than this hostlock knows (${SCHEMA_VERSION}); upgrade hostlock on this controller`,
      );
    }
    return v;
  };
  let what = `creating schema ${SCHEMA}`;
  try {
    const v = await schemaVersion(client);
    if (v === SCHEMA_VERSION) return v;
    if (v !== null) check(v);
    await client.query('BEGIN');
    try {
      await client.query(`SELECT pg_advisory_xact_lock(${LOCK_CLASS}, 0)`);
      const again = await schemaVersion(client);
      if (again === null) {
        await client.query(CREATE_SQL);
        if (change) change.created = true;
      } else if (again < SCHEMA_VERSION) {
        what = `upgrading schema ${SCHEMA} from version ${again} to ${SCHEMA_VERSION}`;
        await client.query(upgradeSql(again));
        if (change) change.upgradedFrom = again;
      }
      await client.query('COMMIT');
      return check(again === null ? SCHEMA_VERSION : Math.max(again, SCHEMA_VERSION));
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } catch (err) {
    if (err instanceof HostlockError) throw err;
    throw explainQueryError(err, target, what);
  }
}
