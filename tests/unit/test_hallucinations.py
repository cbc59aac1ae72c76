"""The hallucination filter on segments recorded from the real Whisper base (no model needed)."""

import json
from pathlib import Path

from workers.hallucinations import filter_segments, known_phrases, normalize
from workers.segments import Segment

RECORDED = json.loads((Path(__file__).parents[1] / "data" / "recorded_segments.json").read_text(encoding="utf-8"))


def test_the_loop_over_a_tone_is_dropped_and_the_speech_kept():
    for key in ("condition_on_previous_text_false", "condition_on_previous_text_true"):
        segments = [Segment.from_json(s) for s in RECORDED[key]]
        kept, dropped = filter_segments(segments, "ja", speech=[tuple(s) for s in RECORDED["speech"]])
        assert [s.start for s in kept] == [s.start for s in segments if s.start < 50], key
        assert len(dropped) == 1 and dropped[0][0].start == 53.4
        assert "repetition loop" in dropped[0][1]


def segment(text, start=40.0, end=42.0, no_speech=0.05, logprob=-0.3, ratio=1.2):
    return Segment(start, end, text, avg_logprob=logprob, no_speech_prob=no_speech, compression_ratio=ratio)


def test_a_known_phrase_is_dropped_outside_speech_and_kept_inside_it():
    outro = segment("ご視聴ありがとうございました。", start=50, end=53)
    assert filter_segments([outro], "ja", speech=[(12.0, 37.7)])[0] == []
    assert filter_segments([outro], "ja", speech=[(49.0, 54.0)])[0] == [outro]  # a character says it
    # Without voice activity, Whisper's own confidence decides.
    assert filter_segments([segment("ありがとうございました", no_speech=0.5)], "ja")[0] == []
    assert len(filter_segments([segment("ありがとうございました")], "ja")[0]) == 1


def test_silence_by_whisper_s_own_measure_and_repeats_are_dropped():
    silent = segment("うーん", no_speech=0.8, logprob=-1.3)
    line = segment("名前はまだ無い。", start=1, end=2)
    again = segment("名前はまだ無い", start=2, end=3)
    kept, dropped = filter_segments([line, again, silent], "ja")
    assert kept == [line]
    assert [reason for _, reason in dropped] == ["repeats the segment before it", dropped[1][1]]
    assert dropped[1][1].startswith("no speech")


def test_phrases_are_data_and_normalised():
    assert "ご視聴ありがとうございました" in known_phrases("ja")
    assert known_phrases("xx") == frozenset()
    assert normalize("「ご視聴、ありがとう ございました！」") == "ご視聴ありがとうございました"
