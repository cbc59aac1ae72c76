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

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol
from xml.etree import ElementTree

from contract.errors import AutoKRError

TIMEOUT_SECONDS = 10.0
CHANGES = ("Created", "Modified", "Deleted")


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
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the configured URL
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise Rejected(f"{server} rejected the {key_name} (HTTP {error.code}); check it in the config") from None
        raise Unreachable(f"{server} answered HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ConnectionRefusedError):
            text = "connection refused"
        elif isinstance(reason, TimeoutError):
            text = f"no answer within {timeout:g} s"
        elif isinstance(reason, socket.gaierror):
            text = "its host name does not resolve"
        else:
            text = str(getattr(reason, "strerror", None) or reason)
        raise Unreachable(f"{server}: {text}") from None
    except TimeoutError:
        raise Unreachable(f"{server}: no answer within {timeout:g} s") from None
    except OSError as error:
        raise Unreachable(f"{server}: {error.strerror or error}") from None


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

    def check(self, probe_path: str) -> list[str]:
        self._call("GET", "/System/Info")
        folders = json.loads(self._call("GET", "/Library/VirtualFolders") or b"[]")
        locations = [str(location) for folder in folders for location in folder.get("Locations", [])]
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
        except ElementTree.ParseError as error:
            raise Unreachable(f"Plex answered something that is not its section list ({error})") from None
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
        self._get(f"/library/sections/{section}/refresh?path={urllib.parse.quote(mapped, safe='')}")

    def check(self, probe_path: str) -> list[str]:
        mapped = map_path(probe_path, self.path_map)
        if self.section_for(mapped) is not None:
            return []
        locations = [location for _, found in self._sections or [] for location in found]
        return [f"{probe_path} is {mapped} for Plex, in none of its libraries ({', '.join(locations) or 'none'})"]
