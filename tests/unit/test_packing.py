"""Speech packing (workers/packing.py): what is laid where, and every segment and word back on
its own video's timeline, cut at the seams, never in the silence or music left out."""

from __future__ import annotations

import numpy as np

from workers.chunks import MAX_GAP_SECONDS, SAMPLE_RATE, plan_chunks
from workers.packing import MARGIN_SECONDS, SEAM_SECONDS, pack, pieces_of
from workers.segments import Segment, Word


def audio(seconds: float, value: float = 0.0) -> np.ndarray:
    """Audio whose every sample says where it came from: value + its time in seconds."""
    return (value + np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE).astype(np.float32)


def test_a_video_s_pieces_are_its_speech_with_margins_and_its_short_pauses_kept():
    speech = [(1.0, 2.0), (2.5, 3.0), (9.0, 10.0), (29.9, 30.0)]
    assert pieces_of(speech, 30.0) == [
        (1.0 - MARGIN_SECONDS, 3.0 + MARGIN_SECONDS),  # a 0.5 s pause stays inside the piece
        (9.0 - MARGIN_SECONDS, 10.0 + MARGIN_SECONDS),
        (29.9 - MARGIN_SECONDS, 30.0),  # not past the end
    ]


def test_the_packed_audio_is_the_pieces_end_to_end_with_a_silent_seam_and_the_speech_moves_with_them():
    first, second = audio(20.0), audio(10.0, value=100.0)
    packed = pack([(first, [(2.0, 4.0), (12.0, 13.0)]), (second, [(5.0, 6.0)])])
    assert [(p.source, round(p.start, 3), round(p.end, 3)) for p in packed.pieces] == [
        (0, 1.8, 4.2), (0, 11.8, 13.2), (1, 4.8, 6.2)
    ]  # fmt: skip
    lengths = [2.4, 1.4, 1.4]
    assert abs(packed.seconds - (sum(lengths) + 2 * SEAM_SECONDS)) < 1e-3
    for piece in packed.pieces:  # each piece holds exactly its source's samples
        laid = packed.audio[int(round(piece.at * SAMPLE_RATE)) : int(round(piece.until * SAMPLE_RATE))]
        expected = (100.0 if piece.source else 0.0) + piece.start
        assert abs(float(laid[0]) - expected) < 1e-3
    seam = packed.audio[
        int(round(packed.pieces[0].until * SAMPLE_RATE)) + 10 : int(round(packed.pieces[1].at * SAMPLE_RATE)) - 10
    ]
    assert len(seam) > 0 and not seam.any()
    # The speech, on the packed timeline: where each region now is.
    assert packed.speech == [(0.2, 2.2), (3.2, 4.2), (5.2, 6.2)]


def test_a_segment_in_one_piece_comes_back_exactly_with_its_words():
    packed = pack([(audio(30.0), [(10.0, 14.0)])])
    piece = packed.pieces[0]
    words = (Word("吾輩は", piece.at + 1.0, piece.at + 1.8), Word("猫である", piece.at + 2.0, piece.at + 3.0))
    inside = Segment(piece.at + 1.0, piece.at + 3.0, "吾輩は猫である", -0.2, 0.01, 1.1, words)
    (found,) = packed.unpack([inside])
    assert found == [
        Segment(
            10.8, 12.8, "吾輩は猫である", -0.2, 0.01, 1.1, (Word("吾輩は", 10.8, 11.6), Word("猫である", 11.8, 12.8))
        )
    ]


def test_a_segment_across_a_seam_is_cut_there_one_part_for_each_video():
    packed = pack([(audio(10.0), [(2.0, 4.0)]), (audio(10.0), [(6.0, 7.0)])])
    one, two = packed.pieces
    across = Segment(
        one.at + 1.0, two.at + 1.0, "こんにちは。さようなら。", -0.3, 0.02, 1.2,
        (Word("こんにちは。", one.at + 1.0, one.until - 0.1), Word("さようなら。", two.at + 0.1, two.at + 1.0)),
    )  # fmt: skip
    first, second = packed.unpack([across], sources=2)
    assert [(s.start, s.end, s.text) for s in first] == [(2.8, 4.1, "こんにちは。")]
    assert [(s.start, s.end, s.text) for s in second] == [(5.9, 6.8, "さようなら。")]
    assert first[0].avg_logprob == second[0].avg_logprob == -0.3  # the window's scores travel with each part


def test_a_word_in_a_seam_goes_to_the_nearer_piece_and_no_time_lands_in_what_was_left_out():
    packed = pack([(audio(40.0), [(2.0, 4.0), (30.0, 31.0)])])  # 26 s of silence and music between them
    one, two = packed.pieces
    near_first = Word("ね", one.until + 0.05, one.until + 0.15)
    near_second = Word("あ", two.at - 0.15, two.at + 0.3)
    (found,) = packed.unpack([Segment(one.until - 1.0, two.at + 0.3, "そうね。あ", words=(
        Word("そう", one.until - 1.0, one.until - 0.2), near_first, near_second))])  # fmt: skip
    assert [(s.text, s.start, s.end) for s in found] == [("そうね", 3.2, 4.2), ("あ", 29.8, 30.1)]
    for segment in found:  # every time inside a piece of speech, none in the 26 s between
        assert all(1.8 <= t <= 4.2 or 29.8 <= t <= 31.2 for t in (segment.start, segment.end))


def test_a_segment_without_words_goes_to_the_piece_holding_most_of_it_clamped_to_it():
    packed = pack([(audio(40.0), [(2.0, 4.0), (30.0, 31.0)])])
    one, two = packed.pieces
    (found,) = packed.unpack([Segment(one.until - 0.2, two.at + 1.0, "あした")])
    assert [(s.start, s.end) for s in found] == [(29.8, 30.8)]


def test_long_pauses_are_packed_over_or_kept_as_window_breaks_as_asked():
    speech = [(1.0, 5.0), (20.0, 24.0), (40.0, 44.0)]  # 15 s pauses: music, a silent scene
    joined = pack([(audio(50.0), speech)])
    assert len(plan_chunks(joined.speech, 26.0)) == 1  # 12 s of speech in one window
    apart = pack([(audio(50.0), speech)], join_long_pauses=False)
    assert len(plan_chunks(apart.speech, 26.0)) == 3
    gaps = [b.at - a.until for a, b in zip(apart.pieces, apart.pieces[1:], strict=False)]
    assert all(gap > MAX_GAP_SECONDS for gap in gaps)


def test_eight_short_videos_fit_two_windows_instead_of_eight():
    clips = [(audio(6.0), [(0.5, 5.5)]) for _ in range(8)]
    packed = pack(clips)
    windows = plan_chunks(packed.speech, 26.0)
    assert len(windows) == 2
    assert {piece.source for piece in packed.pieces} == set(range(8))


def test_nothing_to_pack_is_an_empty_packing():
    packed = pack([(audio(5.0), [])])
    assert packed.seconds == 0 and packed.pieces == () and packed.unpack([]) == [[]]


def test_repetition_is_measured_piece_by_piece_so_the_same_lines_in_two_videos_are_no_loop():
    from workers.chunks import COMPRESSION_RATIO_LIMIT, compression_ratio, ratios_by_piece

    line = "わがはいは猫である。名前はまだない。どこで生まれたかとんと検討がつかぬ。"
    pieces = [(0.0, 6.0), (6.6, 12.6), (13.2, 19.2)]
    spans = [(0.5, 5.5, line), (7.0, 12.0, line), (13.5, 19.0, line)]
    assert compression_ratio(line * 3) > COMPRESSION_RATIO_LIMIT  # the window's text, taken whole
    assert ratios_by_piece(spans, pieces) == [compression_ratio(line)] * 3  # each piece's own: no loop
    loop = [(0.5, 2.0, "ありがとう" * 12), (2.0, 5.5, "ありがとう" * 12), (7.0, 12.0, line)]
    first, second, other = ratios_by_piece(loop, pieces)
    assert first == second > COMPRESSION_RATIO_LIMIT and other < COMPRESSION_RATIO_LIMIT  # a real loop stays one
    assert ratios_by_piece(spans, []) == [compression_ratio(line * 3)] * 3  # not packed: the window's text
