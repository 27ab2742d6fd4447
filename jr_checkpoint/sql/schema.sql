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
-- (stats --since, the analytics page) read only the rows of their window.
CREATE INDEX IF NOT EXISTS idx_step_rewards_updated
    ON jr_step_rewards(updated_at, task_id);

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
