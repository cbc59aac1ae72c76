"""The daemon's exceptions: subclasses of AutoKR's one root (``contract.errors.AutoKRError``)
that carry context.

They are turned into one-line messages for people only at the CLI edge (``daemon.cli``).
"""

from __future__ import annotations

from pathlib import Path

from contract.errors import AutoKRError


class ConfigError(AutoKRError):
    """The configuration file has one or more problems; all of them are listed."""

    def __init__(self, path: Path | None, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        where = str(path) if path else "configuration"
        super().__init__(f"{where}: " + "; ".join(problems))


class StoreError(AutoKRError):
    """The state database cannot be used."""


class DatabaseTooNew(StoreError):
    """The database was written by a newer AutoKR; it is left untouched."""


class DatabaseTooOld(StoreError):
    """A reading command met a database the daemon has not upgraded yet; it is left untouched."""


class DatabaseCorrupt(StoreError):
    """The database file is not a usable SQLite database; it is left untouched."""


class StorePaused(StoreError):
    """Nothing was written, for a reason that passes by itself: the daemon pauses (claims no
    new work, keeps the events it could not record) and carries on when it has passed."""


class StateFull(StorePaused):
    """The state folder's disk is full: nothing was written; the daemon pauses until space is back."""


class DatabaseLocked(StorePaused):
    """Another process (a ``sqlite3`` shell left in a transaction, a backup, ``VACUUM``) holds
    the database's write lock: nothing was written; the daemon pauses until it is released."""


class AlreadyRunning(AutoKRError):
    """Another AutoKR daemon holds the state folder's lock."""


class JobNotFound(AutoKRError):
    """No job matches the id or path a person gave."""


class JobNotRetryable(AutoKRError):
    """``autokr retry`` of a job that has not failed: it says to use ``--force``."""


class WorkerFailed(AutoKRError):
    """A stage worker could not do its work; carries the reason and its stderr tail."""

    def __init__(self, reason: str, stderr_tail: str = "", permanent: bool = False) -> None:
        self.reason = reason
        self.stderr_tail = stderr_tail
        self.permanent = permanent
        super().__init__(reason)


class UsageError(AutoKRError):
    """A command was given something it cannot take; the message says what it takes."""
