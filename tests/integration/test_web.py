"""The listening socket, over real HTTP on loopback: each service's documented webhook, what is
refused (a wrong secret, a path outside the inboxes, an oversized body, a slowloris client), and
the status stream holding hundreds of idle connections."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from pathlib import Path

import pytest
from loguru import logger

from daemon.config import load_config
from daemon.hooks import Hook
from daemon.web import MAX_BODY_BYTES, WebListener
from testkit.daemon import write_config
from testkit.servers import FakeServer

TOKEN = "a-long-enough-shared-secret-0123"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def web(tmp_path: Path, tiny_whisper: Path, tiny_nllb: Path):
    """A listener for an inbox with a show in it, Jellyfin and Plex (loopback fakes) configured
    with a path map, as a daemon in a container would see them."""
    inbox = tmp_path / "inbox"
    (inbox / "Show").mkdir(parents=True)
    for number in (1, 2):
        (inbox / "Show" / f"Show - S01E0{number}.mkv").write_bytes(b"video")
    jellyfin = FakeServer("jellyfin", items={"e1": "/media/Show/Show - S01E01.mkv", "far": "/etc/passwd.mkv"}).start()
    plex = FakeServer("plex", items={"1234": "/data/Show/Show - S01E02.mkv"}).start()
    sections = {
        "web": {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN, "path_map": [[str(inbox), "/tv"]]},
        "jellyfin": {"url": jellyfin.url, "api_key": jellyfin.key, "path_map": [[str(inbox), "/media"]]},
        "plex": {"url": plex.url, "token": plex.key, "path_map": [[str(inbox), "/data"]]},
    }
    config = load_config(write_config(tmp_path / "autokr.toml", inbox, tmp_path / "state", tiny_whisper, tiny_nllb,
                                      sections=sections))  # fmt: skip
    hooks: queue.SimpleQueue[Hook] = queue.SimpleQueue()
    listener = WebListener(config, hooks, threading.Event())
    listener.start()
    yield listener, hooks, inbox
    listener.stop()
    jellyfin.stop()
    plex.stop()


def call(listener: WebListener, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=10)
    try:
        connection.request(
            method, path, body=body or None, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        )
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"null"), dict(answer.getheaders())
    finally:
        connection.close()


def drained(hooks: queue.SimpleQueue[Hook]) -> list[Hook]:
    found = []
    while not hooks.empty():
        found.append(hooks.get_nowait())
    return found


def test_each_service_s_webhook_reaches_the_daemon_as_a_video_in_its_inbox(web):
    listener, hooks, inbox = web
    first, second = inbox / "Show" / "Show - S01E01.mkv", inbox / "Show" / "Show - S01E02.mkv"
    jellyfin = json.dumps({"NotificationType": "PlaybackStart", "ItemId": "e1", "ItemType": "Episode"})
    assert call(listener, "POST", "/hooks/jellyfin", jellyfin.encode())[0] == 202
    boundary = "------------------------d74496d66958873e"
    plex = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="payload"\r\nContent-Type: application/json\r\n\r\n'
        + json.dumps({"event": "media.play", "Metadata": {"ratingKey": "1234", "type": "episode"}})
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="thumb"; filename="thumb.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n" + "\xff\xd8\xff\xe0" * 20000 + f"\r\n--{boundary}--\r\n"
    ).encode("latin-1")  # with a poster of 80 KB, as Plex sends
    status, answer, _ = call(
        listener, "POST", "/hooks/plex", plex, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert (status, answer["accepted"]) == (202, "play")
    sonarr = {
        "eventType": "Download",
        "series": {"path": "/tv/Show"},
        "episodeFile": {"path": "/tv/Show/Show - S01E01.mkv"},
    }
    basic = base64.b64encode(f"sonarr:{TOKEN}".encode()).decode()  # Sonarr's username/password fields
    status, _, _ = call(
        listener, "POST", "/hooks/sonarr", json.dumps(sonarr).encode(), {"Authorization": f"Basic {basic}"}
    )
    assert status == 202
    radarr = {"eventType": "Test", "movie": {"folderPath": "/tv/Film"}}
    assert call(listener, "POST", "/hooks/radarr", json.dumps(radarr).encode())[:2] == (200, {"ignored": "Test"})
    assert drained(hooks) == [
        Hook("play", first, "jellyfin"),
        Hook("play", second, "plex"),
        Hook("import", first, "sonarr"),
    ]


def test_what_is_refused_is_answered_in_words_and_queues_nothing(web):
    listener, hooks, inbox = web
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        wrong = json.dumps({"eventType": "Download", "episodeFile": {"path": "/tv/Show/Show - S01E01.mkv"}}).encode()
        for _ in range(5):
            status, _, headers = call(
                listener, "POST", "/hooks/sonarr", wrong, {"Authorization": "Bearer guessed-secret"}
            )
            assert status == 401 and "Basic" in headers["www-authenticate"]
        assert call(listener, "POST", "/hooks/sonarr", wrong, {"Authorization": ""})[0] == 401
        outside = json.dumps({"NotificationType": "PlaybackStart", "ItemId": "far"}).encode()
        status, answer, _ = call(listener, "POST", "/hooks/jellyfin", outside)
        assert status == 403 and answer["error"] == "not a video in one of AutoKR's inboxes"
        escape = {"eventType": "Download", "episodeFile": {"path": "/tv/../../etc/shadow.mkv"}}
        assert call(listener, "POST", "/hooks/sonarr", json.dumps(escape).encode())[0] == 403
        assert call(listener, "POST", "/hooks/sonarr", b"[not json")[0] == 400
        assert call(listener, "GET", "/hooks/sonarr")[0] == 405
        assert call(listener, "POST", "/hooks/emby", b"{}")[0] == 404
        unknown = json.dumps({"NotificationType": "PlaybackStart", "ItemId": "nothing"}).encode()
        assert call(listener, "POST", "/hooks/jellyfin", unknown)[0] == 422
    finally:
        logger.remove(sink)
    assert drained(hooks) == []
    refusals = [line for line in lines if "without the [web] token" in line]
    assert len(refusals) == 1  # six wrong secrets, one line
    assert not any("guessed-secret" in line or TOKEN in line for line in lines)

    with socket.create_connection(("127.0.0.1", listener.port)) as client:  # a body larger than allowed
        client.sendall(
            b"POST /hooks/sonarr HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nContent-Length: " + str(MAX_BODY_BYTES + 1).encode() + b"\r\n\r\n"
        )  # fmt: skip
        assert client.recv(4096).startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(("127.0.0.1", listener.port)) as client:  # chunked, growing past it
        client.sendall(b"POST /hooks/sonarr HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                       + b"\r\nTransfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"x" * 65536
        try:
            for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
                client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # closed on us: that is the answer
        assert client.recv(4096).startswith(b"HTTP/1.1 413 ")


def test_a_slowloris_client_is_cut_off_and_others_are_served_meanwhile(web):
    listener, hooks, _ = web
    listener.request_seconds = 1.5
    slow = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(50)]
    started = time.monotonic()
    for client in slow:
        client.sendall(b"POST /hooks/sonarr HTTP/1.1\r\nHost: x\r\n")
    for _ in range(4):  # a header line now and then, never the end of the head
        assert call(listener, "GET", "/api/v1/health")[0] == 200  # others are answered meanwhile
        time.sleep(0.3)
        for client in slow:
            with contextlib.suppress(OSError):
                client.sendall(b"X-Slow: 1\r\n")
    answers = []
    for client in slow:
        client.settimeout(5)
        answers.append(client.recv(4096))
        client.close()
    took = time.monotonic() - started
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[0]
    assert took < 1.5 + 3, f"cut off after {took:.1f} s"
    settled(listener)


def settled(listener: WebListener) -> None:
    """Waits until every connection the listener held is closed."""
    deadline = time.monotonic() + 10
    while listener.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.connections == 0


def test_the_status_stream_holds_three_hundred_idle_clients_and_each_gets_an_event(web):
    listener, _, _ = web
    clients = []
    for _ in range(300):
        client = socket.create_connection(("127.0.0.1", listener.port))
        client.sendall(
            b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
        )
        clients.append(client)
    deadline = time.monotonic() + 10
    while listener.connections < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.connections == 300
    listener.publish("counts", {"done": 3, "queued": 9})
    for client in clients:
        client.settimeout(10)
        received = b""
        while b"data: " not in received:
            received += client.recv(4096)
        assert b"text/event-stream" in received and b"event: counts\r\n" not in received
        assert b'event: counts\ndata: {"done": 3, "queued": 9}' in received
        client.close()
    settled(listener)
    wrong = socket.create_connection(("127.0.0.1", listener.port))
    wrong.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wrong.recv(4096).startswith(b"HTTP/1.1 401 ")
    wrong.close()


def test_doctor_says_whether_the_running_daemon_answers_with_the_token(web, tmp_path):
    from dataclasses import replace

    from daemon.doctor import check_web

    listener, _, inbox = web
    config = load_config(tmp_path / "autokr.toml")
    (check,) = check_web(config)
    assert check.ok and check.detail == "AutoKR answers and takes the token"
    (check,) = check_web(replace(config, web=replace(config.web, token="another-secret-of-enough-length")))
    assert not check.ok and "refuses the [web] token" in check.detail
    listener.stop()
    (check,) = check_web(config)
    assert not check.ok and check.detail.startswith("nothing answers")
