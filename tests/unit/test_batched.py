"""Batched decoding's pure parts: chunk planning, segments from timestamp tokens, and the
numpy DTW against openai-whisper's own (numba) one. No model weights needed."""

import numpy as np
import pytest
from whisper.tokenizer import get_tokenizer

from workers.alignment import dtw
from workers.batched import plan_chunks, split_at_timestamps


def test_speech_regions_merge_into_chunks_of_at_most_30_seconds():
    speech = [(0.5, 4.0), (4.6, 12.0), (13.0, 29.0), (31.0, 35.0), (36.0, 40.0)]
    assert plan_chunks(speech) == [(0.5, 29.0), (31.0, 40.0)]


def test_a_long_pause_such_as_music_ends_a_chunk():
    speech = [(1.8, 4.5), (6.5, 9.0), (11.5, 16.5), (20.4, 24.8), (25.0, 26.9)]
    assert plan_chunks(speech) == [(1.8, 16.5), (20.4, 26.9)]


def test_a_region_longer_than_a_window_is_split_evenly():
    chunks = plan_chunks([(10.0, 85.0)])
    assert len(chunks) == 3
    assert chunks[0][0] == 10.0 and chunks[-1][1] == 85.0
    assert all(end - start == pytest.approx(25.0) for start, end in chunks)


def test_no_speech_gives_no_chunks():
    assert plan_chunks([]) == []


def test_a_decoded_chunk_splits_into_segments_at_its_timestamps():
    tokenizer = get_tokenizer(True, num_languages=99, language="ja", task="transcribe")

    def at(seconds):
        return tokenizer.timestamp_begin + round(seconds / 0.02)

    tokens = [
        at(0.0), *tokenizer.encode("こんにちは。"), at(1.5),
        at(2.0), *tokenizer.encode("また明日。"), at(3.2),
        at(3.5), *tokenizer.encode("さようなら"),
    ]  # fmt: skip
    segments = split_at_timestamps(tokens, tokenizer, offset=10.0, length=4.4)
    assert [(s["start"], s["end"], s["text"]) for s in segments] == [
        (10.0, 11.5, "こんにちは。"),
        (12.0, pytest.approx(13.2), "また明日。"),
        (13.5, pytest.approx(14.4), "さようなら"),  # no closing timestamp: runs to the chunk's end
    ]


@pytest.mark.parametrize("shape", [(1, 1), (3, 40), (40, 3), (57, 750)])
def test_numpy_dtw_finds_the_same_path_as_whispers(shape):
    from whisper.timing import dtw_cpu

    generator = np.random.default_rng(sum(shape))
    for matrix in (generator.normal(size=shape), np.round(generator.normal(size=shape), 1)):  # the second has ties
        expected = dtw_cpu(matrix.copy())
        rows, columns = dtw(matrix)
        assert np.array_equal(rows, expected[0]) and np.array_equal(columns, expected[1])
