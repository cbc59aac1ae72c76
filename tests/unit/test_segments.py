"""The stage files between transcription, translation and the subtitles, typed: files written
by an earlier release read back to exactly what they hold, and a damaged one is refused with
its name (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.errors import PermanentError
from workers.cues import Timed
from workers.segments import (
    Segment,
    Transcript,
    TranslatedSegment,
    Translation,
    Word,
    read_transcript,
    read_translation,
    write_stage_file,
)
from workers.subtitle import render_srt

RELEASE = Path(__file__).parent.parent / "data" / "release-09e5430"


@pytest.mark.parametrize("case", ["kept", "filtered"])
def test_files_written_by_the_previous_release_read_back_to_what_they_hold(case, tmp_path):
    for name, read in (("transcript.json", read_transcript), ("translation.json", read_translation)):
        recorded = json.loads((RELEASE / case / name).read_text(encoding="utf-8"))
        typed = read(RELEASE / case / name)
        assert typed.to_json() == recorded
        write_stage_file(tmp_path / name, typed)  # and written again, the same
        assert json.loads((tmp_path / name).read_text(encoding="utf-8")) == recorded


def test_the_previous_release_s_translation_renders_the_subtitles_it_wrote_byte_for_byte():
    translation = read_translation(RELEASE / "kept" / "translation.json")
    assert len(translation.segments) == 5 and translation.model and translation.transcription_model
    korean = render_srt((Timed(s.start, s.end, s.text) for s in translation.segments), "ko")
    japanese = render_srt((Timed(s.start, s.end, s.source_text) for s in translation.segments), "ja")
    assert korean == (RELEASE / "kept" / "Video.ko.srt").read_bytes()
    assert japanese == (RELEASE / "kept" / "Video.ja.srt").read_bytes()


def test_the_filtered_transcript_keeps_what_was_dropped_and_why():
    transcript = read_transcript(RELEASE / "filtered" / "transcript.json")
    assert transcript.segments == () and transcript.language == "ja"
    assert transcript.dropped and all("repetition loop" in reason for _, reason in transcript.dropped)
    assert transcript.speech and all(start < end for start, end in transcript.speech)


def test_a_transcript_made_by_hand_with_times_and_texts_only_translates():
    path_document = {"segments": [{"start": 0, "end": 1, "text": "猫"}]}
    transcript = Transcript.from_json(path_document)
    assert transcript.segments == (Segment(0.0, 1.0, "猫"),) and transcript.speech is None
    assert Translation.from_json({"segments": [{"start": 0, "end": 1, "text": "고양이"}]}).segments == (
        TranslatedSegment(0.0, 1.0, "고양이", ""),
    )


def test_words_travel_with_their_segment_and_are_left_out_when_there_are_none():
    segment = Segment(1.0, 2.0, "猫です", -0.2, 0.01, 1.1, (Word("猫", 1.0, 1.4), Word("です", 1.4, 2.0)))
    assert Segment.from_json(segment.to_json()) == segment
    assert "words" not in Segment(1.0, 2.0, "猫").to_json()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{ not json", "Expecting property name"),
        (b"[1, 2]", "it is not a JSON object"),
        (b'{"segments": {"start": 0}}', "segments is not a list of objects"),
        (b'{"segments": [{"start": 0, "text": "x"}]}', "a segment has no 'end'"),
        (b'{"segments": [{"start": "0", "end": 1, "text": "x"}]}', "start is not a number"),
        (b'{"segments": [{"start": 0, "end": 1, "text": 5}]}', "text is not text"),
        (b'{"segments": [], "speech": [[1]]}', "not enough values"),
        (b"\xff\xfe", "codec can't decode"),
    ],
)
def test_a_damaged_transcript_is_refused_with_its_name_and_what_to_do(tmp_path, content, problem):
    path = tmp_path / "transcript.json"
    path.write_bytes(content)
    with pytest.raises(PermanentError) as raised:
        read_transcript(path)
    message = str(raised.value)
    assert message.startswith(f"cannot read the transcript {path}: ") and problem in message
    assert message.endswith("`autokr retry --force` makes it again") and "\n" not in message


def test_a_missing_translation_is_refused_with_its_name(tmp_path):
    with pytest.raises(PermanentError, match=r"cannot read the translation .*gone\.json: No such file or directory"):
        read_translation(tmp_path / "gone.json")
