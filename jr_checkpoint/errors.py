"""One root exception and its children.

Each exception's docstring is its default message, so ``raise TaskLockedError()``
already says something useful; callers pass a more precise message when they have one.
"""

from __future__ import annotations


class CheckpointError(Exception):
    """jr-checkpoint failed."""

    #: The command line's exit status when this error ends a command.
    exit_code = 2

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])


class ConfigurationError(CheckpointError):
    """The checkpoint database is not configured correctly."""


class DatabaseUnavailable(CheckpointError):
    """The checkpoint database cannot be reached."""


class StoreError(CheckpointError):
    """A checkpoint query failed."""


class SchemaMissing(StoreError):
    """The checkpoint tables do not exist: run `jr-checkpoint migrate`."""


class IncompatibleSchema(StoreError):
    """A checkpoint table is not of a shape the ledger can write: see `jr-checkpoint migrate --check`."""


class TaskLockedError(CheckpointError):
    """Another worker is running this task."""


class TaskOwnershipLost(TaskLockedError):
    """Another worker took this task over (its lease had expired): this worker stops."""


class TaskExhaustedError(CheckpointError):
    """This task has used all its attempts."""


class PatchError(CheckpointError):
    """A patch cannot be applied."""


class PatchFormatError(PatchError):
    """The patch file is malformed."""

    exit_code = 1


class PatchConflict(PatchError):
    """A patch does not fit the files under the root: nothing was changed."""

    exit_code = 1


class UnsafePatchPath(PatchError):
    """A patch names a target outside the root directory: refused."""

    exit_code = 1


class CommandNotRunnable(CheckpointError):
    """`jr-checkpoint run` could not start its command."""

    def __init__(self, message: str | None = None, exit_code: int = 127):
        super().__init__(message)
        #: 127 when the command is not found, 126 when it cannot be executed (as env(1) does).
        self.exit_code = exit_code
