"""Odd names, files and neighbours (reliability round 2, issue 10): no file, name or neighbour
can stop the daemon, overwrite a person's subtitle or run a job twice. One test per item of the
issue, numbered as there; each runs the real daemon (or the real ``autokr`` command) as a
subprocess with real SQLite, ffmpeg and worker processes and the tiny models."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.daemon import (
    Daemon,
    autokr,
    drop,
    job_for,
    rss_kb,
    start_daemon,
    status,
    stopping,
    wait_finished,
    wait_for,
    write_config,
)
from testkit.database import damaged_database
from testkit.disks import fill, small_tmpfs
from testkit.media import ffmpeg, make_video
from testkit.require import REPOSITORY, skip_or_fail

pytestmark = pytest.mark.slow


def log_after(daemon: Daemon, marker: int) -> str:
    return daemon.log()[marker:]


# --- 1. One bad path never stops the daemon --------------------------------------------------


def test_1_odd_paths_are_recorded_and_a_shift_jis_name_gets_its_subtitle_across_kill_9(
    place, clip, tiny_whisper, tiny_nllb, ledger
):
    inbox, root = place["inbox"], place["root"]
    shift_jis = os.fsdecode("猫の話.mkv".encode("shift_jis"))  # not UTF-8: a name from an old Windows disk
    long_name = "a" * 251 + ".mkv"  # 255 bytes: its .ko.srt would be 258
    os.symlink("b.mkv", inbox / "a.mkv")
    os.symlink("a.mkv", inbox / "b.mkv")
    shutil.copyfile(clip, inbox / long_name)
    shutil.copyfile(clip, inbox / "Normal.mkv")
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, scan_interval_seconds=1)
    with stopping(daemon):
        normal = wait_finished(daemon, "Normal.mkv")
        failed = {
            name: wait_finished(daemon, name, 60, ("failed",)) for name in ("a.mkv", "b.mkv", long_name)
        }  # fmt: skip
        assert daemon.running()
        drop(clip, inbox, shift_jis)
        wait_for(lambda: (job := job_for(daemon.config, shift_jis)) and job["state"] in ("running", "done"), 60, "it")
        daemon.kill9()
        ledger.fault()
        daemon.start()
        job = wait_finished(daemon, shift_jis)
        time.sleep(2.5)  # two more scans see every odd path again
        assert daemon.running()
        table = autokr(daemon.config, "status", "--all").stdout
        jobs = status(daemon.config)
    ledger.finished(normal, "Normal.mkv beside odd paths")
    assert job["state"] == "done"
    assert os.fsencode(job["path"]) == os.fsencode(str(inbox)) + b"/" + "猫の話.mkv".encode("shift_jis")
    assert "猫の話.ko.srt".encode("shift_jis") in os.listdir(os.fsencode(inbox))  # the same bytes + .ko.srt
    assert failed["a.mkv"]["error"].startswith("a symbolic link loop")
    assert failed[long_name]["error"] == (
        "the subtitle's name would be too long for the file system; rename the video to a shorter name"
    )
    assert len(jobs) == 5
    assert "\\x94L\\x82" in table  # the undecodable bytes, escaped
    log = daemon.log()
    assert "Traceback" not in log
    # Logged once each, across both daemon runs (the restart did not trip over them again).
    assert log.count("a symbolic link loop") == 2 and log.count("too long for the file system") == 1


# --- 2. No control character reaches sd_notify or the journal raw ---------------------------


def test_2_a_newline_in_a_name_forges_no_sd_notify_assignment_or_journal_line(
    place, clip, tiny_whisper, tiny_nllb, notify, ledger
):
    inbox, root = place["inbox"], place["root"]
    name = "x\nWATCHDOG=trigger\nMAINPID=1\ny.mkv"
    long_clip = make_video(root / "long.mkv", seconds=8)
    drop(long_clip, inbox, name)
    env = {"NOTIFY_SOCKET": str(notify.path), "JOURNAL_STREAM": "8:1"}
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, env=env)
    with stopping(daemon):
        job = wait_finished(daemon, name)
        table = autokr(daemon.config, "status", "--all").stdout
    ledger.fault()
    ledger.finished(job, repr(name))
    lines = [line for message in notify.messages for line in message.split("\n")]
    assert lines and all(re.match(r"^[A-Z_]+=", line) for line in lines), lines
    assert not [line for line in lines if line.startswith(("WATCHDOG=trigger", "MAINPID="))]
    assert any('"x\\nWATCHDOG=trigger\\nMAINPID=1\\ny.mkv"' in status for status in notify.statuses())
    journal = daemon.log().splitlines()
    assert not [line for line in journal if line.startswith(("WATCHDOG=", "MAINPID=", "y.mkv"))]
    assert any("x\\nWATCHDOG=trigger\\nMAINPID=1\\ny.mkv" in line for line in journal)
    # The daemon line, the header and the one row: the name is on one line, escaped.
    assert len(table.splitlines()) == 3 and "x\\nWATCHDOG=trigger\\nMAINPID=1\\ny.mkv" in table


# --- 3. A subtitle AutoKR did not write is never overwritten ---------------------------------

PERSON = "1\n00:00:00,000 --> 00:00:02,000\n제가 직접 만든 자막\n"


def test_3_a_persons_subtitle_saved_during_a_rerun_or_in_the_last_instant_is_kept(
    place, clip, tiny_whisper, tiny_nllb, ledger, tmp_path
):
    inbox, root = place["inbox"], place["root"]
    env = {"AUTOKR_FAULT": "worker-pause:before-place:subtitle:3"}
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, env=env)
    with stopping(daemon):
        drop(clip, inbox, "A.mkv")
        first = wait_finished(daemon, "A.mkv")
        ours = (inbox / "A.ko.srt").read_bytes()
        # A re-run of a replaced A.mkv; the person saves their own A.ko.srt while it transcribes.
        marker = len(daemon.log())
        drop(make_video(tmp_path / "v2.mkv", seconds=2), inbox, "A.mkv")
        wait_for(lambda: "transcribing 1 video(s)" in log_after(daemon, marker), 60, "the re-run to transcribe")
        (inbox / "A.ko.srt").write_text(PERSON, encoding="utf-8")
        a = wait_finished(daemon, "A.mkv", states=("skipped",))
        # A new B.mkv; the person's B.ko.srt appears in the last instant before AutoKR's lands.
        drop(clip, inbox, "B.mkv")
        wait_for(lambda: "AUTOKR_FAULT: pausing before-place B.ko.srt" in daemon.log(), 90, "the last instant")
        (inbox / "B.ko.srt").write_text(PERSON, encoding="utf-8")
        b = wait_finished(daemon, "B.mkv", states=("skipped",))
    ledger.fault(2)
    assert first["state"] == "done" and ours != PERSON.encode()
    assert (inbox / "A.ko.srt").read_text(encoding="utf-8") == PERSON
    assert (inbox / "B.ko.srt").read_text(encoding="utf-8") == PERSON
    for job, name in ((a, "A"), (b, "B")):
        assert (
            job["note"] == f"{name}.ko.srt was not written by AutoKR (someone saved their own); AutoKR left it as it is"
        )
    assert [p.name for p in inbox.iterdir() if ".autokr-tmp-" in p.name] == []


# --- 4. A full state disk pauses, never exits ------------------------------------------------


def test_4_a_full_state_folder_pauses_the_daemon_which_carries_on_once_space_is_back(
    place, clip, tiny_whisper, tiny_nllb, notify, ledger
):
    inbox, root = place["inbox"], place["root"]
    with small_tmpfs(root / "state", "24m") as state:
        env = {"NOTIFY_SOCKET": str(notify.path)}
        daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, env=env, scan_interval_seconds=2)
        with stopping(daemon):
            drop(clip, inbox, "Before.mkv")
            before = wait_finished(daemon, "Before.mkv")
            filler = fill(state)
            for number in range(3):
                drop(clip, inbox, f"During {number}.mkv")
            wait_for(lambda: any("state folder is full" in s for s in notify.statuses()), 60, "STATUS= to say so")
            time.sleep(3)  # it stays up, paused
            assert daemon.running()
            shown = autokr(daemon.config, "status")
            filler.unlink()
            during = [wait_finished(daemon, f"During {number}.mkv", 120) for number in range(3)]
        connection = sqlite3.connect(state / "autokr.sqlite3")
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            connection.close()
    ledger.fault()
    for job in [before, *during]:
        ledger.finished(job, Path(job["path"]).name + " (state folder full)")
    assert shown.returncode == 0 and "state folder is full" in shown.stdout
    assert "carries on by itself once space is freed" in shown.stdout
    assert "Traceback" not in daemon.log()
    assert "the state folder has space again" in daemon.log()


# --- 5. Extraction cannot be turned into a disk bomb -----------------------------------------


def test_5_an_implausible_audio_start_is_refused_before_any_padding_is_written(
    place, clip, tiny_whisper, tiny_nllb, ledger
):
    inbox, root = place["inbox"], place["root"]
    bomb = root / "bomb.mp4"  # 1 s of video, audio declared to start at 1799.9 s
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=1:s=64x48:r=5", "-itsoffset", "1799.9", "-f", "lavfi", "-i", "sine=d=0.1",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "file:" + str(bomb))  # fmt: skip
    assert bomb.stat().st_size < 20_000
    drop(bomb, inbox, "bomb.mp4")
    drop(clip, inbox, "Normal.mkv")
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        refused = wait_finished(daemon, "bomb.mp4", 120, ("failed",))
        normal = wait_finished(daemon, "Normal.mkv")
    ledger.fault()
    ledger.finished(normal, "Normal.mkv beside a disk bomb")
    assert refused["stage"] == "extract" and refused["attempts"] == 1  # permanent: not retried
    assert refused["error"].startswith("implausible audio start: the audio starts 1799.9 s after the video")
    assert max((p.stat().st_size for p in (root / "state").rglob("*") if p.is_file()), default=0) < 5_000_000


# --- 6. Only real media containers are read --------------------------------------------------


def test_6_a_playlist_or_concat_list_named_mkv_is_refused_and_opens_nothing(
    place, clip, tiny_whisper, tiny_nllb, ledger
):
    inbox, root = place["inbox"], place["root"]
    outside = root / "private"
    outside.mkdir()
    secret = shutil.copyfile(clip, outside / "secret.mkv")
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:{secret}\n#EXT-X-ENDLIST\n"
    (inbox / "evil.mkv").write_text(playlist, encoding="utf-8")
    (inbox / "list.mp4").write_text(f"ffconcat version 1.0\nfile '{secret}'\n", encoding="utf-8")
    drop(clip, inbox, "Normal.mkv")
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        normal = wait_finished(daemon, "Normal.mkv")
        evil = wait_finished(daemon, "evil.mkv", 60, ("failed",))
        concat = wait_finished(daemon, "list.mp4", 60, ("failed",))
    ledger.fault(2)
    ledger.finished(normal, "Normal.mkv beside playlists")
    assert evil["error"].startswith("not a video container (it is hls;")
    assert concat["error"].startswith("not a video container (it is concat;")
    assert sorted(p.name for p in inbox.glob("*.srt")) == ["Normal.ko.srt"]
    assert list(outside.iterdir()) == [secret]


# --- 7. One daemon per state folder ----------------------------------------------------------


def test_7_a_second_daemon_on_the_same_state_folder_exits_and_touches_nothing(
    place, tiny_whisper, tiny_nllb, ledger, tmp_path
):
    inbox, root = place["inbox"], place["root"]
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        drop(make_video(tmp_path / "long.mkv", seconds=20), inbox, "Episode.mkv")
        wait_for(lambda: daemon.worker("transcribe"), 60, "the first daemon's transcribe worker")
        second = subprocess.run(
            [sys.executable, "-m", "daemon", "--config", str(daemon.config), "run"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        started = time.monotonic()
        reading = autokr(daemon.config, "status", "--json")  # readers never wait on the lock
        reading_took = time.monotonic() - started
        job = wait_finished(daemon, "Episode.mkv")
    ledger.fault()
    ledger.finished(job, "Episode.mkv beside a second daemon")
    assert second.returncode == 1
    state = root / "state"
    assert f"autokr: another AutoKR (pid {daemon.pid}) is using {state}" in second.stderr
    assert "Traceback" not in second.stderr
    assert reading.returncode == 0 and reading_took < 10
    assert job["runs"] == {"extract": 1, "transcribe": 1, "translate": 1, "subtitle": 1}


# --- 8. A replaced video's stale subtitle does not linger ------------------------------------


@pytest.fixture(scope="module")
def speech_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Japanese speech (pyopenjtalk): voice activity detection finds speech in it."""
    folder = tmp_path_factory.mktemp("speech")
    from testkit.speech import make_quality_clip

    return make_quality_clip(folder / "speech.mkv", folder / "speech.json")[0]


def test_8_autokrs_own_subtitle_of_replaced_content_goes_when_the_new_content_has_none(
    place, speech_video, tiny_whisper, tiny_nllb, ledger, tmp_path
):
    inbox, root = place["inbox"], place["root"]
    music = make_video(tmp_path / "music.mkv", seconds=4)  # a tone: no speech, to VAD
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, vad=True, videos_per_worker=2)
    with stopping(daemon):
        for name in ("A.mkv", "B.mkv"):
            drop(speech_video, inbox, name)
        first = {name: wait_finished(daemon, name) for name in ("A.mkv", "B.mkv")}
        assert (inbox / "A.ko.srt").exists() and (inbox / "B.ko.srt").exists()
        (inbox / "B.ko.srt").write_text(PERSON, encoding="utf-8")  # B's is the person's now
        for name in ("A.mkv", "B.mkv"):
            drop(music, inbox, name)
        replaced_a = wait_for(
            lambda: (job := job_for(daemon.config, "A.mkv")) and job["note"] == "no speech found" and job,
            120,
            "A's new content to be done without speech",
        )
        replaced_b = wait_finished(daemon, "B.mkv", 60, ("skipped",))
        # Speech again: nothing of AutoKR's lingers to be taken for a person's file.
        marker = replaced_a["updated_at"]
        drop(speech_video, inbox, "A.mkv")
        again = wait_for(
            lambda: (job := job_for(daemon.config, "A.mkv")) and job["updated_at"] > marker and job["state"] in (
                "done", "skipped"
            ) and job,
            120,
            "A to be done again",
        )  # fmt: skip
    ledger.fault(2)
    for name, job in first.items():
        ledger.finished(job, f"{name} before it was replaced")
    assert replaced_a["state"] == "done"
    assert replaced_b["note"] == "has a Korean subtitle: B.ko.srt"
    assert (inbox / "B.ko.srt").read_text(encoding="utf-8") == PERSON  # never anyone else's
    assert again["state"] == "done" and (inbox / "A.ko.srt").exists()
    assert "removed AutoKR's subtitle of the replaced video" in daemon.log()


# --- 9. A database with corrupt pages is refused cleanly ------------------------------------


def test_9_a_database_with_damaged_pages_is_refused_by_run_and_status_alike(place, tiny_whisper, tiny_nllb):
    state = place["root"] / "state"
    state.mkdir()
    database = state / "autokr.sqlite3"
    data = damaged_database(database, str(place["inbox"]))
    config = write_config(place["root"] / "autokr.toml", place["inbox"], state, tiny_whisper, tiny_nllb)
    for command in ("run", "status"):
        result = autokr(config, command, check=False)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and "ready:" not in result.stderr
        assert result.stderr.startswith(f"autokr: {database} is damaged or not a usable SQLite database")
        assert "move the file aside" in result.stderr and len(result.stderr.splitlines()) == 1
        assert database.read_bytes() == data, command


# --- 10. Worker output is bounded and cannot kill the reader --------------------------------


def test_10_a_worker_that_floods_its_output_cannot_grow_the_daemon_or_lose_its_result(
    place, clip, tiny_whisper, tiny_nllb, ledger
):
    inbox, root = place["inbox"], place["root"]
    drop(clip, inbox, "Flood.mkv")
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, env={"AUTOKR_FAULT": "worker-spew:extract:300"})
    with stopping(daemon):
        done = wait_finished(daemon, "Flood.mkv", 240)
        peak = rss_kb(daemon.pid, "VmHWM")
        # The same flood from a worker that then fails: what is stored of its stderr is bounded.
        daemon.stop()
        daemon.start(env={"AUTOKR_FAULT": "worker-spew:extract:50,worker-exit:extract:1"})
        drop(clip, inbox, "Flood again.mkv")
        failed = wait_finished(daemon, "Flood again.mkv", 240, ("failed",))
    ledger.fault(2)
    ledger.finished(done, "Flood.mkv (300 MB on stdout, a malformed event)")
    ledger.report(f"worker flooding 300 MB of output: daemon peak RSS {peak / 1024:.1f} MB")
    assert peak < 120 * 1024, f"daemon peak RSS {peak} kB"
    log = daemon.log()
    assert "skipped a stdout line of 314572801 bytes" in log
    assert "skipped a malformed event: not a JSON object but list" in log
    tail = failed["stderr_tail"]
    assert len(tail.splitlines()) == 25 and len(tail) < 25 * 1100
    assert failed["error"] == "worker exited with status 1"


# --- 11. Config values are finite and sane ---------------------------------------------------


def test_11_nan_inf_and_empty_config_values_are_refused_with_the_key_and_range(place, tiny_whisper, tiny_nllb):
    config = write_config(
        place["root"] / "autokr.toml", place["inbox"], place["root"] / "state", tiny_whisper, tiny_nllb,
        stable_seconds=0, stage_timeout_seconds=0, worker_stop_seconds=0, video_extensions=[],
    )  # fmt: skip
    text = config.read_text(encoding="utf-8")
    for key, value in (("stable_seconds", "nan"), ("stage_timeout_seconds", "inf"), ("worker_stop_seconds", "inf")):
        text = text.replace(f"{key} = 0", f"{key} = {value}")
    config.write_text(text, encoding="utf-8")
    for command in ("run", "systemd-unit"):
        result = autokr(config, command, check=False)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        problems = [line.strip("- ").strip() for line in result.stderr.splitlines()[1:]]
        assert "[daemon] stable_seconds must be a number from 0 to 86400, not nan" in problems
        assert "[daemon] stage_timeout_seconds must be a number from 1 to 604800, not inf" in problems
        assert "[daemon] worker_stop_seconds must be a number from 0 to 3600, not inf" in problems
        assert '[daemon] video_extensions must list at least one file name ending, such as ".mkv"' in problems


# --- 12. `autokr systemd-unit` escapes % ------------------------------------------------------


def _verify(unit_file: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze is not installed (apt-get install systemd)")
    return subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True, timeout=60)


def test_12_percent_signs_in_paths_are_escaped_for_systemd(tmp_path):
    library = tmp_path / "Anime 100%Q"
    home_like = tmp_path / "%h"
    library.mkdir()
    home_like.mkdir()
    config = tmp_path / "autokr.toml"
    inboxes = json.dumps([str(library), str(home_like)])
    config.write_text(f'[daemon]\ninbox = {inboxes}\nstate_dir = "/var/lib/autokr"\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "systemd-unit"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f'ReadWritePaths="{tmp_path}/Anime 100%%Q"' in lines
    assert f"ReadWritePaths={tmp_path}/%%h" in lines
    unit_file = tmp_path / "autokr.service"
    unit_file.write_text(result.stdout, encoding="utf-8")
    checked = _verify(unit_file)
    assert checked.returncode == 0, checked.stderr
    assert "specifier" not in checked.stderr.lower()


# --- 13. Tighter unit ------------------------------------------------------------------------


def test_13_the_shipped_unit_filters_system_calls_and_scores_at_most_2(tmp_path):
    shipped = REPOSITORY / "systemd" / "autokr.service"
    _verify(shipped)  # skips or fails early when systemd-analyze is missing
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(shipped)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for autokr\.service: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0
    lines = shipped.read_text(encoding="utf-8").splitlines()
    assert "SystemCallFilter=@system-service" in lines
    assert "SystemCallFilter=~@mount @reboot @swap @raw-io @module @debug @cpu-emulation @obsolete @clock" in lines
    assert {"PrivateMounts=yes", "TasksMax=512", "MemoryHigh=72%", "MemoryMax=80%"} <= set(lines)
