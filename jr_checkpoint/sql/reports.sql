-- The command line's own statements: reports (stats), prune, and the demo's task ids.
-- Same format as queries.sql: one "-- name: ..." header per statement, parameters bound.
-- %(seconds)s is a window in seconds, or NULL for "all time"; the columns are TIMESTAMP
-- (no time zone) filled by NOW(), so windows are measured from LOCALTIMESTAMP.

-- name: stats_by_type
-- One row per step type, then a total row (step_type NULL, is_total true).
-- "rerun": a success row updated after it was created: the step ran again after a failure
-- (or a change to its content) and then succeeded. A step killed mid-run leaves no row.
SELECT CASE WHEN grouping(step_type) = 1 THEN NULL ELSE coalesce(step_type, 'unknown') END,
       grouping(step_type) = 1 AS is_total,
       count(*) AS steps,
       (100.0 * count(*) FILTER (WHERE execution_result = 'success') / NULLIF(count(*), 0))::float8,
       count(*) FILTER (WHERE execution_result = 'success' AND updated_at > created_at),
       count(*) FILTER (WHERE execution_result <> 'success'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms)
FROM jr_step_rewards
WHERE %(seconds)s::float8 IS NULL
   OR updated_at >= LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8)
GROUP BY GROUPING SETS ((step_type), ())
ORDER BY is_total, steps DESC, 1;

-- name: stats_slowest
SELECT task_id, step_number, step_type, target_file, execution_result, execution_time_ms
FROM jr_step_rewards
WHERE execution_time_ms IS NOT NULL
  AND (%(seconds)s::float8 IS NULL
       OR updated_at >= LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8))
ORDER BY execution_time_ms DESC, task_id, step_number
LIMIT %(limit)s;

-- name: stats_failing
-- The steps (by type and target) that failed most: failing now, or succeeded only on a re-run.
SELECT step_type, target_file, troubled, failing, rerun, steps, last_error
FROM (
    SELECT step_type, target_file,
           count(*) FILTER (WHERE execution_result <> 'success' OR updated_at > created_at) AS troubled,
           count(*) FILTER (WHERE execution_result <> 'success') AS failing,
           count(*) FILTER (WHERE execution_result = 'success' AND updated_at > created_at) AS rerun,
           count(*) AS steps,
           (array_agg(left(split_part(error_detail, E'\n', 1), 200) ORDER BY updated_at DESC)
                FILTER (WHERE error_detail IS NOT NULL))[1] AS last_error
    FROM jr_step_rewards
    WHERE %(seconds)s::float8 IS NULL
       OR updated_at >= LOCALTIMESTAMP - make_interval(secs => %(seconds)s::float8)
    GROUP BY step_type, target_file
) per_step
WHERE troubled > 0
ORDER BY troubled DESC, failing DESC, step_type, target_file
LIMIT %(limit)s;

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
