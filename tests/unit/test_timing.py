"""Cue boundaries that follow the speech (voice activity + word timestamps), no model needed."""

from workers.segments import Segment, Word
from workers.timing import follow_speech, speech_gaps_inside


def words(*spans):
    return tuple(Word(text, start, end) for text, start, end in spans)


def test_a_segment_that_starts_in_silence_is_trimmed_to_the_speech():
    # Recorded shape: Whisper put this segment at 0.0 s; the speech began at 12.3 s.
    segment = Segment(
        0.0,
        23.4,
        "吾輩は猫である。",
        words=words(("吾輩は", 0.0, 13.0), ("猫である。", 13.0, 23.4)),
    )
    [result] = follow_speech([segment], [(12.3, 13.6), (13.9, 23.3)])
    assert (result.start, result.end) == (12.2, 23.4)
    assert result.text == "吾輩は猫である。"  # Whisper's own text, punctuation kept
    assert result.words == ()


def test_a_long_pause_between_words_splits_the_segment():
    segment = Segment(
        1.0,
        9.0,
        "はい。そうです。",
        words=words(("はい。", 1.0, 1.5), ("そうです。", 6.0, 7.0)),
    )
    first, second = follow_speech([segment], [(1.0, 1.5), (6.0, 7.0)])
    assert (first.start, first.end, first.text) == (1.0, 1.5, "はい。")
    assert (second.start, second.end, second.text) == (6.0, 7.0, "そうです。")


def test_words_on_both_sides_of_a_silence_longer_than_a_second_are_split_even_when_whisper_joins_them():
    # Word timestamps that run on through a 3 s gap that voice activity detection saw.
    segment = Segment(0.0, 6.0, "ねえ聞いて", words=words(("ねえ", 0.0, 2.9), ("聞いて", 2.9, 6.0)))
    pieces = follow_speech([segment], [(0.5, 1.2), (4.2, 5.8)])
    assert [(p.start, p.end) for p in pieces] == [(0.4, 1.3), (4.1, 5.9)]
    assert all(speech_gaps_inside(p.start, p.end, [(0.5, 1.2), (4.2, 5.8)]) <= 1.0 for p in pieces)


def test_without_voice_activity_or_words_segments_pass_through():
    segment = Segment(3.0, 4.0, "うん")
    assert follow_speech([segment], None) == [segment]
    assert follow_speech([segment], [(10.0, 12.0)]) == [segment]  # no speech there: the filter decides
