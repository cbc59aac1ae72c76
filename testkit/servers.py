"""Loopback HTTP servers that speak the documented parts of Jellyfin's and Plex's APIs AutoKR
uses, and a plain JSON webhook (what Apprise's ``json://`` posts to). No registry here ships
Jellyfin or Plex, so these stand in for them; each records every request it was sent and
listens on 127.0.0.1 only.

- Jellyfin: ``POST /Library/Media/Updated`` (204; 401 without ``Authorization: MediaBrowser
  Token="<key>"``), ``GET /System/Info``, ``GET /Library/VirtualFolders`` (``Locations``).
- Plex: ``GET /library/sections`` (its XML: ``<MediaContainer><Directory key="1"><Location
  path="…"/>``), ``GET /library/sections/{key}/refresh?path=…`` (200); 401 without the
  ``X-Plex-Token`` header.

Each can be told to fail (``fail_with``: a status for every request), hang (``hang``: seconds
before it answers), redirect (``redirect_to``: a 302 to that URL) or answer ``raw`` (a fixed
body, e.g. an HTML login page); a wrong key gets 401. ``HostileServer`` speaks worse than that:
an SSH banner, a reply that trickles or never ends.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_path: str = ""
    """The request target exactly as sent (percent-escapes kept)."""


def serve_loopback(handler: type[BaseHTTPRequestHandler], port: int = 0) -> ThreadingHTTPServer:
    """``handler`` serving on 127.0.0.1 (``port`` 0: any free one) from a thread of its own."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Loopback:
    """What the loopback fakes share: one server on 127.0.0.1 in a thread of its own, and its stop."""

    _server: ThreadingHTTPServer | None = None
    port = 0

    def _serve(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self._server = serve_loopback(handler, port)
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class FakeServer(Loopback):
    kind: str
    """``jellyfin``, ``plex`` or ``hook``."""
    key: str = "secret-key"
    libraries: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    fail_with: int | None = None
    """Answer every request with this status (a server in trouble)."""
    hang: float = 0.0
    """Wait this long before answering (a server that hangs)."""
    redirect_to: str | None = None
    """Answer every request with ``302 Location: <this>``."""
    raw: tuple[int, str, bytes] | None = None
    """Answer every request with (status, content type, body)."""
    items: dict[str, str] = field(default_factory=dict)
    """Item id (Jellyfin) or ratingKey (Plex) → its file, as the server sees it."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                body = json.loads(raw) if raw and "json" in (self.headers.get("Content-Type") or "") else raw
                request = Request(
                    self.command, parts.path, urllib.parse.parse_qs(parts.query), dict(self.headers), body, self.path
                )
                fake.requests.append(request)
                if fake.hang:
                    time.sleep(fake.hang)
                if fake.redirect_to is not None or fake.raw is not None:
                    status, kind, data = fake.raw or (302, "text/html", b"")
                    self.send_response(status)
                    if fake.redirect_to is not None:
                        self.send_header("Location", fake.redirect_to)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                status, payload = fake.respond(request)
                xml = isinstance(payload, str)
                data = payload.encode() if xml else json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/xml" if xml else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 - the stdlib's names

        self._serve(Handler, port)
        return self

    def respond(self, request: Request) -> tuple[int, Any]:
        if self.fail_with is not None:
            return self.fail_with, None
        if self.kind == "hook":
            return 200, {"ok": True}
        if self.kind == "jellyfin":
            if request.headers.get("Authorization") != f'MediaBrowser Token="{self.key}"':
                return 401, None
            if (request.method, request.path) == ("POST", "/Library/Media/Updated"):
                return 204, None
            if request.path == "/System/Info":
                return 200, {"ServerName": "fake", "Version": "10.10.7"}
            if request.path == "/Library/VirtualFolders":
                return 200, [{"Name": "Anime", "Locations": self.libraries}]
            if request.path == "/Items":  # GET /Items?Ids=…&Fields=Path, as Jellyfin's API documents
                wanted = request.query.get("Ids", [""])[0].split(",")
                found = [
                    {"Id": item, "Path": self.items[item], "Type": "Episode"} for item in wanted if item in self.items
                ]
                return 200, {"Items": found, "TotalRecordCount": len(found), "StartIndex": 0}
            return 404, None
        if request.headers.get("X-Plex-Token") != self.key:
            return 401, None
        if request.path == "/library/sections":  # Plex's XML, its default answer
            directories = "".join(
                f'<Directory allowSync="1" key="{number}" type="show" title="Library {number}">'
                f'<Location id="{number}" path="{html.escape(path)}" /></Directory>'
                for number, path in enumerate(self.libraries, 1)
            )
            return 200, (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<MediaContainer size="{len(self.libraries)}" title1="Plex Library">{directories}</MediaContainer>'
            )
        if re.fullmatch(r"/library/sections/\d+/refresh", request.path):
            return 200, None
        matched = re.fullmatch(r"/library/metadata/(\w+)", request.path)
        if matched and matched.group(1) in self.items:  # an item's metadata: its Media, its Part's file
            file = html.escape(self.items[matched.group(1)])
            return 200, (
                '<?xml version="1.0" encoding="UTF-8"?>\n<MediaContainer size="1">'
                f'<Video ratingKey="{matched.group(1)}" type="episode" title="Episode">'
                f'<Media id="1" duration="3000"><Part id="1" key="/library/parts/1/file.mkv" file="{file}" />'
                "</Media></Video></MediaContainer>"
            )
        return 404, None

    def calls(self, method: str, path: str) -> list[Request]:
        return [request for request in self.requests if (request.method, request.path) == (method, path)]


class HostileServer:
    """A loopback TCP server that speaks badly on purpose, to every connection:

    - ``banner``: sends these bytes and closes (an SSH server on the configured port);
    - ``trickle``: valid HTTP headers, then one byte of body every ``interval`` seconds, for good;
    - ``flood``: valid headers claiming ``claimed`` bytes, then sends 1 MB chunks until the
      client hangs up or ``limit`` bytes went out.

    ``sent`` counts the body bytes written; every loop stops when ``stop()`` is called.
    """

    def __init__(self, mode: str, banner: bytes = b"SSH-2.0-OpenSSH_9.6\r\n", interval: float = 1.0,
                 claimed: int = 1_500_000_000, limit: int = 200_000_000) -> None:  # fmt: skip
        import socket

        self.mode, self.banner, self.interval, self.claimed, self.limit = mode, banner, interval, claimed, limit
        self.sent = 0
        self.connections = 0
        self.stopping = threading.Event()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: Any) -> None:
        with connection:
            try:
                connection.settimeout(2)
                with_body = self.mode != "banner"
                if with_body:
                    connection.recv(65536)
                if self.mode == "banner":
                    connection.sendall(self.banner)
                    return
                length = self.claimed if self.mode == "flood" else 10**9
                connection.sendall(
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
                )
                chunk = b"[" + b" " * (1024 * 1024 - 1) if self.mode == "flood" else b" "
                while not self.stopping.is_set() and self.sent < self.limit:
                    connection.sendall(chunk)
                    self.sent += len(chunk)
                    if self.mode == "trickle":
                        self.stopping.wait(self.interval)
            except OSError:
                return

    def stop(self) -> None:
        self.stopping.set()
        self._socket.close()
