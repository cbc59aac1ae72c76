"""The one stage table: every stage's name, worker module, the work file it reads and the one it
writes, what the log and ``STATUS=`` say while it runs, and what it needs. The supervisor,
``autokr once``, the manifests and ``autokr status`` all read it (its options come from the
config: ``daemon/stages.py``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    worker: str
    """The module a worker process runs (``python -m``)."""
    reads: str | None
    """The work file it reads, in the job's work folder; None: the video itself."""
    writes: str | None
    """The work file it writes; None: the subtitles beside the video."""
    verb: str
    """What the log and ``STATUS=`` say while it runs: ``transcribing 4 video(s)``."""
    device: str
    """``gpu`` when it runs a model (one at a time on each GPU), else ``cpu``."""
    model: str | None = None
    """The ``[models]`` key of the model it runs (``whisper``, ``translator``), if any."""


PIPELINE: tuple[Stage, ...] = (
    Stage("extract", "workers.extract", None, "audio.wav", "extracting", "cpu"),
    Stage("transcribe", "workers.transcribe", "audio.wav", "transcript.json", "transcribing", "gpu", "whisper"),
    Stage("translate", "workers.translate", "transcript.json", "translation.json", "translating", "gpu", "translator"),
    Stage("subtitle", "workers.subtitle", "translation.json", None, "writing", "cpu"),
)
STAGE = {stage.name: stage for stage in PIPELINE}
STAGES: tuple[str, ...] = tuple(stage.name for stage in PIPELINE)
FIRST_STAGE, LAST_STAGE = STAGES[0], STAGES[-1]
