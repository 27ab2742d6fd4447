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
-- Newest activity first: the task list walks it from the newest row down (a page costs a
-- few hundred index probes instead of a pass over every step row), and windowed reports
-- (stats --since, the analytics page) read only the rows of their window. It carries the
-- columns those reports count by (INCLUDE: stored in the index, not sorted on), so a window
-- is read from the index alone (an index-only scan, parallel), never from the table: 7 days
-- of a million-row ledger, 0.33 s -> 0.1 s for the step-type figures. Only columns of
-- bounded size: a TEXT column (target_file) could make a step's row too big for the index
-- and its INSERT fail. It replaces idx_step_rewards_updated(updated_at, task_id), the same
-- keys without the included columns (one index on the write path, not two).
DROP INDEX IF EXISTS idx_step_rewards_updated;
CREATE INDEX IF NOT EXISTS idx_step_rewards_window
    ON jr_step_rewards(updated_at, task_id)
    INCLUDE (step_type, execution_result, execution_time_ms, created_at);

-- Slowest first: the slowest steps (stats, the analytics page) walk it from the longest
-- duration down and stop after a few rows, instead of reading every row of the window
-- (0.2-0.3 s on a million rows, for ten of them). Small: durations repeat, and B-tree
-- deduplication stores each distinct value once (7 MB for a million rows).
CREATE INDEX IF NOT EXISTS idx_step_rewards_time
    ON jr_step_rewards(execution_time_ms);

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
