"""Pointed at a whole library, the real daemon: a mixed folder of twelve videos (made with
ffmpeg; English speech from espeak-ng, Japanese from the shared sample, the real Whisper base
telling them apart) ends with subtitles for the Japanese ones only, each other video skipped
with its reason; a play webhook puts a video and its next episode before ten others; the
listener is off unless configured, and a flood of bad requests does not slow the daemon's loop."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from testkit.daemon import Daemon, autokr, drop, job_for, status, stopping, wait_for, write_config
from testkit.library import english_speech, mixed_folder
from testkit.media import ffmpeg
from testkit.require import skip_or_fail
from testkit.servers import FakeServer

pytestmark = pytest.mark.slow
TOKEN = "library-test-secret-0123456789"


def listening(pid: int) -> list[str]:
    """The TCP addresses process ``pid`` listens on, as ``ss`` reports them."""
    if shutil.which("ss") is None:
        skip_or_fail("ss (iproute2) is not installed")
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in lines if f"pid={pid}," in line]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(port: int, path: str, body: bytes, token: str = TOKEN) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Authorization": f"Bearer {token}"})
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory, speech_sample: Path) -> dict[str, Path]:
    """12 s of Japanese (the shared sample) and of English (espeak-ng), as 16 kHz WAV."""
    folder = tmp_path_factory.mktemp("voices")
    if shutil.which("espeak-ng") is None:
        skip_or_fail("espeak-ng is not installed (apt install espeak-ng): the English speech of these tests")
    japanese = folder / "ja.wav"
    ffmpeg("-i", str(speech_sample), "-t", "12", "-ac", "1", "-ar", "16000", str(japanese))
    english = folder / "en.wav"
    ffmpeg("-i", str(english_speech(folder / "en-long.wav")), "-t", "12", "-ac", "1", "-ar", "16000", str(english))
    return {"ja": japanese, "en": english}


def test_a_mixed_folder_gets_subtitles_for_its_japanese_videos_only(place, voices, whisper_base_ct2, tiny_nllb):
    inbox = place["inbox"]
    expected = mixed_folder(inbox, voices)
    config = write_config(
        place["root"] / "autokr.toml", inbox, place["root"] / "state", whisper_base_ct2, tiny_nllb,
        vad=True, filter_hallucinations=True,
    )  # fmt: skip
    started = time.monotonic()
    with stopping(Daemon(config, place["root"] / "daemon.log").start()) as daemon:
        assert listening(daemon.pid) == []  # no [web]: no socket at all
        finals = ("done", "skipped", "failed")
        jobs = wait_for(
            lambda: (found := {Path(job["path"]).name: job for job in status(config)})
            and len(found) == 12 and all(job["state"] in finals for job in found.values()) and found,
            600, "the twelve videos to be done or skipped",
        )  # fmt: skip
        took = time.monotonic() - started
        summary = autokr(config, "status").stdout
        log = daemon.log()
    for name, (state, words) in expected.items():
        job = jobs[name]
        assert job["state"] == state and words in (job["note"] or ""), (name, job["state"], job["note"], job["error"])
        subtitle = inbox / name.replace(".mkv", ".ko.srt")
        assert subtitle.exists() == (state == "done"), name  # not one wrong subtitle
    for name in ("03 English.mkv", "04 English Korean.mkv", "07 Korean inside.mkv", "09 Sidecar.mkv"):
        assert jobs[name]["runs"] == {}, name  # skipped before any worker, let alone a model, ran
    heard = jobs["05 Untagged English.mkv"]
    assert set(heard["runs"]) == {"extract", "transcribe"}  # heard, then skipped: never translated
    assert heard["audio_language"]["language"] == "en" and heard["audio_language"]["by"] == "ear"
    assert heard["audio_language"]["probability"] > 0.5
    assert jobs["06 Untagged Japanese.mkv"]["audio_language"]["language"] == "ja"
    assert jobs["06 Untagged Japanese.mkv"]["audio_language"]["by"] == "ear"
    assert jobs["02 Dub first.mkv"]["audio_language"] == {"language": "ja", "by": "tag"}
    assert "skipped: 3 has a Korean subtitle, 1 has a Korean subtitle inside the video, 2 no Japanese audio, " \
           "1 speech not Japanese" in summary  # fmt: skip
    detection = [float(seconds) for seconds in re.findall(r"heard in ([\d.]+) s", log)]
    assert len(detection) == 2, log[-3000:]  # the two untagged videos, each heard once
    print(f"\nmixed folder of 12: {took:.1f} s to the end; language detection {detection} s per untagged video")

    forced = autokr(config, "retry", "--force", str(inbox / "07 Korean inside.mkv"))
    assert forced.returncode == 0
    with stopping(Daemon(config, place["root"] / "daemon.log").start()):
        wait_for(lambda: (job := job_for(config, "07 Korean inside.mkv")) and job["state"] == "done", 300,
                 "the forced video to be done")  # fmt: skip
    assert (inbox / "07 Korean inside.ko.srt").exists()  # a person asked: the skip is overridden


def test_a_play_webhook_puts_the_video_and_its_next_episode_before_ten_others(
    place, clip, tiny_whisper, tiny_nllb, notify
):
    inbox = place["inbox"]
    show = inbox / "Show"
    for number in range(1, 13):
        drop(clip, show, f"Show - S01E{number:02}.mkv")
    jellyfin = FakeServer("jellyfin", items={"ep9": "/media/Show/Show - S01E09.mkv"}).start()
    port = free_port()
    sections = {
        "web": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
        "jellyfin": {"url": jellyfin.url, "api_key": jellyfin.key, "path_map": [[str(inbox), "/media"]]},
    }
    config = write_config(place["root"] / "autokr.toml", inbox, place["root"] / "state", tiny_whisper, tiny_nllb,
                          sections=sections, videos_per_worker=1)  # fmt: skip
    daemon = Daemon(config, place["root"] / "daemon.log", env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        with stopping(daemon.start()):
            assert listening(daemon.pid) == [f"127.0.0.1:{port}"]
            wait_for(lambda: (job := job_for(config, "Show - S01E01.mkv")) and job["state"] == "running", 60,
                     "the first episode to be under way")  # fmt: skip
            played = time.monotonic()
            event = {"NotificationType": "PlaybackStart", "ItemId": "ep9", "ItemType": "Episode"}
            assert post(port, "/hooks/jellyfin", json.dumps(event).encode()) == 202
            names = [f"Show - S01E{number:02}.mkv" for number in range(1, 13)]

            def finished() -> dict[str, dict] | None:
                jobs = {Path(job["path"]).name: job for job in status(config)}
                return jobs if jobs["Show - S01E10.mkv"]["state"] == "done" else None

            jobs = wait_for(finished, 180, "the played episode and the next to be done")
            ready = time.monotonic() - played
            others = [name for name in names if name not in ("Show - S01E09.mkv", "Show - S01E10.mkv")]
            done_before = [name for name in others if jobs[name]["state"] == "done"]
            assert jobs["Show - S01E09.mkv"]["state"] == "done"
            assert done_before in ([], ["Show - S01E01.mkv"]), done_before  # at most the one under way
            waiting = len(others) - len(done_before)
            print(f"\nplay webhook → S01E09 and S01E10 subtitled after {ready:.1f} s; {waiting} others waited")

            # A flood of 1,000 requests with a wrong secret, and 50 slowloris clients, while the
            # daemon works: its loop keeps its once-a-second watchdog pace.
            before = len(notify.pings())
            calm = notify.pings()[-6:]
            flood_started = time.monotonic()
            answers: list[int] = []

            def flood() -> None:
                for _ in range(125):
                    answers.append(post(port, "/hooks/sonarr", b"{}", token="wrong-guess"))

            slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
            for client in slow:
                client.sendall(b"POST /hooks/plex HTTP/1.1\r\nHost: x\r\n")
            threads = [threading.Thread(target=flood) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            flooded = time.monotonic() - flood_started
            time.sleep(max(0.0, 3.0 - flooded))
            pings = [at for at in notify.pings()[before:] if at >= flood_started]
            gaps = [later - earlier for earlier, later in zip(pings, pings[1:], strict=False)]
            for client in slow:
                client.close()
            log = daemon.log()
    finally:
        jellyfin.stop()
    assert sorted(set(answers)) == [401, 429] and len(answers) == 1000
    assert max(gaps) < 2.5, gaps
    calm_gaps = [later - earlier for earlier, later in zip(calm, calm[1:], strict=False)]
    print(
        f"1,000 bad requests in {flooded:.1f} s ({answers.count(401)} × 401, {answers.count(429)} × 429) and 50 "
        f"slowloris clients: the loop's watchdog pings {len(pings)} in the 3 s from the flood's start, gaps max "
        f"{max(gaps):.2f} s (before the flood, while working: max {max(calm_gaps):.2f} s)"
    )
    assert log.count("without the [web] token") == 1 and "wrong-guess" not in log and TOKEN not in log
