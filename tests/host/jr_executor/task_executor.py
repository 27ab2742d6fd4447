"""Stand-in of the host's jr_executor/task_executor.py (see tests/host/README.md).

Written for jr-checkpoint's tests to reproduce what the real executor does that matters to
checkpointing: how it is imported, where the task id lives, how steps are extracted from a
markdown instruction (and how that depends on the file system), the shapes of its step
dicts, its in-process retry on a shorter step list, and its own step-recording helpers.
execute_steps() holds the seed's loop (as the host has since it applied the instruction by
hand): `jr-checkpoint patch revert 01` on a copy gives the loop the seed was written against.
"""

import hashlib
import logging
import os
import re
import subprocess
import sys
from typing import Any, Dict, List

import psycopg2
from search_replace_editor import SearchReplaceEditor

# Where instructions' relative paths point and bash steps run (the host's is /ganuda).
GANUDA_ROOT = os.environ.get('GANUDA_ROOT', '/ganuda')
# Where lib/ lives: the host puts /ganuda on sys.path; the stand-in puts its own root.
_HOST_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CODE_LANGUAGES = ('python', 'text', 'yaml', 'json', 'toml', 'ini', 'conf')


class TaskExecutor:
    """Runs a Jr instruction's steps: file writes and partial edits, SEARCH/REPLACE, bash."""

    MAX_RETRIES = 2

    def __init__(self, jr_type: str = "it_triad_jr"):
        self.jr_type = jr_type
        sys.path.insert(0, _HOST_ROOT)
        from lib.secrets_loader import get_db_config
        self.db_config = get_db_config()
        self.saga_manager = None
        # The host's LLM, when it is up: reflect_on_failure() and the PreFlect critique.
        # Tests stand in for it with callables; None means the LLM is down.
        self.reflector = None
        self.critic = None

    # -- the loop ------------------------------------------------------------------------

    def execute_steps(self, steps: List[Dict]) -> List[Dict[str, Any]]:
        """Execute a list of steps and return results"""
        results = []

        saga_tx = None
        if self.saga_manager:
            saga_tx = self.saga_manager.begin_transaction(
                query_id=str(getattr(self, '_current_task_id', 'unknown')))

        for step_index, step in enumerate(steps):
            # Phase 11: Check if step already succeeded (retry idempotency)
            task_id = getattr(self, '_current_task_id', None)
            if task_id and self._step_already_succeeded(task_id, step_index):
                print(f"[CHECKPOINT] Step {step_index} already succeeded, skipping")
                results.append({'success': True, 'skipped': True, 'checkpoint_hit': True})
                continue

            import time as _time
            _step_start = _time.time()
            result = self.execute(step)
            _step_elapsed_ms = int((_time.time() - _step_start) * 1000)
            results.append(result)

            # Phase 11: Record step result for checkpoint tracking
            if task_id:
                self._record_step_result(
                    task_id=task_id,
                    step_number=step_index,
                    step_type=step.get('type', 'unknown'),
                    target_file=step.get('path', step.get('filepath', '')),
                    result=result,
                    execution_time_ms=_step_elapsed_ms,
                )

            # Phase 10: Register completed step for potential rollback
            if result.get('success') and saga_tx and self.saga_manager:
                self.saga_manager.execute_operation(saga_tx, step, result)

            # Stop on critical failure
            if not result.get('success') and step.get('critical', True):
                break

        if saga_tx and self.saga_manager:
            self.saga_manager.finish(saga_tx, all(r.get('success') for r in results))
        return results

    # -- one queue task --------------------------------------------------------------------

    def process_queue_task(self, task: Dict) -> Dict[str, Any]:
        """Read the task's instruction, extract its steps, run them; errors become a result."""
        result = {'task_id': task.get('task_id'), 'title': task.get('title'),
                  'success': False, 'steps_executed': [], 'error': None}
        instructions = task.get('instruction_content')
        if not instructions:
            instruction_file = task.get('instruction_file')
            if not instruction_file:
                result['error'] = 'No instruction_file or instruction_content specified in task'
                return result
            try:
                with open(instruction_file) as handle:
                    instructions = handle.read()
            except OSError as e:
                result['error'] = f'Failed to read instruction file: {e}'
                return result

        # Context appended before extraction (the host adds retrieved experiences, skills
        # and a dead-letter requeue's retry context the same way).
        for key in ('_skill_context', '_retry_context'):
            if task.get(key):
                instructions = instructions + "\n\n" + task[key] + "\n"

        steps = self._extract_steps_from_instructions(instructions)
        if not steps:
            result['error'] = 'No executable steps found in instruction file'
            return result

        if self.critic is not None and len(steps) >= 3:
            revised = self._preflect_critique(steps, task)
            if revised is not None:
                print(f"[PREFLECT] Reordering {len(steps)} steps per self-critique")
                steps = revised

        try:
            step_results = self.execute_steps(steps)
            result['steps_executed'] = step_results
            if not step_results:
                result['error'] = f'No steps were executed (extracted {len(steps)} steps)'
                return result
            result['success'] = all(s.get('success') for s in step_results)
            if not result['success']:
                failed = [s for s in step_results if not s.get('success')]
                result['error'] = f'{len(failed)} step(s) failed'
                self._retry_after_failure(task, instructions, result)
        except Exception as e:
            result['error'] = f'Execution error: {str(e)}'
        return result

    def _retry_after_failure(self, task, instructions, result):
        if self.reflector is None:
            return
        reflection = self.reflect_on_failure(task, result['error'], str(result['steps_executed']))
        current = result
        for attempt in range(1, self.MAX_RETRIES + 1):
            if not reflection.get('should_retry'):
                return
            retry = self._retry_with_reflection(task, instructions, current, reflection, attempt,
                                                previous_result=current)
            if retry.get('success'):
                result.update(success=True, error=None, recovered_via_retry=attempt,
                              steps_executed=retry.get('steps_executed', []))
                return
            current = retry
            reflection = self.reflect_on_failure(task, retry.get('error', ''), '')

    def reflect_on_failure(self, task: Dict, error: str, result: str = "") -> Dict:
        return self.reflector(task, error, result)

    def _preflect_critique(self, steps, task):
        """The LLM's self-critique may reorder, drop or duplicate steps (None: keep them)."""
        return self.critic(steps, task)

    def _retry_with_reflection(self, task: Dict, instructions: str, failed_result: Dict,
                               reflection: Dict, attempt: int, previous_result: Dict = None) -> Dict:
        """Append the reflection, extract again, drop steps whose path already succeeded."""
        print(f"[RETRY] Attempt {attempt}/{self.MAX_RETRIES} for: {task.get('title')}")
        augmented = (instructions + f"\n\n## RETRY CONTEXT (Attempt {attempt})\n\n"
                     + reflection.get('modified_approach', '') + "\n")
        steps = self._extract_steps_from_instructions(augmented)
        previous = previous_result or failed_result
        done_paths = {s['path'] for s in previous.get('steps_executed', [])
                      if s.get('success') and s.get('path')}
        steps = [s for s in steps if s.get('args', {}).get('path', '') not in done_paths or
                 not s.get('args', {}).get('path')]
        if not steps:
            return {'success': True, 'steps_executed': previous.get('steps_executed', []),
                    'retry_attempt': attempt}
        try:
            step_results = self.execute_steps(steps)
        except Exception as e:
            return {'success': False, 'error': f'Retry {attempt} exception: {e}',
                    'steps_executed': [], 'retry_attempt': attempt}
        ok = bool(step_results) and all(s.get('success') for s in step_results)
        return {'success': ok, 'steps_executed': step_results, 'retry_attempt': attempt,
                'error': None if ok else f'Retry {attempt}: step(s) failed'}

    # -- extraction: SEARCH/REPLACE blocks first, then fenced code blocks ------------------

    def _extract_steps_from_instructions(self, instructions: str) -> List[Dict]:
        steps = []
        taken = []
        for match in re.finditer(r'<<<<<<< SEARCH\n(.*?)\n=======\n(.*?)\n>>>>>>> REPLACE',
                                 instructions, re.DOTALL):
            taken.append((match.start(), match.end()))
            path = self._path_before(instructions, match.start(), (r'File:\s*`([^`]+)`',))
            if path:
                steps.append({'type': 'search_replace',
                              'args': {'path': path, 'search': match.group(1),
                                       'replace': match.group(2)}})
        for match in re.finditer(r'```(\w+)\n(.*?)```', instructions, re.DOTALL):
            if any(s < match.end() and e > match.start() for s, e in taken):
                continue
            lang, raw = match.group(1).lower(), match.group(2)
            if lang in ('bash', 'sh', 'shell'):
                steps.append({'type': 'bash', 'command': raw.strip()})
            elif lang in _CODE_LANGUAGES:
                path = self._path_before(instructions, match.start(),
                                         (r'Create\s+`([^`]+)`', r'File:\s*`([^`]+)`'))
                if path:
                    steps.append(self._file_step(instructions, match.start(), path, raw))
        return steps

    def _path_before(self, text, position, patterns):
        preceding = text[max(0, position - 500):position]
        for pattern in patterns:
            found = re.findall(pattern, preceding)
            if found:
                path = found[-1].strip()
                return path if path.startswith('/') else os.path.join(GANUDA_ROOT, path)
        return None

    def _file_step(self, text, position, path, raw):
        prose = text[max(0, position - 500):position]
        edit_info = self._determine_edit_mode(prose, path)
        if edit_info['mode'] == 'write':
            return {'type': 'file', 'args': {'operation': 'write', 'path': path,
                                             'content': raw.strip()}}
        lines = raw.rstrip().split('\n')
        while lines and not lines[0].strip():
            lines.pop(0)
        return {'type': 'file', 'args': {'operation': 'partial_edit', 'path': path,
                                         'content': '\n'.join(lines), 'edit_info': edit_info}}

    def _determine_edit_mode(self, prose, path):
        """A file that does not exist yet is written; an existing one may be edited in part."""
        if not os.path.exists(path):
            return {'mode': 'write', 'anchor': None, 'verb': 'create'}
        if re.search(r'\badd\b', prose.lower()):
            return {'mode': 'append', 'anchor': None, 'verb': 'add_method'}
        return {'mode': 'write', 'anchor': None, 'verb': None}

    # -- one step ----------------------------------------------------------------------------

    def execute(self, step: Dict) -> Dict[str, Any]:
        """Execute a single step and return result"""
        step_type = step.get('type', 'unknown')
        try:
            if step_type == 'file':
                return self._execute_file(step)
            if step_type == 'search_replace':
                args = step.get('args', {})
                return SearchReplaceEditor().apply(args['path'], args['search'], args['replace'])
            if step_type == 'bash':
                return self._execute_bash(step)
            return {'success': False, 'error': f'Unknown step type: {step_type}'}
        except Exception as e:
            return {'success': False, 'error': str(e), 'step': step}

    def _execute_file(self, step):
        args = step.get('args', {})
        path, content = args['path'], args.get('content', '')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if args.get('operation') == 'partial_edit':
            with open(path, 'a') as handle:
                handle.write('\n' + content + '\n')
        else:
            with open(path, 'w') as handle:
                handle.write(content + '\n')
        return {'success': True, 'path': path, 'operation': args.get('operation')}

    def _execute_bash(self, step):
        done = subprocess.run(step['command'], shell=True, cwd=GANUDA_ROOT,
                              capture_output=True, text=True, timeout=300)
        result = {'success': done.returncode == 0, 'stdout': done.stdout,
                  'returncode': done.returncode}
        if done.returncode != 0:
            result['error'] = done.stderr.strip() or f'exit status {done.returncode}'
        return result

    # -- the step-recording helpers the seed wires into the loop -----------------------------

    def _record_step_result(self, task_id, step_number, step_type, target_file, result, execution_time_ms):
        """Record one step's outcome in jr_step_rewards (a connection per call)."""
        try:
            identity = hashlib.sha256(
                f"{task_id}:{step_number}:{step_type}:{target_file}".encode()).hexdigest()
            conn = psycopg2.connect(**self.db_config)
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO jr_step_rewards (task_id, step_number, step_type, target_file,"
                        " step_content_hash, execution_result, execution_time_ms, error_detail)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (task_id, step_number) DO UPDATE SET"
                        " execution_result = EXCLUDED.execution_result,"
                        " execution_time_ms = EXCLUDED.execution_time_ms,"
                        " error_detail = EXCLUDED.error_detail, updated_at = NOW()",
                        (task_id, step_number, step_type, target_file, identity,
                         'success' if result.get('success') else 'failed',
                         execution_time_ms, result.get('error')))
            finally:
                conn.close()
        except Exception as e:
            logging.getLogger(__name__).warning(f"Step recording failed: {e}")

    def _step_already_succeeded(self, task_id, step_number):
        """Whether this step number already succeeded for the task (a connection per call)."""
        try:
            conn = psycopg2.connect(**self.db_config)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM jr_step_rewards WHERE task_id = %s AND step_number = %s"
                                " AND execution_result = 'success'", (task_id, step_number))
                    return cur.fetchone() is not None
            finally:
                conn.close()
        except Exception:
            return False
