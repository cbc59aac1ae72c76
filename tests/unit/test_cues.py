"""The line breaker and cue splitter, with Korean and Japanese text (no model needed)."""

from workers.cues import (
    JAPANESE,
    KOREAN,
    Cue,
    Timed,
    break_lines,
    layout_cues,
    reading_speed,
    split_text,
    style_violations,
    width,
)


def timed(segments: list[dict]) -> list[Timed]:
    return [Timed(segment["start"], segment["end"], segment["text"]) for segment in segments]


def words_intact(lines: list[str], text: str) -> bool:
    return " ".join(" ".join(lines).split()) == " ".join(text.split())


def test_width_counts_latin_digits_spaces_and_punctuation_as_half():
    assert width("고양이") == 3
    assert width("NHK 2024!") == 4.5
    assert width("吾輩は猫である。") == 8
    assert width("ｱｲｳ") == 1.5  # half-width katakana


def test_korean_breaks_at_spaces_into_two_balanced_lines():
    text = "나는 고양이로소이다 이름은 아직 없다"
    lines = break_lines(text, KOREAN)
    assert lines is not None and len(lines) == 2
    assert all(width(line) <= 16 for line in lines)
    assert words_intact(lines, text)
    assert break_lines("짧은 문장", KOREAN) == ["짧은 문장"]


def test_korean_with_latin_and_numbers_counts_half_widths_and_never_cuts_a_word():
    text = "오늘 NHK 뉴스에서 2024년 Tokyo Olympic 결과를 봤어요"
    lines = break_lines(text, KOREAN)
    assert lines is not None and words_intact(lines, text)
    assert all(width(line) <= 16 for line in lines)
    # One word longer than a line cannot be broken inside: it does not fit.
    assert break_lines("가나다라마바사아자차카타파하가나다라", KOREAN) is None


def test_japanese_breaks_after_punctuation_or_at_a_phrase_boundary():
    text = "吾輩は猫である。名前はまだ無い。"
    assert break_lines(text, JAPANESE) == ["吾輩は猫である。", "名前はまだ無い。"]
    lines = break_lines("どこで生れたかとんと見当がつかぬ", JAPANESE)
    assert lines is not None and all(width(line) <= 13 for line in lines)
    assert "".join(lines) == "どこで生れたかとんと見当がつかぬ"
    # the break falls where hiragana gives way to kanji, not inside 見当:
    assert not lines[0].endswith("見") and lines[1][0] != "当"


def test_long_text_splits_at_sentence_ends_first_then_clauses():
    text = (
        "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"
        "何でも薄暗いじめじめした所で泣いていた事だけは記憶している。"
    )
    pieces = split_text(text, JAPANESE)
    assert "".join(pieces) == text
    assert all(break_lines(piece, JAPANESE) for piece in pieces)
    assert pieces[0].endswith("。")
    korean = (
        "나는 고양이다. 이름은 아직 없다. "
        "어디서 태어났는지 전혀 짐작이 가지 않는다, 어두운 곳에서 울고 있었던 것만은 기억한다."
    )
    pieces = split_text(korean, KOREAN)
    assert " ".join(pieces) == korean
    assert pieces[0].endswith("없다.")  # a Latin full stop ends a sentence too...
    assert split_text("가격은 3.5배 올랐다", KOREAN) == ["가격은 3.5배 올랐다"]  # ...but not inside 3.5
    assert all(break_lines(piece, KOREAN) for piece in pieces)


def test_cues_respect_duration_gap_and_overlap_rules():
    segments = [
        {
            "start": 0.0,
            "end": 12.0,
            "text": "나는 고양이다. 이름은 아직 없다. 어디서 태어났는지 전혀 짐작이 가지 않는다.",
        },
        {"start": 12.02, "end": 12.3, "text": "응"},  # a tiny fragment right after: kept, spaced
        {"start": 20.0, "end": 20.2, "text": "네"},  # a tiny fragment with silence around: extended
        {"start": 19.5, "end": 21.0, "text": "겹치는 자막"},  # overlaps the one before
    ]
    cues = layout_cues(timed(segments), KOREAN)
    assert [cue for cue in cues if "응" in cue.text]
    violations = style_violations(cues, KOREAN)
    assert violations["line_width"] == violations["line_count"] == violations["overlap"] == 0
    assert violations["gap"] == 0 and violations["too_long"] == 0
    fragment = next(cue for cue in cues if cue.text == "네")
    assert fragment.end - fragment.start >= 5 / 6 - 1e-6  # lengthened into the silence after it
    assert 20.0 <= fragment.start < 20.1
    assert cues[0].start == 0.0 and cues[-1].end <= 21.0 + 5 / 6


def test_a_short_fragment_between_two_lines_borrows_time_from_its_neighbour():
    # Recorded shape (real Whisper base, batched): "ところで、" got 0.64 s between two lines.
    segments = [
        {"start": 13.4, "end": 15.156, "text": "何でもうすぐらいじめじめした"},
        {"start": 15.24, "end": 15.877, "text": "ところで、"},
        {"start": 15.96, "end": 18.36, "text": "何々は泣いていたことだけは記憶している。"},
    ]
    cues = layout_cues(timed(segments), JAPANESE)
    assert [cue.text.replace("\n", "") for cue in cues] == [s["text"] for s in segments]
    assert set(style_violations(cues, JAPANESE).values()) == {0}
    assert cues[0].start == 13.4 and cues[-1].end == 18.36  # the speech's outer bounds are kept
    assert cues[1].end - cues[1].start >= 5 / 6 - 1e-6


def test_a_short_first_fragment_takes_time_from_the_line_it_runs_into_not_from_the_silence_before():
    # Recorded shape (real Whisper base on CTranslate2): "なんでも" alone, 0.47 s, 2 s after a pause,
    # right before the rest of its sentence. Lengthened backwards it would show 0.4 s early.
    segments = [
        {"start": 6.46, "end": 9.05, "text": "どこで生まれたかとんと検討がつかぬ"},
        {"start": 11.486, "end": 11.961, "text": "なんでも"},
        {"start": 12.044, "end": 13.768, "text": "薄ぐらいじめじめしたところで"},
    ]
    cues = layout_cues(timed(segments), JAPANESE)
    assert cues[1].start == 11.486  # starts with its speech
    assert cues[1].end - cues[1].start >= 5 / 6 - 1e-6
    assert cues[2].end == 13.768 and set(style_violations(cues, JAPANESE).values()) == {0}


def test_a_long_slow_sentence_is_cut_to_at_most_seven_seconds_a_cue():
    cues = layout_cues(timed([{"start": 0, "end": 20, "text": "천천히 아주 천천히 말하는 긴 문장"}]), KOREAN)
    assert len(cues) == 3  # 20 s: three cues, not one per word
    assert style_violations(cues, KOREAN)["too_long"] == 0
    assert " ".join(" ".join(cue.lines) for cue in cues) == "천천히 아주 천천히 말하는 긴 문장"


def test_reading_speed_counts_characters_per_second():
    assert reading_speed([Cue(0, 2, ["고양이다"]), Cue(3, 5, ["이름은", "없다"])]) == 9 / 4


def test_the_share_of_cues_over_the_reading_speed_counts_characters_a_second():
    from workers.cues import over_reading_speed

    cues = [
        Cue(0.0, 1.0, ["가나다라마바사아자차"]),
        Cue(2.0, 3.0, ["가나다라마바사아자차카타파하"]),
    ]  # 10 and 14 a second
    assert over_reading_speed(cues) == 0.5 and over_reading_speed(cues, limit=15) == 0.0 and over_reading_speed([]) == 0
