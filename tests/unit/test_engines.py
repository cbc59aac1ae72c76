"""Model, compute type and batch choice for the CTranslate2 engine, and the pieces of its
transcription that need no model (pure functions)."""

from workers.catalog import (
    GB,
    SMALLER_TRANSLATOR,
    SMALLER_WHISPER,
    ct2_step_down,
    ct2_translator_choice,
    ct2_whisper_choice,
)
from workers.chunks import unheard
from workers.segments import Segment, Word


def test_auto_on_a_cpu_is_int8_and_small():
    assert ct2_whisper_choice("auto", "auto", None, 0) == ("small", "int8", 8)
    assert ct2_translator_choice("auto", "auto", None) == ("facebook/nllb-200-distilled-600M", "int8")
    assert ct2_whisper_choice("large-v3", "float32", None, 4) == ("large-v3", "float32", 4)  # as asked


def test_the_best_pair_from_a_6_gb_card_in_int8_float16_and_from_8_gb_in_float16():
    six, eight = 5.6 * GB, 7.4 * GB  # what a 6 GB and an 8 GB card have free with a desktop on them
    assert ct2_whisper_choice("auto", "auto", six, 0) == ("large-v3", "int8_float16", 8)
    assert ct2_whisper_choice("auto", "auto", eight, 0) == ("large-v3", "float16", 8)
    assert ct2_translator_choice("auto", "auto", six) == ("facebook/nllb-200-1.3B", "float16")
    assert ct2_whisper_choice("auto", "auto", 3 * GB, 0)[:2] == ("medium", "int8_float16")
    assert ct2_whisper_choice("auto", "auto", 1 * GB, 0)[:2] == ("small", "int8_float16")


def test_a_named_model_gets_int8_float16_only_when_float16_would_not_fit():
    assert ct2_whisper_choice("large-v3", "auto", 12 * GB, 0)[1] == "float16"
    assert ct2_whisper_choice("large-v3", "auto", 5 * GB, 0)[1] == "int8_float16"
    assert ct2_translator_choice("facebook/nllb-200-3.3B", "auto", 6 * GB) == ("facebook/nllb-200-3.3B", "int8_float16")
    assert ct2_whisper_choice("/models/my-whisper", "auto", 5 * GB, 0)[1] == "float16"  # unknown size: as asked


def test_out_of_memory_halves_the_batch_then_lightens_the_weights_then_takes_a_smaller_model():
    steps = [ct2_step_down("large-v3", "float16", 8, level, SMALLER_WHISPER) for level in range(6)]
    assert steps == [
        ("large-v3", "float16", 8), ("large-v3", "float16", 4), ("large-v3", "float16", 2),
        ("large-v3", "float16", 1), ("large-v3", "int8_float16", 1), ("large-v2", "int8_float16", 1),
    ]  # fmt: skip
    assert ct2_step_down("facebook/nllb-200-1.3B", "int8_float16", 1, 1, SMALLER_TRANSLATOR) == (
        "facebook/nllb-200-distilled-1.3B", "int8_float16", 1,
    )  # fmt: skip


def test_a_chunk_whose_text_ended_with_speech_to_come_is_continued_from_where_it_stopped():
    kept = [Segment(0.3, 3.4, "マガハイは猫である"), Segment(15.2, 18.4, "しかも後で聞くと")]
    speech = [(0.29, 11.3), (11.7, 25.5)]
    assert unheard(kept, 0.29, 25.47, speech) == 18.4  # 7 s of speech after the text's end
    assert unheard(kept, 0.29, 18.9, speech) is None  # half a second left: nothing to do
    assert unheard([], 0.29, 25.47, speech) is None  # no text at all: nothing to continue from
    assert unheard(kept, 0.29, 25.47, [(0.29, 18.0), (20.0, 24.0)]) == 19.9  # from the next speech


def test_a_segment_travels_through_the_transcript_file_unchanged():
    segment = Segment(1.0, 2.5, "猫", -0.2, 0.01, 1.1, (Word("猫", 1.0, 2.5),))
    assert Segment.from_json(segment.to_json()) == segment
    assert "words" not in Segment(1.0, 2.0, "猫").to_json()
    assert segment.shifted(10).words[0] == Word("猫", 11.0, 12.5)
