"""The real daemon as a subprocess: real watchdog, SQLite, ffmpeg and worker processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pysubs2
import pytest

import testkit.daemon as daemon_fixture
from testkit.daemon import Daemon, alive, autokr, drop, job_for, status, stopping, wait_finished, wait_for
from testkit.media import make_video
from workers.cues import Cue, limits_for, style_violations

pytestmark = pytest.mark.slow


def start_daemon(place: dict[str, Path], whisper: Path, translator: Path, **settings: object) -> Daemon:
    return daemon_fixture.start_daemon(place["root"], place["inbox"], whisper, translator, **settings)


def wait_done(daemon: Daemon, name: str, timeout: float = 180) -> dict:
    return wait_finished(daemon, name, timeout, states=("done", "skipped", "dropped"))


def test_real_speech_becomes_korean_and_japanese_subtitles(place, whisper_base, tiny_nllb, speech_sample):
    daemon = start_daemon(
        place, whisper_base, tiny_nllb, write_source_subtitles=True, vad=True, filter_hallucinations=True
    )
    with stopping(daemon):
        video = drop(speech_sample, place["inbox"] / "Season 1", "Show - 01.mp4")
        job = wait_done(daemon, "Show - 01.mp4")
    assert job["state"] == "done"
    assert job["runs"] == {"extract": 1, "transcribe": 1, "translate": 1, "subtitle": 1}
    korean = pysubs2.load(str(video.with_name("Show - 01.ko.srt")), encoding="utf-8")
    japanese = pysubs2.load(str(video.with_name("Show - 01.ja.srt")), encoding="utf-8")
    assert len(korean) >= 3
    assert all(any("\uac00" <= c <= "\ud7a3" for c in event.plaintext) for event in korean)
    assert any("猫" in event.plaintext for event in japanese)
    # The cues follow the speech voice activity detection found, on the video's timeline,
    # laid out by the Korean (16 a line) and Japanese (13 a line) rules.
    transcript = json.loads((place["root"] / "state" / "work" / str(job["id"]) / "transcript.json").read_text())
    first_speech, last_speech = transcript["speech"][0][0], transcript["speech"][-1][1]
    assert first_speech * 1000 - 150 <= korean[0].start and korean[-1].end <= max(last_speech * 1000 + 900, 26_000)
    for cues, language in ((korean, "ko"), (japanese, "ja")):
        laid_out = [Cue(e.start / 1000, e.end / 1000, e.text.split("\\N")) for e in cues]
        assert set(style_violations(laid_out, limits_for(language)).values()) == {0}, language
    assert not (place["root"] / "state" / "work" / str(job["id"]) / "audio.wav").exists()


def test_a_video_without_speech_ends_done_with_no_subtitle(place, tiny_whisper, tiny_nllb, tmp_path):
    music = make_video(tmp_path / "music.mkv", seconds=6)  # a tone: music, to voice activity detection
    daemon = start_daemon(place, tiny_whisper, tiny_nllb, vad=True, filter_hallucinations=True)
    with stopping(daemon):
        drop(music, place["inbox"], "Opening theme.mkv")
        job = wait_done(daemon, "Opening theme.mkv")
    assert (job["state"], job["note"]) == ("done", "no speech found")
    assert list(place["inbox"].glob("*.srt")) == []  # an empty .ko.srt would be a useless track


def test_bad_inputs_fail_clearly_and_a_good_video_still_gets_subtitles(
    place, tiny_whisper, tiny_nllb, tone_video, tmp_path
):
    daemon = start_daemon(place, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        (place["inbox"] / "random.mkv").write_bytes(os.urandom(4096))
        (place["inbox"] / "empty.mkv").write_bytes(b"")
        drop(make_video(tmp_path / "silent.mp4", audio=False), place["inbox"], "no audio.mp4")
        drop(tone_video, place["inbox"], "good.mkv")
        good = wait_done(daemon, "good.mkv")
        jobs = {Path(job["path"]).name: job for job in status(daemon.config)}
        assert daemon.process is not None and daemon.process.poll() is None
    assert good["state"] == "done"
    assert (place["inbox"] / "good.ko.srt").exists()
    assert jobs["random.mkv"]["state"] == "failed"
    assert "not a readable video" in jobs["random.mkv"]["error"]
    assert jobs["empty.mkv"]["state"] == "failed"
    assert "empty" in jobs["empty.mkv"]["error"]
    assert jobs["no audio.mp4"]["state"] == "failed"
    assert jobs["no audio.mp4"]["error"] == "the file has no audio track"
    assert not any(p.name.endswith(".srt") and not p.name.startswith("good") for p in place["inbox"].iterdir())


def test_existing_subtitle_is_skipped_not_overwritten(place, tiny_whisper, tiny_nllb, tone_video):
    (place["inbox"] / "Movie.ko.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n내 자막\n", encoding="utf-8")
    drop(tone_video, place["inbox"], "Movie.mkv")
    daemon = start_daemon(place, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        job = wait_done(daemon, "Movie.mkv", timeout=30)
    assert job["state"] == "skipped"
    assert (place["inbox"] / "Movie.ko.srt").read_text(encoding="utf-8").endswith("내 자막\n")


def test_a_replaced_video_starts_over_and_replaces_our_own_subtitle(place, tiny_whisper, tiny_nllb, tmp_path):
    daemon = start_daemon(place, tiny_whisper, tiny_nllb)
    with stopping(daemon):
        video = drop(make_video(tmp_path / "v1.mkv", seconds=2), place["inbox"], "Ep.mkv")
        first = wait_done(daemon, "Ep.mkv")
        subtitle = place["inbox"] / "Ep.ko.srt"
        first_stat = subtitle.stat()
        drop(make_video(tmp_path / "v2.mkv", seconds=4), place["inbox"], "Ep.mkv")
        second = wait_for(
            lambda: (
                (job := job_for(daemon.config, "Ep.mkv"))
                and job["state"] == "done"
                and job["updated_at"] > first["updated_at"]
                and job
            ),
            120,
            "the replaced video to be done again",
        )
    assert second["id"] == first["id"]
    assert second["runs"] == {s: 1 for s in ("extract", "transcribe", "translate", "subtitle")}
    assert subtitle.stat().st_mtime_ns != first_stat.st_mtime_ns  # rewritten, not skipped
    assert video.exists()


def test_sigterm_stops_the_worker_politely_and_the_job_resumes(place, tiny_whisper, tiny_nllb, tone_video):
    daemon = start_daemon(place, tiny_whisper, tiny_nllb)
    drop(tone_video, place["inbox"], "Stop.mkv")
    worker = wait_for(lambda: daemon.worker("transcribe"), 60, "the transcribe worker", interval=0.01)
    assert daemon.stop() == 0
    assert not alive(worker)
    job = job_for(daemon.config, "Stop.mkv")
    assert job is not None and (job["state"], job["stage"]) == ("queued", "transcribe")
    daemon.start()
    try:
        job = wait_done(daemon, "Stop.mkv")
    finally:
        daemon.stop()
    assert job["runs"]["extract"] == 1 and job["runs"]["transcribe"] == 2


@pytest.mark.parametrize("engine", ["ctranslate2", "torch"])
def test_eight_videos_share_one_model_load_per_stage(
    place, tiny_whisper, tiny_whisper_hf, tiny_nllb, tone_video, engine
):
    # The CTranslate2 engine gets the Hugging Face form (converted once), torch the .pt.
    whisper = tiny_whisper_hf if engine == "ctranslate2" else tiny_whisper
    for number in range(8):
        drop(tone_video, place["inbox"], f"Clip {number}.mkv")
    daemon = start_daemon(place, whisper, tiny_nllb, engine=engine)
    try:
        for number in range(8):
            wait_done(daemon, f"Clip {number}.mkv")
    finally:
        daemon.stop()
    log = daemon.log()
    assert log.count("loaded whisper model") == 1
    assert log.count("loaded translator") == 1
    assert all(
        job["runs"] == {s: 1 for s in ("extract", "transcribe", "translate", "subtitle")}
        for job in status(daemon.config)
    )
    assert len(list(place["inbox"].glob("*.ko.srt"))) == 8
    # Each job records what produced its subtitles; the table shows it for finished videos.
    models = status(daemon.config)[0]["models"]
    assert models["transcribe_decoding"] == "batched" and models["transcribe_batch_size"] == 8  # CPU default
    assert models["translate_batch_size"] == 16
    how = "ctranslate2 int8" if engine == "ctranslate2" else "torch float32"  # CPU defaults
    assert models["translate_engine"] == models["transcribe_engine"] == how
    table = autokr(daemon.config, "status", "--all").stdout
    assert f"{whisper.name} {how} batched ×8 on cpu → {tiny_nllb.name} {how} ×16 on cpu" in table, table
    korean = {(place["inbox"] / f"Clip {number}.ko.srt").read_text(encoding="utf-8") for number in range(8)}
    assert len(korean) == 1 and any("가" <= c <= "힣" for c in korean.pop())  # the same Korean for each


def test_idle_daemon_is_small_and_never_loads_torch(place, tiny_whisper, tiny_nllb, tone_video):
    daemon = start_daemon(place, tiny_whisper, tiny_nllb)
    try:
        drop(tone_video, place["inbox"], "Once.mkv")
        wait_done(daemon, "Once.mkv")
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    finally:
        daemon.stop()
    assert "torch" not in maps and "libtorch" not in maps
    assert rss_kb < 80 * 1024, f"idle daemon RSS {rss_kb} kB"


def test_configuration_problems_are_all_reported(tmp_path):
    from testkit.daemon import autokr

    config = tmp_path / "bad.toml"
    config.write_text('[daemon]\ninbox = ["/nonexistent/inbox"]\nstable_seconds = "soon"\ncolour = 1\n')
    result = autokr(config, "run", check=False)
    assert result.returncode == 1
    assert "inbox folder does not exist: /nonexistent/inbox" in result.stderr
    assert "[daemon] stable_seconds must be a number" in result.stderr
    assert "unknown key [daemon] colour" in result.stderr
    assert str(config) in result.stderr


@pytest.mark.parametrize("order", ["run --config FILE", "--config FILE run"])
def test_config_is_taken_before_or_after_the_command(place, tiny_whisper, tiny_nllb, order):
    import signal
    import subprocess
    import sys

    config = daemon_fixture.write_config(
        place["root"] / "mine.toml", place["inbox"], place["root"] / "state", tiny_whisper, tiny_nllb
    )
    words = [str(config) if word == "FILE" else word for word in order.split()]
    with open(place["root"] / "out.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "daemon", *words], stdout=log, stderr=log)
    try:
        wait_for(lambda: "ready:" in (place["root"] / "out.log").read_text(errors="replace"), 30, "ready")
        assert ((place["root"] / "state") / "autokr.sqlite3").exists()  # the file's state_dir, not a default one
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert autokr(config, "status").returncode == 0
    listed = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "--config", str(config)], capture_output=True, text=True
    )
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
