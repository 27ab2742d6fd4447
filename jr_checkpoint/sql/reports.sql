-- The command line's own statements: reports (stats), prune, and the demo's task ids.
-- Same format as queries.sql: one "-- name: ..." header per statement, parameters bound.
-- %(seconds)s is a window in seconds, or NULL for "all time"; the columns are TIMESTAMP
-- (no time zone) filled by NOW(), so windows are measured from LOCALTIMESTAMP.
-- The stats queries take the window's start, %(since)s (window_start, computed once per
-- report): a constant, so the planner sees how many rows the window holds, and a filter
-- never recomputes LOCALTIMESTAMP - interval for every row (a third of a 7-day scan's time).

-- The troubled steps, those that failed or were re-run, are few, and are read without a pass
-- over every row: the steps that did not succeed through the seed's idx_step_rewards_result
-- (execution_result < 'success' OR > 'success': <> cannot use an index), the re-run ones (a
-- success row updated after it was created) from the partial indexes that hold exactly them,
-- idx_step_rewards_rerun (it carries target_file, when at most 1000 bytes) and
-- idx_step_rewards_rerun_long (the longer paths): a UNION ALL of SELECTs whose WHERE are those
-- indexes' predicates (schema.sql).

-- name: window_start
SELECT LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8);

-- name: stats_step_types
-- Every step type but NULL, for stats_by_type over all time: one probe of idx_step_rewards_file
-- per type (each the first type after the one before), never a pass over the rows.
WITH RECURSIVE types AS (
    SELECT min(step_type COLLATE "C") AS t FROM jr_step_rewards
    UNION ALL
    SELECT (SELECT min(step_type COLLATE "C") FROM jr_step_rewards WHERE step_type COLLATE "C" > t)
    FROM types WHERE t IS NOT NULL
)
SELECT coalesce(array_agg(t::varchar), '{}') FROM types WHERE t IS NOT NULL;

-- name: stats_by_type
-- One row per step type, then a total row (step_type NULL, is_total true).
-- "rerun": a success row updated after it was created: the step ran again after a failure
-- (or a change to its content) and then succeeded. A step killed mid-run leaves no row.
--
-- hist: the window's rows counted by step type and duration, nothing else. Over all time,
-- type by type (%(step_types)s, from stats_step_types; then the NULL type): each an
-- index-only scan of idx_step_rewards_duration that skips to the type's entries, counted as
-- they come, no hash table (a million rows: 0.45 s -> 0.12 s). Over a window, its rows from
-- idx_step_rewards_activity alone, counted in a hash table. troubled: the steps that did not
-- succeed and the re-run ones, by type, read as above; "succeeded" is steps minus the ones
-- that did not succeed.
-- The percentiles come from the histogram: percentile_cont(p) over n durations is the
-- value at 0-based position p*(n-1) in sorted order, interpolated between the rows floor()
-- and ceil() of it, computed here with PostgreSQL's own float8 arithmetic
-- (lo + frac * (hi - lo)), so the figures are identical to percentile_cont's.
-- (percentile_cont itself sorts every row of the window, spilling to disk past work_mem:
-- 1.5 s on a million rows.)
WITH hist AS (
    SELECT t AS step_type, h.ms, h.steps
    FROM unnest(%(step_types)s::varchar[]) t
    CROSS JOIN LATERAL (
        SELECT execution_time_ms AS ms, count(*) AS steps
        FROM jr_step_rewards WHERE step_type COLLATE "C" = t
        GROUP BY execution_time_ms) h
    UNION ALL
    SELECT NULL, execution_time_ms, count(*)
    FROM jr_step_rewards
    WHERE %(since)s::timestamp IS NULL AND step_type IS NULL
    GROUP BY execution_time_ms
    UNION ALL
    SELECT step_type, execution_time_ms, count(*)
    FROM jr_step_rewards
    WHERE updated_at >= %(since)s::timestamp
    GROUP BY step_type, execution_time_ms
),
troubled AS (  -- per step type, and over every type (the total row)
    SELECT step_type, grouping(step_type) = 1 AS is_total,
           sum(failing)::bigint AS failing, sum(rerun)::bigint AS rerun
    FROM (SELECT step_type, count(*) AS failing, 0 AS rerun
          FROM jr_step_rewards
          WHERE (execution_result < 'success' OR execution_result > 'success')
            AND (%(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp)
          GROUP BY step_type
          UNION ALL
          SELECT step_type, 0, count(*)
          FROM jr_step_rewards
          WHERE updated_at > created_at AND execution_result = 'success'
            AND coalesce(octet_length(target_file), 0) <= 1000
            AND (%(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp)
          GROUP BY step_type
          UNION ALL
          SELECT step_type, 0, count(*)
          FROM jr_step_rewards
          WHERE updated_at > created_at AND execution_result = 'success'
            AND octet_length(target_file) > 1000
            AND (%(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp)
          GROUP BY step_type) c
    GROUP BY GROUPING SETS ((step_type), ())
),
by_group AS (  -- per type and duration, and per duration over every type (the total row)
    SELECT step_type, grouping(step_type) = 1 AS is_total, ms, sum(steps)::bigint AS steps
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
    SELECT step_type, is_total, sum(steps)::bigint AS steps,
           0.5::float8 * (max(timed) - 1)::float8 AS pos50,
           0.95::float8 * (max(timed) - 1)::float8 AS pos95,
           -- the value at 0-based position k is the smallest duration with more than k at or below it
           min(ms) FILTER (WHERE upto > floor(0.5::float8 * (timed - 1)::float8)) AS lo50,
           min(ms) FILTER (WHERE upto > ceil(0.5::float8 * (timed - 1)::float8)) AS hi50,
           min(ms) FILTER (WHERE upto > floor(0.95::float8 * (timed - 1)::float8)) AS lo95,
           min(ms) FILTER (WHERE upto > ceil(0.95::float8 * (timed - 1)::float8)) AS hi95
    FROM ranked
    GROUP BY is_total, step_type
),
counted AS (
    SELECT s.*, coalesce(t.failing, 0) AS failing, coalesce(t.rerun, 0) AS rerun
    FROM summary s
    LEFT JOIN troubled t ON t.is_total = s.is_total AND t.step_type IS NOT DISTINCT FROM s.step_type
)
SELECT CASE WHEN is_total THEN NULL ELSE coalesce(step_type, 'unknown') END,
       is_total,
       steps,
       (100.0 * (steps - failing) / NULLIF(steps, 0))::float8,
       rerun,
       failing,
       lo50::float8 + (pos50 - floor(pos50)) * (hi50::float8 - lo50::float8),
       lo95::float8 + (pos95 - floor(pos95)) * (hi95::float8 - lo95::float8)
FROM counted
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
-- Only the troubled rows count, read as above, so the ranking never reads the rows that simply
-- succeeded. How many steps each group has in all, and its last error, are counted for the
-- groups shown only (stats_failing_steps).
SELECT step_type, target_file,
       count(*) AS troubled,
       count(*) FILTER (WHERE failed) AS failing,
       count(*) FILTER (WHERE NOT failed) AS rerun
FROM (SELECT step_type, target_file, true AS failed
      FROM jr_step_rewards
      WHERE (execution_result < 'success' OR execution_result > 'success')
        AND (%(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp)
      UNION ALL
      SELECT step_type, target_file, false
      FROM jr_step_rewards
      WHERE updated_at > created_at AND execution_result = 'success'
        AND coalesce(octet_length(target_file), 0) <= 1000
        AND (%(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp)
      UNION ALL
      SELECT step_type, target_file, false
      FROM jr_step_rewards
      WHERE updated_at > created_at AND execution_result = 'success'
        AND octet_length(target_file) > 1000
        AND (%(since)s::timestamp IS NULL OR updated_at >= %(since)s::timestamp)) r
GROUP BY step_type, target_file
ORDER BY troubled DESC, failing DESC, step_type, target_file
LIMIT %(limit)s;

-- name: stats_failing_steps
-- For the groups stats_failing shows (%(types)s[i], %(files)s[i], in its order): how many
-- steps of the window the group has, and its last error. Each group's rows are found
-- through idx_step_rewards_file (a step's type and its target file hashed: a lookup, then
-- each row says whether it is the group's), never by reading every row of the table. The
-- last error is then fetched by its time, through idx_step_rewards_activity.
WITH wanted AS (
    SELECT * FROM unnest(%(types)s::varchar[], %(files)s::text[]) WITH ORDINALITY AS w(step_type, target_file, n)
)
SELECT c.steps,
       (SELECT left(split_part(e.error_detail, E'\n', 1), 200)
        FROM jr_step_rewards e
        WHERE e.updated_at = c.last_error_at
          AND e.step_type IS NOT DISTINCT FROM w.step_type
          AND e.target_file IS NOT DISTINCT FROM w.target_file
          AND e.error_detail IS NOT NULL
        LIMIT 1) AS last_error
FROM wanted w
CROSS JOIN LATERAL (
    SELECT count(*) AS steps,
           max(updated_at) FILTER (WHERE error_detail IS NOT NULL) AS last_error_at
    FROM jr_step_rewards s
    WHERE (s.step_type COLLATE "C" = w.step_type OR (s.step_type IS NULL AND w.step_type IS NULL))
      AND hashtext(coalesce(s.target_file, '')) = hashtext(coalesce(w.target_file, ''))
      AND s.target_file IS NOT DISTINCT FROM w.target_file
      AND (%(since)s::timestamp IS NULL OR s.updated_at >= %(since)s::timestamp)
) c
ORDER BY w.n;

-- name: prune_cutoff
-- Computed once per prune, so every batch uses the same cutoff.
SELECT LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8);

-- name: prune_batch
-- One batch, one transaction: step rows of finished tasks (no checkpoint row) none of whose
-- steps changed, and none of whose attempts began or ended, since the cutoff; the attempt
-- rows of the tasks the batch touches go with them. A task is pruned whole, never half: the
-- batches that follow take the rest of its step rows (nothing about it changed).
WITH doomed AS (
    SELECT s.id, s.task_id
    FROM jr_step_rewards s
    WHERE s.updated_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM jr_task_checkpoints c WHERE c.task_id = s.task_id)
      AND NOT EXISTS (SELECT 1 FROM jr_step_rewards n
                      WHERE n.task_id = s.task_id AND n.updated_at >= %(cutoff)s)
      AND NOT EXISTS (SELECT 1 FROM jr_task_attempts a
                      WHERE a.task_id = s.task_id AND coalesce(a.ended_at, a.started_at) >= %(cutoff)s)
    LIMIT %(batch)s
),
steps AS (DELETE FROM jr_step_rewards WHERE id IN (SELECT id FROM doomed) RETURNING 1),
attempts AS (DELETE FROM jr_task_attempts WHERE task_id IN (SELECT task_id FROM doomed) RETURNING 1)
SELECT (SELECT count(*) FROM steps), (SELECT count(*) FROM attempts);

-- name: prune_attempts_batch
-- Then the attempt rows of tasks without any step row (a call that took a task and ended
-- before recording a step), on the same terms.
WITH doomed AS (
    SELECT a.task_id, a.attempt
    FROM jr_task_attempts a
    WHERE coalesce(a.ended_at, a.started_at) < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM jr_task_checkpoints c WHERE c.task_id = a.task_id)
      AND NOT EXISTS (SELECT 1 FROM jr_step_rewards s WHERE s.task_id = a.task_id)
      AND NOT EXISTS (SELECT 1 FROM jr_task_attempts n
                      WHERE n.task_id = a.task_id AND coalesce(n.ended_at, n.started_at) >= %(cutoff)s)
    LIMIT %(batch)s
)
DELETE FROM jr_task_attempts WHERE (task_id, attempt) IN (SELECT task_id, attempt FROM doomed);

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
--               or its latest attempt row is 'running' with a lease that has not expired;
--   dead        its holder is gone: the checkpoint still names an owner whose lease expired
--               (a worker that gives a task back removes both), or its latest attempt row is
--               still 'running' past its lease (jr_task_attempts.lease_until);
--   exhausted   its checkpoint says checkpoint_data.exhausted = true, or its latest attempt
--               ended 'exhausted';
--   unfinished  any other checkpoint row: stopped partway, crashed or failed;
--   finished    step rows but no checkpoint row (the decorator drops it on completion).
-- A malformed lease (not a date, not a number) never fails the query: it counts as no lease.
-- The latest attempt is one probe of jr_task_attempts' primary key per checkpoint row.
--
-- Attempts: how many attempt rows the task has; for a task with none (its rows written before
-- the attempt ledger), the checkpoint row's counter, gone once the task finished (NULL).
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
               WHEN l.lease_at > now() THEN 'running'
               WHEN a.outcome = 'running' AND a.lease_until >= extract(epoch FROM now()) THEN 'running'
               WHEN l.lease_at <= now() AND c.checkpoint_data ? 'owner' THEN 'dead'
               WHEN a.outcome = 'running' AND a.lease_until < extract(epoch FROM now()) THEN 'dead'
               WHEN c.checkpoint_data ->> 'exhausted' = 'true' OR a.outcome = 'exhausted' THEN 'exhausted'
               ELSE 'unfinished'
           END AS state
    FROM jr_task_checkpoints c
    CROSS JOIN LATERAL (
        SELECT CASE jsonb_typeof(c.checkpoint_data -> 'lease_until')
                   WHEN 'number' THEN
                       CASE WHEN (c.checkpoint_data ->> 'lease_until')::float8 BETWEEN 0 AND 1e11
                            THEN to_timestamp((c.checkpoint_data ->> 'lease_until')::float8) END
                   WHEN 'string' THEN
                       CASE WHEN c.checkpoint_data ->> 'lease_until' ~ '^\s*\d{1,11}(\.\d+)?\s*$'
                            THEN to_timestamp(trim(c.checkpoint_data ->> 'lease_until')::float8)
                            ELSE (jsonb_path_query_first(c.checkpoint_data, '$.lease_until.datetime()',
                                                         '{}', true) #>> '{}')::timestamptz END
               END AS lease_at
    ) l
    LEFT JOIN LATERAL (
        SELECT outcome, lease_until FROM jr_task_attempts
        WHERE task_id = c.task_id ORDER BY attempt DESC LIMIT 1
    ) a ON true
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
       coalesce(n.attempts,
                CASE WHEN jsonb_typeof(c.checkpoint_data -> 'attempts') = 'number'
                     THEN (c.checkpoint_data ->> 'attempts')::numeric::bigint END) AS attempts,
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
LEFT JOIN LATERAL (  -- NULL when the task has no attempt row (a ledger older than them)
    SELECT NULLIF(count(*), 0) AS attempts FROM jr_task_attempts WHERE task_id = p.task_id
) n ON true
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
-- %(width)s seconds; one row per slice and outcome that has steps.
-- A step's slice is least(floor(date_part('epoch', updated_at - lo) / width), buckets - 1),
-- in float8 (numeric, what extract() returns, costs a second per million rows). Each slice
-- is a range of updated_at: its steps are counted over the range in idx_step_rewards_activity
-- (an index-only scan, count(*): no hash table, no table rows; 0.7 s -> 0.14 s over a million
-- rows), and only the steps that did not succeed are counted by outcome (a few, through
-- idx_step_rewards_result); the rest of a slice succeeded.
-- starts: where slice i starts, the first microsecond that the expression puts in slice i
-- or later: a candidate from the same arithmetic, then the first of its neighbours within 8
-- microseconds (far beyond float8's rounding) that the expression itself puts there. So a
-- step lands in exactly the slice the expression gives it.
WITH slices AS MATERIALIZED (
    SELECT i AS bucket,
           CASE WHEN i = 0 THEN %(lo)s::timestamp ELSE (
               SELECT min(c) FROM (
                   SELECT %(lo)s::timestamp + make_interval(secs => i * %(width)s::float8)
                          + k * interval '1 microsecond' AS c
                   FROM generate_series(-8, 8) k) candidates
               WHERE floor(date_part('epoch', c - %(lo)s::timestamp) / %(width)s::float8) >= i) END AS starts
    FROM generate_series(0, %(buckets)s - 1) i
),
totals AS (
    SELECT b.bucket, n.steps
    FROM (SELECT bucket, starts, lead(starts, 1, 'infinity') OVER (ORDER BY bucket) AS ends
          FROM slices) b
    CROSS JOIN LATERAL (
        SELECT count(*) AS steps FROM jr_step_rewards
        WHERE updated_at >= b.starts AND updated_at < b.ends) n
),
other AS MATERIALIZED (  -- the steps that did not succeed, by slice and outcome
    SELECT width_bucket(updated_at, (SELECT array_agg(starts ORDER BY bucket) FROM slices)) - 1 AS bucket,
           execution_result, count(*) AS steps
    FROM jr_step_rewards
    WHERE (execution_result < 'success' OR execution_result > 'success')
      AND updated_at >= %(lo)s::timestamp
    GROUP BY 1, 2
),
succeeded AS (
    SELECT t.bucket, (t.steps - coalesce(o.steps, 0))::bigint AS steps
    FROM totals t
    LEFT JOIN (SELECT bucket, sum(steps) AS steps FROM other GROUP BY bucket) o ON o.bucket = t.bucket
)
SELECT bucket, execution_result, steps FROM other
UNION ALL
SELECT bucket, 'success', steps FROM succeeded WHERE steps > 0
ORDER BY 1, 2;

-- A task's history (jr_checkpoint.history: status, the dashboard's task page, trajectory()).

-- name: task_history
-- Everything recorded for one task, in one statement: its checkpoint row, its step rows in
-- step order, its attempt rows in attempt order, as JSON (times as ISO-8601 strings).
-- A step's attempt is derived, not stored: the latest attempt whose [started_at, ended_at,
-- or now while it is open] holds the row's updated_at. A row written outside every attempt
-- (before this release, or by the host's own helpers) gets NULL: "attempt unknown".
-- stale: an attempt still 'running' whose lease (server epoch seconds) has passed; its
-- holder is gone, or at least no longer renews its lease. lease_until is shown as a time;
-- a lease beyond year 5138 (or negative) is not a time and shows as NULL.
WITH attempts AS (
    SELECT a.*,
           coalesce(a.outcome = 'running' AND a.lease_until < extract(epoch FROM now()), false) AS stale
    FROM jr_task_attempts a
    WHERE a.task_id = %(task_id)s
)
SELECT
    (SELECT row_to_json(c) FROM (
        SELECT last_completed_step, total_steps, checkpoint_data, created_at, updated_at
        FROM jr_task_checkpoints WHERE task_id = %(task_id)s) c),
    (SELECT json_agg(s ORDER BY s.step_number) FROM (
        SELECT r.step_number, r.step_type, r.target_file, r.step_content_hash, r.execution_result,
               r.execution_time_ms, r.error_detail, r.created_at, r.updated_at,
               (SELECT max(a.attempt) FROM attempts a
                WHERE r.updated_at >= a.started_at
                  AND r.updated_at <= coalesce(a.ended_at, LOCALTIMESTAMP)) AS attempt
        FROM jr_step_rewards r WHERE r.task_id = %(task_id)s) s),
    (SELECT json_agg(a ORDER BY a.attempt) FROM (
        SELECT attempt, outcome, stale, ran, skipped, failed, resumed_at, host, pid,
               started_at, ended_at,
               CASE WHEN lease_until BETWEEN 0 AND 1e11
                    THEN to_timestamp(lease_until)::timestamp END AS lease_until
        FROM attempts) a);
