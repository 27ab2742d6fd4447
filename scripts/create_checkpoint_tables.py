#!/usr/bin/env python3
"""Create step tracking and checkpoint tables for executor resume capability.

Kanban #1751 — Executor Checkpointing. The seed's migration script made portable: it is
``jr-checkpoint migrate`` and takes the same options (--dsn, --host-root, --check, --drop --yes).

    python3 scripts/create_checkpoint_tables.py [--dsn DSN] [--host-root /ganuda]
"""

import sys

from jr_checkpoint.cli import main

if __name__ == "__main__":
    sys.exit(main(["migrate", *sys.argv[1:]]))
