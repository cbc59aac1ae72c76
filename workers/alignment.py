"""Word timestamps from audio features the worker already has.

openai-whisper's ``add_word_timestamps`` runs the encoder a second time for every window and
aligns with a numba DTW that compiles for about 2.5 s in every new process (on a 2-core CPU).
The batched path has each chunk's encoder output in hand, so this module aligns from it: the
same cross-attention weights, median filter and dynamic time warping as
``whisper.timing.find_alignment`` (MIT licence, OpenAI), with the DTW in vectorised numpy
(one step per anti-diagonal; the same path as ``whisper.timing.dtw_cpu``, a test checks it).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import torch
from whisper.audio import TOKENS_PER_SECOND
from whisper.model import Whisper
from whisper.timing import WordTiming, median_filter, merge_punctuations
from whisper.tokenizer import Tokenizer

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


class TimedWord(TypedDict):
    """A word with its start and end (seconds) and the decoder's mean probability for it."""

    word: str
    start: float
    end: float
    probability: float


class Timing(TimedWord):
    """A word as the alignment finds it, with its tokens."""

    tokens: list[int]


class DecodedSegment(TypedDict, total=False):
    """A segment as openai-whisper's ``transcribe`` returns it (library data, a plain dict), and
    as the batched path builds it from one chunk's tokens: what word alignment works on."""

    start: float
    end: float
    text: str
    tokens: list[int]
    seek: int
    words: list[TimedWord]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


def dtw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, column indices) of the cheapest monotonic path through ``x`` (N × M).

    Cell (i, j) depends on (i-1, j-1), (i-1, j) and (i, j-1): all on earlier anti-diagonals,
    so each anti-diagonal is one vector step. Ties break as in whisper's ``dtw_cpu``.
    """
    rows, columns = x.shape
    cost = np.full((rows + 1, columns + 1), np.inf, dtype=np.float32)
    trace = np.full((rows + 1, columns + 1), -1, dtype=np.int8)
    cost[0, 0] = 0
    for diagonal in range(2, rows + columns + 1):
        i = np.arange(max(1, diagonal - columns), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        step = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        best = np.where(step == 0, c0, np.where(step == 1, c1, c2))
        cost[i, j] = x[i - 1, j - 1] + best
        trace[i, j] = step
    trace[0, :], trace[:, 0] = 2, 1
    path = []
    i, j = rows, columns
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        move = trace[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    result = np.array(path[::-1]).T
    return result[0], result[1]


def align_words(
    model: Whisper, tokenizer: Tokenizer, text_tokens: list[int], audio_features: torch.Tensor, num_frames: int
) -> list[Timing]:
    """Words of ``text_tokens`` with start/end seconds (from the chunk's start) and probability."""
    if not text_tokens:
        return []
    from whisper.model import disable_sdpa

    tokens = torch.tensor(
        [*tokenizer.sot_sequence, tokenizer.no_timestamps, *text_tokens, tokenizer.eot], device=audio_features.device
    )
    attention: dict[int, torch.Tensor] = {}  # layer → its cross-attention weights
    hooks = [
        block.cross_attn.register_forward_hook(
            lambda _, __, outputs, index=n: attention.__setitem__(index, outputs[-1][0])
        )
        for n, block in enumerate(model.decoder.blocks)
    ]
    try:
        with torch.inference_mode(), disable_sdpa():
            logits = model.decoder(tokens[None], audio_features[None])[0]
            probabilities = logits[len(tokenizer.sot_sequence) :, : tokenizer.eot].float().softmax(dim=-1)
            token_probabilities = probabilities[np.arange(len(text_tokens)), text_tokens].tolist()
    finally:
        for hook in hooks:
            hook.remove()
    weights = torch.stack([attention[int(layer)][head] for layer, head in model.alignment_heads.indices().T])
    weights = weights[:, :, : num_frames // 2].float().softmax(dim=-1)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = median_filter((weights - mean) / std, 7)
    matrix = weights.mean(dim=0)[len(tokenizer.sot_sequence) : -1]
    text_indices, time_indices = dtw(-matrix.double().cpu().numpy())

    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    starts, ends = jump_times[boundaries[:-1]], jump_times[boundaries[1:]]
    return [
        {
            "word": word,
            "tokens": tokens_of_word,
            "start": float(start),
            "end": float(end),
            "probability": float(np.mean(token_probabilities[a:b])),
        }
        for word, tokens_of_word, start, end, a, b in zip(
            words, word_tokens, starts, ends, boundaries[:-1], boundaries[1:], strict=False
        )
    ]


def add_words(
    segments: list[DecodedSegment],
    model: Whisper,
    tokenizer: Tokenizer,
    audio_features: torch.Tensor,
    num_frames: int,
    offset: float,
) -> None:
    """Gives each segment of one chunk its ``words`` (absolute seconds), as whisper's
    ``add_word_timestamps`` does: overlong words at sentence ends are cut to twice the median
    word, punctuation joins its word, and each segment's start and end follow its words."""
    per_segment = [[t for t in segment["tokens"] if t < tokenizer.eot] for segment in segments]
    timings = align_words(model, tokenizer, [t for tokens in per_segment for t in tokens], audio_features, num_frames)
    durations = np.array([t["end"] - t["start"] for t in timings])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = 2 * median
    if len(durations):
        for before, timing in zip(timings, timings[1:], strict=False):
            if timing["end"] - timing["start"] > longest:
                if timing["word"] in ".。!！?？":
                    timing["end"] = timing["start"] + longest
                elif before["word"] in ".。!！?？":
                    timing["start"] = timing["end"] - longest
    alignment = _as_word_timings(timings)
    merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
    index, last_speech = 0, offset
    for segment, tokens in zip(segments, per_segment, strict=True):
        taken, words = 0, list[TimedWord]()
        while index < len(alignment) and taken < len(tokens):
            timing = alignment[index]
            if timing.word:
                words.append(
                    {
                        "word": timing.word,
                        "start": round(offset + timing.start, 3),
                        "end": round(offset + timing.end, 3),
                        "probability": timing.probability,
                    }
                )
            taken += len(timing.tokens)
            index += 1
        if words:
            _fit_segment_ends(segment, words, median, longest, last_speech)
            last_speech = segment["end"]
        segment["words"] = words


def _fit_segment_ends(
    segment: DecodedSegment, words: list[TimedWord], median: float, longest: float, last_speech: float
) -> None:
    """whisper's own fix for the first word after a pause, which the alignment stretches back
    over the silence, and for overlong first and last words: the decoder's segment timestamps
    win over them."""
    first = words[0]
    if first["end"] - last_speech > median * 4 and (
        first["end"] - first["start"] > longest or (len(words) > 1 and words[1]["end"] - first["start"] > longest * 2)
    ):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - longest)
            first["end"] = words[1]["start"] = boundary
        first["start"] = max(0.0, first["end"] - longest)
    if segment["start"] < first["end"] and segment["start"] - 0.5 > first["start"]:
        first["start"] = max(0.0, min(first["end"] - median, segment["start"]))
    else:
        segment["start"] = first["start"]
    last = words[-1]
    if segment["end"] > last["start"] and segment["end"] + 0.5 < last["end"]:
        last["end"] = max(last["start"] + median, segment["end"])
    else:
        segment["end"] = last["end"]


def _as_word_timings(timings: list[Timing]) -> list[WordTiming]:
    return [WordTiming(t["word"], t["tokens"], t["start"], t["end"], t["probability"]) for t in timings]


def add_words_by_window(
    model: Whisper, audio: np.ndarray, segments: list[DecodedSegment], options: dict[str, object]
) -> None:
    """Word timestamps for ``model.transcribe(word_timestamps=False)`` output: each 30 s window
    (the segments' ``seek``) is encoded once more, as openai-whisper does, but aligned with the
    numpy DTW above instead of the numba one that compiles in every new process."""
    from whisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
    from whisper.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(
        model.is_multilingual, num_languages=model.num_languages, language=options["language"], task=options["task"]
    )
    windows: dict[int, list[DecodedSegment]] = {}
    for segment in segments:
        windows.setdefault(int(segment["seek"]), []).append(segment)
    for seek, group in windows.items():
        piece = audio[seek * HOP_LENGTH : seek * HOP_LENGTH + N_SAMPLES]
        mel = log_mel_spectrogram(pad_or_trim(piece), model.dims.n_mels).to(model.device)
        with torch.inference_mode():
            features = model.embed_audio((mel.half() if options.get("fp16") else mel)[None])[0]
        add_words(group, model, tokenizer, features, min(N_FRAMES, len(piece) // HOP_LENGTH), seek * HOP_LENGTH / 16000)
