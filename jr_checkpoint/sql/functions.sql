-- The ledger's functions, created by `jr-checkpoint migrate` after the tables. Functions, not
-- prepared statements: PostgreSQL caches their plans inside each server process with no named
-- statement, so they are parsed once and still work through a pooler in transaction mode,
-- where PREPARE and session state do not carry over.
--
-- A task's lease lives in its checkpoint row's checkpoint_data (the seed's columns stay):
--   owner        a random token, the worker that may run the task's steps now
--   fence        how many times the task changed hands
--   lease_until  server epoch seconds; past it, another worker may take the task
--   holder       {"host", "pid", "proc"}: lets a worker on the same host see that the owner died
--
-- ---------------------------------------------------------------------------------------------
-- Version 2: the lease's fence outlives the checkpoint row.
--
-- The previous release's functions (version 1, jr_checkpoint_begin and
-- jr_checkpoint_record_step) are neither created nor changed here: where that release
-- migrated the database they stay for its workers during a rolling upgrade, until
-- `jr-checkpoint migrate --drop-old`. Version 1 read a missing checkpoint row
-- as "the host's cleanup_checkpoints() removed it" and took the task back, so a stale worker
-- could write after another worker had finished and released the task.
--
-- Version 2 keeps the fence in jr_task_attempts, one row per attempt, kept after the task
-- ends: an owner token is valid while its attempt row is open (ended_at IS NULL). A worker
-- that takes a task over closes the previous open attempt ('died'), so a stale owner finds
-- its attempt closed whatever became of the checkpoint row, and writes nothing. A row the
-- host's own cleanup_checkpoints() deleted (or save_checkpoint() replaced) while its attempt
-- is open is taken back, as before.
--
-- Lock order, always: the checkpoint row, then attempt rows. The per-step fast path locks
-- only the checkpoint row.
-- ---------------------------------------------------------------------------------------------

-- Closes the task's open attempts other than p_owner's as 'died', filling in from the step
-- rows what they ran, failed and skipped (an attempt that died never wrote its own end).
CREATE OR REPLACE FUNCTION jr_checkpoint_close_dead_v2(p_task_id integer, p_owner text)
RETURNS void LANGUAGE sql AS $$
    UPDATE jr_task_attempts a SET
        ended_at = NOW(),
        outcome = 'died',
        ran = COALESCE(a.ran, s.ran, '{}'),
        failed = COALESCE(a.failed, s.failed, '{}'),
        skipped = COALESCE(a.skipped, s.skipped, '{}'),
        resumed_at = COALESCE(a.resumed_at, CASE WHEN s.skipped IS NOT NULL THEN s.first_ran END)
    FROM jr_task_attempts o
    LEFT JOIN LATERAL (
        SELECT array_agg(step_number ORDER BY step_number)
                   FILTER (WHERE updated_at >= o.started_at) AS ran,
               array_agg(step_number ORDER BY step_number)
                   FILTER (WHERE updated_at >= o.started_at AND execution_result <> 'success') AS failed,
               array_agg(step_number ORDER BY step_number)
                   FILTER (WHERE updated_at < o.started_at AND execution_result = 'success') AS skipped,
               min(step_number) FILTER (WHERE updated_at >= o.started_at) AS first_ran
        FROM jr_step_rewards WHERE task_id = p_task_id) s ON true
    WHERE a.task_id = p_task_id AND o.task_id = a.task_id AND o.attempt = a.attempt
      AND a.ended_at IS NULL AND a.owner IS DISTINCT FROM p_owner;
$$;

-- Takes the task unless a live owner holds it (or takes it from `p_takeover`, an owner the
-- caller saw die), counts the attempt, opens its attempt row, and returns the checkpoint and
-- every step row, or the current holder when the task is not taken. One round trip.
-- `p_owner` is new for each call, so a row it already owns means this very call was sent
-- again after its answer was lost: the task is still taken, and counted once.
-- A fresh task costs five statements (whose the row was, the checkpoint row, one read of the
-- task's attempts, the attempt row, the steps): the one read of the attempts tells whether
-- there is a lease to give back or an attempt to close, instead of a statement for each.
CREATE OR REPLACE FUNCTION jr_checkpoint_begin_v2(
    p_task_id integer, p_total_steps integer, p_owner text, p_lease double precision,
    p_holder jsonb, p_takeover text)
RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := extract(epoch FROM clock_timestamp());
    v_taken json;
    v_prior text;
    v_holder jsonb;
    v_attempt integer;
    v_last integer;
    v_open boolean;
    v_live integer;
    v_row jr_task_attempts%ROWTYPE;
BEGIN
    -- Whose the row was (no lock: the upsert below decides, on the locked row).
    SELECT checkpoint_data ->> 'owner' INTO v_prior FROM jr_task_checkpoints WHERE task_id = p_task_id;
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
    IF v_taken IS NOT NULL THEN
        -- The task's attempts, in one read: the last number, ours (this very call sent again),
        -- whether another is open, and the latest other one still live by its lease.
        SELECT max(attempt), max(attempt) FILTER (WHERE owner = p_owner),
               bool_or(ended_at IS NULL AND owner IS DISTINCT FROM p_owner),
               max(attempt) FILTER (WHERE ended_at IS NULL AND lease_until >= v_now
                                      AND owner IS DISTINCT FROM p_owner
                                      AND owner IS DISTINCT FROM p_takeover)
          INTO v_last, v_attempt, v_open, v_live
          FROM jr_task_attempts WHERE task_id = p_task_id;
        IF v_prior IS NULL AND v_live IS NOT NULL THEN
            -- The row was new, or had no owner, and a live owner's attempt is open: the
            -- host's own cleanup_checkpoints() or save_checkpoint() removed its lease from
            -- the row. Give the lease back, and do not take the task.
            SELECT * INTO v_row FROM jr_task_attempts WHERE task_id = p_task_id AND attempt = v_live;
            UPDATE jr_task_checkpoints SET checkpoint_data = checkpoint_data || jsonb_build_object(
                'owner', v_row.owner, 'lease_until', v_row.lease_until,
                'holder', jsonb_build_object('host', v_row.host, 'pid', v_row.pid))
            WHERE task_id = p_task_id;
            v_taken := NULL;
        END IF;
    END IF;
    IF v_taken IS NULL THEN
        SELECT checkpoint_data INTO v_holder FROM jr_task_checkpoints WHERE task_id = p_task_id;
        RETURN json_build_object('taken', false, 'holder', v_holder, 'now', v_now);
    END IF;
    IF v_open THEN
        PERFORM jr_checkpoint_close_dead_v2(p_task_id, p_owner);  -- as 'died'
    END IF;
    -- Our attempt's number: the next one. The note of an unchecked call (note_unchecked_v2)
    -- may take it at the same moment, unseen by the read above (the checkpoint row it would
    -- lock may not exist yet): then the next again, not a key violation.
    WHILE v_attempt IS NULL LOOP
        INSERT INTO jr_task_attempts (task_id, attempt, owner, host, pid, lease_until)
        VALUES (p_task_id, COALESCE(v_last, 0) + 1, p_owner, p_holder ->> 'host',
                CASE WHEN jsonb_typeof(p_holder -> 'pid') = 'number' THEN (p_holder ->> 'pid')::integer END,
                v_now + p_lease)
        ON CONFLICT (task_id, attempt) DO NOTHING
        RETURNING attempt INTO v_attempt;
        v_last := COALESCE(v_last, 0) + 1;
    END LOOP;
    -- A new statement, so a new snapshot: it sees every step the previous owner committed.
    RETURN json_build_object(
        'taken', true, 'checkpoint', v_taken, 'attempt', v_attempt,
        'steps', (SELECT json_agg(json_build_array(step_number, execution_result, step_content_hash,
                                                   step_type, target_file) ORDER BY step_number)
                  FROM jr_step_rewards WHERE task_id = p_task_id));
END $$;

-- Ends p_owner's attempt: closes its attempt row with what it ran, skipped and failed, and
-- gives the task up. When p_completed the checkpoint row goes (step rows and the attempt row
-- stay as history); otherwise it stays, without an owner, for the next attempt, marked
-- "exhausted" when the task used up its attempts. An attempt that another worker had closed
-- meanwhile (it took the task over) is marked 'lost' and the task is left alone.
-- Returns 'released' (the checkpoint row went), 'kept', or 'lost'.
CREATE OR REPLACE FUNCTION jr_checkpoint_end_v2(
    p_task_id integer, p_owner text, p_completed boolean, p_exhausted boolean, p_outcome text,
    p_resumed_at integer, p_ran integer[], p_skipped integer[], p_failed integer[])
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_open boolean;
    v_outcome text;
    v_gone integer := 0;
BEGIN
    PERFORM 1 FROM jr_task_checkpoints WHERE task_id = p_task_id FOR UPDATE;  -- lock order
    SELECT ended_at IS NULL, outcome INTO v_open, v_outcome FROM jr_task_attempts
    WHERE task_id = p_task_id AND owner = p_owner FOR UPDATE;
    IF NOT v_open AND v_outcome <> 'died' THEN
        -- We closed it ourselves: this very call, sent again after its answer was lost.
        RETURN CASE WHEN v_outcome = 'lost' THEN 'lost' WHEN v_outcome = 'finished' THEN 'released'
                    ELSE 'kept' END;
    END IF;
    IF v_open THEN
        IF p_completed THEN
            DELETE FROM jr_task_checkpoints WHERE task_id = p_task_id
              AND (checkpoint_data IS NULL OR NOT (checkpoint_data ? 'owner')
                   OR checkpoint_data ->> 'owner' = p_owner);
            GET DIAGNOSTICS v_gone = ROW_COUNT;
        ELSE
            UPDATE jr_task_checkpoints
            SET checkpoint_data = COALESCE(checkpoint_data, '{}'::jsonb) - 'owner' - 'lease_until' - 'holder'
                    || CASE WHEN p_exhausted THEN '{"exhausted": true}'::jsonb ELSE '{}'::jsonb END,
                updated_at = NOW()
            WHERE task_id = p_task_id AND checkpoint_data ->> 'owner' = p_owner;
        END IF;
    END IF;
    UPDATE jr_task_attempts SET
        ended_at = COALESCE(ended_at, NOW()),
        outcome = CASE WHEN v_open THEN p_outcome ELSE 'lost' END,
        resumed_at = p_resumed_at, ran = p_ran, skipped = p_skipped, failed = p_failed
    WHERE task_id = p_task_id AND owner = p_owner;
    IF v_open IS NOT TRUE THEN
        RETURN 'lost';
    END IF;
    RETURN CASE WHEN v_gone > 0 THEN 'released' ELSE 'kept' END;
END $$;

-- Records one step's outcome and moves the checkpoint, only while p_owner owns the task.
-- Returns false, and writes nothing, when it does not. The lease is not touched here (the
-- keeper thread renews it): the common path rewrites no JSON and locks only the checkpoint
-- row. Its twelve arguments and nothing more: five more, defaulted, cost the server about
-- 20 us a call (measured); the last step goes through jr_checkpoint_finish_step_v2 instead.
-- No SET clause either (a lock_timeout on it cost 25-40 us a call, measured): the row locks
-- it may wait for are held only by the ledger's other one-statement transactions.
CREATE OR REPLACE FUNCTION jr_checkpoint_record_step_v2(
    p_task_id integer, p_owner text, p_step_number integer, p_step_type varchar,
    p_target_file text, p_hash varchar, p_result varchar, p_time_ms integer, p_error text,
    p_last_completed_step integer, p_total_steps integer, p_lease double precision)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jr_task_checkpoints SET
        last_completed_step = p_last_completed_step,
        total_steps = COALESCE(p_total_steps, total_steps),
        updated_at = NOW()
    WHERE task_id = p_task_id AND checkpoint_data ->> 'owner' = p_owner;
    IF NOT FOUND THEN
        -- Not ours as the row stands. Ours still if our attempt is open: the host's own
        -- save_checkpoint() replaced checkpoint_data or its cleanup_checkpoints() deleted the
        -- row while we ran. Then take it back; a row another worker holds keeps its owner.
        PERFORM 1 FROM jr_task_attempts
        WHERE task_id = p_task_id AND owner = p_owner AND ended_at IS NULL;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        INSERT INTO jr_task_checkpoints AS t (task_id, last_completed_step, total_steps, checkpoint_data)
        VALUES (p_task_id, p_last_completed_step, p_total_steps, jsonb_build_object(
            'owner', p_owner, 'fence', 1,
            'lease_until', extract(epoch FROM clock_timestamp()) + p_lease))
        ON CONFLICT (task_id) DO UPDATE SET
            last_completed_step = EXCLUDED.last_completed_step,
            total_steps = COALESCE(EXCLUDED.total_steps, t.total_steps),
            checkpoint_data = COALESCE(t.checkpoint_data, '{}'::jsonb) || jsonb_build_object(
                'owner', p_owner, 'fence', 1,
                'lease_until', extract(epoch FROM clock_timestamp()) + p_lease),
            updated_at = NOW()
        WHERE t.checkpoint_data IS NULL OR NOT (t.checkpoint_data ? 'owner');
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        -- Re-checked on the locked row: a takeover closes our attempt after locking it.
        PERFORM 1 FROM jr_task_attempts
        WHERE task_id = p_task_id AND owner = p_owner AND ended_at IS NULL;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'jr-checkpoint: task % changed hands', p_task_id USING ERRCODE = 'JRC01';
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

-- A task's last step: its record, then, in the same statement, the end of the attempt
-- (jr_checkpoint_end_v2), so that giving the task up costs no round trip of its own.
-- The common case costs three statements: deleting our own checkpoint row is the fence (it
-- locks the row, and finds it only while we own it), then the step row and the attempt's end.
-- Anything else (a row the host's own helpers changed, a takeover, this very call sent again)
-- goes the general way: the record, then jr_checkpoint_end_v2.
CREATE OR REPLACE FUNCTION jr_checkpoint_finish_step_v2(
    p_task_id integer, p_owner text, p_step_number integer, p_step_type varchar,
    p_target_file text, p_hash varchar, p_result varchar, p_time_ms integer, p_error text,
    p_last_completed_step integer, p_total_steps integer, p_lease double precision,
    p_end_outcome text, p_resumed_at integer, p_ran integer[], p_skipped integer[],
    p_failed integer[])
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM jr_task_checkpoints WHERE task_id = p_task_id AND checkpoint_data ->> 'owner' = p_owner;
    IF FOUND THEN
        -- Ours, locked: a takeover changes the row's owner first, so our attempt is open.
        UPDATE jr_task_attempts SET
            ended_at = NOW(), outcome = p_end_outcome, resumed_at = p_resumed_at,
            ran = p_ran, skipped = p_skipped, failed = p_failed
        WHERE task_id = p_task_id AND owner = p_owner AND ended_at IS NULL;
        IF NOT FOUND THEN  -- cannot happen (see above); if it did, write nothing
            RAISE EXCEPTION 'jr-checkpoint: task % changed hands', p_task_id USING ERRCODE = 'JRC01';
        END IF;
        -- record_step_v2's upsert, written out rather than called: the call would first update
        -- the row just deleted (measured: about 90 us more server CPU a finish).
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
    END IF;
    IF NOT jr_checkpoint_record_step_v2(p_task_id, p_owner, p_step_number, p_step_type,
            p_target_file, p_hash, p_result, p_time_ms, p_error, p_last_completed_step,
            p_total_steps, p_lease) THEN
        -- This very call, sent again after its answer was lost, had ended the attempt.
        RETURN EXISTS (SELECT 1 FROM jr_task_attempts
                       WHERE task_id = p_task_id AND owner = p_owner AND outcome = p_end_outcome);
    END IF;
    PERFORM jr_checkpoint_end_v2(p_task_id, p_owner, true, false, p_end_outcome,
                                 p_resumed_at, p_ran, p_skipped, p_failed);
    RETURN true;
END $$;

-- Pushes the lease's expiry back, on the checkpoint row and on the attempt row. 'kept', or
-- 'lost' when another worker holds the checkpoint row or our attempt was closed. A checkpoint
-- row the host's own helpers removed is not lost: the next record takes it back.
CREATE OR REPLACE FUNCTION jr_checkpoint_renew_v2(p_task_id integer, p_owner text, p_lease double precision)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_until double precision := extract(epoch FROM clock_timestamp()) + p_lease;
BEGIN
    UPDATE jr_task_checkpoints
    SET checkpoint_data = checkpoint_data || jsonb_build_object('lease_until', v_until)
    WHERE task_id = p_task_id AND checkpoint_data ->> 'owner' = p_owner;
    IF NOT FOUND AND EXISTS (SELECT 1 FROM jr_task_checkpoints
                             WHERE task_id = p_task_id AND checkpoint_data ? 'owner') THEN
        RETURN 'lost';
    END IF;
    UPDATE jr_task_attempts SET lease_until = v_until
    WHERE task_id = p_task_id AND owner = p_owner AND ended_at IS NULL;
    RETURN CASE WHEN FOUND THEN 'kept' ELSE 'lost' END;
END $$;

-- A call that ran without the task's lease (the server was down when it began): one attempt
-- row, 'unchecked', written when the server answers again at the call's end.
CREATE OR REPLACE FUNCTION jr_checkpoint_note_unchecked_v2(
    p_task_id integer, p_holder jsonb, p_ran integer[], p_failed integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_attempt integer;
BEGIN
    PERFORM 1 FROM jr_task_checkpoints WHERE task_id = p_task_id FOR UPDATE;  -- beside begin_v2
    -- The next number; a begin that has not committed its attempt row yet may hold it: then,
    -- once it has, the next again (each try a new statement, which sees it).
    WHILE v_attempt IS NULL LOOP
        INSERT INTO jr_task_attempts (task_id, attempt, host, pid, ended_at, outcome, ran, failed)
        SELECT p_task_id, COALESCE(max(attempt), 0) + 1, p_holder ->> 'host',
               CASE WHEN jsonb_typeof(p_holder -> 'pid') = 'number' THEN (p_holder ->> 'pid')::integer END,
               NOW(), 'unchecked', p_ran, p_failed
        FROM jr_task_attempts WHERE task_id = p_task_id
        ON CONFLICT (task_id, attempt) DO NOTHING
        RETURNING attempt INTO v_attempt;
    END LOOP;
    RETURN v_attempt;
END $$;
