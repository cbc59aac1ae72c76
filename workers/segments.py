"""The transcript's data, typed: what both transcription engines return and what timing, the
hallucination filter and the transcript JSON take (pure data, imports nothing heavy)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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

    def to_json(self) -> dict[str, Any]:
        """The transcript file's form: the words only when there are any."""
        document = asdict(self)
        if not self.words:
            del document["words"]
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Segment:
        words = tuple(Word(str(w["word"]), float(w["start"]), float(w["end"])) for w in document.get("words") or [])
        return cls(
            float(document["start"]), float(document["end"]), str(document["text"]),
            float(document.get("avg_logprob", 0.0)), float(document.get("no_speech_prob", 0.0)),
            float(document.get("compression_ratio", 0.0)), words,
        )  # fmt: skip


def scored(start: float, end: float, text: str, avg_logprob: float, no_speech_prob: float,
           compression_ratio: float, words: list[Word] | tuple[Word, ...] = ()) -> Segment:  # fmt: skip
    """A segment with its times and scores rounded as the transcript file keeps them."""
    return Segment(
        round(float(start), 3), round(float(end), 3), text.strip(), round(float(avg_logprob), 4),
        round(float(no_speech_prob), 4), round(float(compression_ratio), 3),
        tuple(Word(w.word, round(float(w.start), 3), round(float(w.end), 3)) for w in words),
    )  # fmt: skip
