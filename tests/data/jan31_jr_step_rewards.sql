-- The Jan-31 Jr instruction's Step 1, verbatim (the SQL block of its "Create migration SQL" step).
-- Source: github.com/dereadi/ganuda_ai, docs/jr_instructions/JR-EXECUTOR-STEP-REWARD-SCHEMA-JAN31-2026.md,
-- commit 0a1c7acd989d8c6ecf0e99085b059c989eddc1aa (Step 1, file /ganuda/sql/jr_step_rewards_schema.sql on the host).
-- Copied as test data only: the shape a live jr_step_rewards may have (tests/integration/test_live_shape.py).

-- Jr Step-Level Reward Tracking
-- Part of RL Reward Architecture Upgrade (Ultrathink Jan 31, 2026)

-- Step execution log with reward placeholders
CREATE TABLE IF NOT EXISTS jr_step_rewards (
    id SERIAL PRIMARY KEY,
    task_id INTEGER NOT NULL,
    step_number INTEGER NOT NULL,
    step_type VARCHAR(30) NOT NULL,
    target_file VARCHAR(500),
    step_content_hash VARCHAR(64),
    execution_result VARCHAR(20) DEFAULT 'pending',
    implicit_reward FLOAT,
    verified_outcome VARCHAR(20),
    retry_decision VARCHAR(20),
    execution_time_ms INTEGER,
    error_detail TEXT,
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW(),
    UNIQUE(task_id, step_number)
);

-- Exploration tracking for curiosity-driven task selection
CREATE TABLE IF NOT EXISTS jr_exploration_log (
    id SERIAL PRIMARY KEY,
    jr_type VARCHAR(50) NOT NULL,
    task_type VARCHAR(100) NOT NULL,
    novelty_score FLOAT,
    curiosity_bonus FLOAT,
    task_outcome VARCHAR(20),
    created_at TIMESTAMP DEFAULT NOW()
);

-- Indexes
CREATE INDEX IF NOT EXISTS idx_step_rewards_task ON jr_step_rewards(task_id);
CREATE INDEX IF NOT EXISTS idx_step_rewards_type ON jr_step_rewards(step_type);
CREATE INDEX IF NOT EXISTS idx_step_rewards_outcome ON jr_step_rewards(execution_result);
CREATE INDEX IF NOT EXISTS idx_exploration_jr ON jr_exploration_log(jr_type, created_at);
