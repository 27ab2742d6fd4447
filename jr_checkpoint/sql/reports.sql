-- The command line's own statements: reports (stats), prune, and the demo's task ids.
-- Same format as queries.sql: one "-- name: ..." header per statement, parameters bound.
-- %(seconds)s is a window in seconds, or NULL for "all time"; the columns are TIMESTAMP
-- (no time zone) filled by NOW(), so windows are measured from LOCALTIMESTAMP.
-- The stats queries take the window's start, %(since)s (window_start, computed once per
-- report): a constant, so the planner sees how many rows the window holds, and a filter
-- never recomputes LOCALTIMESTAMP - interval for every row (a third of a 7-day scan's time).

-- name: window_start
SELECT LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8);

-- name: stats_by_type
-- One row per step type, then a total row (step_type NULL, is_total true).
-- "rerun": a success row updated after it was created: the step ran again after a failure
-- (or a change to its content) and then succeeded. A step killed mid-run leaves no row.
--
-- One hashed pass over the window's rows into a histogram: one row per step type and
-- distinct duration (a few thousand rows, however many steps). The counts and the exact
-- percentiles come from it: percentile_cont(p) over n durations is the value at 0-based
-- position p*(n-1) in sorted order, interpolated between the rows floor() and ceil() of it,
-- computed here with PostgreSQL's own float8 arithmetic (lo + frac * (hi - lo)), so the
-- figures are identical to percentile_cont's. (percentile_cont itself sorts every row of
-- the window, spilling to disk past work_mem: 1.5 s on a million rows.)
WITH hist AS (
    SELECT step_type, execution_time_ms AS ms, count(*) AS steps,
           count(*) FILTER (WHERE execution_result = 'success') AS succeeded,
           count(*) FILTER (WHERE execution_result = 'success' AND updated_at > created_at) AS rerun
    FROM jr_step_rewards
    WHERE %(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp
    GROUP BY step_type, execution_time_ms
),
by_group AS (  -- per type and duration, and per duration over every type (the total row)
    SELECT step_type, grouping(step_type) = 1 AS is_total, ms,
           sum(steps)::bigint AS steps, sum(succeeded)::bigint AS succeeded,
           sum(rerun)::bigint AS rerun
    FROM hist
    GROUP BY GROUPING SETS ((step_type, ms), (ms))
),
ranked AS (  -- timed: durations in the group; upto: durations <= ms (NULL durations last)
    SELECT *,
           (sum(steps) FILTER (WHERE ms IS NOT NULL) OVER (PARTITION BY is_total, step_type))::bigint AS timed,
           (sum(steps) FILTER (WHERE ms IS NOT NULL)
                OVER (PARTITION BY is_total, step_type ORDER BY ms))::bigint AS upto
    FROM by_group
),
summary AS (
    SELECT step_type, is_total, sum(steps)::bigint AS steps, sum(succeeded)::bigint AS succeeded,
           sum(rerun)::bigint AS rerun,
           0.5::float8 * (max(timed) - 1)::float8 AS pos50,
           0.95::float8 * (max(timed) - 1)::float8 AS pos95,
           -- the value at 0-based position k is the smallest duration with more than k at or below it
           min(ms) FILTER (WHERE upto > floor(0.5::float8 * (timed - 1)::float8)) AS lo50,
           min(ms) FILTER (WHERE upto > ceil(0.5::float8 * (timed - 1)::float8)) AS hi50,
           min(ms) FILTER (WHERE upto > floor(0.95::float8 * (timed - 1)::float8)) AS lo95,
           min(ms) FILTER (WHERE upto > ceil(0.95::float8 * (timed - 1)::float8)) AS hi95
    FROM ranked
    GROUP BY is_total, step_type
)
SELECT CASE WHEN is_total THEN NULL ELSE coalesce(step_type, 'unknown') END,
       is_total,
       steps,
       (100.0 * succeeded / NULLIF(steps, 0))::float8,
       rerun,
       steps - succeeded,
       lo50::float8 + (pos50 - floor(pos50)) * (hi50::float8 - lo50::float8),
       lo95::float8 + (pos95 - floor(pos95)) * (hi95::float8 - lo95::float8)
FROM summary
ORDER BY is_total, steps DESC, 1;

-- name: stats_slowest
SELECT task_id, step_number, step_type, target_file, execution_result, execution_time_ms
FROM jr_step_rewards
WHERE execution_time_ms IS NOT NULL
  AND (%(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp)
ORDER BY execution_time_ms DESC, task_id, step_number
LIMIT %(limit)s;

-- name: stats_failing
-- The steps (by type and target) that failed most: failing now, or succeeded only on a re-run.
-- Counted in one hashed pass; the last error is then fetched for the few groups shown only,
-- through idx_step_rewards_window (an ordered aggregate over every row would sort them all).
WITH per_step AS (
    SELECT step_type, target_file,
           count(*) FILTER (WHERE execution_result <> 'success' OR updated_at > created_at) AS troubled,
           count(*) FILTER (WHERE execution_result <> 'success') AS failing,
           count(*) FILTER (WHERE execution_result = 'success' AND updated_at > created_at) AS rerun,
           count(*) AS steps,
           max(updated_at) FILTER (WHERE error_detail IS NOT NULL) AS last_error_at
    FROM jr_step_rewards
    WHERE %(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp
    GROUP BY step_type, target_file
),
top AS (
    SELECT * FROM per_step
    WHERE troubled > 0
    ORDER BY troubled DESC, failing DESC, step_type, target_file
    LIMIT %(limit)s
)
SELECT t.step_type, t.target_file, t.troubled, t.failing, t.rerun, t.steps,
       (SELECT left(split_part(e.error_detail, E'\n', 1), 200)
        FROM jr_step_rewards e
        WHERE e.updated_at = t.last_error_at
          AND e.step_type IS NOT DISTINCT FROM t.step_type
          AND e.target_file IS NOT DISTINCT FROM t.target_file
          AND e.error_detail IS NOT NULL
        LIMIT 1) AS last_error
FROM top t
ORDER BY t.troubled DESC, t.failing DESC, t.step_type, t.target_file;

-- name: prune_cutoff
-- Computed once per prune, so every batch uses the same cutoff.
SELECT LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8);

-- name: prune_batch
-- One batch, one transaction: step rows of finished tasks (no checkpoint row) none of whose
-- steps changed since the cutoff. A task is pruned whole, never half.
DELETE FROM jr_step_rewards
WHERE id IN (
    SELECT s.id
    FROM jr_step_rewards s
    WHERE s.updated_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM jr_task_checkpoints c WHERE c.task_id = s.task_id)
      AND NOT EXISTS (SELECT 1 FROM jr_step_rewards n
                      WHERE n.task_id = s.task_id AND n.updated_at >= %(cutoff)s)
    LIMIT %(batch)s
);

-- name: next_demo_task_id
-- The demo's tasks take negative ids, below every id in the ledger, so they never collide
-- with the executor's own task ids (a SERIAL, so positive).
SELECT LEAST((SELECT min(task_id) FROM jr_step_rewards),
             (SELECT min(task_id) FROM jr_task_checkpoints),
             0) - 1;

-- The dashboard (jr_checkpoint.web). Read-only, like every report above.

-- name: web_tasks
-- One page of tasks, newest activity first; keyset paging: tasks whose (last_activity,
-- task_id) comes before %(before_at)s, %(before_task)s (NULL: the first page).
--
-- A task's state is decided here, and only here:
--   running     its checkpoint carries a lease that has not expired yet
--               (checkpoint_data.lease_until: epoch seconds, as the store writes it, or an
--               ISO timestamp), or a session holds the task's advisory lock
--               pg_try_advisory_lock(namespace, task_id) (visible in pg_locks), as workers
--               of earlier versions did;
--   exhausted   its checkpoint says checkpoint_data.exhausted = true;
--   unfinished  any other checkpoint row: stopped partway, crashed or failed;
--   finished    step rows but no checkpoint row (the decorator drops it on completion).
-- A malformed lease (not a date, not a number) never fails the query: it counts as no lease.
--
-- Last activity: the checkpoint's updated_at for a task that has one (every recorded step
-- moves it, and so does the start of an attempt), else its newest step row. Finished tasks
-- are found by walking idx_step_rewards_window from the newest row down and keeping each
-- task's newest row, so a page costs a few hundred index probes however big the ledger is.
WITH locked AS (
    SELECT objid::bigint AS lock_key
    FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND classid = %(namespace)s::bigint::oid
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
),
open_tasks AS (
    SELECT c.task_id, c.updated_at AS last_activity,
           CASE
               WHEN (c.task_id::bigint & 4294967295) IN (SELECT lock_key FROM locked) THEN 'running'
               WHEN CASE jsonb_typeof(c.checkpoint_data -> 'lease_until')
                        WHEN 'number' THEN
                            CASE WHEN (c.checkpoint_data ->> 'lease_until')::float8 BETWEEN 0 AND 1e11
                                 THEN to_timestamp((c.checkpoint_data ->> 'lease_until')::float8) > now() END
                        WHEN 'string' THEN
                            CASE WHEN c.checkpoint_data ->> 'lease_until' ~ '^\s*\d{1,11}(\.\d+)?\s*$'
                                 THEN to_timestamp(trim(c.checkpoint_data ->> 'lease_until')::float8) > now()
                                 ELSE (jsonb_path_query_first(c.checkpoint_data, '$.lease_until.datetime()',
                                                              '{}', true) #>> '{}')::timestamptz > now() END
                    END THEN 'running'
               WHEN c.checkpoint_data ->> 'exhausted' = 'true' THEN 'exhausted'
               ELSE 'unfinished'
           END AS state
    FROM jr_task_checkpoints c
    WHERE (%(task_id)s::integer IS NULL OR c.task_id = %(task_id)s::integer)
      AND (%(before_at)s::timestamp IS NULL
           OR (c.updated_at, c.task_id) < (%(before_at)s::timestamp, %(before_task)s::integer))
),
open_page AS (
    SELECT * FROM open_tasks
    WHERE %(state)s::text IS NULL OR state = %(state)s::text
    ORDER BY last_activity DESC, task_id DESC
    LIMIT %(limit)s
),
finished_page AS (
    SELECT r.task_id, r.updated_at AS last_activity, 'finished' AS state
    FROM jr_step_rewards r
    WHERE (%(state)s::text IS NULL OR %(state)s::text = 'finished')
      AND (%(task_id)s::integer IS NULL OR r.task_id = %(task_id)s::integer)
      AND (%(before_at)s::timestamp IS NULL
           OR (r.updated_at, r.task_id) < (%(before_at)s::timestamp, %(before_task)s::integer))
      AND NOT EXISTS (SELECT 1 FROM jr_step_rewards n
                      WHERE n.task_id = r.task_id
                        AND (n.updated_at, n.step_number) > (r.updated_at, r.step_number))
      AND NOT EXISTS (SELECT 1 FROM jr_task_checkpoints c WHERE c.task_id = r.task_id)
    ORDER BY r.updated_at DESC, r.task_id DESC
    LIMIT %(limit)s
),
page AS (
    SELECT * FROM (SELECT * FROM open_page UNION ALL SELECT * FROM finished_page) u
    ORDER BY last_activity DESC, task_id DESC
    LIMIT %(limit)s
)
SELECT p.task_id, p.state,
       CASE WHEN jsonb_typeof(c.checkpoint_data -> 'attempts') = 'number'
            THEN (c.checkpoint_data ->> 'attempts')::numeric::bigint END AS attempts,
       s.succeeded AS steps_done,
       coalesce(c.total_steps, CASE WHEN c.task_id IS NULL THEN s.recorded END) AS total_steps,
       s.recorded AS steps_recorded,
       s.failing AS steps_failing,
       CASE WHEN c.task_id IS NULL THEN NULL
            WHEN jsonb_typeof(c.checkpoint_data -> 'resume_at') = 'number'
            THEN (c.checkpoint_data ->> 'resume_at')::numeric::bigint
            ELSE c.last_completed_step + 1 END AS resume_at,
       greatest(p.last_activity, s.last_step_at) AS last_activity,
       p.last_activity AS cursor_at
FROM page p
LEFT JOIN jr_task_checkpoints c ON c.task_id = p.task_id
LEFT JOIN LATERAL (
    SELECT count(*) AS recorded,
           count(*) FILTER (WHERE execution_result = 'success') AS succeeded,
           count(*) FILTER (WHERE execution_result <> 'success') AS failing,
           max(updated_at) AS last_step_at
    FROM jr_step_rewards WHERE task_id = p.task_id
) s ON true
ORDER BY p.last_activity DESC, p.task_id DESC;

-- name: web_attempts
-- Attempts per task, for the tasks that still have a checkpoint row (a finished task's row,
-- and its count with it, is gone), over the window.
SELECT CASE WHEN jsonb_typeof(checkpoint_data -> 'attempts') = 'number'
            THEN (checkpoint_data ->> 'attempts')::numeric::bigint END AS attempts,
       count(*) AS tasks
FROM jr_task_checkpoints
WHERE %(seconds)s::float8 IS NULL
   OR updated_at >= LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8)
GROUP BY 1
ORDER BY 1 NULLS LAST;

-- name: web_window
-- Where the window starts and ends: %(seconds)s before now, or all time from the oldest row.
SELECT lo, greatest(LOCALTIMESTAMP, lo + interval '1 second') AS hi
FROM (SELECT coalesce(LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8),
                      (SELECT min(updated_at) FROM jr_step_rewards),
                      LOCALTIMESTAMP) AS lo) b;

-- name: web_outcomes
-- Step outcomes over time: the window from %(lo)s (web_window) cut into %(buckets)s slices of
-- %(width)s seconds; one row per slice and outcome that has steps. float8 arithmetic: numeric
-- (what extract() returns) costs a second per million rows.
-- Counted in a hash table of a few dozen entries. Grouped directly, the planner cannot tell
-- that the slice expression takes at most %(buckets)s values (it assumes one per row) and
-- sorts every row of the window instead (an external merge past work_mem: 0.4 s for 7 days
-- of a million-row ledger); the slices computed in a sub-select that is not flattened into
-- the grouping (OFFSET 0) leave it the default estimate of a few hundred groups, so it hashes.
-- The window is read from idx_step_rewards_window alone.
SELECT bucket, execution_result, count(*) AS steps
FROM (
    SELECT least(floor(date_part('epoch', updated_at - %(lo)s::timestamp) / %(width)s::float8),
                 %(buckets)s - 1)::integer AS bucket,
           execution_result
    FROM jr_step_rewards
    WHERE updated_at >= %(lo)s::timestamp
    OFFSET 0
) sliced
GROUP BY 1, 2
ORDER BY 1, 2;
