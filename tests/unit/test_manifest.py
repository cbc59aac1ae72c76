"""The daemon → worker manifest (``contract/manifest.py``): one typed item, written and read in
one place, in the JSON shape every earlier release wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from contract.manifest import ManifestError, ManifestItem, SubtitleOrder, read_manifest, worker_command, write_manifest

# A subtitle-stage manifest exactly as the release before this module wrote it (daemon/stages.py).
PREVIOUS_RELEASE = [
    {"id": "7", "input": "/state/work/7/audio.wav", "output": "/state/work/7/transcript.json"},
    {
        "id": "8", "input": "/state/work/8/translation.json", "output": "/media/Show/01.ko.srt", "overwrite": False,
        "source_output": None, "own_subtitles": {"/media/Show/01.ko.srt": [812, 1733000000000000000]},
        "video": "/media/Show/01.mkv", "video_signature": [1048576, 1732000000000000000],
    },
]  # fmt: skip


def test_a_manifest_of_the_previous_release_reads_typed_and_writes_back_the_same(tmp_path):
    path = tmp_path / "subtitle.json"
    path.write_text(json.dumps(PREVIOUS_RELEASE), encoding="utf-8")
    plain, subtitle = read_manifest(path)
    assert plain == ManifestItem("7", Path("/state/work/7/audio.wav"), Path("/state/work/7/transcript.json"))
    assert subtitle.subtitle == SubtitleOrder(
        source_output=None, overwrite=False, own_subtitles={"/media/Show/01.ko.srt": (812, 1733000000000000000)},
        video=Path("/media/Show/01.mkv"), video_signature=(1048576, 1732000000000000000),
    )  # fmt: skip
    write_manifest(tmp_path / "again.json", [plain, subtitle])
    assert json.loads((tmp_path / "again.json").read_text(encoding="utf-8")) == PREVIOUS_RELEASE


def test_a_name_that_is_not_utf8_travels_losslessly(tmp_path):
    video = Path(os.fsdecode("/media/猫の話.mkv".encode("shift_jis")))
    item = ManifestItem(
        "1", tmp_path / "t.json", video.with_suffix(".ko.srt"), SubtitleOrder(video=video, video_signature=(1, 2))
    )
    write_manifest(tmp_path / "m.json", [item])
    (back,) = read_manifest(tmp_path / "m.json")
    assert os.fsencode(back.subtitle.video) == "/media/猫の話.mkv".encode("shift_jis") and back == item


@pytest.mark.parametrize(
    "text", ["{", '{"id": "1"}', '[{"id": "1", "input": "/a"}]', '[{"id": "", "input": "/a", "output": "/b"}]']
)
def test_a_manifest_that_autokr_did_not_write_is_refused_with_its_name(tmp_path, text):
    path = tmp_path / "odd.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=f"^{path} is not a manifest AutoKR wrote"):
        read_manifest(path)


def test_every_worker_is_started_the_same_way(tmp_path):
    command = worker_command("translate", tmp_path / "m.json", ["--device", "cpu"], python="/venv/bin/python")
    assert command == [
        "/venv/bin/python",
        "-m",
        "workers.translate",
        "--jobs",
        str(tmp_path / "m.json"),
        "--device",
        "cpu",
    ]


def test_the_manifest_is_written_and_read_in_one_place_each():
    """What the issue asked grep to show: no other code writes or parses a manifest's JSON."""
    repository = Path(__file__).resolve().parents[2]
    sources = {
        path: path.read_text(encoding="utf-8")
        for folder in ("contract", "daemon", "workers")
        for path in (repository / folder).glob("*.py")
    }
    writers = [path.name for path, text in sources.items() if "def write_manifest" in text]
    readers = [path.name for path, text in sources.items() if "def read_manifest" in text]
    assert writers == readers == ["manifest.py"]
    others = {path.name: text for path, text in sources.items() if path.name != "manifest.py"}
    assert not [name for name, text in others.items() if '["input"]' in text or "manifest_path.write_text" in text]
