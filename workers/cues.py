"""Readable subtitle cues, after the Netflix Korean (and Japanese) Timed Text Style Guides.

- At most 2 lines a cue and ``max_line_width`` a line (16 for Korean, 13 for Japanese), where
  Latin letters, digits, spaces and punctuation count as half a character.
- Lines break at spaces or after punctuation (Japanese, which has no spaces, also between
  phrases found by BudouX), never inside a word.
- A segment too long for one cue is split at sentence ends (。！？), then at clause marks (、),
  then at the break points above; each piece gets a share of the segment's time in proportion
  to its width.
- Cues last between 5/6 s and 7 s, with at least 2 frames (~83 ms) between them and no overlap.
  A short fragment (うん、はい) is kept and extended into the silence after it (or before it)
  when there is room.

Pure functions on plain data: torch-free and tested without a model (tests/unit/test_cues.py).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import budoux

SENTENCE_END = "。！？!?…"
CLAUSE_END = "、，,；;：:"
CLOSING = "」』）)】〉》〕］]\"'”’"
PUNCTUATION_AFTER = SENTENCE_END + CLAUSE_END + CLOSING + ".・ー〜~"


@dataclass(frozen=True)
class CueLimits:
    max_line_width: float
    max_lines: int = 2
    min_duration: float = 5 / 6
    max_duration: float = 7.0
    min_gap: float = 2 / 24  # two frames at 24 fps
    japanese: bool = False


KOREAN = CueLimits(max_line_width=16)
JAPANESE = CueLimits(max_line_width=13, japanese=True)


def limits_for(language: str) -> CueLimits:
    return JAPANESE if language == "ja" else KOREAN


@dataclass(frozen=True)
class Timed:
    """A line of text and when it is spoken: what cues are laid out from."""

    start: float
    end: float
    text: str


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def char_width(char: str) -> float:
    """Half for Latin letters, digits, spaces and ASCII punctuation (and half-width forms)."""
    if char.isascii() or unicodedata.east_asian_width(char) in ("Na", "H"):
        return 0.5
    return 1.0


def width(text: str) -> float:
    return sum(char_width(char) for char in text)


def _japanese_phrase_starts(text: str) -> set[int]:
    """Where a new phrase (bunsetsu) begins: Japanese has no spaces, so BudouX (Google's small
    phrase segmenter, no dependencies, the model ships in the wheel) finds them."""
    starts, position = set(), 0
    for phrase in _budoux().parse(text):
        position += len(phrase)
        starts.add(position)
    return starts


@functools.cache
def _budoux() -> budoux.Parser:
    import budoux

    return budoux.load_default_japanese_parser()


def break_points(text: str, japanese: bool) -> list[int]:
    """Positions ``i`` where a line may end before ``text[i]`` without cutting a word."""
    points = []
    phrases = _japanese_phrase_starts(text) if japanese else set()
    for i in range(1, len(text)):
        before, after = text[i - 1], text[i]
        if after == " " or before == " ":
            if before != " ":
                points.append(i)
            continue
        if before in PUNCTUATION_AFTER and after not in PUNCTUATION_AFTER:
            if japanese or not before.isascii():
                points.append(i)
            continue
        if i in phrases:
            points.append(i)
    return points


def break_lines(text: str, limits: CueLimits) -> list[str] | None:
    """``text`` as 1 or 2 lines within the width limit (balanced, the top line not longer
    than needed), or None when it does not fit in a cue."""
    text = text.strip()
    if width(text) <= limits.max_line_width:
        return [text]
    if limits.max_lines < 2:
        return None
    best: tuple[float, list[str]] | None = None
    for point in break_points(text, limits.japanese):
        top, bottom = text[:point].rstrip(), text[point:].lstrip()
        if not top or not bottom:
            continue
        top_width, bottom_width = width(top), width(bottom)
        if top_width <= limits.max_line_width and bottom_width <= limits.max_line_width:
            # Balanced lines read best; on a tie, a shorter top line (a bottom-heavy pyramid).
            score = abs(top_width - bottom_width) + (0.25 if top_width > bottom_width else 0.0)
            if best is None or score < best[0]:
                best = (score, [top, bottom])
    return best[1] if best else None


def _split_after(text: str, marks: str) -> list[str]:
    pattern = f"(?<=[{re.escape(marks)}])(?![{re.escape(marks + CLOSING)}])"
    if marks == SENTENCE_END:  # a Latin full stop ends a sentence before a space, not in 3.5
        pattern += r"|(?<=[^\d\s]\.)(?=\s)"
    pieces = re.split(pattern, text)
    return [piece for piece in (p.strip() for p in pieces) if piece]


def _join(pieces: Iterable[str], japanese: bool) -> str:
    return ("" if japanese else " ").join(pieces)


def _pack(pieces: list[str], limits: CueLimits) -> list[str]:
    """Greedily joins neighbouring pieces while the result still fits in one cue."""
    packed: list[str] = []
    for piece in pieces:
        if packed and break_lines(_join([packed[-1], piece], limits.japanese), limits):
            packed[-1] = _join([packed[-1], piece], limits.japanese)
        else:
            packed.append(piece)
    return packed


def _divide(text: str, count: int, limits: CueLimits) -> list[str]:
    """``count`` pieces of about equal width, cut at break points (a hard cut only for text
    that has none, such as one very long word)."""
    points = break_points(text, limits.japanese) or list(range(1, len(text)))
    total, cuts = width(text), list[int]()
    for k in range(1, count):
        candidates = [p for p in points if not cuts or p > cuts[-1]]
        if not candidates:
            break
        cuts.append(min(candidates, key=lambda p: abs(width(text[:p]) - total * k / count)))
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b].strip() for a, b in zip(bounds, bounds[1:], strict=False)]
    return [piece for piece in pieces if piece]


def _halve(text: str, limits: CueLimits) -> list[str]:
    return _divide(text, 2, limits)


def split_text(text: str, limits: CueLimits) -> list[str]:
    """``text`` in pieces that each fit in one cue: sentence ends first, then clause marks,
    then word boundaries."""
    text = text.strip()
    if not text:
        return []
    if break_lines(text, limits):
        return [text]
    for marks in (SENTENCE_END, CLAUSE_END):
        pieces = _split_after(text, marks)
        if len(pieces) > 1:
            return [part for piece in _pack(pieces, limits) for part in split_text(piece, limits)]
    halves = [half for half in _halve(text, limits) if half]
    if len(halves) < 2:
        return [text]
    return [part for half in halves for part in split_text(half, limits)]


def _share_time(start: float, end: float, pieces: list[str]) -> list[tuple[float, float]]:
    weights = [max(width(piece), 0.5) for piece in pieces]
    total, spans, cursor = sum(weights), [], start
    for weight in weights:
        length = (end - start) * weight / total
        spans.append((cursor, cursor + length))
        cursor += length
    return spans


def layout_cues(lines: Iterable[Timed], limits: CueLimits) -> list[Cue]:
    """Cues from timed lines of text, following the rules above."""
    cues: list[Cue] = []
    for line in sorted(lines, key=lambda line: line.start):
        text = " ".join(line.text.split())
        if not text:
            continue
        start, end = line.start, max(line.end, line.start)
        pieces = split_text(text, limits)
        for piece, (piece_start, piece_end) in zip(pieces, _share_time(start, end, pieces), strict=True):
            # A piece spoken for longer than max_duration is divided into that many cues.
            count = math.ceil((piece_end - piece_start) / limits.max_duration - 1e-9)
            parts = _divide(piece, count, limits) if count > 1 else [piece]
            for part, (part_start, part_end) in zip(parts, _share_time(piece_start, piece_end, parts), strict=True):
                part_end = min(part_end, part_start + limits.max_duration)
                cues.append(Cue(part_start, part_end, break_lines(part, limits) or [part]))
    _space_and_extend(cues, limits)
    return cues


def _space_and_extend(cues: list[Cue], limits: CueLimits) -> None:
    """No overlaps, at least ``min_gap`` between cues, and short cues lengthened into the
    silence around them where there is room (never beyond ``max_duration``)."""
    for current, following in zip(cues, cues[1:], strict=False):
        if following.start < current.end + limits.min_gap:
            middle = max(current.start, min(current.end, following.start))
            current.end = max(current.start + 0.001, middle - limits.min_gap / 2)
            following.start = max(following.start, current.end + limits.min_gap)
            following.end = max(following.end, following.start + 0.001)
    for index, cue in enumerate(cues):
        if cue.end - cue.start >= limits.min_duration:
            continue
        next_start = cues[index + 1].start if index + 1 < len(cues) else float("inf")
        cue.end = max(cue.end, min(cue.start + limits.min_duration, next_start - limits.min_gap))
        # Speech that runs on into the next cue (the first words of a sentence Whisper cut
        # off): that cue gives time first, so this one does not start before its speech.
        if next_start - cue.end <= limits.min_gap + 1e-6:
            _borrow_time(cues, index, limits, (index + 1,))
        if cue.end - cue.start < limits.min_duration:
            previous_end = cues[index - 1].end if index > 0 else 0.0
            cue.start = max(min(cue.start, cue.end - limits.min_duration), previous_end + limits.min_gap)
        cue.end = max(cue.end, cue.start + 0.001)
        _borrow_time(cues, index, limits, (index - 1, index + 1))


def _borrow_time(cues: list[Cue], index: int, limits: CueLimits, neighbours: tuple[int, ...]) -> None:
    """A short cue with no silence left around it (a fragment between two lines of the same
    speech) takes time from a neighbour that has more than the minimum: the boundary between
    them moves, the gap stays."""
    cue = cues[index]
    for neighbour in neighbours:
        need = limits.min_duration - (cue.end - cue.start)
        if need <= 0 or not 0 <= neighbour < len(cues):
            return
        other = cues[neighbour]
        take = min(need, max(0.0, other.end - other.start - limits.min_duration))
        if neighbour < index:
            other.end, cue.start = other.end - take, cue.start - take
        else:
            other.start, cue.end = other.start + take, cue.end + take


def style_violations(cues: list[Cue], limits: CueLimits) -> dict[str, int]:
    """Counts of cues that break each rule (for bench/quality.py and the tests)."""
    counts = {"line_width": 0, "line_count": 0, "too_short": 0, "too_long": 0, "gap": 0, "overlap": 0}
    slack = 0.0015  # SRT keeps milliseconds: 5/6 s is written as 0.833 s
    for index, cue in enumerate(cues):
        counts["line_width"] += any(width(line) > limits.max_line_width for line in cue.lines)
        counts["line_count"] += len(cue.lines) > limits.max_lines
        counts["too_short"] += cue.end - cue.start < limits.min_duration - slack
        counts["too_long"] += cue.end - cue.start > limits.max_duration + slack
        if index + 1 < len(cues):
            gap = cues[index + 1].start - cue.end
            counts["overlap"] += gap < 0
            counts["gap"] += 0 <= gap < limits.min_gap - slack
    return counts


READING_SPEED = 12.0
"""Characters a second a viewer reads: the Netflix Korean Timed Text Style Guide's adult limit."""


def over_reading_speed(cues: list[Cue], limit: float = READING_SPEED) -> float:
    """The share of cues a viewer cannot finish: more characters a second than ``limit``."""
    if not cues:
        return 0.0
    over = sum(1 for cue in cues if reading_speed([cue]) > limit + 1e-9)
    return over / len(cues)


def reading_speed(cues: list[Cue]) -> float:
    """Characters per second over all cues (spaces and line breaks not counted)."""
    characters = sum(len(cue.text.replace("\n", "").replace(" ", "")) for cue in cues)
    seconds = sum(cue.end - cue.start for cue in cues)
    return characters / seconds if seconds else 0.0
