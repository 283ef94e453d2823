// The PostgreSQL store's schema: a queue table whose rows belong to runs, each
// run kept alive by one session-level advisory lock, and the few functions
// that change the queue. Every change to the queue happens inside one of these
// functions under one transaction-level advisory lock, so that queue order,
// grants, tokens and the deadlock check see one consistent queue.
//
// The functions are SECURITY DEFINER and find the caller's run from its
// backend PID: a lock-only role needs EXECUTE on them and USAGE on the schema,
// never rights on the tables, and cannot act for another run.

export const SCHEMA = 'hostlock';
export const SCHEMA_VERSION = 2;
// First key of every advisory lock the store takes (`hlk1`); the second is a
// run id, or 0 for the lock that serialises queue changes and DDL.
export const LOCK_CLASS = 0x686c6b31;

const Q = `${SCHEMA}.queue`;
const H = `${SCHEMA}.history`;
// The history keeps the newest HISTORY_ROWS rows, pruned each time another
// HISTORY_PRUNE_EVERY have been added (so at most the sum of both).
export const HISTORY_ROWS = 100_000;
export const HISTORY_PRUNE_EVERY = 1_000;
const LIVE_SELECT = `objid::bigint::integer FROM pg_locks WHERE locktype = 'advisory' AND classid = ${LOCK_CLASS}::oid AND objsubid = 2 AND objid <> 0 AND granted`;
const LIVE = `(SELECT ${LIVE_SELECT})`;

// The tables as version 1 made them; UPGRADES brings them to the current
// version, and FUNCTIONS (replaced whole on every upgrade) work on them.
const TABLES_V1 = `
CREATE SCHEMA IF NOT EXISTS ${SCHEMA};
CREATE TABLE ${SCHEMA}.meta (version integer NOT NULL);
CREATE SEQUENCE ${SCHEMA}.run_ids AS integer MINVALUE 1 CYCLE;
CREATE SEQUENCE ${SCHEMA}.queue_order;
CREATE TABLE ${SCHEMA}.runs (
  run_id integer PRIMARY KEY,
  backend_pid integer NOT NULL,
  controller text NOT NULL,
  pid integer NOT NULL,
  os_user text NOT NULL,
  started timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX runs_backend ON ${SCHEMA}.runs (backend_pid);
CREATE TABLE ${SCHEMA}.names (
  key text PRIMARY KEY,
  name text,
  token bigint NOT NULL DEFAULT 0
);
CREATE TABLE ${Q} (
  seq bigint PRIMARY KEY DEFAULT nextval('${SCHEMA}.queue_order'),
  key text NOT NULL,
  run_id integer NOT NULL,
  mode text NOT NULL CHECK (mode IN ('exclusive', 'shared')),
  granted boolean NOT NULL DEFAULT false,
  token bigint,
  owner jsonb NOT NULL,
  since timestamptz NOT NULL DEFAULT clock_timestamp(),
  granted_at timestamptz
);
CREATE INDEX queue_key ON ${Q} (key, seq);
CREATE INDEX queue_run ON ${Q} (run_id);
`;

// UPGRADES[v] takes the tables from version v to v + 1.
const UPGRADES: Record<number, string> = {
  1: `
ALTER TABLE ${Q} ADD COLUMN slots integer CHECK (slots > 0), ADD COLUMN slot integer;
CREATE TABLE ${H} (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL,
  key text NOT NULL,
  name text,
  rec jsonb NOT NULL
);
CREATE INDEX history_at ON ${H} (at, id);
CREATE INDEX history_name ON ${H} (name, at, id);
`,
};

const FUNCTIONS = `

-- The caller's run, from its backend PID; NULL when it has none. A row left
-- by a dead run whose PID the caller now has is harmless: that run's rows
-- are ignored and swept as dead, and begin_run replaces it.
CREATE FUNCTION ${SCHEMA}.me() RETURNS integer LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT run_id FROM ${SCHEMA}.runs WHERE backend_pid = pg_backend_pid()
$$;

-- The lowest slot of key k (1..n) that no granted row has taken.
CREATE FUNCTION ${SCHEMA}.free_slot(k text, n integer) RETURNS integer LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT min(s) FROM generate_series(1, n) s
  WHERE s NOT IN (SELECT q.slot FROM ${Q} q WHERE q.key = k AND q.granted AND q.slot IS NOT NULL)
$$;

-- Grants every waiting row of key k that the rows before it allow, in queue
-- order: an exclusive row when no row is before it, a shared row when no
-- exclusive row is before it, a row with slots while fewer than its slots
-- are granted and no waiting row is before it (all rows of a key agree on
-- slots: enqueue sees to it); each grant takes the key's next token and
-- tells its run on channel hostlock_<run> ('<seq> <token> <slot>').
CREATE FUNCTION ${SCHEMA}.advance(k text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
  tok bigint;
  any_before boolean := false;
  used integer := 0;
  s integer;
BEGIN
  FOR r IN SELECT seq, run_id, mode, granted, slots FROM ${Q} WHERE key = k ORDER BY seq LOOP
    IF r.slots IS NOT NULL THEN
      IF NOT r.granted THEN
        EXIT WHEN used >= r.slots;
        s := ${SCHEMA}.free_slot(k, r.slots);
        UPDATE ${SCHEMA}.names SET token = token + 1 WHERE key = k RETURNING token INTO tok;
        UPDATE ${Q} SET granted = true, token = tok, slot = s, granted_at = clock_timestamp() WHERE seq = r.seq;
        PERFORM pg_notify('hostlock_' || r.run_id, r.seq || ' ' || tok || ' ' || s);
      END IF;
      used := used + 1;
      CONTINUE;
    END IF;
    IF NOT r.granted AND (r.mode = 'shared' OR NOT any_before) THEN
      UPDATE ${SCHEMA}.names SET token = token + 1 WHERE key = k RETURNING token INTO tok;
      UPDATE ${Q} SET granted = true, token = tok, granted_at = clock_timestamp() WHERE seq = r.seq;
      PERFORM pg_notify('hostlock_' || r.run_id, r.seq || ' ' || tok);
    END IF;
    EXIT WHEN r.mode = 'exclusive';
    any_before := true;
  END LOOP;
END $$;

-- Drops the rows of runs whose session has ended and moves their keys on.
-- Driven by the runs table (small) rather than a scan of the queue; the dead
-- set is taken once, so a run that dies meanwhile keeps its runs row for the
-- next sweep.
CREATE FUNCTION ${SCHEMA}.sweep() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  k text;
  dead_ids integer[] := ARRAY(SELECT run_id FROM ${SCHEMA}.runs WHERE run_id NOT IN ${LIVE});
BEGIN
  IF cardinality(dead_ids) = 0 THEN RETURN; END IF;
  FOR k IN
    WITH dead AS (DELETE FROM ${Q} WHERE run_id = ANY (dead_ids) RETURNING key)
    SELECT DISTINCT key FROM dead
  LOOP
    PERFORM ${SCHEMA}.advance(k);
  END LOOP;
  DELETE FROM ${SCHEMA}.runs WHERE run_id = ANY (dead_ids);
END $$;

-- Starts a run for this session: a fresh id, held by a session-level
-- advisory lock for as long as the session lives.
CREATE FUNCTION ${SCHEMA}.begin_run(controller text, pid integer, os_user text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  id integer;
  k text;
BEGIN
  PERFORM pg_advisory_xact_lock(${LOCK_CLASS}, 0);
  LOOP
    id := nextval('${SCHEMA}.run_ids');
    EXIT WHEN pg_try_advisory_lock(${LOCK_CLASS}, id);
  END LOOP;
  -- Rows a dead run left under this id (the ids wrap around) go first.
  FOR k IN WITH gone AS (DELETE FROM ${Q} WHERE run_id = id RETURNING key) SELECT DISTINCT key FROM gone LOOP
    PERFORM ${SCHEMA}.advance(k);
  END LOOP;
  DELETE FROM ${SCHEMA}.runs WHERE run_id = id OR backend_pid = pg_backend_pid();
  INSERT INTO ${SCHEMA}.runs (run_id, backend_pid, controller, pid, os_user)
    VALUES (id, pg_backend_pid(), controller, pid, os_user);
  PERFORM ${SCHEMA}.sweep();
  RETURN id;
END $$;

-- Ends the caller's run: its rows go, their keys move on, its lock is freed.
CREATE FUNCTION ${SCHEMA}.end_run() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  id integer := ${SCHEMA}.me();
  k text;
BEGIN
  IF id IS NULL THEN RETURN; END IF;
  PERFORM pg_advisory_xact_lock(${LOCK_CLASS}, 0);
  FOR k IN WITH gone AS (DELETE FROM ${Q} WHERE run_id = id RETURNING key) SELECT DISTINCT key FROM gone LOOP
    PERFORM ${SCHEMA}.advance(k);
  END LOOP;
  DELETE FROM ${SCHEMA}.runs WHERE run_id = id;
  PERFORM pg_advisory_unlock(${LOCK_CLASS}, id);
END $$;

-- Asks for key k, with slots a slot of it. Granted at once when the queue
-- allows it (a token is taken); otherwise, with wait, queued at the end unless
-- the wait would close a cycle of runs waiting for each other (then nothing is
-- queued and the cycle is returned); without wait, nothing is queued. A live
-- row of k asking other slots (or slots where this asks none, or the reverse)
-- refuses the request: nothing is queued and that row is returned.
CREATE FUNCTION ${SCHEMA}.enqueue(k text, name text, mode text, wait boolean, owner jsonb, slots integer DEFAULT NULL,
  OUT seq bigint, OUT token bigint, OUT granted boolean, OUT cycle jsonb, OUT slot integer, OUT mismatch jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  id integer := ${SCHEMA}.me();
  free boolean;
  live_ids integer[];
  blockers integer[];
  visited integer[];
  parents integer[];
  vias text[];
  frontier integer[];
  nxt integer[];
  hit integer;
  i integer;
  r record;
BEGIN
  IF id IS NULL THEN RAISE EXCEPTION 'this session has no hostlock run' USING ERRCODE = '55000'; END IF;
  IF mode NOT IN ('exclusive', 'shared') THEN RAISE EXCEPTION 'bad mode %', mode USING ERRCODE = '22023'; END IF;
  IF enqueue.slots IS NOT NULL AND (enqueue.slots < 1 OR mode <> 'exclusive') THEN
    RAISE EXCEPTION 'bad slots % (mode %)', enqueue.slots, mode USING ERRCODE = '22023';
  END IF;
  PERFORM pg_advisory_xact_lock(${LOCK_CLASS}, 0);
  INSERT INTO ${SCHEMA}.names (key, name) VALUES (k, name) ON CONFLICT ON CONSTRAINT names_pkey DO NOTHING;
  DELETE FROM ${Q} q WHERE q.key = k AND q.run_id NOT IN ${LIVE};
  IF FOUND THEN PERFORM ${SCHEMA}.advance(k); END IF;
  granted := false;
  -- Rows of dead runs are gone: every row left is a live holder or waiter.
  SELECT jsonb_build_object('slots', q.slots, 'granted', q.granted, 'owner', q.owner, 'controller', ru.controller)
    INTO mismatch
    FROM ${Q} q LEFT JOIN ${SCHEMA}.runs ru ON ru.run_id = q.run_id
    WHERE q.key = k AND q.slots IS DISTINCT FROM enqueue.slots ORDER BY q.granted DESC, q.seq LIMIT 1;
  IF mismatch IS NOT NULL THEN RETURN; END IF;
  IF enqueue.slots IS NULL THEN
    SELECT NOT EXISTS (SELECT 1 FROM ${Q} q WHERE q.key = k AND (enqueue.mode = 'exclusive' OR q.mode = 'exclusive'))
      INTO free;
  ELSE
    SELECT NOT EXISTS (SELECT 1 FROM ${Q} q WHERE q.key = k AND NOT q.granted)
      AND (SELECT count(*) FROM ${Q} q WHERE q.key = k) < enqueue.slots INTO free;
  END IF;
  granted := free;
  IF free THEN
    UPDATE ${SCHEMA}.names n SET token = n.token + 1 WHERE n.key = k RETURNING n.token INTO token;
    IF enqueue.slots IS NOT NULL THEN slot := ${SCHEMA}.free_slot(k, enqueue.slots); END IF;
    INSERT INTO ${Q} (key, run_id, mode, granted, token, owner, granted_at, slots, slot)
      VALUES (k, id, enqueue.mode, true, enqueue.token, enqueue.owner, clock_timestamp(), enqueue.slots, enqueue.slot)
      RETURNING ${Q}.seq INTO seq;
    RETURN;
  END IF;
  IF NOT wait THEN RETURN; END IF;
  -- The run's own earlier rows would block it for ever: a conflicting one,
  -- or with slots as many as there are slots.
  IF (enqueue.slots IS NULL AND EXISTS (SELECT 1 FROM ${Q} q WHERE q.key = k AND q.run_id = id
        AND (enqueue.mode = 'exclusive' OR q.mode = 'exclusive')))
    OR (SELECT count(*) FROM ${Q} q WHERE q.key = k AND q.run_id = id) >= enqueue.slots THEN
    cycle := jsonb_build_array(jsonb_build_object('run', id, 'waits_for', k));
    RETURN;
  END IF;
  -- Only a run that already holds or waits elsewhere can close a cycle: one
  -- of the new row's blockers must (transitively) wait for this run. Search
  -- backwards from this run, set at a time, each run visited once: the runs
  -- queued behind a newcomer's rows are few, so the usual search is one step.
  -- A wait for a slot waits for whichever holder ends first, not for each:
  -- it takes no part in the search (only the run's own rows are checked, above).
  IF enqueue.slots IS NULL AND EXISTS (SELECT 1 FROM ${Q} q WHERE q.run_id = id) THEN
    live_ids := ARRAY(SELECT ${LIVE_SELECT});
    blockers := ARRAY(SELECT DISTINCT q.run_id FROM ${Q} q WHERE q.key = k AND q.run_id <> id
      AND q.run_id = ANY (live_ids) AND (enqueue.mode = 'exclusive' OR q.mode = 'exclusive'));
    visited := ARRAY[id];
    parents := ARRAY[NULL::integer];
    vias := ARRAY[NULL::text];
    frontier := ARRAY[id];
    WHILE hit IS NULL AND cardinality(frontier) > 0 LOOP
      nxt := '{}';
      FOR r IN
        SELECT DISTINCT ON (w.run_id) w.run_id AS waiter, m.run_id AS waited, w.key AS via
        FROM ${Q} m JOIN ${Q} w ON w.key = m.key AND w.seq > m.seq AND NOT w.granted AND w.run_id <> m.run_id
          AND (w.mode = 'exclusive' OR m.mode = 'exclusive') AND w.slots IS NULL
        WHERE m.run_id = ANY (frontier) AND w.run_id = ANY (live_ids) AND w.run_id <> ALL (visited)
      LOOP
        visited := visited || r.waiter;
        parents := parents || r.waited;
        vias := vias || r.via;
        nxt := nxt || r.waiter;
        IF r.waiter = ANY (blockers) THEN hit := r.waiter; EXIT; END IF;
      END LOOP;
      frontier := nxt;
    END LOOP;
    IF hit IS NOT NULL THEN
      -- This run waits for k on hit; each run then waits for its parent, back to this run.
      cycle := jsonb_build_array(jsonb_build_object('run', id, 'waits_for', k));
      WHILE hit <> id LOOP
        i := array_position(visited, hit);
        cycle := cycle || (SELECT jsonb_build_object('run', hit, 'waits_for', vias[i], 'controller', ru.controller,
          'pid', ru.pid, 'user', ru.os_user) FROM (SELECT 1) one LEFT JOIN ${SCHEMA}.runs ru ON ru.run_id = hit);
        hit := parents[i];
      END LOOP;
      RETURN;
    END IF;
  END IF;
  INSERT INTO ${Q} (key, run_id, mode, owner, slots) VALUES (k, id, enqueue.mode, enqueue.owner, enqueue.slots)
    RETURNING ${Q}.seq INTO seq;
END $$;

-- Drops one row of the caller's run (a release, or an abandoned wait,
-- granted or not) and moves its key on. True when the row was there.
CREATE FUNCTION ${SCHEMA}.release(s bigint) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  k text;
  id integer := ${SCHEMA}.me();
BEGIN
  PERFORM pg_advisory_xact_lock(${LOCK_CLASS}, 0);
  DELETE FROM ${Q} WHERE seq = s AND run_id = id RETURNING key INTO k;
  IF k IS NULL THEN RETURN false; END IF;
  PERFORM ${SCHEMA}.advance(k);
  RETURN true;
END $$;

-- The caller's granted rows, after dead runs are swept: waiters call it now
-- and then to learn of grants a dead holder made possible.
CREATE FUNCTION ${SCHEMA}.poll(OUT seq bigint, OUT token bigint, OUT slot integer) RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
  -- The lock only when there is a dead run to sweep: polls are frequent.
  IF EXISTS (SELECT 1 FROM ${SCHEMA}.runs WHERE run_id NOT IN ${LIVE}) THEN
    PERFORM pg_advisory_xact_lock(${LOCK_CLASS}, 0);
    PERFORM ${SCHEMA}.sweep();
  END IF;
  RETURN QUERY SELECT q.seq, q.token, q.slot FROM ${Q} q WHERE q.run_id = (SELECT ${SCHEMA}.me()) AND q.granted;
END $$;

-- The caller's granted rows, read only: the heartbeat checks that none of
-- its holds was deleted under it.
CREATE FUNCTION ${SCHEMA}.held() RETURNS bigint[] LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(array_agg(seq), '{}') FROM ${Q} WHERE run_id = (SELECT ${SCHEMA}.me()) AND granted
$$;

-- Appends history records (a JSON array of history.ts records, each with its
-- time t, key path and name), and now and then drops all but the newest
-- ${HISTORY_ROWS} rows. Touches no queue row and takes no queue lock.
CREATE FUNCTION ${SCHEMA}.record_events(events jsonb) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  first_id bigint;
  last_id bigint;
BEGIN
  WITH added AS (
    INSERT INTO ${H} (at, key, name, rec)
      SELECT (e->>'t')::timestamptz, e->>'path', coalesce(e->>'name', e->>'path'), e FROM jsonb_array_elements(events) e
      WHERE jsonb_typeof(e) = 'object' AND e ? 't' AND e ? 'path' AND e ? 'event'
    RETURNING id
  ) SELECT min(id), max(id) INTO first_id, last_id FROM added;
  IF last_id IS NOT NULL AND last_id / ${HISTORY_PRUNE_EVERY} > (first_id - 1) / ${HISTORY_PRUNE_EVERY} THEN
    DELETE FROM ${H} WHERE id <= last_id - ${HISTORY_ROWS};
  END IF;
END $$;

-- History records, oldest first: of one lock (its name, or its key when it
-- has none) or of all, from a time on.
CREATE FUNCTION ${SCHEMA}.history(name text, since timestamptz) RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT h.rec FROM ${H} h
  WHERE (history.name IS NULL OR h.name = history.name)
    AND (since IS NULL OR h.at >= since)
  ORDER BY h.at, h.id
$$;

-- Ends the hold of key k whose token is tok, for any caller: its row goes,
-- the key moves on (the next waiter is granted in this transaction), the
-- holder's run is told on its channel ('lost <json>'), and rec, the caller's
-- history record of the break, is written with the victim in it. Returns the
-- victim as status shows a holder, or NULL when no live run holds k with tok.
-- Only the hold ends, not the holder's session (pg_terminate_backend): that
-- session carries every other hold and wait of its run, and ending another
-- role's session needs a privilege the lock role does not have.
CREATE FUNCTION ${SCHEMA}.break_hold(k text, tok bigint, breaker jsonb, reason text, rec jsonb, OUT victim jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
BEGIN
  PERFORM pg_advisory_xact_lock(${LOCK_CLASS}, 0);
  DELETE FROM ${Q} q WHERE q.key = k AND q.run_id NOT IN ${LIVE};
  IF FOUND THEN PERFORM ${SCHEMA}.advance(k); END IF;
  SELECT q.seq, q.run_id, q.mode, q.owner, q.granted_at, q.slot, q.slots, ru.controller INTO r
    FROM ${Q} q LEFT JOIN ${SCHEMA}.runs ru ON ru.run_id = q.run_id
    WHERE q.key = k AND q.token = tok AND q.granted;
  IF NOT FOUND THEN RETURN; END IF;
  victim := r.owner || jsonb_strip_nulls(jsonb_build_object('controller', coalesce(r.controller, r.owner->>'controller'),
    'mode', r.mode, 'since', to_char(r.granted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'token', tok, 'slot', r.slot, 'slots', r.slots));
  DELETE FROM ${Q} WHERE seq = r.seq;
  PERFORM ${SCHEMA}.advance(k);
  PERFORM pg_notify('hostlock_' || r.run_id,
    'lost ' || jsonb_build_object('seq', r.seq, 'by', breaker, 'reason', left(reason, 1000))::text);
  PERFORM ${SCHEMA}.record_events(jsonb_build_array(rec || jsonb_build_object('victim', victim, 'mode', r.mode)));
END $$;

-- Holders and waiters of live runs, in queue order, for keys equal to k or,
-- with prefix, starting with k; with names, also keys nobody holds.
CREATE FUNCTION ${SCHEMA}.status(k text, prefix boolean)
RETURNS TABLE (key text, name text, seq bigint, mode text, granted boolean, token bigint, owner jsonb,
  since timestamptz, granted_at timestamptz, controller text, slots integer, slot integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT n.key, n.name, q.seq, q.mode, q.granted, q.token, q.owner, q.since, q.granted_at, r.controller, q.slots, q.slot
  FROM ${SCHEMA}.names n
  LEFT JOIN (${Q} q JOIN ${SCHEMA}.runs r ON r.run_id = q.run_id AND q.run_id IN ${LIVE}) ON q.key = n.key
  WHERE CASE WHEN prefix THEN starts_with(n.key, k) ELSE n.key = k END
  ORDER BY n.key, q.seq
$$;

`;

// Every function of the schema goes, its EXECUTE grants remembered (beyond
// PUBLIC's default), so that FUNCTIONS can recreate them with new signatures.
const DROP_FUNCTIONS = `
CREATE TEMP TABLE hostlock_grantees ON COMMIT DROP AS
  SELECT DISTINCT a.grantee::regrole::text AS role
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
  WHERE n.nspname = '${SCHEMA}' AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
  UNION
  -- PUBLIC's default EXECUTE revoked (docs/STORES.md): revoked again.
  SELECT '-PUBLIC' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = '${SCHEMA}' AND p.proacl IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE');
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = '${SCHEMA}' LOOP
    EXECUTE 'DROP FUNCTION ' || f::text;
  END LOOP;
END $$;
`;

const REGRANT = `
DO $$
DECLARE g text;
BEGIN
  FOR g IN SELECT role FROM hostlock_grantees LOOP
    IF g = '-PUBLIC' THEN
      REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA ${SCHEMA} FROM PUBLIC;
    ELSE
      EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${SCHEMA} TO %s', g);
    END IF;
  END LOOP;
END $$;
`;

function upgradesFrom(version: number): string {
  let sql = '';
  for (let v = version; v < SCHEMA_VERSION; v++) sql += UPGRADES[v];
  return sql;
}

// DDL for a fresh schema; run under the serialising lock, so that 20 runs
// starting at once create it once.
export const CREATE_SQL = `
${TABLES_V1}
${upgradesFrom(1)}
${FUNCTIONS}
INSERT INTO ${SCHEMA}.meta (version) VALUES (${SCHEMA_VERSION});
GRANT SELECT ON ${SCHEMA}.meta TO PUBLIC;
`;

// DDL that brings a schema at `version` to SCHEMA_VERSION, run under the
// same lock: the tables keep their rows (queue, tokens), the functions are
// replaced.
export function upgradeSql(version: number): string {
  return `
${upgradesFrom(version)}
${DROP_FUNCTIONS}
${FUNCTIONS}
${REGRANT}
UPDATE ${SCHEMA}.meta SET version = ${SCHEMA_VERSION};
`;
}

// Version 1's tables alone, for tests of the upgrade.
export const TABLES_V1_SQL = `${TABLES_V1}
INSERT INTO ${SCHEMA}.meta (version) VALUES (1);
GRANT SELECT ON ${SCHEMA}.meta TO PUBLIC;
`;
