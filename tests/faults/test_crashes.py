"""Guarantees 1, 2 and 5 (docs/guarantees.md): crashes of the daemon at any moment, workers
that die or hang, videos deleted or replaced under a running job.

The real daemon runs as a subprocess with real SQLite, ffmpeg and worker processes and the
tiny models. Moments a test cannot time (between a worker's rename of its output and the
database commit, say) are reached with ``$AUTOKR_FAULT`` (contract/faults.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from testkit.daemon import Daemon, alive, autokr, drop, job_for, start_daemon, stopping, wait_finished, wait_for
from testkit.ledger import STAGES
from testkit.media import make_video

pytestmark = pytest.mark.slow

TEMP_MARKER = ".autokr-tmp-"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    media = tmp_path_factory.mktemp("media")
    # "long": 60 s of audio keeps even the extract stage busy long enough to be caught running.
    return {"short": make_video(media / "short.mkv", seconds=3), "long": make_video(media / "long.mkv", seconds=60)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, videos, tiny_whisper, tiny_nllb) -> dict[str, bytes]:
    """Each video's ``.ko.srt`` from an uninterrupted run: interrupted runs must match it."""
    root = tmp_path_factory.mktemp("reference")
    inbox = root / "inbox"
    inbox.mkdir()
    daemon = start_daemon(root, inbox, tiny_whisper, tiny_nllb)
    try:
        for kind, video in videos.items():
            drop(video, inbox, f"{kind}.mkv")
        for kind in videos:
            wait_finished(daemon, f"{kind}.mkv")
    finally:
        daemon.stop()
    return {kind: (inbox / f"{kind}.ko.srt").read_bytes() for kind in videos}


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (a test's own folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in line and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def assert_clean(root: Path, config: Path) -> None:
    """No temporary file anywhere, no worker left, the database intact."""
    assert [p for p in root.rglob("*") if TEMP_MARKER in p.name] == []
    wait_for(lambda: not processes_mentioning(str(root / "state")), 10, "no worker left")
    connection = sqlite3.connect(root / "state" / "autokr.sqlite3")
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


@pytest.mark.parametrize("stage", STAGES)
def test_a_crash_before_a_worker_starts_and_before_its_commit_loses_nothing(
    stage, place, videos, reference, tiny_whisper, tiny_nllb, ledger
):
    inbox = place["inbox"]
    daemon = start_daemon(
        place["root"], inbox, tiny_whisper, tiny_nllb, env={"AUTOKR_FAULT": f"daemon-crash:before-worker:{stage}"}
    )
    drop(videos["short"], inbox, "Episode.mkv")
    assert daemon.wait_exit(120) == -signal.SIGKILL
    ledger.fault()
    daemon.start(env={"AUTOKR_FAULT": f"daemon-crash:before-commit:{stage}"})
    assert daemon.wait_exit(120) == -signal.SIGKILL
    ledger.fault()
    job = _job(daemon, "Episode.mkv")
    # The worker's output is in place, the database does not know yet:
    assert (job["state"], job["stage"]) == ("running", stage)
    if stage == "subtitle":
        assert (inbox / "Episode.ko.srt").read_bytes() == reference["short"]

    daemon.start(env={})
    with stopping(daemon):
        job = wait_finished(daemon, "Episode.mkv")
    ledger.finished(job, f"crash before {stage} worker and before its commit", interrupted={stage: 2})
    assert job["runs"] == {s: 3 if s == stage else 1 for s in STAGES}
    assert (inbox / "Episode.ko.srt").read_bytes() == reference["short"]
    assert_clean(place["root"], daemon.config)


@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_while_a_worker_runs_resumes_at_that_stage(
    stage, place, videos, reference, tiny_whisper, tiny_nllb, ledger
):
    inbox = place["inbox"]
    daemon = start_daemon(place["root"], inbox, tiny_whisper, tiny_nllb)
    drop(videos["long"], inbox, "Episode.mkv")
    worker = wait_for(lambda: daemon.worker(stage), 120, f"the {stage} worker", interval=0.005)
    daemon.kill9()
    ledger.fault()
    wait_for(lambda: not alive(worker), 10, "the orphaned worker to exit")
    interrupted = _job(daemon, "Episode.mkv")
    assert (interrupted["state"], interrupted["stage"]) == ("running", stage)

    daemon.start()
    with stopping(daemon):
        job = wait_finished(daemon, "Episode.mkv")
    ledger.finished(job, f"kill -9 during {stage}", interrupted={stage: 1})
    assert job["runs"] == {s: 2 if s == stage else 1 for s in STAGES}
    assert "resuming" in daemon.log()
    assert (inbox / "Episode.ko.srt").read_bytes() == reference["long"]
    assert_clean(place["root"], daemon.config)


def test_a_worker_killed_like_the_oom_killer_does_is_retried(place, videos, reference, tiny_whisper, tiny_nllb, ledger):
    inbox = place["inbox"]
    daemon = start_daemon(place["root"], inbox, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        drop(videos["long"], inbox, "Episode.mkv")
        worker = wait_for(lambda: daemon.worker("transcribe"), 120, "the transcribe worker", interval=0.005)
        os.kill(worker, signal.SIGKILL)  # what the kernel's out-of-memory killer sends
        ledger.fault()
        job = wait_finished(daemon, "Episode.mkv")
    ledger.finished(job, "worker SIGKILLed", interrupted={"transcribe": 1})
    assert job["runs"] == {"extract": 1, "transcribe": 2, "translate": 1, "subtitle": 1}
    assert "killed by SIGKILL" in daemon.log()
    assert (inbox / "Episode.ko.srt").read_bytes() == reference["long"]


# A card that fits translation batches of 4 (the config asks for 16: 16 OOM, 8 OOM, 4), or
# 2 speech chunks (a CPU worker starts at 8 chunks; level 1 caps the nominal 16 at 8, so it is
# 8 OOM, 8 OOM, 4 OOM, 2). The batch shrinks, never the model, before it runs out of halves.
@pytest.mark.parametrize(
    ("stage", "fits", "ooms", "extra"),
    [("translate", 4, 2, {"translate_batch_size": 16}), ("transcribe", 2, 3, {})],
)
def test_gpu_out_of_memory_retries_with_half_the_batch_and_records_what_worked(
    place, videos, reference, tiny_whisper, tiny_nllb, ledger, stage, fits, ooms, extra
):
    inbox = place["inbox"]
    daemon = start_daemon(
        place["root"], inbox, tiny_whisper, tiny_nllb, env={"AUTOKR_FAULT": f"worker-oom:{stage}:{fits}"}, **extra
    )
    with stopping(daemon):
        drop(videos["short"], inbox, "Episode.mkv")
        job = wait_finished(daemon, "Episode.mkv")
    ledger.fault(ooms)
    ledger.finished(job, f"GPU out of memory {ooms} times", interrupted={stage: ooms})
    assert job["runs"][stage] == ooms + 1
    assert job["models"][f"{stage}_batch_size"] == fits
    assert job["models"]["transcribe_model"] == str(tiny_whisper)
    assert job["models"]["translate_model"] == str(tiny_nllb)
    assert job["models"]["transcribe_decoding"] == "batched"
    assert job["attempts"] == 0 and job["error"] is None
    assert daemon.log().count("out of GPU memory; retrying with less") == ooms
    assert (inbox / "Episode.ko.srt").read_bytes() == reference["short"]


@pytest.mark.parametrize(
    ("fault", "stage", "reason"),
    [
        ("worker-exit:transcribe:137", "transcribe", "exit 137"),
        ("worker-hang:translate", "translate", "reported nothing for 10 s"),
    ],
)
def test_a_worker_that_keeps_dying_or_hangs_fails_the_job_with_its_reason(
    fault, stage, reason, place, videos, reference, tiny_whisper, tiny_nllb, ledger
):
    inbox = place["inbox"]
    # stage_timeout_seconds must exceed a worker's silent start (imports, model load: ~3 s here).
    settings = {"max_attempts": 2, "retry_backoff_seconds": 0.5, "stage_timeout_seconds": 10, "worker_stop_seconds": 2}
    daemon = start_daemon(place["root"], inbox, tiny_whisper, tiny_nllb, env={"AUTOKR_FAULT": fault}, **settings)
    with stopping(daemon):
        drop(videos["short"], inbox, "Episode.mkv")
        job = wait_finished(daemon, "Episode.mkv", timeout=120, states=("failed",))
        ledger.fault(job["attempts"])
        assert daemon.running()
        assert not processes_mentioning(f"workers.{stage}")
    assert (job["stage"], job["attempts"]) == (stage, 2)
    assert reason in job["error"]
    assert f"AUTOKR_FAULT: the {stage} worker" in job["stderr_tail"]
    assert not (inbox / "Episode.ko.srt").exists()
    assert "retrying in" in daemon.log()  # the first attempt was retried after a backoff

    # The cause goes away (here: the fault is not injected again); `autokr retry` finishes it.
    daemon.start(env={})
    with stopping(daemon):
        assert "queued at " + stage in autokr(daemon.config, "retry", str(job["id"])).stdout
        job = wait_finished(daemon, "Episode.mkv")
    ledger.finished(job, f"{fault}, then retried", interrupted={stage: 2})
    assert (inbox / "Episode.ko.srt").read_bytes() == reference["short"]


def test_videos_deleted_while_queued_or_mid_stage_are_dropped_and_their_worker_stopped(
    place, videos, tiny_whisper, tiny_nllb, ledger
):
    inbox = place["inbox"]
    daemon = start_daemon(place["root"], inbox, tiny_whisper, tiny_nllb, videos_per_worker=1)
    with stopping(daemon):
        running = drop(videos["long"], inbox, "Running.mkv")
        worker = wait_for(lambda: daemon.worker("transcribe"), 120, "the transcribe worker", interval=0.005)
        queued = drop(videos["short"], inbox, "Queued.mkv")
        wait_for(lambda: _job(daemon, "Queued.mkv", missing_ok=True), 30, "the second video to be queued")
        queued.unlink()
        running.unlink()
        ledger.fault(2)
        dropped = {
            name: wait_finished(daemon, name, timeout=60, states=("dropped",)) for name in ("Running.mkv", "Queued.mkv")
        }
        wait_for(lambda: not alive(worker), 15, "the worker of the deleted video to be stopped")
        assert daemon.running()
    assert "during transcribe" in dropped["Running.mkv"]["note"]
    assert "deleted or moved" in dropped["Queued.mkv"]["note"]
    assert list(inbox.glob("*.srt")) == []


def test_a_video_replaced_mid_stage_starts_over_with_the_new_content(
    place, videos, reference, tiny_whisper, tiny_nllb, ledger
):
    inbox = place["inbox"]
    daemon = start_daemon(place["root"], inbox, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        drop(videos["long"], inbox, "Episode.mkv")
        wait_for(lambda: daemon.worker("translate"), 120, "the translate worker", interval=0.005)
        drop(videos["short"], inbox, "Episode.mkv")  # a different file under the same name
        ledger.fault()
        job = wait_for(
            lambda: (j := _job(daemon, "Episode.mkv")) and j["state"] == "done" and j["runs"].get("subtitle") and j,
            180,
            "the replaced video to be done",
        )
    ledger.finished(job, "replaced mid-stage")
    # Only the new content's subtitles, never the old ones beside the new video:
    assert (inbox / "Episode.ko.srt").read_bytes() == reference["short"]
    assert "changed while its translate worker ran" in daemon.log()


def _job(daemon: Daemon, name: str, missing_ok: bool = False) -> dict:
    job = job_for(daemon.config, name)
    assert job is not None or missing_ok, f"no job for {name}"
    return job  # type: ignore[return-value]
