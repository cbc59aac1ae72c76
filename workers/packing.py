"""Speech packed for Whisper: the speech of one video, or of a cohort's videos, laid end to end
with a short fixed gap between pieces and the silence and music between them left out, with a
map that brings every segment and word back to its own video's timeline (pure functions, numpy
only).

Why: Whisper's encoder costs the same for every 30 s window, full or not. An episode's lines come
with pauses, silent scenes and music between them; cut at those pauses (``workers.chunks``
alone), every line after a long pause becomes its own window, mostly padding. Packed, the
windows are full of speech: faster-whisper's batched pipeline does the same within one video
(its ``collect_chunks``); here it also crosses videos, so 8 clips of 6 s cost 2 windows, not 8.

How:
- A *piece* is a stretch of one video's audio: its speech regions (voice activity), each with
  ``MARGIN_SECONDS`` on either side, joined where the pause between them is at most
  ``KEEP_PAUSE_SECONDS`` (a pause within a scene stays, as spoken).
- Pieces are laid one after another in one *packed* audio, ``SEAM_SECONDS`` of silence
  between them: long enough for Whisper to end a segment there. The engines then cut the packed
  speech into windows (``workers.chunks.plan_chunks``) and decode it as they would a video.
- ``Packed.unpack`` maps the decoded segments back: each word goes to the piece it lies in
  (a word in a seam to the nearer piece), and a segment whose words lie in two pieces is cut at
  the seam into one segment for each; times are clamped to their piece, so nothing lands in
  the silence or music that was left out.
- With ``join_long_pauses`` off, a pause longer than ``MAX_GAP_SECONDS`` still ends a window
  (the packed audio keeps a gap that long there, silent); docs/performance.md has the figures
  both ways.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workers.chunks import MAX_GAP_SECONDS, SAMPLE_RATE, Interval
from workers.segments import Segment, Word

MARGIN_SECONDS = 0.2
KEEP_PAUSE_SECONDS = 1.0
SEAM_SECONDS = 0.6
BREAK_SECONDS = MAX_GAP_SECONDS + 0.5
"""The gap left where a window must not continue (longer than ``MAX_GAP_SECONDS``)."""


@dataclass(frozen=True)
class Piece:
    """A stretch ``start``-``end`` (seconds) of source ``source``'s audio, laid at ``at`` in the
    packed audio."""

    source: int
    start: float
    end: float
    at: float

    @property
    def until(self) -> float:
        """Where the piece ends in the packed audio."""
        return self.at + (self.end - self.start)

    def to_source(self, packed: float) -> float:
        """A packed time inside (or near) this piece, on its source's timeline, clamped to it."""
        return round(min(self.end, max(self.start, self.start + packed - self.at)), 3)


def pieces_of(speech: Sequence[Interval], duration: float) -> list[Interval]:
    """One video's pieces (see the module's docstring): its speech with margins, short pauses kept."""
    pieces: list[Interval] = []
    for start, end in sorted(speech):
        start, end = max(0.0, start - MARGIN_SECONDS), min(duration, end + MARGIN_SECONDS)
        if pieces and start - pieces[-1][1] <= KEEP_PAUSE_SECONDS:
            pieces[-1] = (pieces[-1][0], max(pieces[-1][1], end))
        elif end > start:
            pieces.append((start, end))
    return pieces


@dataclass(frozen=True)
class Packed:
    """The packed audio, its speech (the sources' speech regions, on the packed timeline), and
    its pieces in order."""

    audio: np.ndarray
    speech: list[Interval]
    pieces: tuple[Piece, ...]

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def piece_at(self, packed: float) -> Piece:
        """The piece a packed time lies in; in a seam, the nearer of the two around it."""
        starts = [piece.at for piece in self.pieces]
        index = max(0, bisect_right(starts, packed) - 1)
        piece = self.pieces[index]
        if packed > piece.until and index + 1 < len(self.pieces):
            following = self.pieces[index + 1]
            if following.at - packed < packed - piece.until:
                return following
        return piece

    def unpack(self, segments: Sequence[Segment], sources: int = 1) -> list[list[Segment]]:
        """Each source's segments on its own timeline, in order (see the module's docstring)."""
        found: list[list[Segment]] = [[] for _ in range(sources)]
        for segment in segments:
            for piece, part in self._split(segment):
                found[piece.source].append(part)
        return [sorted(each, key=lambda segment: (segment.start, segment.end)) for each in found]

    def _split(self, segment: Segment) -> list[tuple[Piece, Segment]]:
        if not self.pieces:
            return []
        if not segment.words:
            piece = self._most_of(segment.start, segment.end)
            start, end = piece.to_source(segment.start), piece.to_source(segment.end)
            return [(piece, Segment(start, end, segment.text, *_scores(segment)))] if end > start else []
        groups: list[tuple[Piece, list[Word]]] = []
        for word in segment.words:
            piece = self.piece_at((word.start + word.end) / 2)
            mapped = Word(word.word, piece.to_source(word.start), piece.to_source(word.end))
            if groups and groups[-1][0] == piece:
                groups[-1][1].append(mapped)
            else:
                groups.append((piece, [mapped]))
        if len(groups) == 1:  # the usual case: the segment lies in one piece, its text as decoded
            piece, words = groups[0]
            start = min(piece.to_source(segment.start), words[0].start)
            end = max(piece.to_source(segment.end), words[-1].end)
            return [(piece, Segment(start, end, segment.text, *_scores(segment), tuple(words)))]
        parts = []
        for piece, words in groups:  # cut at the seams: each piece's words make their own segment
            text = "".join(word.word for word in words).strip()
            if text and words[-1].end > words[0].start:
                parts.append((piece, Segment(words[0].start, words[-1].end, text, *_scores(segment), tuple(words))))
        return parts

    def _most_of(self, start: float, end: float) -> Piece:
        """The piece that holds most of ``start``-``end`` (packed times)."""
        overlaps = [(min(end, piece.until) - max(start, piece.at), piece) for piece in self.pieces]
        best, piece = max(overlaps, key=lambda pair: pair[0])
        return piece if best > 0 else self.piece_at((start + end) / 2)


def _scores(segment: Segment) -> tuple[float, float, float]:
    return segment.avg_logprob, segment.no_speech_prob, segment.compression_ratio


def pack(sources: Sequence[tuple[np.ndarray, Sequence[Interval]]], join_long_pauses: bool = True) -> Packed:
    """The speech of ``sources`` (each its 16 kHz audio and speech intervals) packed in order."""
    parts: list[np.ndarray] = []
    speech: list[Interval] = []
    pieces: list[Piece] = []
    cursor = 0
    seam = int(SEAM_SECONDS * SAMPLE_RATE)
    for index, (audio, regions) in enumerate(sources):
        duration = len(audio) / SAMPLE_RATE
        previous_end: float | None = None
        for start, end in pieces_of(regions, duration):
            if pieces:
                apart = previous_end is not None and start - previous_end > MAX_GAP_SECONDS
                gap = int(BREAK_SECONDS * SAMPLE_RATE) if apart and not join_long_pauses else seam
                parts.append(np.zeros(gap, dtype=np.float32))
                cursor += gap
            at = cursor / SAMPLE_RATE
            first, last = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
            parts.append(np.asarray(audio[first:last], dtype=np.float32))
            piece = Piece(index, first / SAMPLE_RATE, last / SAMPLE_RATE, at)
            pieces.append(piece)
            speech += [
                (round(at + max(a, piece.start) - piece.start, 3), round(at + min(b, piece.end) - piece.start, 3))
                for a, b in regions
                if b > piece.start and a < piece.end
            ]
            cursor += last - first
            previous_end = end
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return Packed(audio, speech, tuple(pieces))
