"""What the daemon knows about one video: its state, the id it goes by, and the facts kept about
how its subtitles were made. Typed here; stored as columns and one JSON ``facts`` text by
``daemon/store.py``.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, NewType

from contract.protocol import JsonObject

JobId = NewType("JobId", int)
"""A job's row id. On the wire (manifests, worker events) it is its decimal text:
``item_id``/``job_id_from_item`` convert, nowhere else."""


def item_id(job_id: JobId) -> str:
    return str(job_id)


def job_id_from_item(item: str) -> JobId | None:
    """The job a worker event's ``item`` names, or None when it names none (a worker's bug)."""
    return JobId(int(item)) if item.isdigit() else None


class JobState(str, enum.Enum):
    """Where a job is. The value is what the database, ``status`` and ``status --json`` show."""

    QUEUED = "queued"
    """waiting at its stage (maybe for a retry's backoff)"""
    RUNNING = "running"
    """a worker has it"""
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    """not AutoKR's to subtitle: a Korean subtitle is already there, or the speech is not Japanese"""
    DROPPED = "dropped"
    """the video vanished before it was done"""

    # ``str(JobState.DONE)`` and f-strings give "done" on every Python (3.12 changed the
    # default for mixed-in enums).
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@dataclass(frozen=True)
class StageRecord:
    """What ran a stage that uses a model, from the worker's ``done`` event."""

    model: str | None = None
    engine: str | None = None
    decoding: str | None = None
    batch_size: int | None = None
    device: str | None = None
    """The slot that ran it: ``cuda:1``, ``cpu``."""
    fallback_lines: int | None = None
    """LLM engine: how many lines its NLLB fallback translated (``fallback_model``)."""
    fallback_model: str | None = None
    seconds: float | None = None
    """Wall time of the stage for this video: its share (by length) of its cohort's worker."""

    def to_json(self) -> JsonObject:
        return {name.name: getattr(self, name.name) for name in fields(self) if getattr(self, name.name) is not None}

    @classmethod
    def from_json(cls, value: JsonObject) -> StageRecord:
        def text(key: str) -> str | None:
            found = value.get(key)
            return None if found is None else str(found)

        def number(key: str) -> int | None:
            found = value.get(key)
            return found if isinstance(found, int) and not isinstance(found, bool) else None

        seconds = value.get("seconds")
        return cls(
            text("model"), text("engine"), text("decoding"), number("batch_size"), text("device"),
            number("fallback_lines"), text("fallback_model"),
            float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None,
        )  # fmt: skip

    @property
    def empty(self) -> bool:
        return not self.to_json()


Signature = tuple[int, int]
"""A file's (size, mtime_ns): AutoKR's own subtitle is one whose signature still matches."""

UNCHECKED = "unchecked"


@dataclass(frozen=True)
class AudioFacts:
    """What AutoKR knows of the spoken language of the track it transcribes."""

    language: str
    """ISO 639-1 (``ja``), or the container's tag as it is (``und``) while unchecked."""
    by: str
    """``tag`` (the container says so), ``ear`` (Whisper's language detection) or ``unchecked``
    (untagged; the transcribe stage listens first)."""
    probability: float | None = None
    """By ear: the combined probability of ``language`` over the sampled speech."""

    def to_json(self) -> JsonObject:
        value: JsonObject = {"language": self.language, "by": self.by}
        if self.probability is not None:
            value["probability"] = round(self.probability, 3)
        return value

    @classmethod
    def from_json(cls, value: object) -> AudioFacts | None:
        if not isinstance(value, dict) or not isinstance(value.get("language"), str):
            return None
        probability = value.get("probability")
        return cls(
            value["language"], str(value.get("by", "tag")),
            float(probability) if isinstance(probability, int | float) else None,
        )  # fmt: skip


@dataclass(frozen=True)
class JobFacts:
    """What is kept about a job beyond its state, in the ``facts`` column (JSON)."""

    stages: dict[str, StageRecord] = field(default_factory=dict)
    """Per stage that ran a model: which, and how."""
    subtitles: dict[str, Signature] = field(default_factory=dict)
    """Each subtitle AutoKR wrote for this path and its signature then."""
    subtitles_for: Signature | None = None
    """The video's (size, mtime_ns) that the subtitles were made from."""
    memory_levels: dict[str, int] = field(default_factory=dict)
    """Per stage, how many steps down after running out of GPU memory."""
    languages: tuple[str, str] | None = None
    """(source, target) as the config said when the job's first stage started: its later
    stages keep them, so a reload that changes ``[languages]`` applies to jobs that start after
    it (Korean text is never written as ``Video.en.srt``)."""
    audio: AudioFacts | None = None
    """The spoken language of the track AutoKR transcribes: tagged, heard, or still unchecked."""
    duration: float | None = None
    """The video's length in seconds (ffprobe's, when it became a job): real-time factors, estimates."""

    @classmethod
    def from_json(cls, text: str | None) -> JobFacts:
        value = json.loads(text or "{}")
        written_for = value.get("subtitles_for")
        return cls(
            stages={stage: StageRecord.from_json(record) for stage, record in value.get("stages", {}).items()},
            subtitles={path: (int(sig[0]), int(sig[1])) for path, sig in value.get("subtitles", {}).items()},
            subtitles_for=(int(written_for[0]), int(written_for[1])) if written_for else None,
            memory_levels={stage: int(level) for stage, level in value.get("memory_levels", {}).items()},
            languages=(str(value["languages"][0]), str(value["languages"][1])) if value.get("languages") else None,
            audio=AudioFacts.from_json(value.get("audio")),
            duration=float(value["duration"]) if isinstance(value.get("duration"), int | float) else None,
        )

    def to_json(self) -> str:
        value: JsonObject = {}
        if self.stages:
            value["stages"] = {stage: record.to_json() for stage, record in self.stages.items()}
        if self.subtitles:
            value["subtitles"] = {path: list(sig) for path, sig in self.subtitles.items()}
        if self.subtitles_for is not None:
            value["subtitles_for"] = list(self.subtitles_for)
        if self.memory_levels:
            value["memory_levels"] = self.memory_levels
        if self.languages is not None:
            value["languages"] = list(self.languages)
        if self.audio is not None:
            value["audio"] = self.audio.to_json()
        if self.duration is not None:
            value["duration"] = round(self.duration, 3)
        return json.dumps(value)  # ASCII escapes: a name that is not UTF-8 survives (\udcXX)

    def kept_for_new_content(self) -> JobFacts:
        """What survives the video being replaced: the signatures of AutoKR's own subtitles
        (they tell AutoKR's old file from one a person saved)."""
        return JobFacts(subtitles=self.subtitles, subtitles_for=self.subtitles_for)

    def with_stage(self, stage: str, record: StageRecord) -> JobFacts:
        return self if record.empty else replace(self, stages={**self.stages, stage: record})

    def models_by_suffix(self) -> JsonObject:
        """The documented ``models`` object of ``status --json``: ``{"transcribe_model": …,
        "transcribe_engine": …, "translate_batch_size": …}``."""
        return {
            f"{stage}_{name}": value
            for stage, record in self.stages.items()
            for name, value in record.to_json().items()
        }


@dataclass(frozen=True)
class Job:
    id: JobId
    path: str
    size: int
    mtime_ns: int
    state: JobState
    stage: str
    progress: float | None
    attempts: int
    not_before: float
    runs: dict[str, int]
    error: str | None
    stderr_tail: str | None
    note: str | None
    generation: int
    force: bool
    facts: JobFacts
    created_at: float
    updated_at: float
    priority: float = 0.0
    """When someone asked for this video first (a play webhook); 0: not asked. The scheduler
    takes asked-for videos before the rest (``daemon/scheduler.py``)."""

    @property
    def listen_first(self) -> bool:
        """The transcribe stage checks the speech's language before transcribing it."""
        return self.facts.audio is not None and self.facts.audio.by == UNCHECKED and not self.force

    @property
    def signature(self) -> Signature:
        return (self.size, self.mtime_ns)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        values = dict(row)
        values.pop("path")  # the readable text form; the bytes are the identity
        values["path"] = os.fsdecode(values.pop("path_key"))
        values["id"] = JobId(values["id"])
        values["state"] = JobState(values["state"])
        values["runs"] = json.loads(values["runs"] or "{}")
        values["facts"] = JobFacts.from_json(values["facts"])
        values["force"] = bool(values["force"])
        return cls(**values)

    def as_public_dict(self) -> JsonObject:
        """The stable JSON shape of ``autokr status --json`` (other tools rely on it)."""
        return {
            "id": self.id,
            "path": self.path,
            "state": self.state.value,
            "stage": self.stage,
            "progress": self.progress,
            "error": self.error,
            "note": self.note,
            "runs": self.runs,
            "attempts": self.attempts,
            "stderr_tail": self.stderr_tail,
            "models": self.facts.models_by_suffix(),
            "audio_language": self.facts.audio.to_json() if self.facts.audio else None,
            "priority": self.priority or None,
            "updated_at": self.updated_at,
        }
