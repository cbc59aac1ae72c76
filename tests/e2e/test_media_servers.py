"""The daemon tells Jellyfin, Plex and a notification webhook about new subtitles (loopback
servers that speak their documented API, real Apprise), keeps what it could not say across a
restart, and ``autokr doctor`` reports the set-up."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.daemon import autokr, drop, rss_kb, start_daemon, stopping, wait_finished, wait_for, write_config
from testkit.servers import FakeServer

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def servers():
    started = {
        "jellyfin": FakeServer("jellyfin", key="jf-key", libraries=["/media"]),
        "plex": FakeServer("plex", key="plex-token", libraries=["/data"]),
        "hook": FakeServer("hook"),
    }
    for server in started.values():
        server.start()
    yield started
    for server in started.values():
        server.stop()


def _sections(place: dict[str, Path], servers: dict[str, FakeServer], jellyfin_url: str) -> dict[str, dict]:
    key_file = place["root"] / "jellyfin.key"
    key_file.write_text("jf-key\n")
    inbox = str(place["inbox"])
    return {
        "jellyfin": {"url": jellyfin_url, "api_key_file": str(key_file), "path_map": [[inbox, "/media"]]},
        "plex": {"url": servers["plex"].url, "token": "plex-token", "path_map": [[inbox, "/data"]]},
        "notify": {"urls": [f"json://127.0.0.1:{servers['hook'].port}/autokr"]},
    }


def test_a_season_finishing_together_is_one_call_per_folder_and_server_and_a_message_each(
    place, servers, clip, tiny_whisper, tiny_nllb
):
    sections = _sections(place, servers, servers["jellyfin"].url)
    for number in (1, 2, 3):  # there at start: one cohort, whose subtitles are written together
        drop(clip, place["inbox"] / "Show", f"Show - {number:02}.mkv")
    daemon = start_daemon(place["root"], place["inbox"], tiny_whisper, tiny_nllb, sections=sections)
    jellyfin, plex, hook = servers["jellyfin"], servers["plex"], servers["hook"]
    with stopping(daemon):
        for number in (1, 2, 3):
            wait_finished(daemon, f"Show - {number:02}.mkv")
        wait_for(lambda: len(hook.requests) == 3 and plex.calls("GET", "/library/sections/1/refresh"), 30, "the calls")
        idle_kb = rss_kb(daemon.pid)
        table = autokr(daemon.config, "status").stdout
    (update,) = jellyfin.calls("POST", "/Library/Media/Updated")
    assert sorted(update.body["Updates"], key=lambda u: u["Path"]) == [
        {"Path": f"/media/Show/Show - {number:02}.ko.srt", "UpdateType": "Created"} for number in (1, 2, 3)
    ]
    (refresh,) = plex.calls("GET", "/library/sections/1/refresh")
    assert refresh.query["path"] == ["/data/Show"]
    messages = sorted(request.body["message"] for request in hook.requests)
    assert [message.split(" (")[0] for message in messages] == [
        f"Show - {number:02}.mkv: Show - {number:02}.ko.srt" for number in (1, 2, 3)
    ]
    assert all(request.body["title"] == "AutoKR: subtitles ready" for request in hook.requests)
    assert "media:" not in table  # nothing left to tell
    shown = autokr(daemon.config, "status", "--json").stdout
    assert "jf-key" not in shown and "plex-token" not in shown and f"{hook.port}/autokr" not in shown
    log = daemon.log()
    assert "jf-key" not in log and "plex-token" not in log  # no secret in the log
    assert f"127.0.0.1:{hook.port}/autokr" not in log  # nor the notification URL (a token lives there)
    assert idle_kb < 80 * 1024, f"daemon RSS {idle_kb / 1024:.1f} MB with Apprise and the announcer"
    print(f"daemon RSS after telling three servers: {idle_kb / 1024:.1f} MB")


def test_a_server_that_is_down_delays_no_job_and_is_told_after_a_restart(place, servers, clip, tiny_whisper, tiny_nllb):
    port = free_port()
    sections = _sections(place, servers, f"http://127.0.0.1:{port}")
    del sections["plex"], sections["notify"]
    daemon = start_daemon(place["root"], place["inbox"], tiny_whisper, tiny_nllb, sections=sections)
    with stopping(daemon):
        drop(clip, place["inbox"] / "Film", "Film.mkv")
        job = wait_finished(daemon, "Film.mkv")  # done while Jellyfin is down
        table = wait_for(lambda: _status_with(daemon.config, "retry in"), 30, "the retry to be shown")
    assert job["state"] == "done"
    # The first retry is 30 s after the failed call; status reads the clock a moment later.
    shown = re.search(r"^media: pending \(jellyfin: Jellyfin: connection refused, retry in (\d+) s\)$", table, re.M)
    assert shown and 20 <= int(shown.group(1)) <= 30, table
    jellyfin = FakeServer("jellyfin", key="jf-key").start(port)  # it comes back while AutoKR is stopped
    try:
        daemon.start()
        with stopping(daemon):
            wait_for(lambda: jellyfin.calls("POST", "/Library/Media/Updated"), 30, "Jellyfin to be told")
            wait_for(lambda: _status_with(daemon.config, "media:") is None, 10, "the media line to go")
        (update,) = jellyfin.calls("POST", "/Library/Media/Updated")
        assert update.body == {"Updates": [{"Path": "/media/Film/Film.ko.srt", "UpdateType": "Created"}]}
    finally:
        jellyfin.stop()


def _status_with(config: Path, text: str) -> str | None:
    shown = autokr(config, "status").stdout
    return shown if text in shown else None


def _doctor(config: Path, *options: str) -> tuple[int, dict[str, dict]]:
    answer = autokr(config, "doctor", "--json", *options, check=False)
    assert answer.stderr == "" or "Traceback" not in answer.stderr, answer.stderr
    return answer.returncode, {check["name"]: check for check in json.loads(answer.stdout)}


def test_doctor_lists_what_works_and_what_to_fix(place, servers, tiny_whisper, tiny_nllb):
    sections = _sections(place, servers, servers["jellyfin"].url)
    sections["plex"]["token"] = "a-wrong-token"
    config = write_config(
        place["root"] / "autokr.toml", place["inbox"], place["root"] / "state", tiny_whisper, tiny_nllb,
        sections=sections,
    )  # fmt: skip
    code, checks = _doctor(config)
    assert code == 0  # a media server problem does not stop videos
    for name in ("ffmpeg", "ffprobe", f"inbox {place['inbox']}", "state folder", "device", "jellyfin"):
        assert checks[name]["ok"], checks[name]
    assert checks["whisper model"]["ok"] and checks["translator model"]["ok"]
    assert checks["device"]["detail"].startswith("cpu")
    assert checks["plex"] == {
        "name": "plex", "ok": False, "detail": "Plex rejected the token (HTTP 401); check it in the config",
        "fix": "check its url and key, and that it runs", "blocking": False,
    }  # fmt: skip
    assert checks["notifications"]["ok"]
    assert "a-wrong-token" not in json.dumps(checks) and "jf-key" not in json.dumps(checks)
    assert _doctor(config, "--strict")[0] == 1

    # A media server down, an inbox its libraries do not hold, a URL Apprise does not know.
    servers["jellyfin"].stop()
    sections["plex"] = {"url": servers["plex"].url, "token": "plex-token"}  # no path_map: /tmp/... is no library
    sections["notify"]["urls"].append("nonsense://x")
    config = write_config(
        place["root"] / "autokr.toml", place["inbox"], place["root"] / "state", tiny_whisper, tiny_nllb,
        sections=sections,
    )  # fmt: skip
    code, checks = _doctor(config)
    assert code == 0
    assert checks["jellyfin"]["detail"] == "Jellyfin: connection refused"
    assert checks["plex"]["detail"].startswith(f"{place['inbox']}/AutoKR doctor.mkv is ")
    assert checks["plex"]["detail"].endswith("for Plex, in none of its libraries (/data)")
    assert checks["plex"]["fix"] == "set [plex] path_map so the inbox maps into one of its libraries"
    assert not checks["notifications"]["ok"] and "number [2] not understood" in checks["notifications"]["detail"]

    # What stops videos: ffmpeg missing, a missing inbox and a model path that is not there.
    broken_ffmpeg = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "doctor", "--json"],
        capture_output=True, text=True, env={**os.environ, "AUTOKR_FFMPEG": "/nonexistent/ffmpeg"},
    )  # fmt: skip
    assert broken_ffmpeg.returncode == 1
    (ffmpeg,) = [check for check in json.loads(broken_ffmpeg.stdout) if check["name"] == "ffmpeg"]
    assert ffmpeg["detail"] == "/nonexistent/ffmpeg is not an executable file" and ffmpeg["blocking"]
    missing = place["root"] / "gone"
    config = write_config(
        place["root"] / "broken.toml", missing, place["root"] / "state", place["root"] / "no-such.pt", tiny_nllb
    )
    code, checks = _doctor(config)
    assert code == 1
    assert checks[f"inbox {missing}"]["blocking"] and not checks[f"inbox {missing}"]["ok"]
    assert checks["whisper model"]["fix"] == "fix [models] whisper: the path does not exist"
    text = autokr(config, "doctor", check=False).stdout
    assert f"✗ inbox {missing}: does not exist\n    fix: create it or fix [daemon] inbox" in text
