-- The Feb-03 Jr instruction's Step 1 ("Create Checkpoint Table"), verbatim: a per-step jr_task_checkpoints.
-- Source: github.com/dereadi/ganuda_ai, docs/jr_instructions/JR-EXECUTOR-P2-CHECKPOINTING-GUARDRAILS-FEB03-2026.md,
-- commit dcfb270aab4b02d553bb713ecd03c63bb2e8ee28 (Step 1).
-- Copied as test data only: the shape a live jr_task_checkpoints may have (tests/integration/test_live_shape.py).

CREATE TABLE IF NOT EXISTS jr_task_checkpoints (
    id SERIAL PRIMARY KEY,
    task_id INTEGER NOT NULL,
    step_number INTEGER NOT NULL,
    step_type VARCHAR(50),
    step_description TEXT,
    step_result JSONB,
    files_written JSONB DEFAULT '[]',
    executor_state JSONB,
    checkpoint_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE(task_id, step_number)
);

CREATE INDEX IF NOT EXISTS idx_checkpoints_task
    ON jr_task_checkpoints(task_id);

COMMENT ON TABLE jr_task_checkpoints IS 'Step-level checkpoints for Jr task execution. Enables resume-from-failure. Pattern: LangGraph PostgresSaver.';
COMMENT ON COLUMN jr_task_checkpoints.executor_state IS 'Serialized executor state at this checkpoint. Includes variables, partial results, and context needed to resume.';
COMMENT ON COLUMN jr_task_checkpoints.files_written IS 'JSONB array of file paths written up to this checkpoint. Used for saga rollback if needed.';
