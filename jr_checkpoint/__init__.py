"""Step-level checkpointing and crash recovery on PostgreSQL for the Jr executor."""

from .errors import (
    CheckpointError,
    ConfigurationError,
    DatabaseUnavailable,
    PatchError,
    SchemaMissing,
    StoreError,
    TaskExhaustedError,
    TaskLockedError,
)
from .store import CheckpointStore

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointStore",
    "ConfigurationError",
    "DatabaseUnavailable",
    "PatchError",
    "SchemaMissing",
    "StoreError",
    "TaskExhaustedError",
    "TaskLockedError",
]
