"""Stand-in of the host's jr_executor/jr_queue_client.py (see tests/host/README.md)."""

import json  # noqa: F401  (the seed's Step 3 uses json.dumps)
import sys
from pathlib import Path
from typing import Dict, Optional  # noqa: F401  (the seed's Step 3 uses both)

import psycopg2
import psycopg2.extras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.secrets_loader import get_db_config  # noqa: E402


class JrQueueClient:
    """The Jr task queue's database client."""

    def __init__(self, agent_name):
        self.agent_name = agent_name
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(**get_db_config())
        return self._conn

    def _execute(self, query, params=None, fetch=True):
        conn = self._connection()
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(query, params)
                rows = cur.fetchall() if fetch else None
            conn.commit()
            return rows
        except Exception:
            conn.rollback()
            raise

    def close(self):
        """Close database connection."""
        if self._conn and not self._conn.closed:
            self._conn.close()
