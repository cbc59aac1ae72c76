"""Cue boundaries that follow the speech (pure functions on plain data, no model).

Whisper's segment times drift: a segment often starts a second or more before the speech and
runs on through silence or music. Given the speech intervals that voice activity detection
found (workers/vad.py) and, where available, Whisper's word timestamps, each segment is

1. split where its words pause for more than ``MAX_PAUSE`` seconds, or where the speech it
   spans has a gap that long (so no cue covers more than 1 s of non-speech), and
2. trimmed to the speech it overlaps, with ``PAD`` seconds on either side.

A segment that overlaps no speech at all is kept as it is here; the hallucination filter
(workers/hallucinations.py) decides about it, with the same intervals.
"""

from __future__ import annotations

from dataclasses import replace

from workers.segments import Segment, Word

Interval = tuple[float, float]
MAX_PAUSE = 1.0
PAD = 0.1
# Japanese particles never stand alone as an utterance; Whisper sometimes starts a segment with
# the last syllable of the sentence before (で, が, ...) timed at that sentence's end.
LONE_PARTICLES = frozenset("でがはをにとへもやの")
PUNCTUATION = "、。，．,.！？!? 　"


def merge_intervals(intervals: list[Interval], max_gap: float = 0.0) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlapping(start: float, end: float, speech: list[Interval]) -> list[Interval]:
    return [(max(a, start), min(b, end)) for a, b in speech if b > start and a < end]


def _text_of(words: list[Word]) -> str:
    return "".join(word.word for word in words).strip()


def _split_words(words: list[Word], speech: list[Interval]) -> list[list[Word]]:
    """Groups of words, cut at pauses longer than MAX_PAUSE: between the words themselves or in
    the speech between them."""
    groups: list[list[Word]] = [[]]
    regions = merge_intervals(speech, max_gap=MAX_PAUSE)  # speech gaps of a second or less don't count
    for word in words:
        if groups[-1]:
            previous = groups[-1][-1]
            middle_previous = (previous.start + previous.end) / 2
            middle = (word.start + word.end) / 2
            paused = word.start - previous.end > MAX_PAUSE
            across_a_gap = bool(regions) and _region_index(middle_previous, regions) != _region_index(middle, regions)
            if paused or across_a_gap:
                groups.append([])
        groups[-1].append(word)
    return [group for group in groups if group]


def _region_index(time: float, regions: list[Interval]) -> int:
    """The index of the speech region ``time`` falls in, or of the nearest one."""
    return min(
        range(len(regions)),
        key=lambda i: (
            0 if regions[i][0] <= time <= regions[i][1] else min(abs(time - regions[i][0]), abs(time - regions[i][1]))
        ),
    )


def _trim(start: float, end: float, speech: list[Interval]) -> tuple[float, float]:
    inside = overlapping(start - PAD, end + PAD, speech)
    if not inside:
        return start, end
    return max(start, inside[0][0] - PAD), min(end, inside[-1][1] + PAD)


def follow_speech(segments: list[Segment], speech: list[Interval] | None) -> list[Segment]:
    """Segments split and trimmed to the speech (see above), without their words. Without
    ``speech`` (no voice activity detection), only the word pauses split them."""
    speech = merge_intervals(speech or [])
    result: list[Segment] = []
    for segment in segments:
        words = [w for w in segment.words if w.word.strip()]
        pieces: list[tuple[float, float, str]]
        groups = _split_words(words, speech) if words else []
        strays = [g for g in groups if len(groups) > 1 and _text_of(g).strip(PUNCTUATION) in LONE_PARTICLES]
        groups = [g for g in groups if not any(g is stray for stray in strays)]
        if len(groups) > 1 or strays:
            pieces = [(g[0].start, g[-1].end, _text_of(g)) for g in groups]
        elif groups:  # one piece: Whisper's own text, which keeps its punctuation
            pieces = [(groups[0][0].start, groups[0][-1].end, segment.text.strip())]
        else:
            pieces = [(segment.start, segment.end, segment.text.strip())]
        for start, end, text in pieces:
            if speech:
                start, end = _trim(start, end, speech)
            if text:
                result.append(
                    replace(segment, start=round(start, 3), end=round(max(end, start), 3), text=text, words=())
                )
    return result


def speech_gaps_inside(start: float, end: float, speech: list[Interval]) -> float:
    """Seconds of [start, end] not covered by speech (for checks and bench/quality.py)."""
    covered = sum(b - a for a, b in overlapping(start, end, merge_intervals(speech)))
    return max(0.0, (end - start) - covered)
