"""The workers' exceptions: one root, and the two kinds the daemon treats differently."""

from __future__ import annotations


class WorkerError(Exception):
    """Root of the errors a stage worker raises on purpose; the message is for people."""


class PermanentError(WorkerError):
    """The input itself is unusable (not a video, no audio track): retrying cannot help."""


class TransientError(WorkerError):
    """Something that may pass (disk full, file busy): the daemon retries with backoff."""
