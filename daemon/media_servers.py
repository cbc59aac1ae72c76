"""Telling Jellyfin and Plex that a subtitle appeared, changed or went, in a few lines of HTTP.

A watch-folder daemon knows paths, not item ids, so both calls are path-based:

- Jellyfin: ``POST /Library/Media/Updated`` with ``{"Updates": [{"Path": …, "UpdateType":
  "Created"|"Modified"|"Deleted"}]}`` and ``Authorization: MediaBrowser Token="…"`` (204).
  Jellyfin then refreshes the parent folder after its ``LibraryMonitorDelay`` (60 s by default)
  and probes the video's external subtitles again.
- Plex: the library section whose location holds the folder (``GET /library/sections``, cached,
  read again when no section matches), then a partial scan of that folder: ``GET
  /library/sections/{id}/refresh?path=…``, what plexapi's ``LibrarySection.update(path=…)``
  sends. Refreshing the item itself (``PUT /library/metadata/{ratingKey}/refresh``) would need
  its ratingKey, which Plex gives by path only through a listing of the whole section: not a
  bounded lookup on a large library, so AutoKR does not do it.

Why not plexapi: it would add ~4 MB and ``requests`` to the daemon for two GET requests. The
calls run on the announcer's thread (``daemon/announcer.py``), never on the main loop.

Keys and tokens travel only in headers: never in a URL, a log line or an error message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol
from xml.etree import ElementTree

from contract.errors import AutoKRError
from contract.protocol import printable

TIMEOUT_SECONDS = 10.0
"""The whole of one call, connect to last byte."""
MAX_REPLY_BYTES = 4_000_000
"""Jellyfin's and Plex's answers to these calls are a few KB; a library list of thousands of
folders stays far below this."""


class ServerError(AutoKRError):
    """A media server could not be told; ``retry`` says whether trying again later may help."""

    retry = True


class Unreachable(ServerError):
    """Connection refused, no answer in time, or a server error: tried again with backoff."""


class Rejected(ServerError):
    """The server refused the key or token (HTTP 401/403): not retried until the config changes."""

    retry = False


PathMap = tuple[tuple[str, str], ...]


def map_path(path: str, path_map: PathMap) -> str:
    """``path`` as the server sees it: the longest matching prefix of ``path_map`` replaced."""
    candidate = PurePosixPath(path)
    for ours, theirs in sorted(path_map, key=lambda pair: len(pair[0]), reverse=True):
        if candidate.is_relative_to(ours):
            return str(PurePosixPath(theirs) / candidate.relative_to(ours))
    return path


@dataclass(frozen=True)
class Change:
    subtitle: str
    """The subtitle's path as AutoKR sees it."""
    kind: str
    """``Created``, ``Modified`` or ``Deleted``."""


class MediaServer(Protocol):
    name: str
    """``jellyfin`` or ``plex``: the config section and what ``status`` shows."""

    def announce(self, folder: str, changes: Sequence[Change]) -> None:
        """Tells the server about ``changes``, all in ``folder``.

        Raises:
            Unreachable: to be retried later.
            Rejected: the key was refused.
        """

    def check(self, probe_path: str) -> list[str]:
        """For ``autokr doctor``: reachable, key accepted, ``probe_path`` inside a library.
        Returns what is wrong with the mapping (empty: nothing); raises like ``announce``."""


def _request(
    server: str,
    key_name: str,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> bytes:
    """One HTTP call, bounded in every way a server can stretch it: ``timeout`` is the whole
    call's deadline (connect, headers and body together: a server that trickles a byte every
    few seconds is cut off), the answer is read up to ``MAX_REPLY_BYTES``, and a redirect is a
    failure, never followed (the key would go with it to wherever it points). Anything at all
    that goes wrong is ``Unreachable`` (or ``Rejected``) with one sentence, so one bad server
    never stops the others.
    """
    parts = urllib.parse.urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        port = parts.port
    except ValueError:
        raise Unreachable(f"{server}: the port in its url is not a number; check url in the config") from None
    connection = connection_class(parts.hostname or "", port, timeout=timeout)
    cut = threading.Event()
    deadline = threading.Timer(timeout, _cut, (connection, cut))
    deadline.daemon = True
    deadline.start()
    try:
        connection.request(method, target or "/", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(MAX_REPLY_BYTES + 1)
        if cut.is_set():  # what came before the deadline is not the whole answer
            raise TimeoutError
    except TimeoutError:
        raise Unreachable(f"{server}: no answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise Unreachable(f"{server}: connection refused") from None
    except socket.gaierror:
        raise Unreachable(f"{server}: its host name does not resolve") from None
    except (http.client.HTTPException, ValueError) as error:
        if cut.is_set():
            raise Unreachable(f"{server}: no answer within {timeout:g} s") from None
        raise Unreachable(f"{server} did not answer as {server} does ({type(error).__name__}); check its url") from None
    except OSError as error:
        if cut.is_set():
            raise Unreachable(f"{server}: no answer within {timeout:g} s") from None
        raise Unreachable(f"{server}: {error.strerror or type(error).__name__}") from None
    finally:
        deadline.cancel()
        connection.close()
    if len(data) > MAX_REPLY_BYTES:
        raise Unreachable(f"{server} answered more than {MAX_REPLY_BYTES // 1_000_000} MB; check its url")
    if response.status in (401, 403):
        raise Rejected(f"{server} rejected the {key_name} (HTTP {response.status}); check it in the config")
    if 300 <= response.status < 400:
        location = _without_secrets(response.getheader("Location") or "")
        raise Unreachable(f"{server} redirected to {location or 'another address'}; set url to the final address")
    if response.status >= 400:
        raise Unreachable(f"{server} answered HTTP {response.status} {response.reason}")
    return data


def _cut(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """The deadline passed: the blocked read ends (with an error) when the socket is shut."""
    cut.set()
    with contextlib.suppress(OSError, AttributeError):
        connection.sock.shutdown(socket.SHUT_RDWR)


def _without_secrets(url: str) -> str:
    """``scheme://host:port/path`` of a URL, without a user, password or query that may hold a key."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return ""
    return printable(f"{parts.scheme}://{host}{port}{parts.path}" if host else parts.path)


def _json(server: str, data: bytes, kind: type) -> Any:
    """The answer parsed as JSON of ``kind`` (list, dict), else ``Unreachable``: a login page or
    another program on the port is a server that does not answer, not a crash."""
    try:
        value = json.loads(data or (b"[]" if kind is list else b"{}"))
    except ValueError:
        value = None
    if not isinstance(value, kind):
        raise Unreachable(f"{server} did not answer as {server} does (not the JSON it sends); check its url")
    return value


def _inside(path: str, folders: list[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(folder) for folder in folders if folder)


class Jellyfin:
    name = "jellyfin"

    def __init__(self, url: str, api_key: str, path_map: PathMap = (), timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.path_map = path_map
        self.timeout = timeout
        self._headers = {"Authorization": f'MediaBrowser Token="{api_key}"', "Accept": "application/json"}

    def _call(self, method: str, path: str, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {**self._headers, **({"Content-Type": "application/json"} if data is not None else {})}
        return _request("Jellyfin", "API key", method, self.url + path, headers, data, self.timeout)

    def announce(self, folder: str, changes: Sequence[Change]) -> None:
        updates = [{"Path": map_path(change.subtitle, self.path_map), "UpdateType": change.kind} for change in changes]
        self._call("POST", "/Library/Media/Updated", {"Updates": updates})

    def item_path(self, item: str) -> str | None:
        """The file of item ``item`` as Jellyfin sees it (a webhook names only the item)."""
        query = f"/Items?Ids={urllib.parse.quote(item, safe='')}&Fields=Path"
        found = _json("Jellyfin", self._call("GET", query), dict)
        items = found.get("Items")
        first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
        path = first.get("Path")
        return path if isinstance(path, str) and path else None

    def check(self, probe_path: str) -> list[str]:
        _json("Jellyfin", self._call("GET", "/System/Info"), dict)
        folders = _json("Jellyfin", self._call("GET", "/Library/VirtualFolders"), list)
        locations = [
            str(location)
            for folder in folders
            if isinstance(folder, dict) and isinstance(folder.get("Locations"), list)
            for location in folder["Locations"]
        ]
        mapped = map_path(probe_path, self.path_map)
        if _inside(mapped, locations):
            return []
        return [f"{probe_path} is {mapped} for Jellyfin, in none of its libraries ({', '.join(locations) or 'none'})"]


class Plex:
    name = "plex"

    def __init__(self, url: str, token: str, path_map: PathMap = (), timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.path_map = path_map
        self.timeout = timeout
        self._headers = {"X-Plex-Token": token}
        self._sections: list[tuple[str, list[str]]] | None = None

    def _get(self, path: str) -> bytes:
        return _request("Plex", "token", "GET", self.url + path, self._headers, timeout=self.timeout)

    def _read_sections(self) -> list[tuple[str, list[str]]]:
        """``<MediaContainer><Directory key="2"><Location path="/data/anime"/>…``: Plex's own
        answer (XML, its default)."""
        try:
            container = ElementTree.fromstring(self._get("/library/sections"))
        except ElementTree.ParseError:
            raise Unreachable("Plex did not answer as Plex does (not its section list); check its url") from None
        return [
            (str(directory.get("key")), [str(location.get("path", "")) for location in directory.iter("Location")])
            for directory in container.iter("Directory")
        ]

    def section_for(self, folder: str) -> str | None:
        """The id of the library section holding ``folder`` (as Plex sees it); the sections are
        read once and again only when none matches (a library added since)."""
        if self._sections is None:
            self._sections = self._read_sections()
        found = self._match(folder)
        if found is None:
            self._sections = self._read_sections()
            found = self._match(folder)
        return found

    def _match(self, folder: str) -> str | None:
        return next((key for key, locations in self._sections or [] if _inside(folder, locations)), None)

    def announce(self, folder: str, changes: Sequence[Change]) -> None:
        mapped = map_path(folder, self.path_map)
        section = self.section_for(mapped)
        if section is None:
            raise Unreachable(f"Plex has no library holding {mapped}; check [plex] path_map")
        # The folder's bytes as the file system has them (a Shift-JIS name is not UTF-8).
        self._get(f"/library/sections/{section}/refresh?path={urllib.parse.quote(os.fsencode(mapped), safe='')}")

    def item_path(self, item: str) -> str | None:
        """The file of the item with ratingKey ``item`` as Plex sees it (``<Part file="…">``)."""
        try:
            container = ElementTree.fromstring(self._get(f"/library/metadata/{urllib.parse.quote(item, safe='')}"))
        except ElementTree.ParseError:
            raise Unreachable("Plex did not answer as Plex does (not its item); check its url") from None
        part = next(container.iter("Part"), None)
        file = part.get("file") if part is not None else None
        return file or None

    def check(self, probe_path: str) -> list[str]:
        mapped = map_path(probe_path, self.path_map)
        if self.section_for(mapped) is not None:
            return []
        locations = [location for _, found in self._sections or [] for location in found]
        return [f"{probe_path} is {mapped} for Plex, in none of its libraries ({', '.join(locations) or 'none'})"]
