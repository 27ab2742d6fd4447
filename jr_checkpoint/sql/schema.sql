-- The checkpoint schema, exactly as the Jr instruction (Kanban #1751, Step 1) defines it.
-- This file is the only place the DDL lives: the migration runs it and `--check` reads it.

-- Table 1: Step-level execution rewards (referenced by _record_step_result)
CREATE TABLE IF NOT EXISTS jr_step_rewards (
    id SERIAL PRIMARY KEY,
    task_id INTEGER NOT NULL,
    step_number INTEGER NOT NULL,
    step_type VARCHAR(50),
    target_file TEXT,
    step_content_hash VARCHAR(64),
    execution_result VARCHAR(20) NOT NULL DEFAULT 'pending',
    execution_time_ms INTEGER,
    error_detail TEXT,
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),
    UNIQUE(task_id, step_number)
);

CREATE INDEX IF NOT EXISTS idx_step_rewards_task
    ON jr_step_rewards(task_id);

CREATE INDEX IF NOT EXISTS idx_step_rewards_result
    ON jr_step_rewards(execution_result);

-- Not in the seed: what the dashboard needs to stay fast on a big ledger (jr_checkpoint.web).
-- Three full indexes (two replace earlier ones of this package, which `migrate` drops) and two
-- partial ones that a step recorded once and successfully never enters. Together they cost a
-- step's INSERT about 4 us more than the two indexes they replace (a bulk insert of 200,000
-- rows), lost in the ~0.6 ms of a per-step write (docs/dashboard.md).
--
-- Newest activity first: the task list walks it from the newest row down (a page costs a
-- few hundred index probes instead of a pass over every step row), and windowed reports
-- (stats --since, the analytics page) read only the rows of their window, from the index
-- alone (an index-only scan): the step-type figures count by step_type and
-- execution_time_ms (INCLUDE: stored, not sorted on), the outcomes over time count ranges
-- of updated_at. Only columns of bounded size: a TEXT column (target_file) could make a
-- step's row too big for the index and its INSERT fail. It replaces idx_step_rewards_window,
-- the same also carrying execution_result and created_at, which the reports no longer read
-- from it: half the size (a million rows: 81 MB -> 40 MB) and a quarter faster to count;
-- and before that idx_step_rewards_updated(updated_at, task_id).
DROP INDEX IF EXISTS idx_step_rewards_updated;
DROP INDEX IF EXISTS idx_step_rewards_window;
CREATE INDEX IF NOT EXISTS idx_step_rewards_activity
    ON jr_step_rewards(updated_at, task_id)
    INCLUDE (step_type, execution_time_ms);

-- Slowest first, and by duration: the slowest steps (stats, the analytics page) walk it from
-- the longest duration down and stop after a few rows, instead of reading every row of the
-- window (0.2-0.3 s on a million rows, for ten of them); the step-type figures over all
-- time read it whole, in order, and count each (duration, step type) as it comes: no hash
-- table, no table rows (a million rows: 0.45 s -> 0.1 s). Small: the pairs repeat, and
-- B-tree deduplication stores each distinct one once (7 MB for a million rows). COLLATE
-- "C": step types compare byte by byte, whatever the database's locale, when a step's row
-- is inserted. It replaces idx_step_rewards_time(execution_time_ms), the same without the
-- step type.
DROP INDEX IF EXISTS idx_step_rewards_time;
CREATE INDEX IF NOT EXISTS idx_step_rewards_duration
    ON jr_step_rewards(execution_time_ms, step_type COLLATE "C");

-- A step's type, and its target file hashed: the most-failing steps count the steps of the
-- few groups they show through it (a lookup, each row then checked) instead of reading every
-- row of the table for them (a million rows: 0.2 s -> 0.02 s), and the step-type figures
-- find the step types in it (one probe each). The hash, not the path: an int4 whatever the
-- path's length (a long target_file would make a step's row too big for the index, and its
-- INSERT fail); a collision only costs a few rows read. Small: B-tree deduplication stores
-- each distinct pair once (7 MB for a million rows). COLLATE "C", as above.
CREATE INDEX IF NOT EXISTS idx_step_rewards_file
    ON jr_step_rewards(step_type COLLATE "C", hashtext(coalesce(target_file, '')));

-- The re-run steps: a success row updated after it was created (the step ran again, after a
-- failure or a change to its content). The most-failing steps rank them with the steps that
-- did not succeed (which the seed's idx_step_rewards_result finds), and the step-type figures
-- count them, from these indexes alone instead of from every row of the window. Partial: a
-- step recorded once and successfully (created_at = updated_at, both NOW() of its INSERT) is
-- in neither, nor is a failure, so the per-step write adds nothing to them but the test of
-- the predicate; only a re-run that succeeds (already an UPDATE of every index, updated_at
-- being indexed above) adds an entry. By step type (the default collation, unlike the full
-- indexes above: entries are rare here, and the reports group by it in its order).
-- The first carries target_file, for the ranking to read it from the index (0.11 s -> 0.03 s
-- for a million rows, 8% of them re-run), but only where it is at most 1000 bytes, so that no
-- entry can outgrow an index page (about 2.7 kB) and fail its INSERT; the second holds the
-- re-runs with longer paths, without the path (the ranking reads those from the table).
-- Every re-run step is in exactly one of the two.
CREATE INDEX IF NOT EXISTS idx_step_rewards_rerun
    ON jr_step_rewards(step_type, updated_at)
    INCLUDE (target_file)
    WHERE updated_at > created_at AND execution_result = 'success'
      AND coalesce(octet_length(target_file), 0) <= 1000;
CREATE INDEX IF NOT EXISTS idx_step_rewards_rerun_long
    ON jr_step_rewards(step_type, updated_at)
    WHERE updated_at > created_at AND execution_result = 'success'
      AND octet_length(target_file) > 1000;

-- Table 2: Task-level checkpoints (for resume-from-failure)
CREATE TABLE IF NOT EXISTS jr_task_checkpoints (
    id SERIAL PRIMARY KEY,
    task_id INTEGER NOT NULL,
    last_completed_step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    checkpoint_data JSONB,
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),
    UNIQUE(task_id)
);

CREATE INDEX IF NOT EXISTS idx_checkpoints_task
    ON jr_task_checkpoints(task_id);

-- Not in the seed: one row per attempt of a task (one checkpointed execute_steps call that
-- took the task's lease), kept after the task finishes; `prune` removes it with the task's
-- step rows. Written when an attempt begins and when it ends, never per step. It is also the
-- lease's fence: an owner token is valid only while its attempt is the task's latest and
-- open (ended_at IS NULL), whatever became of the checkpoint row (see functions.sql).
--   outcome      running, finished, failed, died, lost, exhausted, unchecked
--   ran/skipped/failed  step numbers (jr_step_rewards.step_number); NULL: not known
--   resumed_at   the first step run after skipping earlier ones; NULL: nothing skipped
--   lease_until  server epoch seconds, renewed with the checkpoint row's copy
CREATE TABLE IF NOT EXISTS jr_task_attempts (
    task_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    owner TEXT,
    host TEXT,
    pid INTEGER,
    started_at TIMESTAMP DEFAULT NOW(),
    ended_at TIMESTAMP,
    outcome VARCHAR(20) NOT NULL DEFAULT 'running',
    resumed_at INTEGER,
    ran INTEGER[],
    skipped INTEGER[],
    failed INTEGER[],
    lease_until DOUBLE PRECISION,
    PRIMARY KEY (task_id, attempt)
);
