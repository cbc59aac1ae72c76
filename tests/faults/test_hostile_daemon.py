"""Reliability round 3 (issue 20), the items that need the daemon: no name, lock, server or
planted link can stop it, leak a key or write outside the library. The real daemon (or the
real ``autokr`` command) runs as a subprocess with real SQLite, ffmpeg, worker processes and
the tiny models; servers are loopback ones. Numbered as in the issue; the items that need no
daemon are in ``tests/unit/test_hostile.py``."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit.daemon import (
    Daemon,
    autokr,
    drop,
    job_for,
    start_daemon,
    status,
    stopping,
    wait_finished,
    wait_for,
    write_config,
)
from testkit.disks import read_only
from testkit.servers import FakeServer

pytestmark = pytest.mark.slow
NUMERIC_KEY = 987654321987654  # a key written without quotes: a TOML number
LOCK_SECONDS = 21  # twice AutoKR's busy timeout (10 s) and more: the daemon pauses, then carries on
SHORT_LOCK_SECONDS = 13  # longer than AutoKR's busy timeout now (10 s): it must pause, not wait


def hold_lock(database: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process (a sqlite3 shell left in a transaction, a backup) holds the write lock."""
    script = (
        "import sqlite3, sys, time\n"
        "connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "connection.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "connection.execute('ROLLBACK')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(database), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


@contextmanager
def inotify_used_up() -> Iterator[int]:
    """Takes every inotify instance this user may have (what IDEs and Syncthing do)."""
    libc = ctypes.CDLL(None, use_errno=True)
    taken: list[int] = []
    try:
        while len(taken) < 100_000:
            descriptor = libc.inotify_init1(os.O_CLOEXEC)
            if descriptor < 0:
                break
            taken.append(descriptor)
        yield len(taken)
    finally:
        for descriptor in taken:
            os.close(descriptor)


# --- 2. A locked database is waited for, never called damaged ---------------------------------


def test_2_a_database_locked_by_another_process_is_waited_for_never_called_damaged(
    place, clip, tiny_whisper, tiny_nllb, notify, ledger
):
    inbox, root = place["inbox"], place["root"]
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, env={"NOTIFY_SOCKET": str(notify.path)})
    database = root / "state" / "autokr.sqlite3"
    with stopping(daemon):
        first = wait_finished(daemon, drop(clip, inbox, "A.mkv").name)
        holder = hold_lock(database, LOCK_SECONDS)
        first_holder = holder.pid
        drop(clip, inbox, "B.mkv")
        retry = autokr(daemon.config, "retry", "1", check=False)
        wait_for(lambda: any("locked by another process" in s for s in notify.statuses()), 60, "STATUS= to say so")
        assert holder.wait(LOCK_SECONDS + 10) == 0
        assert daemon.running()
        second = wait_finished(daemon, "B.mkv", 120)
    # Started while another process holds the lock: it waits, then starts.
    holder = hold_lock(database, SHORT_LOCK_SECONDS)
    marker = len(daemon.log())
    daemon.start(ready_seconds=SHORT_LOCK_SECONDS + 30)
    with stopping(daemon):
        started_log = daemon.log()[marker:]
        assert holder.wait(10) == 0
        third = wait_finished(daemon, drop(clip, inbox, "C.mkv").name)
    ledger.fault(2)
    for job in (first, second, third):
        ledger.finished(job, Path(job["path"]).name + " (database locked)")
    for text, pid in ((retry.stderr, first_holder), (started_log, holder.pid)):
        assert "damaged" not in text and "move" not in text
        assert f"is locked by another process (pid {pid})" in text, text
    assert retry.returncode == 1 and "Traceback" not in retry.stderr
    assert "Traceback" not in daemon.log()


# --- 3. inotify used up: the daemon starts on scans alone, and says so ------------------------


def test_3_with_every_inotify_instance_taken_the_daemon_runs_on_scans_and_says_so(
    place, clip, tiny_whisper, tiny_nllb, notify, ledger
):
    inbox, root = place["inbox"], place["root"]
    with inotify_used_up() as taken:
        assert taken > 0
        env = {"NOTIFY_SOCKET": str(notify.path)}
        daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, env=env, scan_interval_seconds=1)
        with stopping(daemon):
            job = wait_finished(daemon, drop(clip, inbox, "A.mkv").name)
            shown = autokr(daemon.config, "status")
            doctor = json.loads(autokr(daemon.config, "doctor", "--json", check=False).stdout)
    ledger.fault()
    ledger.finished(job, "A.mkv (inotify used up)")
    assert any("inotify" in line and "scan" in line for line in notify.statuses())
    assert "inotify" in shown.stdout and "scan" in shown.stdout
    (inotify,) = [check for check in doctor if check["name"] == "inotify"]
    assert not inotify["ok"] and "max_user_instances" in inotify["fix"]
    assert "Traceback" not in daemon.log() and "inotify" in daemon.log()


# --- 12. autokr once keeps a person's files and checks its output first -----------------------


def test_12_once_refuses_its_own_input_a_folder_and_a_persons_subtitle_before_any_stage(
    place, clip, tiny_whisper, tiny_nllb, tmp_path
):
    root = place["root"]
    config = write_config(root / "autokr.toml", place["inbox"], root / "state", tiny_whisper, tiny_nllb)
    video = shutil.copyfile(clip, root / "Film.mkv")
    original = video.read_bytes()
    person = root / "Film.ko.srt"
    person.write_text("1\n00:00:00,000 --> 00:00:01,000\n내 자막\n", encoding="utf-8")
    cases = {
        "its own input": (["-o", str(video)], "is the video itself"),
        "a folder": (["-o", str(root)], "is a folder"),
        "a missing folder": (["-o", str(root / "nowhere" / "x.srt")], "does not exist"),
        "a person's subtitle": ([], "already exists"),
    }
    for what, (options, words) in cases.items():
        started = time.monotonic()
        answer = autokr(config, "once", str(video), *options, check=False)
        assert answer.returncode == 1, what
        assert words in answer.stderr and "Traceback" not in answer.stderr, (what, answer.stderr)
        assert "extract" not in answer.stderr and time.monotonic() - started < 20, (what, answer.stderr)
    assert video.read_bytes() == original and person.read_text(encoding="utf-8").endswith("내 자막\n")
    forced = autokr(config, "once", str(video), "--force", check=False)
    assert forced.returncode == 0, forced.stderr
    assert person.read_text(encoding="utf-8") != "1\n00:00:00,000 --> 00:00:01,000\n내 자막\n"


# --- 13. A reload changes the work of jobs that start after it, not of those under way --------


def test_13_a_reload_mid_job_keeps_its_languages_and_refuses_a_new_state_folder(
    place, clip, tiny_whisper, tiny_nllb, notify, ledger
):
    inbox, root = place["inbox"], place["root"]
    env = {"NOTIFY_SOCKET": str(notify.path), "AUTOKR_FAULT": "worker-pause:start:transcribe:6"}
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, env=env)
    with stopping(daemon):
        drop(clip, inbox, "Before.mkv")
        wait_for(lambda: "AUTOKR_FAULT: pausing start" in daemon.log(), 60, "the transcribe worker to start")
        kept = root / "kept.toml"
        shutil.copyfile(daemon.config, kept)
        text = daemon.config.read_text(encoding="utf-8").replace(str(root / "state"), str(root / "state2"))
        daemon.config.write_text(text + '[languages]\ntarget = "en"\n', encoding="utf-8")
        os.kill(daemon.pid, signal.SIGHUP)
        before = wait_for(lambda: (job := job_for(kept, "Before.mkv")) and job["state"] == "done" and job, 120, "it")
        drop(clip, inbox, "After.mkv")
        after = wait_for(lambda: (job := job_for(kept, "After.mkv")) and job["state"] == "done" and job, 120, "it")
    ledger.fault()
    ledger.finished(before, "Before.mkv (reloaded mid-job)")
    ledger.finished(after, "After.mkv (after the reload)")
    assert (inbox / "Before.ko.srt").exists() and not (inbox / "Before.en.srt").exists()
    assert (inbox / "After.en.srt").exists() and not (inbox / "After.ko.srt").exists()
    assert not (root / "state2").exists()
    assert any("state_dir" in line and "restart" in line for line in notify.statuses())
    assert "Traceback" not in daemon.log()


# --- 17. An inbox deleted and made again is watched again --------------------------------------


def test_17_an_inbox_deleted_and_made_again_is_watched_again(place, clip, tiny_whisper, tiny_nllb, ledger):
    inbox, root = place["inbox"], place["root"]
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, scan_interval_seconds=3600)
    with stopping(daemon):
        shutil.rmtree(inbox)
        time.sleep(2)
        inbox.mkdir()
        wait_for(lambda: "watching" in daemon.log().rpartition("ready:")[2], 20, "the watch to be set up again")
        job = wait_finished(daemon, drop(clip, inbox, "Later.mkv").name, 60)
    ledger.fault()
    ledger.finished(job, "Later.mkv (inbox made again)")
    assert f"{inbox} is gone" in daemon.log()


# --- 19. enqueue of a running or done video; a read-only folder ---------------------------------


def test_19_enqueue_of_a_done_video_keeps_it_and_a_read_only_folder_fails_before_any_stage(
    place, clip, tiny_whisper, tiny_nllb, ledger
):
    inbox, root = place["inbox"], place["root"]
    locked = inbox / "Read only"
    locked.mkdir()
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        done = wait_finished(daemon, drop(clip, inbox, "A.mkv").name)
        again = autokr(daemon.config, "enqueue", str(inbox / "A.mkv"), check=False)
        shutil.copyfile(clip, locked / "B.tmp")
        os.rename(locked / "B.tmp", locked / "B.mkv")
        with read_only(locked):  # a share mounted read-only: even root cannot write there
            failed = wait_finished(daemon, "B.mkv", 60, ("failed",))
        after = job_for(daemon.config, "A.mkv")
    ledger.fault(2)
    ledger.finished(done, "A.mkv (enqueued again)")
    assert again.returncode == 1 and "already done" in again.stderr and "--force" in again.stderr
    assert after is not None and after["state"] == "done" and after["runs"] == done["runs"]
    assert "not writable" in failed["error"] and ".autokr-tmp-" not in failed["error"]
    assert failed["runs"] == {}, failed["runs"]


# --- Acceptance: the daemon-down and security cases on one daemon ------------------------------


def test_the_daemon_down_and_security_cases_together_leave_it_up_the_victim_intact_and_no_key_shown(
    place, clip, tiny_whisper, tiny_nllb, notify, ledger, tmp_path
):
    inbox, root = place["inbox"], place["root"]
    jellyfin_key, plex_token, hook_token = "JELLYFINKEY0042", "PLEXTOKEN0042", "HOOKTOKEN0042"
    elsewhere = FakeServer("jellyfin", key="x").start()
    jellyfin = FakeServer("jellyfin", key=jellyfin_key, redirect_to=f"{elsewhere.url}/steal").start()
    plex = FakeServer("plex", key=plex_token, libraries=[str(inbox)]).start()
    hook = FakeServer("hook").start()
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"not for AutoKR\n")
    folder = inbox / os.fsdecode("アニメ".encode("shift_jis"))
    folder.mkdir()
    video = os.fsdecode("猫の話.mkv".encode("shift_jis"))
    for pid in range(1, 40000, 7):  # planted for "the next few thousand pids"
        os.symlink(victim, folder / f".{video[:-4]}.ko.srt.autokr-tmp-{pid}")
    sections = {
        "jellyfin": {"url": jellyfin.url, "api_key": jellyfin_key},
        "plex": {"url": plex.url, "token": plex_token},
        "notify": {"urls": [f"json://127.0.0.1:{hook.port}/hook?:token={hook_token}"]},
    }
    config = write_config(root / "autokr.toml", inbox, root / "state", tiny_whisper, tiny_nllb, sections,
                          scan_interval_seconds=1)  # fmt: skip
    database = root / "state" / "autokr.sqlite3"
    try:
        with inotify_used_up():
            daemon = Daemon(config, root / "daemon.log", env={"NOTIFY_SOCKET": str(notify.path)}).start()
        with stopping(daemon):
            holder = hold_lock(database, SHORT_LOCK_SECONDS)
            drop(clip, folder, video)
            assert holder.wait(SHORT_LOCK_SECONDS + 10) == 0
            job = wait_finished(daemon, video, 120)
            wait_for(
                lambda: plex.calls("GET", "/library/sections/1/refresh") and hook.requests, 60, "Plex and the hook"
            )
            good = config.read_text(encoding="utf-8")
            bad_configs = [
                good.replace(
                    f'urls = ["json://127.0.0.1:{hook.port}/hook?:token={hook_token}"]',
                    f'urls = "ntfys://{hook_token}@ntfy.example/topic"',
                ),  # fmt: skip
                good.replace(f'api_key = "{jellyfin_key}"', f"api_key = {NUMERIC_KEY}"),
                good.replace(f'url = "{jellyfin.url}"', f'url = "http://admin:{jellyfin_key}@127.0.0.1:1"'),
            ]
            key_file = root / "plex.key"
            key_file.write_text(f"{plex_token}\n# a comment\n", encoding="utf-8")
            bad_configs.append(good.replace(f'token = "{plex_token}"', f'token_file = "{key_file}"'))
            shown = []
            for text in bad_configs:
                config.write_text(text, encoding="utf-8")
                os.kill(daemon.pid, signal.SIGHUP)
                time.sleep(1.5)
                shown.append(autokr(config, "status", check=False).stderr)
                shown.append(autokr(config, "doctor", check=False).stdout)
            config.write_text(good, encoding="utf-8")
            os.kill(daemon.pid, signal.SIGHUP)
            time.sleep(1)
            assert daemon.running()
            shown += [autokr(config, "status", "--json").stdout, autokr(config, "status").stdout]
            shown.append(autokr(config, "doctor", "--json", check=False).stdout)
    finally:
        for server in (elsewhere, jellyfin, plex, hook):
            server.stop()
    ledger.fault(4)
    ledger.finished(job, "猫の話.mkv (hostile neighbours)")
    assert victim.read_bytes() == b"not for AutoKR\n"
    subtitle = Path(os.fsencode(folder).decode("utf-8", "surrogateescape")) / f"{video[:-4]}.ko.srt"
    assert subtitle.is_file() and not subtitle.is_symlink()
    assert elsewhere.requests == []
    everything = "\n".join([daemon.log(), *notify.messages, *shown])
    for secret in (jellyfin_key, plex_token, hook_token, str(NUMERIC_KEY)):
        assert secret not in everything, secret
    assert "Traceback" not in everything
    assert any("redirected to" in text for text in shown) or "redirected to" in daemon.log()
    assert status(config)[0]["state"] == "done"
