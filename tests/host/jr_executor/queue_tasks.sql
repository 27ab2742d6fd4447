-- The stand-in's work queue (the columns the worker and the client use).
CREATE TABLE IF NOT EXISTS jr_work_queue (
    id SERIAL PRIMARY KEY,
    task_id TEXT,
    title TEXT,
    description TEXT,
    instruction_file TEXT,
    instruction_content TEXT,
    parameters JSONB,
    assigned_jr TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    priority INTEGER DEFAULT 5,
    result JSONB,
    error_message TEXT,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT NOW()
);
