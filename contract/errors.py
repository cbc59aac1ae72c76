"""AutoKR's one error root, and the workers' two kinds the daemon treats differently.

Every error AutoKR raises on purpose is an ``AutoKRError`` whose message is one sentence for a
person: what happened to which file, and what to do. The daemon's own kinds are in
``daemon/errors.py``."""

from __future__ import annotations


class AutoKRError(Exception):
    """Root of every error the daemon, the ``autokr`` command and the workers raise on purpose."""


class WorkerError(AutoKRError):
    """A stage worker could not do an item; the message is for people."""


class PermanentError(WorkerError):
    """The input itself is unusable (not a video, no audio track): retrying cannot help."""


class TransientError(WorkerError):
    """Something that may pass (disk full, file busy): the daemon retries with backoff."""
