"""Guarantees 3, 4, 6, 7 and 8 (docs/guarantees.md) and hostile names: files still being
written, bursts, full disks and read-only folders, concurrent readers, long runs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
import unicodedata
from pathlib import Path

import pytest

from testkit.daemon import (
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
from testkit.disks import fill, small_tmpfs

pytestmark = pytest.mark.slow


def names_of(jobs: list[dict]) -> list[str]:
    return sorted(Path(job["path"]).name for job in jobs)


# --- 3. Only complete files -------------------------------------------------------------------


def test_only_complete_files_become_jobs(place, clip, tiny_whisper, tiny_nllb, ledger):
    inbox, root = place["inbox"], place["root"]
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, stable_seconds=1.5, scan_interval_seconds=1)
    with stopping(daemon):
        # A slow writer: chunks with pauses shorter than stable_seconds, then close.
        data = clip.read_bytes()
        chunks = [data[i : i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
        with open(inbox / "Slow.mkv", "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                handle.flush()
                time.sleep(0.7)
                assert job_for(daemon.config, "Slow.mkv") is None, "a file still being written became a job"
        ledger.fault()
        # A copy tool's temporary name is ignored, also once it holds still...
        shutil.copyfile(clip, inbox / "Copied.mkv.part")
        time.sleep(3)
        assert names_of(status(daemon.config)) in ([], ["Slow.mkv"])
        # ...until it is renamed; a rename into the inbox is exactly one job.
        os.rename(inbox / "Copied.mkv.part", inbox / "Copied.mkv")
        shutil.copyfile(clip, root / "Moved.mkv")
        os.rename(root / "Moved.mkv", inbox / "Moved.mkv")
        jobs = {name: wait_finished(daemon, name) for name in ("Slow.mkv", "Copied.mkv", "Moved.mkv")}
    for name, job in jobs.items():
        ledger.finished(job, name)
    assert names_of(status(daemon.config)) == ["Copied.mkv", "Moved.mkv", "Slow.mkv"]


# --- 4. Nothing missed --------------------------------------------------------------------------


def test_files_present_at_start_and_a_burst_of_500_each_become_one_job(place, clip, tiny_whisper, tiny_nllb, ledger):
    inbox, root = place["inbox"], place["root"]
    for number in range(3):
        shutil.copyfile(clip, inbox / f"Before {number}.mkv")
    staging = root / "staging"
    staging.mkdir()
    for number in range(500):
        shutil.copyfile(clip, staging / f"Burst {number:03}.mkv")
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, stable_seconds=0.5, scan_interval_seconds=3)
    try:
        wait_for(lambda: len(status(daemon.config)) >= 3, 60, "the files that were there before the start")
        baseline = rss_kb(daemon.pid)
        burst = inbox / "burst"
        burst.mkdir()
        for entry in sorted(staging.iterdir()):
            os.rename(entry, burst / entry.name)
        ledger.fault()
        started = time.monotonic()
        wait_for(lambda: len(status(daemon.config)) >= 503, 300, "all 503 files to be jobs", interval=1)
        took = time.monotonic() - started
        peak = rss_kb(daemon.pid, "VmHWM")
        time.sleep(2)  # a later scan must not add any of them again
        jobs = status(daemon.config)
    finally:
        daemon.stop()
    connection = sqlite3.connect(root / "state" / "autokr.sqlite3")
    try:
        count, restarted = connection.execute("SELECT COUNT(*), MAX(generation) FROM jobs").fetchone()
    finally:
        connection.close()
    assert (count, restarted) == (503, 0)  # every file exactly once, none started over
    assert len({job["path"] for job in jobs}) == 503
    assert not [job for job in jobs if job["state"] in ("failed", "dropped")]
    ledger.report(
        f"burst of 500 files: all jobs after {took:.1f} s; daemon RSS {baseline / 1024:.1f} MB before, "
        f"peak {peak / 1024:.1f} MB"
    )
    assert peak < 150 * 1024, f"daemon peak RSS {peak} kB during the burst"


# --- 6. Full disk, read-only folder -------------------------------------------------------------


def test_full_or_read_only_video_folders_fail_clearly_and_succeed_on_retry(
    place, clip, tiny_whisper, tiny_nllb, ledger
):
    inbox, root = place["inbox"], place["root"]
    settings = {"max_attempts": 2, "retry_backoff_seconds": 0.5}
    with small_tmpfs(inbox / "Full", "1m") as full, small_tmpfs(inbox / "Locked", "1m") as locked:
        drop(clip, full, "Episode.mkv")
        filler = fill(full)
        drop(clip, locked, "Episode.mkv")
        subprocess.run(["mount", "-o", "remount,ro", str(locked)], check=True)
        daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, **settings)
        with stopping(daemon):
            wait_for(
                lambda: sum(1 for job in status(daemon.config) if job["state"] == "failed") == 2,
                120,
                "both videos to fail",
            )
            jobs = {Path(j["path"]).parent.name: j for j in status(daemon.config)}
            ledger.fault(2)
            assert daemon.running()
            assert list(full.glob("*.srt")) == [] and list(locked.glob("*.srt")) == []
            assert [p for p in full.iterdir() if ".autokr-tmp-" in p.name] == []
            # Space comes back, the folder becomes writable: `autokr retry` finishes both.
            filler.unlink()
            subprocess.run(["mount", "-o", "remount,rw", str(locked)], check=True)
            for job in jobs.values():
                autokr(daemon.config, "retry", str(job["id"]))
            done = wait_for(
                lambda: (js := status(daemon.config)) and all(j["state"] == "done" for j in js) and js,
                120,
                "both retries to finish",
            )
        assert (full / "Episode.ko.srt").exists() and (locked / "Episode.ko.srt").exists()
    # The read-only folder is said before any stage runs (reliability round 3, item 19).
    assert (jobs["Full"]["stage"], jobs["Locked"]["stage"]) == ("subtitle", "extract")
    assert jobs["Full"]["error"].startswith(f"no space left on the disk holding {full}")
    assert jobs["Locked"]["error"] == (
        f"cannot write subtitles beside it: {locked} is not writable (a read-only file system); mount it writable"
    )
    assert jobs["Locked"]["runs"] == {}
    for job in done:
        name = Path(job["path"]).parent.name
        ledger.finished(job, name + " folder, retried", interrupted={"subtitle": 2} if name == "Full" else {})


def test_a_full_work_folder_fails_clearly_and_succeeds_on_retry(place, clip, tiny_whisper, tiny_nllb, ledger):
    inbox, root = place["inbox"], place["root"]
    with small_tmpfs(root / "state" / "work", "256k") as work:
        filler = fill(work, leave=16 * 1024)  # room for the manifest, not for the WAV
        daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, max_attempts=2, retry_backoff_seconds=0.5)
        with stopping(daemon):
            drop(clip, inbox, "Episode.mkv")
            failed = wait_finished(daemon, "Episode.mkv", 120, ("failed",))
            ledger.fault()
            assert daemon.running()
            filler.unlink()
            autokr(daemon.config, "retry", str(failed["id"]))
            job = wait_finished(daemon, "Episode.mkv")
    # The WAV (extract) or a worker's manifest (the daemon, before transcribe) hits the full disk.
    assert failed["stage"] in ("extract", "transcribe")
    assert failed["error"].startswith(f"no space left on the disk holding {work}")
    ledger.finished(job, "full work folder, retried", interrupted={failed["stage"]: 2})


# --- 7. Concurrent readers ----------------------------------------------------------------------


def test_200_status_calls_during_a_busy_run_never_see_a_locked_database(place, clip, tiny_whisper, tiny_nllb, ledger):
    inbox, root = place["inbox"], place["root"]
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        for number in range(8):
            drop(clip, inbox, f"Clip {number}.mkv")
        wait_for(lambda: daemon.worker(), 60, "a worker to start")

        def call(number: int) -> subprocess.CompletedProcess[str]:
            if number % 10 == 0:  # a writer too: retry of a job that is not failed says so
                return autokr(daemon.config, "retry", "1", check=False)
            return autokr(daemon.config, "status", "--json", check=False)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(call, range(220)))
        jobs = [wait_finished(daemon, f"Clip {number}.mkv") for number in range(8)]
    ledger.fault()
    status_calls = [r for i, r in enumerate(results) if i % 10]
    assert len(status_calls) == 198
    assert all(r.returncode == 0 for r in status_calls), [r.stderr for r in status_calls if r.returncode][:3]
    assert not [r for r in results if "locked" in r.stderr.lower() or "busy" in r.stderr.lower()]
    # The readers really overlapped the daemon's writes: some of them saw a job running.
    assert sum(1 for r in status_calls if '"state": "running"' in r.stdout) >= 1
    for number, job in enumerate(jobs):
        ledger.finished(job, f"Clip {number}.mkv under 220 concurrent readers")


@pytest.mark.parametrize("damage", ["corrupt", "newer schema"])
def test_a_corrupt_or_newer_database_is_refused_and_left_untouched(damage, place, tiny_whisper, tiny_nllb):
    state = place["root"] / "state"
    state.mkdir()
    database = state / "autokr.sqlite3"
    if damage == "corrupt":
        database.write_bytes(b"SQLite format 3\0" + os.urandom(4096))
    else:
        connection = sqlite3.connect(database)
        connection.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
        connection.execute("INSERT INTO schema_migrations VALUES (99, 0)")
        connection.commit()
        connection.close()
    before = database.read_bytes()
    config = write_config(place["root"] / "autokr.toml", place["inbox"], state, tiny_whisper, tiny_nllb)
    result = autokr(config, "run", check=False)
    assert result.returncode == 1
    assert str(database) in result.stderr
    assert ("newer" in result.stderr) if damage == "newer schema" else ("not a usable SQLite database" in result.stderr)
    assert database.read_bytes() == before


# --- 8. Long runs -------------------------------------------------------------------------------


def test_memory_does_not_grow_over_200_jobs(place, clip, tiny_whisper, tiny_nllb, ledger):
    inbox, root = place["inbox"], place["root"]
    for number in range(200):
        shutil.copyfile(clip, inbox / f"Clip {number:03}.mkv")
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, videos_per_worker=40)
    done_counts: list[int] = []

    def done_at_least(count: int) -> int | None:
        done = sum(1 for job in status(daemon.config) if job["state"] == "done")
        done_counts.append(done)
        return rss_kb(daemon.pid) if done >= count else None

    with stopping(daemon):
        # Cohorts of 40 (daemon/scheduler.py): the first 40 go through every stage before the
        # next 40 start, so job 40 comes early and job 200 after four more cohorts.
        rss_40 = wait_for(lambda: done_at_least(40), 1200, "40 jobs done", interval=0.5)
        rss_200 = wait_for(lambda: done_at_least(200), 1200, "200 jobs done", interval=1)
        jobs = status(daemon.config)
    for job in jobs:
        ledger.finished(job, Path(job["path"]).name)
    ledger.report(f"200 jobs: daemon RSS {rss_40 / 1024:.1f} MB after job 40, {rss_200 / 1024:.1f} MB after job 200")
    assert rss_200 - rss_40 < 8 * 1024, f"RSS grew from {rss_40} kB to {rss_200} kB"


# --- Hostile and odd names ----------------------------------------------------------------------

HOSTILE_NAMES = [
    "Show with spaces - 01.mkv",
    'It\'s "quoted".mkv',
    "$(touch pwned) `id`.mkv",
    "-y.mkv",
    "new\nline.mkv",
    unicodedata.normalize("NFC", "ガギグゲゴの猫.mkv"),
    unicodedata.normalize("NFD", "ガギグゲゴの犬.mkv"),
    unicodedata.normalize("NFC", "한국어 자막.mkv"),
    unicodedata.normalize("NFD", "한국어 제목.mkv"),
    "a" * 246 + ".mkv",  # 250 bytes
    "猫" * 82 + ".mkv",  # 250 bytes of UTF-8
    "Season 1/Sub folder/Episode 01.mkv",
]


def test_hostile_names_each_get_their_subtitle_beside_them(place, clip, tmp_path, tiny_whisper, tiny_nllb, ledger):
    inbox, root = place["inbox"], place["root"]
    assert len(os.fsencode(HOSTILE_NAMES[9])) == 250 and len(os.fsencode(HOSTILE_NAMES[10])) == 250
    outside = root / "outside"
    outside.mkdir()
    shutil.copyfile(clip, outside / "elsewhere.mkv")
    os.symlink(outside / "elsewhere.mkv", inbox / "link to elsewhere.mkv")
    for name in HOSTILE_NAMES:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, inbox / name)
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb, videos_per_worker=16)
    with stopping(daemon):
        jobs = {name: wait_finished(daemon, Path(name).name) for name in HOSTILE_NAMES}
        sockets = _inet_sockets(daemon.pid)
    for name, job in jobs.items():
        ledger.finished(job, repr(name))
        video = inbox / name
        assert os.fsencode(job["path"]) == os.fsencode(str(video))  # the same bytes, NFD stays NFD
        subtitle = video.with_name(video.stem + ".ko.srt")
        assert subtitle.name in os.listdir(video.parent), name
    assert not list(root.rglob("pwned")) and not Path("pwned").exists()
    assert job_for(daemon.config, "link to elsewhere.mkv") is None  # outside the inbox: not followed
    assert not (outside / "elsewhere.ko.srt").exists()
    assert sockets == [], f"the daemon has network sockets: {sockets}"


def _inet_sockets(pid: int) -> list[str]:
    """The daemon's TCP/UDP sockets (it should have none: it opens no port)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    found.append(f"{table} {fields[1]}")
    return found
