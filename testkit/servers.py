"""Loopback HTTP servers that speak the documented parts of Jellyfin's and Plex's APIs AutoKR
uses, and a plain JSON webhook (what Apprise's ``json://`` posts to). No registry here ships
Jellyfin or Plex, so these stand in for them; each records every request it was sent and
listens on 127.0.0.1 only.

- Jellyfin: ``POST /Library/Media/Updated`` (204; 401 without ``Authorization: MediaBrowser
  Token="<key>"``), ``GET /System/Info``, ``GET /Library/VirtualFolders`` (``Locations``).
- Plex: ``GET /library/sections`` (its XML: ``<MediaContainer><Directory key="1"><Location
  path="…"/>``), ``GET /library/sections/{key}/refresh?path=…`` (200); 401 without the
  ``X-Plex-Token`` header.

Each can be told to fail (``fail_with``: a status for every request) or hang (``hang``: seconds
before it answers); a wrong key gets 401.
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


@dataclass
class FakeServer:
    kind: str
    """``jellyfin``, ``plex`` or ``hook``."""
    key: str = "secret-key"
    libraries: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    fail_with: int | None = None
    """Answer every request with this status (a server in trouble)."""
    hang: float = 0.0
    """Wait this long before answering (a server that hangs)."""

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

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
                    self.command, parts.path, urllib.parse.parse_qs(parts.query), dict(self.headers), body
                )
                fake.requests.append(request)
                if fake.hang:
                    time.sleep(fake.hang)
                status, payload = fake.respond(request)
                xml = isinstance(payload, str)
                data = payload.encode() if xml else json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/xml" if xml else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 - the stdlib's names

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

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
        return 404, None

    def calls(self, method: str, path: str) -> list[Request]:
        return [request for request in self.requests if (request.method, request.path) == (method, path)]
