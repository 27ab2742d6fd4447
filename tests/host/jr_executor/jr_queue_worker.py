"""Stand-in of the host's jr_executor/jr_queue_worker.py (see tests/host/README.md).

Run as the host runs it, from inside jr_executor/: `python -u jr_queue_worker.py 'Jr Name'`.
It imports its siblings by top-level name, never configures logging, and prints. It takes
one task at a time, hands it to process_queue_task(), and completes or fails it by its
integer `id`. Unlike the host's, it stops when the queue is empty if JR_WORKER_DRAIN=1.
"""

import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lib'))

from jr_queue_client import JrQueueClient  # noqa: E402
from task_executor import TaskExecutor  # noqa: E402

POLL_INTERVAL = float(os.environ.get('JR_WORKER_POLL', '0.2'))


class JrQueueWorker:
    def __init__(self, jr_name: str):
        self.jr_name = jr_name
        self.client = JrQueueClient(jr_name)
        self.executor = TaskExecutor(jr_type=jr_name)
        self.running = True
        self.current_task = None
        signal.signal(signal.SIGTERM, self._shutdown)

    def _shutdown(self, signum, frame):
        print(f"[{self.jr_name}] Shutting down...")
        self.running = False

    def run(self):
        print(f"[{self.jr_name}] Queue worker starting...")
        while self.running:
            self.current_task = None
            try:
                tasks = self.client.get_pending_tasks(limit=1)
                if not tasks and os.environ.get('JR_WORKER_DRAIN') == '1':
                    break
                for task in tasks:
                    self.current_task = task
                    print(f"[{self.jr_name}] Processing task #{task['id']}: {task['title']}")
                    result = self.executor.process_queue_task(task)
                    if result.get('success'):
                        self.client.complete_task(task['id'], result)
                        print(f"[{self.jr_name}] Task #{task['id']} completed")
                    else:
                        self.client.fail_task(task['id'], result.get('error') or 'failed', result)
                        print(f"[{self.jr_name}] Task #{task['id']} failed: {result.get('error')}")
                time.sleep(POLL_INTERVAL)
            except Exception as e:
                print(f"[{self.jr_name}] Worker error: {e}")
                traceback.print_exc()
                if self.current_task:
                    self.client.fail_task(self.current_task['id'], f"Worker error during processing: {e}")
        self.client.close()
        print(f"[{self.jr_name}] Worker stopped.")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("Usage: python3 jr_queue_worker.py 'Jr Name'")
        sys.exit(1)
    JrQueueWorker(sys.argv[1]).run()
