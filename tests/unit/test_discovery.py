import os

from daemon.discovery import StabilityTracker, accept, is_video_name, scan

EXTENSIONS = (".mkv", ".mp4")


def test_copy_tool_temporary_names_are_ignored_until_renamed():
    assert is_video_name("Show - 01.mkv", EXTENSIONS)
    assert is_video_name("SHOW.MP4", EXTENSIONS)
    for name in (
        "Show.mkv.part",
        "Show.mkv.partial",
        "Show.mkv.tmp",
        "Show.mkv.!qB",
        ".~Show.mkv",
        ".Show.mkv",
        "Show.srt",
        "Show.mkv.crdownload",
    ):
        assert not is_video_name(name, EXTENSIONS), name


def test_scan_is_recursive_skips_hidden_folders_and_outside_symlinks(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "Season 1").mkdir(parents=True)
    (inbox / ".Trash").mkdir()
    outside.mkdir()
    (inbox / "Season 1" / "a.mkv").write_bytes(b"x")
    (inbox / ".Trash" / "b.mkv").write_bytes(b"x")
    (outside / "c.mkv").write_bytes(b"x")
    os.symlink(outside / "c.mkv", inbox / "c.mkv")
    found = sorted(p.name for p in scan((inbox,), EXTENSIONS, follow_symlinks=False))
    assert found == ["a.mkv"]
    assert accept(inbox / "c.mkv", (inbox,), EXTENSIONS, follow_symlinks=True)


def test_an_inbox_inside_a_hidden_folder_still_works(tmp_path):
    inbox = tmp_path / ".local" / "share" / "anime"
    (inbox / ".grab").mkdir(parents=True)
    (inbox / "a.mkv").write_bytes(b"x")
    (inbox / ".grab" / "b.mkv").write_bytes(b"x")
    assert [p.name for p in scan((inbox,), EXTENSIONS, follow_symlinks=False)] == ["a.mkv"]
    assert accept(inbox / "a.mkv", (inbox,), EXTENSIONS, follow_symlinks=False)
    assert not accept(inbox / ".grab" / "b.mkv", (inbox,), EXTENSIONS, follow_symlinks=False)


def test_a_file_is_ready_only_after_holding_still(tmp_path):
    now = [0.0]
    tracker = StabilityTracker(10, clock=lambda: now[0])
    video = tmp_path / "a.mkv"
    video.write_bytes(b"x")
    tracker.observe(video)
    now[0] = 5
    with open(video, "ab") as handle:  # still being copied
        handle.write(b"more")
    assert tracker.ready() == []
    now[0] = 14
    assert tracker.ready() == []  # 9 s since the last change
    now[0] = 15.5
    (ready,) = tracker.ready()
    assert ready.path == video and ready.size == 5
    assert tracker.ready() == []


def test_a_vanished_candidate_is_forgotten(tmp_path):
    tracker = StabilityTracker(0, clock=lambda: 0.0)
    video = tmp_path / "a.mkv"
    video.write_bytes(b"x")
    tracker.observe(video)
    video.unlink()
    assert tracker.ready() == [] and tracker.pending == {}
