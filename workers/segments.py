"""The stage files' data, typed: what both transcription engines return, what timing, the
hallucination filter, translation and subtitle writing take, and the two JSON files between the
stages (pure data, imports nothing heavy).

The files keep the shape earlier releases wrote, so a job that stopped after its transcript or
translation resumes after an upgrade (``tests/unit/test_segments.py`` reads files written by
release ``09e5430``)::

    transcript.json   {"language", "model", "segments": [Segment], "dropped": [Segment + "reason"],
                       "speech": [[start, end], ...] or null}
    translation.json  {"source_language", "target_language", "model", "transcription_model",
                       "segments": [{"start", "end", "text", "source_text"}]}

Reading is strict about what the next stage needs (times, texts) and lenient about the rest, so
a transcript made by hand (``{"segments": [{"start", "end", "text"}]}``) still translates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from contract.errors import PermanentError
from contract.files import write_json_atomically
from contract.protocol import JsonObject

Parsed = TypeVar("Parsed")


@dataclass(frozen=True)
class Word:
    """One word (for Japanese: a token run Whisper timed as one word), in seconds."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    """A stretch of text with Whisper's own scores for the window it came from."""

    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    words: tuple[Word, ...] = field(default_factory=tuple)

    def shifted(self, offset: float) -> Segment:
        """The same segment ``offset`` seconds later (a chunk's times → the audio's)."""
        return Segment(
            round(self.start + offset, 3), round(self.end + offset, 3), self.text,
            self.avg_logprob, self.no_speech_prob, self.compression_ratio,
            tuple(Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3)) for w in self.words),
        )  # fmt: skip

    def to_json(self) -> JsonObject:
        """The transcript file's form: the words only when there are any."""
        document: JsonObject = asdict(self)
        document["words"] = [asdict(word) for word in self.words]
        if not self.words:
            del document["words"]
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, object]) -> Segment:
        words = tuple(
            Word(_text(w, "word"), _number(w, "start"), _number(w, "end")) for w in _objects(document, "words")
        )
        return cls(
            _number(document, "start"), _number(document, "end"), _text(document, "text"),
            _number(document, "avg_logprob", 0.0), _number(document, "no_speech_prob", 0.0),
            _number(document, "compression_ratio", 0.0), words,
        )  # fmt: skip


def scored(start: float, end: float, text: str, avg_logprob: float, no_speech_prob: float,
           compression_ratio: float, words: Sequence[Word] = ()) -> Segment:  # fmt: skip
    """A segment with its times and scores rounded as the transcript file keeps them."""
    return Segment(
        round(float(start), 3), round(float(end), 3), text.strip(), round(float(avg_logprob), 4),
        round(float(no_speech_prob), 4), round(float(compression_ratio), 3),
        tuple(Word(w.word, round(float(w.start), 3), round(float(w.end), 3)) for w in words),
    )  # fmt: skip


@dataclass(frozen=True)
class Transcript:
    """The transcribe stage's file: the segments kept, those the hallucination filter dropped
    (with why), and the speech voice activity detection found (None: it was not run)."""

    segments: tuple[Segment, ...]
    language: str | None = None
    model: str | None = None
    dropped: tuple[tuple[Segment, str], ...] = ()
    speech: tuple[tuple[float, float], ...] | None = None

    def to_json(self) -> JsonObject:
        return {
            "language": self.language,
            "model": self.model,
            "segments": [segment.to_json() for segment in self.segments],
            "dropped": [{**segment.to_json(), "reason": reason} for segment, reason in self.dropped],
            "speech": None if self.speech is None else [[round(a, 3), round(b, 3)] for a, b in self.speech],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, object]) -> Transcript:
        speech = document.get("speech")
        if speech is not None and not isinstance(speech, list):
            raise ValueError("speech is not a list")
        return cls(
            tuple(Segment.from_json(s) for s in _objects(document, "segments")),
            _optional_text(document, "language"),
            _optional_text(document, "model"),
            tuple((Segment.from_json(s), _text(s, "reason")) for s in _objects(document, "dropped")),
            None if speech is None else tuple((float(a), float(b)) for a, b in speech),
        )


@dataclass(frozen=True)
class TranslatedSegment:
    """One timed line in both languages: what the subtitle stage lays out as cues."""

    start: float
    end: float
    text: str
    source_text: str

    def to_json(self) -> JsonObject:
        return asdict(self)

    @classmethod
    def from_json(cls, document: Mapping[str, object]) -> TranslatedSegment:
        return cls(
            _number(document, "start"), _number(document, "end"),
            _text(document, "text"), _text(document, "source_text", ""),
        )  # fmt: skip


@dataclass(frozen=True)
class Translation:
    """The translate stage's file."""

    segments: tuple[TranslatedSegment, ...]
    source_language: str = "ja"
    target_language: str = "ko"
    model: str | None = None
    transcription_model: str | None = None

    def to_json(self) -> JsonObject:
        return {
            "source_language": self.source_language,
            "target_language": self.target_language,
            "model": self.model,
            "transcription_model": self.transcription_model,
            "segments": [segment.to_json() for segment in self.segments],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, object]) -> Translation:
        return cls(
            tuple(TranslatedSegment.from_json(s) for s in _objects(document, "segments")),
            _optional_text(document, "source_language") or "ja",
            _optional_text(document, "target_language") or "ko",
            _optional_text(document, "model"),
            _optional_text(document, "transcription_model"),
        )


def read_transcript(path: Path) -> Transcript:
    """The transcript at ``path``, or a PermanentError that names it and what is wrong."""
    return _read(path, "transcript", Transcript.from_json)


def read_translation(path: Path) -> Translation:
    """The translation at ``path``, or a PermanentError that names it and what is wrong."""
    return _read(path, "translation", Translation.from_json)


def write_stage_file(path: Path, document: Transcript | Translation) -> None:
    """Writes a stage's file atomically (a crash leaves the old file or none, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, document.to_json())


def _read(path: Path, what: str, parse: Callable[[Mapping[str, object]], Parsed]) -> Parsed:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ValueError("it is not a JSON object")
        return parse(document)  # the whole shape now: a damaged file fails here, with its name
    except OSError as error:
        problem = error.strerror or str(error)
    except KeyError as error:
        problem = f"a segment has no {error.args[0]!r}"
    except (ValueError, TypeError) as error:
        problem = str(error) or type(error).__name__
    raise PermanentError(f"cannot read the {what} {path}: {problem}; `autokr retry --force` makes it again")


def _objects(document: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    value = document.get(key) or []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ValueError(f"{key} is not a list of objects")
    return value


def _number(document: Mapping[str, object], key: str, default: float | None = None) -> float:
    value = document[key] if default is None else document.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{key} is not a number")
    return float(value)


def _text(document: Mapping[str, object], key: str, default: str | None = None) -> str:
    value = document[key] if default is None else document.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} is not text")
    return value


def _optional_text(document: Mapping[str, object], key: str) -> str | None:
    value = document.get(key)
    return None if value is None else str(value)
