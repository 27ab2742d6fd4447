-- Every statement the ledger sends, one per "-- name: ..." header.
-- Parameters are always bound (%(name)s), never formatted into the text.
-- Advisory locks use the two-key form: (namespace, task_id).

-- name: migration_lock
-- Serializes concurrent migrations: CREATE ... IF NOT EXISTS races on the catalog.
SELECT pg_advisory_xact_lock(%(namespace)s, 0);

-- name: table_columns
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid IN (to_regclass('jr_step_rewards'), to_regclass('jr_task_checkpoints'))
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY c.relname, a.attnum;

-- name: drop_tables
DROP TABLE IF EXISTS jr_step_rewards, jr_task_checkpoints;

-- name: try_lock_task
SELECT pg_try_advisory_lock(%(namespace)s, %(task_id)s);

-- name: begin_attempt
-- Loads everything recorded for a task in one query, and counts the attempt.
-- Run only while holding the task's lock, so the snapshot sees every earlier commit.
WITH checkpoint AS (
    INSERT INTO jr_task_checkpoints AS t (task_id, last_completed_step, total_steps, checkpoint_data)
    VALUES (%(task_id)s, -1, %(total_steps)s, jsonb_build_object('attempts', 1))
    ON CONFLICT (task_id) DO UPDATE SET
        total_steps = COALESCE(EXCLUDED.total_steps, t.total_steps),
        checkpoint_data = COALESCE(t.checkpoint_data, '{}'::jsonb) || jsonb_build_object(
            'attempts',
            CASE WHEN jsonb_typeof(t.checkpoint_data -> 'attempts') = 'number'
                 THEN (t.checkpoint_data ->> 'attempts')::numeric::integer + 1
                 ELSE 1 END),
        updated_at = NOW()
    RETURNING last_completed_step, total_steps, checkpoint_data
)
SELECT
    (SELECT row_to_json(c) FROM checkpoint c),
    (SELECT json_agg(json_build_array(step_number, execution_result, step_content_hash,
                                       step_type, target_file)
                     ORDER BY step_number)
     FROM jr_step_rewards WHERE task_id = %(task_id)s);

-- name: record_step
-- One statement, so one round trip and one transaction: the step's row and the task's checkpoint.
-- The per-step statement: the store sends it as a server-side prepared statement.
WITH step AS (
    INSERT INTO jr_step_rewards AS r
        (task_id, step_number, step_type, target_file, step_content_hash,
         execution_result, execution_time_ms, error_detail)
    VALUES (%(task_id)s, %(step_number)s, %(step_type)s, %(target_file)s, %(content_hash)s,
            %(execution_result)s, %(execution_time_ms)s, %(error_detail)s)
    ON CONFLICT (task_id, step_number) DO UPDATE SET
        step_type = EXCLUDED.step_type,
        target_file = EXCLUDED.target_file,
        step_content_hash = EXCLUDED.step_content_hash,
        execution_result = EXCLUDED.execution_result,
        execution_time_ms = EXCLUDED.execution_time_ms,
        error_detail = EXCLUDED.error_detail,
        updated_at = NOW()
    RETURNING task_id
)
INSERT INTO jr_task_checkpoints AS t (task_id, last_completed_step, total_steps, checkpoint_data)
SELECT task_id, %(last_completed_step)s::integer, %(total_steps)s::integer,
       %(checkpoint_data)s::jsonb
FROM step
ON CONFLICT (task_id) DO UPDATE SET
    last_completed_step = EXCLUDED.last_completed_step,
    total_steps = COALESCE(EXCLUDED.total_steps, t.total_steps),
    checkpoint_data = COALESCE(t.checkpoint_data, '{}'::jsonb)
                      || COALESCE(EXCLUDED.checkpoint_data, '{}'::jsonb),
    updated_at = NOW();

-- name: finish_task
-- Releases the task's lock and, when every step succeeded, drops its checkpoint row.
-- Step rows stay as history.
WITH gone AS (
    DELETE FROM jr_task_checkpoints
    WHERE task_id = %(task_id)s AND %(completed)s
    RETURNING 1
)
SELECT pg_advisory_unlock(%(namespace)s, %(task_id)s), (SELECT count(*) FROM gone);

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
     checkpoint AS (DELETE FROM jr_task_checkpoints WHERE task_id = %(task_id)s RETURNING 1)
SELECT (SELECT count(*) FROM steps), (SELECT count(*) FROM checkpoint);
