"""Webhooks from the media servers and the *arr apps, read as "someone is about to watch this"
(``play``) or "this file is complete" (``import``), and mapped to a video in an inbox.

The payloads, as each service documents them:

- Jellyfin's Webhook plugin (a "Generic" destination; its template is the person's, so only the
  variables the plugin documents are read): ``{"NotificationType": "PlaybackStart" |
  "ItemAdded", "ItemId": "…", "ItemType": "Episode"}``. The item's file comes from Jellyfin's
  API (``GET /Items?Ids=…&Fields=Path``) with the ``[jellyfin]`` key AutoKR already has.
- Plex: ``multipart/form-data`` whose ``payload`` part is JSON, ``{"event": "media.play" |
  "media.resume" | "library.new", "Metadata": {"ratingKey": "…", "type": "episode"}}``. The
  file comes from ``GET /library/metadata/{ratingKey}`` (``<Part file="…">``) with the
  ``[plex]`` token.
- Sonarr and Radarr, "On Import" and "On Upgrade" (``eventType: "Download"``):
  ``episodeFile.path`` / ``movieFile.path`` (or the series' or movie's folder and the file's
  ``relativePath``). ``Test`` is answered, nothing more.

Every path is then mapped back through the service's ``path_map`` (theirs → AutoKR's) and
acted on only when it lies in an inbox (``within_inboxes``): a webhook can never make AutoKR
read a file elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path, PurePosixPath
from typing import Any

from loguru import logger

from contract.protocol import JsonObject, printable
from daemon import discovery
from daemon.announcer import server_from_config
from daemon.config import Config
from daemon.errors import ConfigError
from daemon.media_servers import PathMap, ServerError, map_path

SERVICES = ("jellyfin", "plex", "sonarr", "radarr")
PLAY, IMPORT = "play", "import"


class HookRefused(Exception):
    """The request is understood and refused: ``status`` is the HTTP answer, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Event:
    """What a webhook asks, before its file is known."""

    kind: str | None
    """``play``, ``import``, or None: an event AutoKR does not act on (answered 200)."""
    path: str | None = None
    """The file, as the service sees it, when the payload names it (Sonarr, Radarr)."""
    item: str | None = None
    """The server's item id, when the payload names only that (Jellyfin, Plex)."""
    name: str = ""
    """The service's own name for the event, for the log."""


@dataclass(frozen=True)
class Action:
    """A person's request from the status page (or the API), for the daemon's loop."""

    kind: str
    """``retry`` (a failed video, at the stage that failed) or ``front`` (a waiting video first)."""
    job_id: int


@dataclass(frozen=True)
class Hook:
    """A webhook's request, for the daemon's loop: a video in an inbox, and what to do."""

    kind: str
    path: Path
    service: str


@dataclass(frozen=True)
class Answer:
    status: int
    body: JsonObject


class Resolver:
    """From a webhook's body to a ``Hook`` (or why not), with what the config says now. Runs on
    the listener's lookup threads: Jellyfin and Plex are asked there."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.servers = {name: server_from_config(config, name) for name in ("jellyfin", "plex")}
        self.maps = {"jellyfin": config.jellyfin.path_map, "plex": config.plex.path_map}

    def resolve(self, service: str, body: bytes, content_type: str) -> tuple[Answer, Hook | None]:
        try:
            event = read_event(service, body, content_type)
        except HookRefused as error:
            return Answer(error.status, {"error": str(error)}), None
        if event.kind is None:
            return Answer(200, {"ignored": event.name or "an event AutoKR does not act on"}), None
        theirs = event.path
        if theirs is None and event.item is not None:
            server = self.servers.get(service)
            if server is None:
                return Answer(422, {"error": f"[{service}] is not configured: AutoKR cannot look the item up"}), None
            try:
                theirs = server.item_path(event.item)
            except (ServerError, ConfigError) as error:
                return Answer(502, {"error": printable(error)}), None
        if theirs is None:
            return Answer(422, {"error": "the event names no file"}), None
        ours = unmap_path(theirs, self.maps.get(service, self.config.web.path_map))
        daemon = self.config.daemon
        path = within_inboxes(ours, daemon.inbox, daemon.video_extensions, daemon.follow_symlinks)
        if path is None:
            logger.warning("{} webhook refused: {} is not a video in an inbox", service, printable(ours))
            return Answer(403, {"error": "not a video in one of AutoKR's inboxes", "path": printable(ours)}), None
        return Answer(202, {"accepted": event.kind, "path": printable(path)}), Hook(event.kind, path, service)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except ValueError:
        raise HookRefused(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise HookRefused(400, "the body is not a JSON object")
    return value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def read_event(service: str, body: bytes, content_type: str) -> Event:
    """The event a service's webhook body carries.

    Raises:
        HookRefused: a body that is not the service's documented shape (400).
    """
    if service == "jellyfin":
        payload = _json_object(body)
        name = str(payload.get("NotificationType", ""))
        kind = {"PlaybackStart": PLAY, "ItemAdded": IMPORT}.get(name)
        return Event(kind, item=_text(payload.get("ItemId")), name=name)
    if service == "plex":
        payload = _json_object(_plex_payload(body, content_type))
        name = str(payload.get("event", ""))
        kind = {"media.play": PLAY, "media.resume": PLAY, "library.new": IMPORT}.get(name)
        metadata = payload.get("Metadata")
        key = _text(metadata.get("ratingKey")) if isinstance(metadata, dict) else None
        return Event(kind, item=key, name=name)
    payload = _json_object(body)
    name = str(payload.get("eventType", ""))
    if name != "Download":  # Sonarr's and Radarr's "On Import" and "On Upgrade"
        return Event(None, name=name)
    owner, file = ("series", "episodeFile") if service == "sonarr" else ("movie", "movieFile")
    record = payload.get(file)
    if not isinstance(record, dict):
        raise HookRefused(400, f"a Download event without {file}")
    path = _text(record.get("path"))
    folder = payload.get(owner)
    if path is None and isinstance(folder, dict) and _text(record.get("relativePath")):
        base = _text(folder.get("path")) or _text(folder.get("folderPath"))
        path = str(PurePosixPath(base) / str(record["relativePath"])) if base else None
    return Event(IMPORT, path=path, name=name)


def _plex_payload(body: bytes, content_type: str) -> bytes:
    """The ``payload`` part of Plex's ``multipart/form-data`` body."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise HookRefused(400, "Plex sends multipart/form-data with a payload part")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    for part in message.iter_parts() if message.is_multipart() else ():
        if part.get_param("name", header="content-disposition") == "payload":
            content = part.get_payload(decode=True)
            return content if isinstance(content, bytes) else b""
    raise HookRefused(400, "the form has no payload part")


def unmap_path(path: str, path_map: PathMap) -> str:
    """``path`` as a service sees it → as AutoKR does (``map_path`` the other way round)."""
    return map_path(path, tuple((theirs, ours) for ours, theirs in path_map))


def within_inboxes(
    path: str, inboxes: tuple[Path, ...], extensions: tuple[str, ...], follow_symlinks: bool
) -> Path | None:
    """``path`` when it is a video AutoKR would find itself in an inbox, else None.

    The path is made absolute and normal (``..`` resolved as text) and must lie inside an
    inbox; its folder, links resolved, must too (unless ``follow_symlinks``, where a scan
    follows links as well); and intake's own rule (``discovery.accept``) must take it."""
    if not path.startswith("/") or "\x00" in path:
        return None
    normal = Path(os.path.normpath(path))
    inside = [inbox for inbox in inboxes if normal.is_relative_to(inbox)]
    if not inside:
        return None
    if not follow_symlinks:
        real = Path(os.path.realpath(normal.parent))
        if not any(real.is_relative_to(os.path.realpath(inbox)) for inbox in inside):
            return None
    return normal if discovery.accept(normal, inboxes, extensions, follow_symlinks) else None
