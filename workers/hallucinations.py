"""Drops transcript segments Whisper most likely invented (pure functions, no model).

A segment is dropped when:
- Whisper itself thinks there was no speech: ``no_speech_prob`` above 0.6 together with
  ``avg_logprob`` below -1.0 (the thresholds ``model.transcribe`` uses to skip silence);
- it is a repetition loop: ``compression_ratio`` above 2.4 (Whisper's own fallback threshold);
- it repeats the segment before it word for word (a stuck decoder);
- voice activity detection ran and less than a tenth of it overlaps the speech it found;
- its whole text is a known phrase (``workers/data/hallucinations_<language>.txt``) and it
  falls outside detected speech: when ``speech`` intervals (voice activity) are given, less
  than half of it overlaps them; without them, Whisper's own confidence is weak
  (``no_speech_prob`` above 0.2 or ``avg_logprob`` below -0.6).

Each dropped segment is returned with its reason, so the worker can log what it removed.
"""

from __future__ import annotations

import unicodedata
from functools import cache
from importlib import resources

from workers.segments import Segment

NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
COMPRESSION_RATIO = 2.4
WEAK_NO_SPEECH_PROB = 0.2
WEAK_LOGPROB = -0.6
OUTSIDE = 0.1  # with voice activity: a segment less than this much over speech is not speech

Interval = tuple[float, float]


def normalize(text: str) -> str:
    """NFKC, letters and digits only: 「ご視聴、ありがとうございました！」 → ご視聴ありがとうございました."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


@cache
def known_phrases(language: str) -> frozenset[str]:
    try:
        text = resources.files("workers").joinpath("data", f"hallucinations_{language}.txt").read_text("utf-8")
    except FileNotFoundError:
        return frozenset()
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(normalize(line) for line in lines if line)


def speech_overlap(start: float, end: float, speech: list[Interval]) -> float:
    """The share of [start, end] covered by the speech intervals."""
    if end <= start:
        return 0.0
    covered = sum(max(0.0, min(end, b) - max(start, a)) for a, b in speech)
    return covered / (end - start)


def why_invented(
    segment: Segment, previous: Segment | None, language: str, speech: list[Interval] | None
) -> str | None:
    no_speech, logprob = segment.no_speech_prob, segment.avg_logprob
    text = normalize(segment.text)
    if not text:
        return "empty"
    if no_speech > NO_SPEECH_PROB and logprob < LOW_LOGPROB:
        return f"no speech (no_speech_prob {no_speech:.2f}, avg_logprob {logprob:.2f})"
    if segment.compression_ratio > COMPRESSION_RATIO:
        return f"repetition loop (compression ratio {segment.compression_ratio:.1f})"
    if previous is not None and normalize(previous.text) == text:
        return "repeats the segment before it"
    if speech is not None and speech_overlap(segment.start, segment.end, speech) < OUTSIDE:
        return "outside detected speech (silence or music)"
    if text in known_phrases(language):
        if speech is not None:
            outside = speech_overlap(segment.start, segment.end, speech) < 0.5
        else:
            outside = no_speech > WEAK_NO_SPEECH_PROB or logprob < WEAK_LOGPROB
        if outside:
            return "a phrase Whisper invents over silence or music"
    return None


def filter_segments(
    segments: list[Segment], language: str, speech: list[Interval] | None = None
) -> tuple[list[Segment], list[tuple[Segment, str]]]:
    """(kept, [(dropped, reason), ...])."""
    kept: list[Segment] = []
    dropped: list[tuple[Segment, str]] = []
    for segment in segments:
        reason = why_invented(segment, kept[-1] if kept else None, language, speech)
        if reason:
            dropped.append((segment, reason))
        else:
            kept.append(segment)
    return kept, dropped
