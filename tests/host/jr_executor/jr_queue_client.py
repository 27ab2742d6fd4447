"""Stand-in of the host's jr_executor/jr_queue_client.py (see tests/host/README.md).

The work queue's client: tasks are rows of jr_work_queue (queue_tasks.sql); `id` is the
integer every method takes, `task_id` a separate text field. `_execute` reconnects and
retries once on a connection error, as the host's does today. The three checkpoint methods
are here already, with the host's shorter docstrings (it applied the instruction by hand).
"""

import json
import os
import sys
from typing import Any, Dict, List, Optional

import psycopg2
from psycopg2.extras import RealDictCursor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib.secrets_loader import get_db_config  # noqa: E402

DB_CONFIG = get_db_config()


class JrQueueClient:
    """Client for Jr agents to interact with the work queue."""

    def __init__(self, jr_name: str):
        self.jr_name = jr_name
        self._conn = None

    def _get_connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(**DB_CONFIG, connect_timeout=10)
        return self._conn

    def _reset_connection(self):
        try:
            if self._conn and not self._conn.closed:
                self._conn.close()
        except Exception:
            pass
        self._conn = None

    def _execute(self, query: str, params: tuple = None, fetch: bool = True) -> Any:
        """Run one statement and commit; on a connection error reconnect and run it once more."""
        for attempt in range(2):
            conn = self._get_connection()
            try:
                with conn.cursor(cursor_factory=RealDictCursor) as cur:
                    cur.execute(query, params)
                    rows = cur.fetchall() if fetch else cur.rowcount
                conn.commit()
                return rows
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self._reset_connection()
                if attempt == 0:
                    continue
                raise
            except Exception:
                conn.rollback()
                raise

    def get_pending_tasks(self, limit: int = 10) -> List[Dict]:
        """Claim up to `limit` pending tasks of this Jr at once (they become in_progress)."""
        return self._execute("""
            UPDATE jr_work_queue SET status = 'in_progress', started_at = COALESCE(started_at, NOW())
            WHERE id IN (SELECT id FROM jr_work_queue
                         WHERE assigned_jr = %s AND status IN ('pending', 'assigned')
                         ORDER BY priority, id LIMIT %s FOR UPDATE SKIP LOCKED)
            RETURNING id, task_id, title, description, instruction_file, instruction_content,
                      parameters, assigned_jr
        """, (self.jr_name, limit))

    def reap_stale_tasks(self, timeout_minutes: int = 10) -> int:
        """Put back in_progress tasks started too long ago (whether or not their worker lives)."""
        rows = self._execute(f"""
            UPDATE jr_work_queue SET status = 'pending', started_at = NULL
            WHERE assigned_jr = %s AND status = 'in_progress'
              AND started_at < NOW() - INTERVAL '{int(timeout_minutes)} minutes'
            RETURNING id
        """, (self.jr_name,))
        return len(rows)

    def complete_task(self, task_id: int, result: Dict = None, artifacts: List[str] = None) -> bool:
        self._execute("UPDATE jr_work_queue SET status = 'completed', completed_at = NOW(),"
                      " result = %s WHERE id = %s",
                      (json.dumps(result, default=str), task_id), fetch=False)
        return True

    def fail_task(self, task_id: int, error_message: str, result: Dict = None) -> bool:
        self._execute("UPDATE jr_work_queue SET status = 'failed', error_message = %s,"
                      " result = %s WHERE id = %s",
                      (error_message, json.dumps(result, default=str), task_id), fetch=False)
        return True

    def save_checkpoint(self, task_id: int, last_completed_step: int,
                        total_steps: int = None, checkpoint_data: Dict = None) -> bool:
        """Save a checkpoint for a task so it can resume on retry."""
        try:
            self._execute("""
                INSERT INTO jr_task_checkpoints
                    (task_id, last_completed_step, total_steps, checkpoint_data)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (task_id) DO UPDATE SET
                    last_completed_step = EXCLUDED.last_completed_step,
                    total_steps = COALESCE(EXCLUDED.total_steps, jr_task_checkpoints.total_steps),
                    checkpoint_data = EXCLUDED.checkpoint_data,
                    updated_at = NOW()
            """, (task_id, last_completed_step, total_steps,
                  json.dumps(checkpoint_data) if checkpoint_data else None), fetch=False)
            return True
        except Exception as e:
            print(f"[JrQueue] Failed to save checkpoint for task {task_id}: {e}")
            return False

    def get_last_checkpoint(self, task_id: int) -> Optional[Dict]:
        """Get the last checkpoint for a task (for resume-from-failure)."""
        try:
            rows = self._execute("SELECT last_completed_step, total_steps, checkpoint_data"
                                 " FROM jr_task_checkpoints WHERE task_id = %s", (task_id,))
            return dict(rows[0]) if rows else None
        except Exception as e:
            print(f"[JrQueue] Failed to get checkpoint for task {task_id}: {e}")
            return None

    def cleanup_checkpoints(self, task_id: int) -> bool:
        """Remove checkpoints after a task completes successfully."""
        try:
            self._execute("DELETE FROM jr_task_checkpoints WHERE task_id = %s", (task_id,), fetch=False)
            return True
        except Exception as e:
            print(f"[JrQueue] Failed to cleanup checkpoints for task {task_id}: {e}")
            return False

    def close(self):
        """Close database connection."""
        if self._conn and not self._conn.closed:
            self._conn.close()
