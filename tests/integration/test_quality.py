"""Subtitle quality with the real Whisper base: cue timing against known speech intervals,
no cues over music or silence, and the Korean/Japanese style rules (the measures are
testkit/quality.py, which bench/quality.py prints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit import quality
from testkit.require import skip_or_fail

pytestmark = [pytest.mark.slow, pytest.mark.real_whisper]


@pytest.fixture(scope="module", params=[0.0, 2.0], ids=["audio at 0 s", "audio muxed 2 s late"])
def quality_clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    try:
        import pyopenjtalk  # noqa: F401
    except ImportError:
        skip_or_fail("pyopenjtalk-plus is not installed (./setup.sh --dev installs it)")
    import json

    from testkit.speech import make_quality_clip

    folder = tmp_path_factory.mktemp("quality")
    video, reference = make_quality_clip(folder / "clip.mkv", folder / "clip.json", audio_offset=request.param)
    return video, json.loads(reference.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("engine", "decoding"), [("ctranslate2", "batched"), ("torch", "batched"), ("torch", "sequential")]
)
def test_cues_follow_the_speech_and_read_well(quality_clip, request, tiny_nllb, tmp_path, engine, decoding):
    video, reference = quality_clip
    whisper = request.getfixturevalue("whisper_base_ct2" if engine == "ctranslate2" else "whisper_base")
    written = quality.run_pipeline(video, str(whisper), str(tiny_nllb), "cpu", tmp_path, decoding, engine)
    assert set(written) == {"ko", "ja"}
    for language, path in written.items():
        report = quality.analyse(quality.load_cues(path), reference, language)
        print(report)
        assert report["utterances missed"] == 0, report
        assert report["mean boundary error s"] <= 0.15, report  # bench/quality.py measured 0.07 for each
        assert report["most non-speech in one cue s"] <= 1.0, report
        assert report["cues over music/silence"] == 0, report
        assert set(report["style violations"].values()) == {0}, report
