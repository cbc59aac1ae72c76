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


class DatabaseCorrupt(StoreError):
    """The database file is not a usable SQLite database; it is left untouched."""


class StateFull(StoreError):
    """The state folder's disk is full: nothing was written; the daemon pauses until space is back."""


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
