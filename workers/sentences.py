"""Translate whole sentences, not fragments (pure functions, no model).

Whisper cuts segments where the audio pauses, often in the middle of a sentence; translated
one by one, each fragment loses the sentence (Japanese puts the verb last). So consecutive
segments are grouped into sentences before translation (up to a sentence-final mark, a pause
longer than ``MAX_GAP`` or ``MAX_CHARACTERS``), each group is translated as one text, and the
translation is spread back over the group's segments in proportion to their duration, at word
boundaries, so no line is cut mid-word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from workers.segments import Segment, TranslatedSegment

SENTENCE_FINAL = "。！？!?…."
MAX_GAP = 1.5
MAX_CHARACTERS = 160


def sentence_groups(segments: Sequence[Segment]) -> list[list[int]]:
    """Indices of ``segments``, consecutive ones grouped into sentences."""
    groups: list[list[int]] = []
    current: list[int] = []
    for index, segment in enumerate(segments):
        if current:
            gap = segment.start - segments[current[-1]].end
            length = sum(len(segments[i].text) for i in current) + len(segment.text)
            if gap > MAX_GAP or length > MAX_CHARACTERS:
                groups.append(current)
                current = []
        current.append(index)
        if segment.text.rstrip("」』）) ").endswith(tuple(SENTENCE_FINAL)):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def join_source(texts: list[str], language: str) -> str:
    return ("" if language in ("ja", "zh") else " ").join(text.strip() for text in texts)


def spread(translation: str, durations: list[float]) -> list[str]:
    """``translation`` cut at spaces into ``len(durations)`` parts sized like the durations
    (a part may be empty when there are fewer words than segments)."""
    words = translation.split()
    if len(durations) == 1 or not words:
        return [" ".join(words)] + [""] * (len(durations) - 1)
    total_time = sum(max(d, 0.0) for d in durations) or float(len(durations))
    total_chars = sum(len(word) for word in words)
    parts: list[list[str]] = [[] for _ in durations]
    boundary, part, used = max(durations[0], 0.0) / total_time, 0, 0
    for word in words:
        middle = (used + len(word) / 2) / total_chars
        while middle > boundary and part < len(durations) - 1:
            part += 1
            boundary += max(durations[part], 0.0) / total_time
        parts[part].append(word)
        used += len(word)
    return [" ".join(p) for p in parts]


def regroup(segments: Sequence[Segment], groups: list[list[int]], translations: list[str]) -> list[TranslatedSegment]:
    """Translated segments: each group's translation spread over its segments; a segment left
    without words is merged into the one before it (its time and source text too)."""
    result: list[TranslatedSegment] = []
    for group, translation in zip(groups, translations, strict=True):
        members = [segments[i] for i in group]
        pieces = spread(translation, [s.end - s.start for s in members])
        merged: list[TranslatedSegment] = []
        for segment, text in zip(members, pieces, strict=True):
            entry = TranslatedSegment(segment.start, segment.end, text, segment.text)
            if not text and merged:
                last = merged[-1]
                merged[-1] = replace(last, end=segment.end, source_text=last.source_text + segment.text)
            elif merged and not merged[-1].text:
                last = merged[-1]
                merged[-1] = replace(entry, start=last.start, source_text=last.source_text + segment.text)
            else:
                merged.append(entry)
        result.extend(merged)
    return result
