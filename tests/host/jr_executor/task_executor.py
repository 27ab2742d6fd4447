"""Stand-in of the host's jr_executor/task_executor.py (see tests/host/README.md).

The loop in execute_steps() holds the seed's SEARCH text byte for byte, so the literal
patches apply to it exactly as they would to the host's file.
"""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.secrets_loader import get_db_config  # noqa: E402


class TaskExecutor:
    """Runs an instruction's steps: write, append, SEARCH/REPLACE, shell."""

    def __init__(self, workdir, saga_manager=None):
        self.workdir = Path(workdir)
        self.saga_manager = saga_manager
        self._current_task_id = None
        self.executed = []  # every step execute() really ran, in order

    def _path(self, step):
        return self.workdir / step.get('path', step.get('filepath', ''))

    def execute(self, step):
        """Run one step and say how it went."""
        self.executed.append(step)
        kind = step.get('type')
        if kind == 'write':
            path = self._path(step)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step['content'])
            return {'success': True, 'path': str(path)}
        if kind == 'append':
            with open(self._path(step), 'a') as handle:
                handle.write(step['content'])
            return {'success': True}
        if kind == 'search_replace':
            path = self._path(step)
            text = path.read_text()
            if step['search'] not in text:
                return {'success': False, 'error': f"SEARCH text not found in {path.name}"}
            path.write_text(text.replace(step['search'], step['replace'], 1))
            return {'success': True}
        if kind == 'shell':
            done = subprocess.run(step['command'], shell=True, cwd=self.workdir,
                                  capture_output=True, text=True)
            return {'success': done.returncode == 0, 'returncode': done.returncode,
                    'error': done.stderr.strip() or None}
        if kind == 'fail':
            return {'success': False, 'error': step.get('error', 'step failed')}
        if kind == 'raise':
            raise RuntimeError(step.get('message', 'step raised'))
        return {'success': False, 'error': f"unknown step type {kind!r}"}

    def execute_steps(self, steps, saga_tx=None):
        """Run steps in order; stop at the first failure."""
        results = []
        for step in steps:
            result = self.execute(step)
            results.append(result)

            # Phase 10: Register completed step for potential rollback
            if result.get('success') and saga_tx and self.saga_manager:
                self.saga_manager.register_step(saga_tx, step, result)

            if not result.get('success'):
                break
        return results

    def _connect(self):
        import psycopg2
        return psycopg2.connect(**get_db_config())

    def _record_step_result(self, task_id, step_number, step_type, target_file, result,
                            execution_time_ms):
        """Records step outcomes to jr_step_rewards (written, never called)."""
        try:
            conn = self._connect()
            try:
                with conn, conn.cursor() as cur:
                    cur.execute("""
                        INSERT INTO jr_step_rewards
                            (task_id, step_number, step_type, target_file,
                             execution_result, execution_time_ms, error_detail)
                        VALUES (%s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (task_id, step_number) DO UPDATE SET
                            execution_result = EXCLUDED.execution_result,
                            execution_time_ms = EXCLUDED.execution_time_ms,
                            error_detail = EXCLUDED.error_detail,
                            updated_at = NOW()
                    """, (task_id, step_number, step_type, target_file,
                          'success' if result.get('success') else 'failed',
                          execution_time_ms, result.get('error')))
            finally:
                conn.close()
        except Exception as e:
            print(f"[StepReward] Failed to record step {step_number}: {e}")

    def _step_already_succeeded(self, task_id, step_number):
        """Checks if a step already passed (for retry idempotency; never called)."""
        try:
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    cur.execute("""
                        SELECT 1 FROM jr_step_rewards
                        WHERE task_id = %s AND step_number = %s
                          AND execution_result = 'success'
                    """, (task_id, step_number))
                    return cur.fetchone() is not None
            finally:
                conn.close()
        except Exception:
            return False
