"""Telling Jellyfin, Plex and notification services: the HTTP each one is sent (to loopback
servers that speak their documented API), the outbox's debounce, backoff and refusal rules on a
real SQLite file, and Apprise itself."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from loguru import logger

from daemon.announcer import Announcer, Notifications, Outbox, Teller, describe_pending, queue_digest
from daemon.config import ConfigError, read_secret
from daemon.media_servers import Change, Jellyfin, Plex, Rejected, Unreachable, map_path
from daemon.store import Store
from testkit.clock import Clock
from testkit.servers import FakeServer


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "autokr.sqlite3", clock=Clock()) as opened:
        yield opened


@pytest.fixture
def jellyfin():
    server = FakeServer("jellyfin", libraries=["/media/anime"]).start()
    yield server
    server.stop()


@pytest.fixture
def plex():
    server = FakeServer("plex", key="plex-token", libraries=["/data/movies", "/data/anime"]).start()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_paths_are_mapped_by_the_longest_matching_prefix():
    mapping = (("/srv", "/x"), ("/srv/media", "/media"))
    assert map_path("/srv/media/Show/a.ko.srt", mapping) == "/media/Show/a.ko.srt"
    assert map_path("/srv/other/a.ko.srt", mapping) == "/x/other/a.ko.srt"
    assert map_path("/srv/mediathek/a.ko.srt", mapping) == "/x/mediathek/a.ko.srt"  # a prefix of parts, not text
    assert map_path("/elsewhere/a.ko.srt", mapping) == "/elsewhere/a.ko.srt"


def test_jellyfin_is_told_each_subtitle_by_path_with_the_token_in_a_header(jellyfin):
    client = Jellyfin(jellyfin.url, "secret-key", (("/srv/anime", "/media/anime"),))
    changes = [Change("/srv/anime/Show/01.ko.srt", "Created"), Change("/srv/anime/Show/02.ko.srt", "Deleted")]
    client.announce("/srv/anime/Show", changes)
    (call,) = jellyfin.calls("POST", "/Library/Media/Updated")
    assert call.body == {
        "Updates": [
            {"Path": "/media/anime/Show/01.ko.srt", "UpdateType": "Created"},
            {"Path": "/media/anime/Show/02.ko.srt", "UpdateType": "Deleted"},
        ]
    }
    assert call.headers["Authorization"] == 'MediaBrowser Token="secret-key"'
    assert "X-Emby-Token" not in call.headers and "secret-key" not in str(call.query)


def test_a_refused_key_and_a_server_that_is_down_say_so_without_the_key(jellyfin):
    with pytest.raises(Rejected) as refused:
        Jellyfin(jellyfin.url, "wrong-key").announce("/a", [Change("/a/b.ko.srt", "Created")])
    assert str(refused.value) == "Jellyfin rejected the API key (HTTP 401); check it in the config"
    with pytest.raises(Unreachable, match="^Jellyfin: connection refused$"):
        Jellyfin(f"http://127.0.0.1:{free_port()}", "wrong-key").announce("/a", [Change("/a/b.ko.srt", "Created")])


def test_plex_scans_the_folder_in_the_section_that_holds_it_and_reads_the_sections_once(plex):
    client = Plex(plex.url, "plex-token", (("/srv", "/data"),))
    client.announce("/srv/anime/Show", [Change("/srv/anime/Show/01.ko.srt", "Created")])
    client.announce("/srv/anime/Other Show", [Change("/srv/anime/Other Show/01.ko.srt", "Modified")])
    refreshes = plex.calls("GET", "/library/sections/2/refresh")
    assert [call.query["path"] for call in refreshes] == [["/data/anime/Show"], ["/data/anime/Other Show"]]
    assert len(plex.calls("GET", "/library/sections")) == 1  # cached
    assert all(call.headers["X-Plex-Token"] == "plex-token" for call in plex.requests)
    with pytest.raises(Unreachable, match="Plex has no library holding /data/music/x"):
        client.announce("/srv/music/x", [Change("/srv/music/x/a.ko.srt", "Created")])
    assert len(plex.calls("GET", "/library/sections")) == 2  # read again: a library added since?


def _announcer(store: Store, **senders) -> tuple[Announcer, Outbox]:
    return Announcer(lambda: store, senders), Outbox(store)


def test_subtitles_finishing_together_make_one_call_per_folder(store, jellyfin):
    clock = store.clock
    teller = Teller(store, ["jellyfin"])
    announcer, outbox = _announcer(store, jellyfin=Jellyfin(jellyfin.url, "secret-key"))
    teller.subtitles([Change(f"/media/anime/Show/{n:02}.ko.srt", "Created") for n in range(1, 11)])
    teller.subtitles([Change("/media/anime/Film/Film.ko.srt", "Created")])
    announcer.send_due(outbox)
    assert jellyfin.requests == []  # within the debounce: more may come
    clock.now += 5
    announcer.send_due(outbox)
    calls = jellyfin.calls("POST", "/Library/Media/Updated")
    assert sorted(len(call.body["Updates"]) for call in calls) == [1, 10]
    assert describe_pending(outbox, clock.now) is None
    announcer.send_due(outbox)
    assert len(jellyfin.calls("POST", "/Library/Media/Updated")) == 2  # sent once


def test_a_server_that_is_down_is_retried_with_backoff_and_status_says_so(store, jellyfin):
    clock = store.clock
    port = free_port()
    announcer, outbox = _announcer(store, jellyfin=Jellyfin(f"http://127.0.0.1:{port}", "secret-key"))
    Teller(store, ["jellyfin"]).subtitles([Change("/media/anime/Show/01.ko.srt", "Created")])
    clock.now += 5
    announcer.send_due(outbox)
    assert describe_pending(outbox, clock.now) == (
        "media: pending (jellyfin: Jellyfin: connection refused, retry in 30 s)"
    )
    clock.now += 29
    announcer.send_due(outbox)
    (entry,) = outbox.entries()
    assert entry.attempts == 1  # not yet
    clock.now += 1
    announcer.send_due(outbox)
    assert outbox.entries()[0].attempts == 2
    assert describe_pending(outbox, clock.now) == (
        "media: pending (jellyfin: Jellyfin: connection refused, retry in 60 s)"
    )
    back = FakeServer("jellyfin").start(port)  # the server comes back
    try:
        clock.now += 60
        announcer.send_due(outbox)
        assert len(back.calls("POST", "/Library/Media/Updated")) == 1
        assert outbox.entries() == [] and describe_pending(outbox, clock.now) is None
    finally:
        back.stop()


def test_a_refused_key_is_not_retried_until_the_config_is_reloaded_and_is_logged_once(store, jellyfin):
    clock = store.clock
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="WARNING")
    announcer, outbox = _announcer(store, jellyfin=Jellyfin(jellyfin.url, "wrong-key"))
    try:
        for episode in (1, 2):  # the second subtitle meets the same refusal
            Teller(store, ["jellyfin"]).subtitles([Change(f"/media/anime/Show/{episode:02}.ko.srt", "Created")])
            clock.now += 5
            announcer.send_due(outbox)
            clock.now += 3600
            announcer.send_due(outbox)
    finally:
        logger.remove(sink)
    assert len(jellyfin.requests) == 2  # one try each, no retry
    assert [line for line in logged if "rejected" in line] == [logged[0]] and len(logged) == 1
    assert "wrong-key" not in logged[0]
    assert describe_pending(outbox, clock.now) == (
        "media: pending (jellyfin: Jellyfin rejected the API key (HTTP 401); check it in the config)"
    )
    outbox.retry_now()  # what a reload or a restart does
    announcer, _ = _announcer(store, jellyfin=Jellyfin(jellyfin.url, "secret-key"))
    announcer.send_due(outbox)
    assert [call.headers["Authorization"] for call in jellyfin.requests][-1] == 'MediaBrowser Token="secret-key"'
    assert describe_pending(outbox, clock.now) is None


def test_a_server_that_hangs_is_given_up_on_after_the_timeout():
    hanging = FakeServer("jellyfin", hang=3).start()
    try:
        with pytest.raises(Unreachable, match="^Jellyfin: no answer within 0.5 s$"):
            Jellyfin(hanging.url, "secret-key", timeout=0.5).announce("/a", [Change("/a/b.ko.srt", "Created")])
    finally:
        hanging.stop()


def test_announcements_are_given_up_after_a_day(store):
    clock = store.clock
    announcer, outbox = _announcer(store, jellyfin=Jellyfin(f"http://127.0.0.1:{free_port()}", "k"))
    Teller(store, ["jellyfin"]).subtitles([Change("/a/b.ko.srt", "Created")])
    for _ in range(40):
        clock.now += 3600
        announcer.send_due(outbox)
    assert outbox.entries() == []
    (expired,) = outbox.entries("state = 'expired'")
    assert expired.last_error == "Jellyfin: connection refused" and expired.attempts < 40


def test_apprise_posts_the_message_and_a_refusal_is_a_failure_not_a_silence(store):
    hook = FakeServer("hook").start()
    try:
        notifications = Notifications([f"json://127.0.0.1:{hook.port}/autokr", "not a url"])
        assert notifications.invalid == [2]
        Teller(store, ["notify"]).message("/a/Show - 01.mkv", "AutoKR: subtitles ready", "Show - 01.ko.srt")
        announcer, outbox = _announcer(store, notify=notifications)
        store.clock.now += 5
        announcer.send_due(outbox)
        (call,) = hook.calls("POST", "/autokr")
        assert (call.body["title"], call.body["message"]) == ("AutoKR: subtitles ready", "Show - 01.ko.srt")
        hook.fail_with = 500
        Teller(store, ["notify"]).message("/a/Show - 02.mkv", "AutoKR: a video failed", "Show - 02.mkv: no audio")
        store.clock.now += 5
        announcer.send_due(outbox)
        assert "a notification service did not accept the message" in describe_pending(outbox, store.clock.now)
    finally:
        hook.stop()


def test_the_daily_digest_comes_a_day_after_it_is_turned_on(store):
    outbox = Outbox(store)
    assert not queue_digest(outbox, store.clock())  # the first day starts now
    store.clock.now += 3600
    assert not queue_digest(outbox, store.clock())
    store.clock.now += 86400
    assert queue_digest(outbox, store.clock())
    (digest,) = outbox.entries()
    assert digest.payload["body"] == "0 video(s) got subtitles and 0 failed in the last 24 hours"


def test_keys_come_from_a_file_or_a_systemd_credential_and_errors_never_show_them(tmp_path, monkeypatch):
    (tmp_path / "jellyfin.key").write_text("from-a-file\n")
    assert read_secret("", str(tmp_path / "jellyfin.key"), "[jellyfin] api_key_file") == "from-a-file"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("", "credential:jellyfin.key", "[jellyfin] api_key_file") == "from-a-file"
    with pytest.raises(ConfigError, match="cannot read .*/plex.key"):
        read_secret("", "credential:plex.key", "[plex] token_file")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="not started by systemd with it .LoadCredential=plex"):
        read_secret("", "credential:plex", "[plex] token_file")


def test_a_key_file_that_cannot_be_read_leaves_that_server_out_and_says_why(tmp_path):
    from daemon.announcer import senders_for

    (tmp_path / "plex.token").write_text("plex-token\n")
    config = tmp_path / "autokr.toml"
    config.write_text(
        '[jellyfin]\nurl = "http://127.0.0.1:8096"\napi_key_file = "/nonexistent/jellyfin.key"\n'
        f'[plex]\nurl = "http://127.0.0.1:32400"\ntoken_file = "{tmp_path / "plex.token"}"\n',
        encoding="utf-8",
    )
    from daemon.config import load_config

    senders, problems = senders_for(load_config(config, need_inbox=False, need_state_dir=False))
    assert list(senders) == ["plex"]
    assert problems == [
        "Jellyfin is not told: [jellyfin] api_key_file: "
        "cannot read /nonexistent/jellyfin.key (No such file or directory)"
    ]
