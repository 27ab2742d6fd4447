"""Step-level checkpointing and crash recovery on PostgreSQL for the Jr executor."""

from .decorator import checkpointed_steps
from .errors import (
    CheckpointError,
    ConfigurationError,
    DatabaseUnavailable,
    PatchConflict,
    PatchError,
    PatchFormatError,
    SchemaMissing,
    StoreError,
    TaskExhaustedError,
    TaskLockedError,
    TaskOwnershipLost,
    UnsafePatchPath,
)
from .history import trajectory
from .install import install, installed, uninstall
from .store import CheckpointStore

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointStore",
    "ConfigurationError",
    "DatabaseUnavailable",
    "PatchConflict",
    "PatchError",
    "PatchFormatError",
    "SchemaMissing",
    "StoreError",
    "TaskExhaustedError",
    "TaskLockedError",
    "TaskOwnershipLost",
    "UnsafePatchPath",
    "checkpointed_steps",
    "install",
    "installed",
    "trajectory",
    "uninstall",
]
