-- jr_checkpoint/sql/functions.sql of the previous release (commit 91181ef), as that release's
-- `migrate` created it: the rolling-upgrade tests put it in a database of this release's.

-- The two per-task functions the ledger calls, created by `jr-checkpoint migrate` after the
-- seed's tables. Functions, not prepared statements: PostgreSQL caches their plans inside each
-- server process with no named statement, so they are parsed once and still work through a
-- pooler in transaction mode, where PREPARE and session state do not carry over.
--
-- A task's lease lives in its checkpoint row's checkpoint_data (the seed's columns stay):
--   owner        a random token, the worker that may run the task's steps now
--   fence        how many times the task changed hands
--   lease_until  server epoch seconds; past it, another worker may take the task
--   holder       {"host", "pid", "proc"}: lets a worker on the same host see that the owner died
-- Every write checks the owner on the locked checkpoint row, so a worker that lost the task
-- writes nothing and finds out.

-- Takes the task unless a live owner holds it (or takes it from `p_takeover`, an owner the
-- caller saw die), counts the attempt, and returns the checkpoint and every step row, or the
-- current holder when the task is not taken. One call, so one round trip.
-- `p_owner` is new for each begin_task, so a row it already owns means this very call was sent
-- again after its answer was lost: the task is still taken, and counted once.
CREATE OR REPLACE FUNCTION jr_checkpoint_begin(
    p_task_id integer, p_total_steps integer, p_owner text, p_lease double precision,
    p_holder jsonb, p_takeover text)
RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := extract(epoch FROM clock_timestamp());
    v_taken json;
    v_holder jsonb;
BEGIN
    INSERT INTO jr_task_checkpoints AS t (task_id, last_completed_step, total_steps, checkpoint_data)
    VALUES (p_task_id, -1, p_total_steps, jsonb_build_object(
        'attempts', 1, 'owner', p_owner, 'fence', 1, 'lease_until', v_now + p_lease,
        'holder', p_holder))
    ON CONFLICT (task_id) DO UPDATE SET
        total_steps = COALESCE(EXCLUDED.total_steps, t.total_steps),
        checkpoint_data = COALESCE(t.checkpoint_data, '{}'::jsonb) || jsonb_build_object(
            'attempts',
            CASE WHEN jsonb_typeof(t.checkpoint_data -> 'attempts') = 'number'
                 THEN (t.checkpoint_data ->> 'attempts')::numeric::integer
                      + CASE WHEN t.checkpoint_data ->> 'owner' = p_owner THEN 0 ELSE 1 END
                 ELSE 1 END,
            'owner', p_owner,
            'fence',
            CASE WHEN jsonb_typeof(t.checkpoint_data -> 'fence') = 'number'
                 THEN (t.checkpoint_data ->> 'fence')::numeric::bigint
                      + CASE WHEN t.checkpoint_data ->> 'owner' = p_owner THEN 0 ELSE 1 END
                 ELSE 1 END,
            'lease_until', v_now + p_lease,
            'holder', p_holder),
        updated_at = NOW()
    WHERE t.checkpoint_data IS NULL
       OR NOT (t.checkpoint_data ? 'owner')
       OR jsonb_typeof(t.checkpoint_data -> 'lease_until') IS DISTINCT FROM 'number'
       OR (t.checkpoint_data ->> 'lease_until')::double precision < v_now
       OR t.checkpoint_data ->> 'owner' = p_takeover
       OR t.checkpoint_data ->> 'owner' = p_owner
    RETURNING json_build_object('last_completed_step', t.last_completed_step,
                                'total_steps', t.total_steps,
                                'checkpoint_data', t.checkpoint_data)
    INTO v_taken;
    IF v_taken IS NULL THEN
        SELECT checkpoint_data INTO v_holder FROM jr_task_checkpoints WHERE task_id = p_task_id;
        RETURN json_build_object('taken', false, 'holder', v_holder, 'now', v_now);
    END IF;
    -- A new statement, so a new snapshot: it sees every step the previous owner committed.
    RETURN json_build_object(
        'taken', true, 'checkpoint', v_taken,
        'steps', (SELECT json_agg(json_build_array(step_number, execution_result, step_content_hash,
                                                   step_type, target_file) ORDER BY step_number)
                  FROM jr_step_rewards WHERE task_id = p_task_id));
END $$;

-- Records one step's outcome and moves the checkpoint, only while p_owner owns the task.
-- Returns false, and writes nothing, when it does not. The lease is not touched here (the
-- keeper thread renews it): the common path rewrites no JSON.
CREATE OR REPLACE FUNCTION jr_checkpoint_record_step(
    p_task_id integer, p_owner text, p_step_number integer, p_step_type varchar,
    p_target_file text, p_hash varchar, p_result varchar, p_time_ms integer, p_error text,
    p_last_completed_step integer, p_total_steps integer,
    p_lease double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jr_task_checkpoints SET
        last_completed_step = p_last_completed_step,
        total_steps = COALESCE(p_total_steps, total_steps),
        updated_at = NOW()
    WHERE task_id = p_task_id AND checkpoint_data ->> 'owner' = p_owner;
    IF NOT FOUND THEN
        -- Not ours as it stands. If the host's own save_checkpoint() replaced checkpoint_data
        -- (no fence left) or its cleanup_checkpoints() deleted the row while we ran, nobody
        -- took the task from us: take it back. A row another worker took or released keeps
        -- its fence, and then we have lost the task.
        UPDATE jr_task_checkpoints SET
            last_completed_step = p_last_completed_step,
            total_steps = COALESCE(p_total_steps, total_steps),
            checkpoint_data = COALESCE(checkpoint_data, '{}'::jsonb) || jsonb_build_object(
                'owner', p_owner,
                'lease_until', extract(epoch FROM clock_timestamp()) + p_lease),
            updated_at = NOW()
        WHERE task_id = p_task_id AND NOT COALESCE(checkpoint_data ? 'fence', false);
        IF NOT FOUND THEN
            INSERT INTO jr_task_checkpoints (task_id, last_completed_step, total_steps, checkpoint_data)
            VALUES (p_task_id, p_last_completed_step, p_total_steps, jsonb_build_object(
                'owner', p_owner,
                'lease_until', extract(epoch FROM clock_timestamp()) + p_lease))
            ON CONFLICT (task_id) DO NOTHING;
            IF NOT FOUND THEN
                RETURN false;
            END IF;
        END IF;
    END IF;
    INSERT INTO jr_step_rewards AS r
        (task_id, step_number, step_type, target_file, step_content_hash,
         execution_result, execution_time_ms, error_detail)
    VALUES (p_task_id, p_step_number, p_step_type, p_target_file, p_hash,
            p_result, p_time_ms, p_error)
    ON CONFLICT (task_id, step_number) DO UPDATE SET
        step_type = EXCLUDED.step_type,
        target_file = EXCLUDED.target_file,
        step_content_hash = EXCLUDED.step_content_hash,
        execution_result = EXCLUDED.execution_result,
        execution_time_ms = EXCLUDED.execution_time_ms,
        error_detail = EXCLUDED.error_detail,
        updated_at = NOW();
    RETURN true;
END $$;

