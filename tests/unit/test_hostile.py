"""Reliability round 3 (issue 20), the items that need no daemon: a hostile or unlucky name,
server, clock, config or planted link meets the real code (real SQLite files, real sockets on
127.0.0.1, real ffprobe). Numbered as in the issue; the daemon-level items are in
``tests/faults/test_hostile_daemon.py``."""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from contract.errors import PermanentError
from contract.files import write_atomically
from contract.media import probe
from daemon.announcer import Announcer, Outbox, Teller, describe_pending
from daemon.config import ConfigError, load_config
from daemon.discovery import accept
from daemon.jobs import JobState
from daemon.media_servers import Change, Jellyfin, Plex, ServerError
from daemon.store import Store, state_space_problem
from testkit.clock import Clock
from testkit.media import make_video
from testkit.servers import FakeServer, HostileServer
from workers.subtitle import place_subtitle

SHIFT_JIS_FOLDER = os.fsdecode("/srv/アニメ".encode("shift_jis"))  # not UTF-8: a folder from an old Windows disk


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "autokr.sqlite3", clock=Clock()) as opened:
        yield opened


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "autokr.toml"
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    path.write_text(f'[daemon]\ninbox = ["{inbox}"]\nstate_dir = "{tmp_path / "state"}"\n{text}', encoding="utf-8")
    return path


# --- 1. Non-UTF-8 names reach the outbox and Plex losslessly --------------------------------


def test_1_a_shift_jis_folder_is_queued_and_plex_is_sent_its_exact_bytes(store):
    server = FakeServer("plex", key="plex-token", libraries=[]).start()
    try:
        teller = Teller(store, ("plex", "notify"))
        subtitle = f"{SHIFT_JIS_FOLDER}/猫.ko.srt"
        teller.subtitles([Change(subtitle, "Created")])
        teller.message(subtitle, "AutoKR: a video failed", f"{Path(subtitle).name}: not a video")
        pending = Outbox(store).entries()
        assert [entry.topic for entry in pending] == [SHIFT_JIS_FOLDER, subtitle]  # exactly as given
        assert pending[0].payload["subtitle"] == subtitle
        plex = Plex(server.url, "plex-token")
        plex._sections = [("1", [SHIFT_JIS_FOLDER])]  # what Plex's section list says (its own bytes)
        plex.announce(pending[0].topic, [Change(subtitle, "Created")])
        (refresh,) = [request for request in server.requests if request.path.endswith("/refresh")]
        sent = urllib.parse.unquote_to_bytes(refresh.raw_path.partition("path=")[2])
        assert sent == os.fsencode(SHIFT_JIS_FOLDER)
    finally:
        server.stop()


def test_1_a_non_video_with_a_shift_jis_name_is_failed_for_its_real_reason(tmp_path, store):
    from daemon.intake import Intake

    config = load_config(_config(tmp_path, ""))
    name = os.fsdecode("猫の話.mkv".encode("shift_jis"))
    video = config.daemon.inbox[0] / name
    video.write_bytes(b"this is no video at all" * 100)
    teller = Teller(store, ("notify",))
    intake = Intake(config, store, threading.Event(), lambda job: None, teller, monotonic=lambda: 10**9)
    intake.tracker.stable_seconds = 0
    intake.consider(video)
    intake.promote_stable_files()
    job = store.find(str(video))
    assert job is not None and job.state == JobState.FAILED
    assert job.error.startswith("not a readable video"), job.error
    assert len(Outbox(store).entries()) == 1


# --- 4. A planted link at the temporary name never redirects a write -------------------------


def test_4_planted_links_at_every_temporary_name_leave_the_victim_untouched(tmp_path):
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"the person's own file\n")
    library = tmp_path / "library"
    library.mkdir()
    subtitle = library / "Video.ko.srt"
    work = library / "audio.json"
    for pid in range(max(1, os.getpid() - 50), os.getpid() + 50):  # what an attacker plants for "the next pids"
        for target in (subtitle, work):
            os.symlink(victim, library / f".{target.name}.autokr-tmp-{pid}")
    assert place_subtitle(subtitle, b"1\n00:00:00,000 --> 00:00:01,000\n\xec\x95\x88\n", None, False) is None
    write_atomically(work, b"{}")
    assert victim.read_bytes() == b"the person's own file\n"
    assert not subtitle.is_symlink() and subtitle.read_bytes().endswith(b"\xec\x95\x88\n")
    assert not work.is_symlink() and work.read_bytes() == b"{}"


def test_4_a_link_at_the_subtitle_name_itself_is_neither_written_nor_read_through(tmp_path):
    victim = tmp_path / "victim.srt"
    victim.write_bytes(b"1\n00:00:00,000 --> 00:00:01,000\nsame\n")
    subtitle = tmp_path / "Video.ko.srt"
    os.symlink(victim, subtitle)
    refused = place_subtitle(subtitle, victim.read_bytes(), [victim.stat().st_size, victim.stat().st_mtime_ns], False)
    assert refused is not None and "link" in refused
    assert subtitle.is_symlink() and victim.read_bytes().endswith(b"same\n")


# --- 5. A key never follows a redirect ---------------------------------------------------------


def test_5_a_redirect_is_a_failure_and_the_key_goes_nowhere_else():
    elsewhere = FakeServer("jellyfin", key="x").start()
    redirecting = FakeServer("jellyfin", key="secret-key", redirect_to=f"{elsewhere.url}/Library/Media/Updated").start()
    try:
        for server in (Jellyfin(redirecting.url, "secret-key"), Plex(redirecting.url, "secret-key")):
            with pytest.raises(ServerError) as raised:
                server.announce("/media/anime", [Change("/media/anime/a.ko.srt", "Created")])
            assert "redirected to" in str(raised.value) and "set url to the final address" in str(raised.value)
            assert "secret-key" not in str(raised.value)
        assert elsewhere.requests == []
    finally:
        elsewhere.stop()
        redirecting.stop()


# --- 6, 7, 8. No secret in a config error, a key file or a URL --------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('[notify]\nurls = "ntfys://TOPSECRETTOKEN@ntfy.example/topic"\n', "TOPSECRETTOKEN"),
        ('[jellyfin]\nurl = "http://127.0.0.1:8096"\napi_key = 4242424242424242\n', "4242424242424242"),
        ('[plex]\nurl = "http://127.0.0.1:32400"\ntoken = ["PLEXTOKENVALUE"]\n', "PLEXTOKENVALUE"),
    ],
)
def test_6_a_secret_of_the_wrong_type_is_refused_without_showing_it(tmp_path, text, secret):
    with pytest.raises(ConfigError) as raised:
        load_config(_config(tmp_path, text))
    assert secret not in str(raised.value) and "not shown" in str(raised.value)


def test_7_a_key_file_with_a_second_line_is_refused_without_showing_the_key(tmp_path):
    from daemon.announcer import senders_for

    key_file = tmp_path / "jellyfin.key"
    key_file.write_text("KEYKEYKEY1234\n# made on 2026-12-01 for the living room\n", encoding="utf-8")
    config = load_config(_config(tmp_path, f'[jellyfin]\nurl = "http://127.0.0.1:8096"\napi_key_file = "{key_file}"\n'))
    senders, problems = senders_for(config)
    assert "jellyfin" not in senders
    assert len(problems) == 1 and str(key_file) in problems[0] and "KEYKEYKEY1234" not in problems[0]
    assert "more than the key" in problems[0]


def test_8_a_url_with_a_password_is_refused_without_showing_it(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(_config(tmp_path, '[jellyfin]\nurl = "http://admin:Passw0rd@127.0.0.1:8096"\napi_key = "k"\n'))
    assert "Passw0rd" not in str(raised.value) and "user name or password" in str(raised.value)


# --- 9, 10, 11. One bad server: a failure with backoff, bounded in bytes and in time --------


def test_9_a_server_that_speaks_something_else_is_unreachable_not_a_crash():
    banner = HostileServer("banner")
    html = FakeServer("jellyfin", raw=(200, "text/html", b"<html><body>Please log in</body></html>")).start()
    an_object = FakeServer("jellyfin", raw=(200, "application/json", b'{"Items": []}')).start()
    try:
        for url in (banner.url, html.url, an_object.url):
            jellyfin = Jellyfin(url, "secret-key")
            with pytest.raises(ServerError):
                jellyfin.check("/media/anime/a.mkv")
        with pytest.raises(ServerError):
            Jellyfin(banner.url, "k").announce("/m", [Change("/m/a.ko.srt", "Created")])
        with pytest.raises(ServerError):
            Plex(html.url, "k").announce("/m", [Change("/m/a.ko.srt", "Created")])
    finally:
        banner.stop()
        html.stop()
        an_object.stop()


def test_9_one_bad_server_backs_off_logged_once_and_the_others_are_still_told(tmp_path):
    from loguru import logger

    database = tmp_path / "autokr.sqlite3"
    clock = Clock()
    banner = HostileServer("banner")
    plex = FakeServer("plex", key="plex-token", libraries=["/media"]).start()
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    with Store(database, clock=clock) as store:
        teller = Teller(store, ("jellyfin", "plex"))
        teller.subtitles([Change("/media/a/1.ko.srt", "Created"), Change("/media/b/2.ko.srt", "Created")])
        clock.now += 10
        senders = {"jellyfin": Jellyfin(banner.url, "k"), "plex": Plex(plex.url, "plex-token")}
        announcer = Announcer(lambda: Store(database, clock=clock), senders, interval=0.05)
        announcer.start()
        try:
            time.sleep(1.5)
            outbox = Outbox(store)
            assert len(plex.calls("GET", "/library/sections/1/refresh")) == 2
            waiting = outbox.entries()
            assert {entry.target for entry in waiting} == {"jellyfin"}
            assert all(entry.attempts == 1 and entry.due_at > clock.now for entry in waiting)
        finally:
            announcer.stop()
            logger.remove(sink)
    assert banner.connections == 2  # one call per folder, then it waits
    assert sum("jellyfin" in line.lower() for line in lines) == 1, lines
    assert not any("unexpected" in line for line in lines), lines
    banner.stop()
    plex.stop()


def test_10_a_reply_of_gigabytes_is_cut_off_after_a_few_megabytes():
    flood = HostileServer("flood")
    try:
        with pytest.raises(ServerError) as raised:
            Jellyfin(flood.url, "k").check("/media/a.mkv")
        assert "MB" in str(raised.value)
        time.sleep(0.3)
        assert flood.sent < 40_000_000, flood.sent
    finally:
        flood.stop()


def test_11_a_server_that_trickles_is_given_up_on_at_the_deadline():
    trickle = HostileServer("trickle", interval=1.0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            Jellyfin(trickle.url, "k", timeout=3).announce("/m", [Change("/m/a.ko.srt", "Created")])
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            errors.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(15)
    elapsed = time.monotonic() - started
    trickle.stop()
    assert not thread.is_alive(), "the call never ended"
    assert elapsed < 6 and len(errors) == 1 and isinstance(errors[0], ServerError), (elapsed, errors)
    assert "3 s" in str(errors[0])


# --- 14. A clock that steps back does not stretch a wait --------------------------------------


def test_14_backoffs_and_outbox_retries_survive_the_wall_clock_stepping_back_a_week(tmp_path):
    clock = Clock()
    with Store(tmp_path / "autokr.sqlite3", clock=clock) as store:
        job = store.add("/media/a.mkv", 10, 10)
        (claimed,) = store.claim([job])
        store.fail_stage(claimed, "a worker died", "", permanent=False, max_attempts=3, backoff_seconds=30)
        outbox = Outbox(store)
        outbox.add("jellyfin", "/media", {"subtitle": "/media/a.ko.srt", "change": "Created"})
        clock.now += 10
        outbox.retry_later(outbox.entries(), "connection refused")
        assert store.ready() == [] and outbox.due(clock.now) == []
        clock.now -= 7 * 86400  # the RTC was a week fast; NTP corrects it
        clock.now += 31
        assert [ready.id for ready in store.ready()] == [job.id]
        clock.now += 30
        assert len(outbox.due(clock.now)) == 1


def test_14_retry_takes_a_job_that_waits_out_a_backoff(tmp_path):
    clock = Clock()
    with Store(tmp_path / "autokr.sqlite3", clock=clock) as store:
        job = store.add("/media/a.mkv", 10, 10)
        (claimed,) = store.claim([job])
        store.fail_stage(claimed, "a worker died", "", permanent=False, max_attempts=3, backoff_seconds=3600)
        retried = store.retry(str(job.id))
        assert retried.state == JobState.QUEUED and [ready.id for ready in store.ready()] == [job.id]


# --- 15. A leftover partial download is not a model --------------------------------------------


def test_15_a_partial_download_or_conversion_leftover_is_not_reported_as_present(tmp_path):
    from daemon.doctor import check_models

    config = load_config(_config(tmp_path, '[models]\nwhisper = "large-v3"\ntranslator = "facebook/nllb-200-1.3B"\n'))
    faster_whisper = config.model_dir / "whisper" / "faster-whisper"
    (faster_whisper / ".large-v3.partial").mkdir(parents=True)
    (faster_whisper / ".large-v3.tmp-1234").mkdir()
    (config.model_dir / "ctranslate2" / ".facebook--nllb-200-1.3B-int8.tmp-77").mkdir(parents=True)
    checks = list(check_models(config, {}, reachable=lambda url: False))
    assert [check.ok for check in checks] == [False, False], checks
    (faster_whisper / "large-v3").mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (faster_whisper / "large-v3" / name).write_text("{}")
    checks = list(check_models(config, {}, reachable=lambda url: False))
    assert [check.ok for check in checks] == [True, False], checks


# --- 16. A reading command never migrates --------------------------------------------------------


def test_16_status_reads_an_older_database_without_migrating_it(tmp_path, capsys):
    from daemon.cli import main

    config = _config(tmp_path, "")
    database = tmp_path / "state" / "autokr.sqlite3"
    database.parent.mkdir()
    with Store(database) as store:
        store.add("/media/a.mkv", 1, 1)
    with sqlite3.connect(database) as connection:  # as the release before the outbox left it
        connection.execute("DROP TABLE outbox")
        connection.execute("DROP TABLE series_terms")
        connection.execute("DELETE FROM schema_migrations WHERE version >= 4")
    before = database.read_bytes()
    code = main(["--config", str(config), "status"])
    out, err = capsys.readouterr()
    with sqlite3.connect(database) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations")]
    assert versions == [1, 2, 3]
    assert database.read_bytes() == before
    assert code != 0 and "start the daemon once" in err and "Traceback" not in err


# --- 18. An implausible duration is refused at once --------------------------------------------


def test_18_a_container_claiming_a_trillion_seconds_is_not_a_plausible_video(tmp_path):
    video = make_video(tmp_path / "clip.mkv", seconds=1)
    data = bytearray(video.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Matroska's Duration element, an 8-byte float
    data[at + 3 : at + 11] = struct.pack(">d", 1e15)  # in milliseconds: 10^12 s
    video.write_bytes(bytes(data))
    with pytest.raises(PermanentError) as raised:
        probe(video)
    assert str(raised.value).startswith("not a plausible video")


# --- 19. Smaller ones -----------------------------------------------------------------------------


def test_19_devices_and_fifos_are_not_called_empty(tmp_path):
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        with pytest.raises(PermanentError) as raised:
            probe(path)
        assert "not a regular file" in str(raised.value)


def test_19_no_free_inodes_is_said_as_inodes(monkeypatch, tmp_path):
    real = os.statvfs(tmp_path)

    class NoInodes:
        def __getattr__(self, name: str) -> int:
            return {"f_favail": 3, "f_files": 1000}.get(name, getattr(real, name))

    monkeypatch.setattr(os, "statvfs", lambda path: NoInodes())
    problem = state_space_problem(tmp_path)
    assert problem is not None and "inodes" in problem and "KiB free" not in problem


def test_19_an_inbox_inside_a_hidden_folder_of_another_inbox_is_watched(tmp_path):
    outer = tmp_path / "library"
    inner = outer / ".sync" / "anime"
    inner.mkdir(parents=True)
    video = inner / "a.mkv"
    assert accept(video, (outer, inner), (".mkv",), False)
    assert not accept(outer / ".sync" / "b.mkv", (outer, inner), (".mkv",), False)


def test_19_media_pending_goes_once_the_server_is_no_longer_configured(tmp_path, store):
    from daemon.announcer import expire_unconfigured

    Teller(store, ("jellyfin",)).subtitles([Change("/media/a.ko.srt", "Created")])
    assert describe_pending(Outbox(store), store.clock()) is not None
    expire_unconfigured(Outbox(store), ())
    assert describe_pending(Outbox(store), store.clock()) is None


# --- 20. A person's Korean subtitle in another case or format counts --------------------------


@pytest.mark.parametrize("name", ["Video.KO.SRT", "Video.ko.ass", "Video.kor.srt", "Video.Korean.ssa"])
def test_20_a_korean_sidecar_in_another_case_or_format_is_found(tmp_path, name):
    from contract.subtitles import existing_sidecars

    (tmp_path / "Video.mkv").write_bytes(b"x")
    (tmp_path / name).write_text("1\n")
    (tmp_path / "Video.en.srt").write_text("1\n")
    (tmp_path / "Video 2.ko.srt").write_text("1\n")
    assert [path.name for path in existing_sidecars(tmp_path / "Video.mkv", "ko")] == [name]
