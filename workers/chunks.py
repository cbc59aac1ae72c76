"""Speech cut into Whisper chunks, and the limits that say a chunk's decoding went wrong: the
one rule both engines decode by (pure functions, numpy only)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
# A pause longer than this (music, a scene without dialogue) ends a chunk: decoded across it,
# Whisper misplaces timestamps over the music and may stop before the speech after it.
MAX_GAP_SECONDS = 3.0
# whisper.transcribe's defaults for "this window went wrong" and "this window is silence".
COMPRESSION_RATIO_LIMIT = 2.4
NO_SPEECH_THRESHOLD, LOGPROB_THRESHOLD = 0.6, -1.0

Interval = tuple[float, float]


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
