-- Every statement the ledger sends, one per "-- name: ..." header.
-- Parameters are always bound (%(name)s), never formatted into the text.
-- No statement relies on session state, so all of them work through a transaction pooler.

-- name: migration_lock
-- Serializes concurrent migrations: CREATE ... IF NOT EXISTS races on the catalog.
SELECT pg_advisory_xact_lock(%(namespace)s, 0);

-- name: table_columns
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid IN (to_regclass('jr_step_rewards'), to_regclass('jr_task_checkpoints'),
                    to_regclass('jr_task_attempts'))
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY c.relname, a.attnum;

-- name: drop_old_functions
-- The previous release's functions (version 1), kept by `migrate` for its workers during a
-- rolling upgrade; `migrate --drop-old` drops them once none of those workers is left.
DROP FUNCTION IF EXISTS jr_checkpoint_begin(integer, integer, text, double precision, jsonb, text);
DROP FUNCTION IF EXISTS jr_checkpoint_record_step(integer, text, integer, varchar, text, varchar,
    varchar, integer, text, integer, integer, double precision);

-- name: old_functions
SELECT count(*) FROM pg_proc
WHERE proname IN ('jr_checkpoint_begin', 'jr_checkpoint_record_step')
  AND pronamespace = to_regnamespace(current_schema())::oid;

-- name: drop_tables
DROP FUNCTION IF EXISTS jr_checkpoint_begin(integer, integer, text, double precision, jsonb, text);
DROP FUNCTION IF EXISTS jr_checkpoint_record_step(integer, text, integer, varchar, text, varchar,
    varchar, integer, text, integer, integer, double precision);
DROP FUNCTION IF EXISTS jr_checkpoint_begin_v2(integer, integer, text, double precision, jsonb, text);
DROP FUNCTION IF EXISTS jr_checkpoint_finish_step_v2(integer, text, integer, varchar, text, varchar,
    varchar, integer, text, integer, integer, double precision, text, integer, integer[], integer[],
    integer[]);
DROP FUNCTION IF EXISTS jr_checkpoint_record_step_v2(integer, text, integer, varchar, text, varchar,
    varchar, integer, text, integer, integer, double precision);
DROP FUNCTION IF EXISTS jr_checkpoint_end_v2(integer, text, boolean, boolean, text, integer, integer[],
    integer[], integer[]);
DROP FUNCTION IF EXISTS jr_checkpoint_renew_v2(integer, text, double precision);
DROP FUNCTION IF EXISTS jr_checkpoint_note_unchecked_v2(integer, jsonb, integer[], integer[]);
DROP FUNCTION IF EXISTS jr_checkpoint_close_dead_v2(integer, text);
DROP TABLE IF EXISTS jr_step_rewards, jr_task_checkpoints, jr_task_attempts;

-- name: begin_task
-- Takes the task's lease, counts the attempt, loads every step row: one call, one round trip.
-- The function is in functions.sql (created by `jr-checkpoint migrate`).
-- The integer arguments go through ::text::integer: a Python int past INTEGER's range is sent
-- as a bigint literal, for which no function matches (the server would say the function does
-- not exist, and the store "run migrate"); this way it is "out of range for type integer".
-- Through text, not straight ::integer, which would round a float (7.5 -> task 8) silently.
SELECT jr_checkpoint_begin_v2(%(task_id)s::text::integer, %(total_steps)s::text::integer,
                           %(owner)s, %(lease)s, %(holder)s::jsonb, %(takeover)s);

-- name: record_step
-- The per-step statement: the step's row and the task's checkpoint, only while we own the task.
-- Integers through ::text::integer, as in begin_task.
SELECT jr_checkpoint_record_step_v2(
    %(task_id)s::text::integer, %(owner)s, %(step_number)s::text::integer, %(step_type)s,
    %(target_file)s, %(content_hash)s, %(execution_result)s,
    %(execution_time_ms)s::text::integer, %(error_detail)s,
    %(last_completed_step)s::text::integer, %(total_steps)s::text::integer, %(lease)s);

-- name: finish_step
-- The same for a task's last step, which also ends the attempt (functions.sql).
SELECT jr_checkpoint_finish_step_v2(
    %(task_id)s::text::integer, %(owner)s, %(step_number)s::text::integer, %(step_type)s,
    %(target_file)s, %(content_hash)s, %(execution_result)s,
    %(execution_time_ms)s::text::integer, %(error_detail)s,
    %(last_completed_step)s::text::integer, %(total_steps)s::text::integer, %(lease)s,
    %(end_outcome)s, %(resumed_at)s, %(ran)s::integer[], %(skipped)s::integer[], %(failed)s::integer[]);

-- name: record_step_checked
-- The same, for the common case: every integer already checked to be an INTEGER, so no casts
-- (a fifth of the round trip, measured); the values bound in order (task_id, owner,
-- step_number, step_type, target_file, hash, result, time_ms, error, last_completed_step,
-- total_steps, lease). Writing plain values into the text instead saved 8 us of client CPU a
-- call, within the noise of a step's time (docs/benchmark.md).
SELECT jr_checkpoint_record_step_v2(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s);

-- name: record_step_checked_end
-- The same for a task's last step, which also ends the attempt: then its outcome, resumed_at,
-- and the steps it ran, skipped and failed.
SELECT jr_checkpoint_finish_step_v2(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                                    %s, %s, %s::integer[], %s::integer[], %s::integer[]);

-- name: renew_lease
-- Pushes the lease's expiry back: 'kept', or 'lost' when another worker took the task or our
-- attempt was closed (functions.sql).
SELECT jr_checkpoint_renew_v2(%(task_id)s::text::integer, %(owner)s, %(lease)s);

-- name: release_task
-- Ends the attempt and gives the task up: 'released' (every step succeeded: the checkpoint
-- row went), 'kept' (for the next attempt), or 'lost' (another worker has it now).
SELECT jr_checkpoint_end_v2(%(task_id)s, %(owner)s, %(completed)s, %(exhausted)s, %(outcome)s,
                            %(resumed_at)s, %(ran)s::integer[], %(skipped)s::integer[],
                            %(failed)s::integer[]);

-- name: note_unchecked
-- A call that never held the lease (the server was down when it began), noted at its end.
SELECT jr_checkpoint_note_unchecked_v2(%(task_id)s, %(holder)s::jsonb, %(ran)s::integer[],
                                       %(failed)s::integer[]);

-- name: load_task
SELECT
    (SELECT row_to_json(c) FROM (
        SELECT last_completed_step, total_steps, checkpoint_data, created_at, updated_at
        FROM jr_task_checkpoints WHERE task_id = %(task_id)s) c),
    (SELECT json_agg(s ORDER BY s.step_number) FROM (
        SELECT step_number, step_type, target_file, step_content_hash, execution_result,
               execution_time_ms, error_detail, created_at, updated_at
        FROM jr_step_rewards WHERE task_id = %(task_id)s) s);

-- name: save_checkpoint
INSERT INTO jr_task_checkpoints
    (task_id, last_completed_step, total_steps, checkpoint_data)
VALUES (%(task_id)s, %(last_completed_step)s, %(total_steps)s, %(checkpoint_data)s)
ON CONFLICT (task_id) DO UPDATE SET
    last_completed_step = EXCLUDED.last_completed_step,
    total_steps = COALESCE(EXCLUDED.total_steps, jr_task_checkpoints.total_steps),
    checkpoint_data = EXCLUDED.checkpoint_data,
    updated_at = NOW();

-- name: get_last_checkpoint
SELECT last_completed_step, total_steps, checkpoint_data
FROM jr_task_checkpoints
WHERE task_id = %(task_id)s;

-- name: cleanup_checkpoints
DELETE FROM jr_task_checkpoints WHERE task_id = %(task_id)s;

-- name: forget_task
WITH steps AS (DELETE FROM jr_step_rewards WHERE task_id = %(task_id)s RETURNING 1),
     checkpoint AS (DELETE FROM jr_task_checkpoints WHERE task_id = %(task_id)s RETURNING 1),
     attempts AS (DELETE FROM jr_task_attempts WHERE task_id = %(task_id)s RETURNING 1)
SELECT (SELECT count(*) FROM steps), (SELECT count(*) FROM checkpoint);

-- The previous release's protocol (version 1), used by this release's workers only while the
-- database has not been migrated yet (functions.sql keeps both): a rolling upgrade where the
-- workers are restarted before `jr-checkpoint migrate` runs keeps one protocol per task.

-- name: begin_task_v1
SELECT jr_checkpoint_begin(%(task_id)s::text::integer, %(total_steps)s::text::integer,
                           %(owner)s, %(lease)s, %(holder)s::jsonb, %(takeover)s);

-- name: record_step_v1
SELECT jr_checkpoint_record_step(
    %(task_id)s::text::integer, %(owner)s, %(step_number)s::text::integer, %(step_type)s,
    %(target_file)s, %(content_hash)s, %(execution_result)s,
    %(execution_time_ms)s::text::integer, %(error_detail)s,
    %(last_completed_step)s::text::integer, %(total_steps)s::text::integer, %(lease)s);

-- name: renew_lease_v1
WITH renewed AS (
    UPDATE jr_task_checkpoints
    SET checkpoint_data = COALESCE(checkpoint_data, '{}'::jsonb) || jsonb_build_object(
            'owner', %(owner)s, 'lease_until', extract(epoch FROM clock_timestamp()) + %(lease)s)
    WHERE task_id = %(task_id)s::text::integer
      AND (checkpoint_data ->> 'owner' = %(owner)s OR NOT COALESCE(checkpoint_data ? 'fence', false))
    RETURNING 1
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM renewed)
                 AND EXISTS (SELECT 1 FROM jr_task_checkpoints
                             WHERE task_id = %(task_id)s::text::integer
                               AND COALESCE(checkpoint_data ? 'fence', false))
            THEN 'lost' ELSE 'kept' END;

-- name: release_task_v1
WITH gone AS (
    DELETE FROM jr_task_checkpoints
    WHERE task_id = %(task_id)s AND %(completed)s AND checkpoint_data ->> 'owner' = %(owner)s
    RETURNING 1
), kept AS (
    UPDATE jr_task_checkpoints
    SET checkpoint_data = checkpoint_data - 'owner' - 'lease_until' - 'holder'
            || CASE WHEN %(exhausted)s THEN '{"exhausted": true}'::jsonb ELSE '{}'::jsonb END,
        updated_at = NOW()
    WHERE task_id = %(task_id)s AND NOT %(completed)s AND checkpoint_data ->> 'owner' = %(owner)s
    RETURNING 1
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM gone) THEN 'released'
            WHEN EXISTS (SELECT 1 FROM kept) THEN 'kept' ELSE 'lost' END;

-- name: live_shape
-- The checkpoint tables as they are (jr_checkpoint.shape): one row per table found, with its
-- columns [name, type, characters of a VARCHAR/CHAR or NULL, NOT NULL, has a default] and the
-- key columns of each unique index that ON CONFLICT can use (immediate, valid, no predicate,
-- no expression). Sent once per store, before its first task, and by `migrate`.
SELECT c.relname,
       (SELECT json_agg(json_build_array(
                   a.attname, format_type(a.atttypid, a.atttypmod),
                   CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype)
                             AND a.atttypmod >= 4 THEN a.atttypmod - 4 END,
                   a.attnotnull, a.atthasdef) ORDER BY a.attnum)
        FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT json_agg((SELECT json_agg(a.attname ORDER BY k.ord)
                         FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                         WHERE k.ord <= i.indnkeyatts))
        FROM pg_index i
        WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL)
FROM pg_class c
WHERE c.oid IN (to_regclass('jr_step_rewards'), to_regclass('jr_task_checkpoints'),
                to_regclass('jr_task_attempts'))
ORDER BY c.relname;
