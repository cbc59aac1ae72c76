"""Several worker slots on one host: two CPU workers at once, each stage of each video run once,
the same subtitles as with one; each worker sees only the device its slot was given."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.daemon import Daemon, children, command_line, drop, start_daemon, status, stopping, wait_finished

pytestmark = pytest.mark.slow
CLIPS = 4


def _environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(entry.decode(errors="replace").partition("=")[::2] for entry in raw.split(b"\0") if b"=" in entry)


def _run(root: Path, clip: Path, whisper: Path, nllb: Path, devices: list[str]) -> tuple[dict[str, bytes], dict]:
    inbox = root / "inbox"
    for number in range(CLIPS):  # there at start: the scheduler sees them all at once
        drop(clip, inbox, f"Clip {number}.mkv")
    daemon: Daemon = start_daemon(
        root, inbox, whisper, nllb, videos_per_worker=2, sections={"cluster": {"devices": devices}}
    )
    workers: dict[int, dict] = {}  # pid → what was seen of it
    most = 0
    with stopping(daemon):
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            alive = [pid for pid in children(daemon.pid) if "-m workers." in command_line(pid)]
            most = max(most, len(alive))
            for pid in alive:
                seen = workers.setdefault(pid, {"command": command_line(pid), "environment": _environment(pid)})
                seen.setdefault("first", time.monotonic())
                seen["last"] = time.monotonic()
            jobs = status(daemon.config)
            if len(jobs) == CLIPS and all(job["state"] in ("done", "failed") for job in jobs):
                break
            time.sleep(0.02)
        for number in range(CLIPS):
            wait_finished(daemon, f"Clip {number}.mkv", 5)
        jobs = status(daemon.config)
    subtitles = {path.name: path.read_bytes() for path in inbox.glob("*.ko.srt")}
    return subtitles, {"jobs": jobs, "workers": workers, "most": most, "log": daemon.log()}


def test_two_cpu_slots_run_two_workers_at_once_and_write_the_same_subtitles(clip, tiny_whisper, tiny_nllb, tmp_path):
    one, alone = _run(tmp_path / "one", clip, tiny_whisper, tiny_nllb, ["cpu"])
    two, together = _run(tmp_path / "two", clip, tiny_whisper, tiny_nllb, ["cpu", "cpu"])
    assert alone["most"] == 1  # one slot: one worker at a time, as always
    assert together["most"] == 2, together["log"][-3000:]
    assert len(two) == CLIPS and two == one  # byte for byte
    for job in together["jobs"]:
        assert job["runs"] == {"extract": 1, "transcribe": 1, "translate": 1, "subtitle": 1}
        assert {job["models"][f"{stage}_device"] for stage in ("extract", "transcribe")} <= {"cpu", "cpu 2"}
    # Each worker saw no GPU (the CPU slots' CUDA_VISIBLE_DEVICES), and its device was the CPU.
    for seen in together["workers"].values():
        assert seen["environment"].get("CUDA_VISIBLE_DEVICES") == "", seen
        if "workers.transcribe" in seen["command"] or "workers.translate" in seen["command"]:
            assert "--device cpu" in seen["command"]
    assert "on cpu 2:" in together["log"] and "worker slots: cpu (" in together["log"]
