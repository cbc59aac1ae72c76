"""Batched Whisper decoding: speech cut into chunks of at most 26 s, decoded many
at a time with ``model.decode`` (as WhisperX does with faster-whisper), instead of
``model.transcribe``'s one window after another.

Why it is faster: each decoding step reads every decoder weight and the 51,865-token output
matrix once, whether for one chunk or for sixteen. On a GPU, with compute to spare at one
chunk, a step for a batch should cost about what a step for one does (not yet measured:
``bench/gpu.sh``). On the 2-core CPU measured here it does less: the logits
product took ~11 ms for one chunk, ~23 ms for two and ~25-29 ms for 8 or 16, while every chunk
costs a full 30 s encoder pass; so speech is not cut finer than 30 s to fill a batch. On any
device, word timestamps reuse each chunk's encoder output (``workers.alignment``) instead of
encoding the audio again, and no numba DTW is compiled.

What it gives up, and what guards it: a chunk is decoded with no text before it (AutoKR's
sequential path runs with ``condition_on_previous_text`` off as well); a chunk whose
decoding ran to the token limit or into a repetition loop is transcribed again on its own
by the sequential path, so a long monologue is never cut short; and a chunk whose text ended
with speech still to come is decoded again from there (``workers.chunks.unheard``), as on
the CTranslate2 engine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from workers.chunks import (  # noqa: F401 - plan_chunks re-exported for the torch engine's callers
    CHUNK_SECONDS,
    COMPRESSION_RATIO_LIMIT,
    CONTINUATIONS,
    LOGPROB_THRESHOLD,
    NO_SPEECH_THRESHOLD,
    SAMPLE_RATE,
    WINDOW_SECONDS,
    Interval,
    plan_chunks,
    ratios_by_piece,
    unheard,
)
from workers.segments import Segment, Word, scored

if TYPE_CHECKING:
    from whisper.model import Whisper
    from whisper.tokenizer import Tokenizer

    from workers.alignment import DecodedSegment


def split_at_timestamps(tokens: list[int], tokenizer: Tokenizer, offset: float, length: float) -> list[DecodedSegment]:
    """Segments of one decoded chunk: text between timestamp tokens, in seconds from ``offset``.
    Text after the last timestamp runs to the end of the chunk."""
    precision = 0.02
    segments: list[DecodedSegment] = []
    start = 0.0
    text: list[int] = []

    def close(end: float) -> None:
        if text:
            segments.append({"start": offset + start, "end": offset + max(end, start), "tokens": list(text)})
            text.clear()

    for token in tokens:
        if token >= tokenizer.timestamp_begin:
            time = (token - tokenizer.timestamp_begin) * precision
            close(time)
            start = time
        elif token < tokenizer.eot:
            text.append(token)
    close(length)
    for segment in segments:
        segment["text"] = tokenizer.decode(segment["tokens"])
    return segments


def chunk_mels(model: Whisper, audio: np.ndarray, chunks: list[Interval]) -> tuple[torch.Tensor, list[int]]:
    """Log-mel spectrograms of the chunks, each padded to 30 s, and each chunk's frame count."""
    from whisper.audio import HOP_LENGTH, log_mel_spectrogram, pad_or_trim

    mels, frames = [], []
    for start, end in chunks:
        piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        mels.append(log_mel_spectrogram(pad_or_trim(piece), model.dims.n_mels))
        frames.append(min(len(piece), int(WINDOW_SECONDS * SAMPLE_RATE)) // HOP_LENGTH)
    return torch.stack(mels).to(model.device), frames


def transcribe_batched(
    model: Whisper,
    audio: np.ndarray,
    speech: list[Interval],
    options: dict[str, object],
    batch_size: int,
    progress: Callable[[int], None],
    sequential: Callable[[np.ndarray], list[Segment]],
    pieces: Sequence[Interval] = (),
) -> list[Segment]:
    """Segments with their scores and words, as the sequential path gives them.
    ``sequential(audio)`` transcribes one chunk's audio the sequential way, for chunks whose
    batched decoding went wrong. ``pieces``: packed speech (``workers.packing``), whose
    repetition is measured piece by piece."""
    import whisper
    from whisper.tokenizer import get_tokenizer

    from workers.alignment import add_words

    tokenizer = get_tokenizer(
        model.is_multilingual, num_languages=model.num_languages, language=options["language"], task=options["task"]
    )
    decoding = whisper.DecodingOptions(
        task=options["task"], language=options["language"], temperature=0.0, fp16=options["fp16"]
    )
    token_limit = model.dims.n_text_ctx // 2
    duration = len(audio) / SAMPLE_RATE
    queue = [(start, min(end, duration), 0) for start, end in plan_chunks(speech, CHUNK_SECONDS)]
    found: list[Segment] = []
    done = 0
    while queue:
        batch, queue = queue[:batch_size], queue[batch_size:]
        mels, frames = chunk_mels(model, audio, [(start, end) for start, end, _ in batch])
        with torch.inference_mode():
            results = model.decode(mels, decoding)
        for (start, end, continued), result, num_frames in zip(batch, results, frames, strict=True):
            if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD:
                continue
            segments = split_at_timestamps(result.tokens, tokenizer, start, end - start)
            # Packed speech: repetition is measured piece by piece (``ratios_by_piece``).
            spans = [(segment["start"], segment["end"], segment["text"]) for segment in segments]
            ratios = ratios_by_piece(spans, pieces) if pieces else [result.compression_ratio] * len(segments)
            if len(result.tokens) >= token_limit or max(ratios, default=0.0) > COMPRESSION_RATIO_LIMIT:
                why = "the token limit" if len(result.tokens) >= token_limit else "a repetition loop"
                print(f"chunk {start:.1f}-{end:.1f} s ran into {why}: transcribing it sequentially", file=sys.stderr)
                piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
                found += [segment.shifted(start) for segment in sequential(piece)]
                continue
            if options.get("word_timestamps"):
                add_words(segments, model, tokenizer, result.audio_features, num_frames, start)
            kept = []
            for segment, ratio in zip(segments, ratios, strict=True):
                if segment["text"].strip() and segment["start"] < end:  # none over the padding
                    words = [Word(w["word"], w["start"], min(w["end"], end)) for w in segment.get("words", [])]
                    kept.append(
                        scored(segment["start"], min(segment["end"], end), segment["text"], result.avg_logprob,
                               result.no_speech_prob, ratio, words)
                    )  # fmt: skip
            found += kept
            rest = unheard(kept, start, end, speech)
            if rest is not None and continued < CONTINUATIONS:
                print(f"chunk {start:.1f}-{end:.1f} s: its text ended early, decoding {rest:.1f}-{end:.1f} s",
                      file=sys.stderr)  # fmt: skip
                queue.append((rest, end, continued + 1))
        done += len(batch)
        progress(min(100, round(100 * done / (done + len(queue)))))
    return sorted(found, key=lambda segment: segment.start)
