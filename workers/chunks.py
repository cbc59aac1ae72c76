"""Speech cut into Whisper chunks, and the limits that say a chunk's decoding went wrong: the
one rule both engines decode by (pure functions, numpy only)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workers.segments import Segment

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
# Chunks of at most 26 s, not 30, on both engines: Whisper tends to end a window's text early
# when speech runs to the window's end. On the 103 s sample (bench/stages.py --repeat 4,
# CTranslate2), at 30 s one chunk in four stopped 3 s short and needed a second pass (1.3 s more
# on this CPU); at 26 s none did, with the same number of chunks and a lower error rate (0.257
# against 0.269). On torch, 48 s of the sample packed into two 30 s windows: both ended early
# and were decoded again from there (12.4 s); at 26 s neither did (10.5 s).
CHUNK_SECONDS = 26.0
# A pause longer than this (music, a scene without dialogue) ends a chunk: decoded across it,
# Whisper misplaces timestamps over the music and may stop before the speech after it.
MAX_GAP_SECONDS = 3.0
# whisper.transcribe's defaults for "this window went wrong" and "this window is silence".
COMPRESSION_RATIO_LIMIT = 2.4
NO_SPEECH_THRESHOLD, LOGPROB_THRESHOLD = 0.6, -1.0

Interval = tuple[float, float]
# Whisper sometimes ends a chunk's text (a timestamp, then the end token) with speech still to
# come; the rest of the chunk, from the last segment's end, is decoded again as a chunk of its
# own when at least this much speech is left in it, at most CONTINUATIONS times a chunk.
UNHEARD_SECONDS = 1.0
CONTINUATIONS = 3


def plan_chunks(speech: list[Interval], window: float = WINDOW_SECONDS) -> list[Interval]:
    """Speech regions merged, in order, into chunks of at most ``window`` seconds (Whisper's
    30 s by default), as WhisperX does, but never across a pause over ``MAX_GAP_SECONDS``. A
    region longer than ``window`` is split evenly. (Cutting a short video finer to fill the batch was measured slower
    on a CPU: every chunk costs a full 30 s encoder pass.)"""
    regions: list[Interval] = []
    for start, end in speech:
        pieces = max(1, int(np.ceil((end - start) / window)))
        step = (end - start) / pieces
        regions += [(start + k * step, start + (k + 1) * step) for k in range(pieces)]
    if not regions:
        return []
    chunks = [regions[0]]
    for start, end in regions[1:]:
        first, last = chunks[-1]
        if end - first <= window and start - last <= MAX_GAP_SECONDS:
            chunks[-1] = (first, end)
        else:
            chunks.append((start, end))
    return chunks


def unheard(kept: Sequence[Segment], start: float, end: float, speech: Sequence[Interval]) -> float | None:
    """Where the untranscribed rest of the chunk ``start``-``end`` starts, when its text
    (``kept``) ended with at least ``UNHEARD_SECONDS`` of speech still to come in it; else None."""
    if not kept:
        return None
    heard = max(segment.end for segment in kept)
    rest = [(max(a, heard), min(b, end)) for a, b in speech if b > heard and a < end]
    if sum(b - a for a, b in rest) < UNHEARD_SECONDS:
        return None
    return max(heard, rest[0][0] - 0.1)


def compression_ratio(text: str) -> float:
    """How well ``text`` compresses (zlib), as Whisper measures a window's text: a repetition
    loop compresses far better than speech does."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def ratios_by_piece(spans: Sequence[tuple[float, float, str]], pieces: Sequence[Interval]) -> list[float]:
    """For each decoded ``(start, end, text)`` of one window, the compression ratio of all the
    text the window holds for the same piece of packed speech (``workers.packing``; a segment
    goes to the piece its middle lies in, or the nearest). Packed pieces of different videos
    may say the same lines (an opening song, the same clip twice): together they compress
    like a loop, each alone does not. Without ``pieces``: the whole window's text, for each."""

    def piece_of(moment: float) -> int:
        return min(range(len(pieces)), key=lambda i: max(pieces[i][0] - moment, moment - pieces[i][1], 0.0))

    keys = [piece_of((start + end) / 2) if pieces else 0 for start, end, _ in spans]
    texts: dict[int, str] = {}
    for key, (_, _, text) in zip(keys, spans, strict=True):
        texts[key] = texts.get(key, "") + text
    ratio = {key: compression_ratio(text) for key, text in texts.items()}
    return [ratio[key] for key in keys]
