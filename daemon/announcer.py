"""The outbox: what media servers and notification services are to be told, stored in SQLite
before it is sent, and the thread that sends it.

The main loop only adds rows (``Outbox.add``, one quick write); the ``Announcer`` thread, with
its own database connection, sends them. So a server that is down or slow never delays a job or
the watchdog, and what is not yet told survives a restart:

- rows of one server and one folder that arrive within ``DEBOUNCE_SECONDS`` of each other go
  out as one call (a season finishing together is one refresh per folder);
- a call that fails is tried again after 30 s, 1, 2, 4 … minutes (at most an hour apart) for a
  day, then given up with a log line;
- a key the server refuses (401/403) is not tried again until the configuration is reloaded or
  the daemon restarted (a new key), and ``autokr status`` says so;
- a target's failure is logged once when it starts failing (and a refused key once), not at
  every retry, nor again when a server that is down fails each time in other words (a reset,
  then a garbled answer); once told again, it is logged as reachable.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from contract.errors import AutoKRError
from contract.protocol import JsonObject, printable
from daemon.config import Config, read_secret
from daemon.errors import ConfigError, StorePaused
from daemon.media_servers import Change, Jellyfin, MediaServer, Plex, Rejected, ServerError, Unreachable
from daemon.store import Store, readable_path

DEBOUNCE_SECONDS = 5.0
FIRST_RETRY_SECONDS = 30.0
LONGEST_RETRY_SECONDS = 3600.0
GIVE_UP_SECONDS = 86400.0
DIGEST_SECONDS = 86400.0
NOTIFY = "notify"
TOPIC = "_topic"  # the payload key that carries the exact topic (see Outbox.add)


@dataclass(frozen=True)
class Entry:
    id: int
    target: str
    """``jellyfin``, ``plex`` or ``notify``."""
    topic: str
    """What is sent together: the folder, for a media server; ``""`` for a notification."""
    payload: JsonObject
    created_at: float
    attempts: int
    state: str
    last_error: str | None
    due_at: float


class Outbox:
    """The ``outbox`` table (schema migration 4) over a ``Store``'s connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, target: str, topic: str, payload: JsonObject, state: str = "pending") -> None:
        """``topic`` and the payload's paths may hold bytes that are not UTF-8 (a Shift-JIS
        folder): the ``topic`` column holds a readable text form (``\\xNN``), the exact one
        travels in the payload's JSON (``\\udcNN`` escapes, which JSON keeps losslessly), as
        ``jobs.path_key`` keeps a video's path."""
        now = self.store.clock()
        with self.store.transaction() as connection:
            connection.execute(
                "INSERT INTO outbox (target, topic, payload, created_at, due_at, attempts, state) "
                "VALUES (?, ?, ?, ?, ?, 0, ?)",
                (target, readable_path(topic), json.dumps({**payload, TOPIC: topic}), now, now, state),
            )

    def entries(self, where: str = "state = 'pending'", params: tuple[object, ...] = ()) -> list[Entry]:
        cursor = self.store.db.execute(
            "SELECT id, target, topic, payload, created_at, attempts, state, last_error, due_at "
            f"FROM outbox WHERE {where} ORDER BY id",
            params,
        )
        entries = []
        for row in cursor.fetchall():
            payload = json.loads(row[3])
            entries.append(Entry(row[0], row[1], str(payload.pop(TOPIC, row[2])), payload, *row[4:]))
        return entries

    def due(self, now: float, target: str | None = None) -> list[list[Entry]]:
        """Pending rows grouped by target and topic, each group due and quiet for
        ``DEBOUNCE_SECONDS``; ``target``: that target's alone.

        The times are the wall clock's, kept across restarts; a clock that steps back (an RTC
        corrected by NTP) must not stretch a wait, so a wait is capped at its own length: a
        retry due further ahead than the longest backoff, or a row "created" in the future, is
        due now."""
        groups: dict[tuple[str, str], list[Entry]] = {}
        for entry in self.entries(*(("state = 'pending' AND target = ?", (target,)) if target else ())):
            groups.setdefault((entry.target, entry.topic), []).append(entry)
        return [
            group
            for group in groups.values()
            if all(_waited(entry.due_at, now, LONGEST_RETRY_SECONDS) for entry in group)
            and all(now - entry.created_at >= DEBOUNCE_SECONDS or entry.created_at > now for entry in group)
        ]

    def finish(self, entries: Sequence[Entry], state: str, error: str | None = None) -> None:
        """``sent``, ``rejected`` (the key was refused) or ``expired`` (given up after a day)."""
        with self.store.transaction() as connection:
            for entry in entries:
                connection.execute(
                    "UPDATE outbox SET state = ?, last_error = ?, finished_at = ?, attempts = attempts + 1 "
                    "WHERE id = ?",
                    (state, error, self.store.clock(), entry.id),
                )

    def retry_later(self, entries: Sequence[Entry], error: str) -> float:
        """Counts a failed attempt; returns the seconds until the next one."""
        attempts = max(entry.attempts for entry in entries) + 1
        wait: float = min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempts - 1))
        with self.store.transaction() as connection:
            for entry in entries:
                connection.execute(
                    "UPDATE outbox SET attempts = ?, last_error = ?, due_at = ? WHERE id = ?",
                    (attempts, error, self.store.clock() + wait, entry.id),
                )
        return wait

    def retry_now(self) -> None:
        """At a start or a reload: whatever waits is tried again now, a refused key included
        (it may have been replaced)."""
        with self.store.transaction() as connection:
            connection.execute(
                "UPDATE outbox SET state = 'pending', due_at = 0, finished_at = NULL "
                "WHERE state IN ('pending', 'rejected')"
            )


def _waited(due_at: float, now: float, longest: float) -> bool:
    """Whether a wait until ``due_at`` is over, capped at ``longest`` from ``now``."""
    return due_at <= now or due_at - now > longest


def expire_unconfigured(outbox: Outbox, targets: Sequence[str]) -> None:
    """Rows for a server or service no longer in the config are given up (at a start or a
    reload), so ``autokr status`` stops saying they wait."""
    placeholders = ", ".join("?" for _ in targets) or "''"
    with outbox.store.transaction() as connection:
        connection.execute(
            "UPDATE outbox SET state = 'expired', last_error = target || ' is no longer configured', finished_at = ? "
            f"WHERE state IN ('pending', 'rejected') AND target NOT IN ({placeholders})",
            (outbox.store.clock(), *targets),
        )


def describe_pending(outbox: Outbox, now: float) -> str | None:
    """``media: pending (jellyfin: connection refused, retry in 2 min)`` for ``autokr status``."""
    pending = outbox.entries("state IN ('pending', 'rejected')")
    if not pending:
        return None
    parts = []
    for target in dict.fromkeys(entry.target for entry in pending):
        mine = [entry for entry in pending if entry.target == target]
        rejected = next((entry for entry in mine if entry.state == "rejected"), None)
        if rejected is not None:
            parts.append(f"{target}: {rejected.last_error}")
            continue
        failing = max(mine, key=lambda entry: entry.attempts)
        if failing.last_error:
            wait = max(0.0, min(entry.due_at for entry in mine) - now)
            parts.append(f"{target}: {failing.last_error}, retry in {minutes(wait)}")
        else:
            parts.append(f"{target}: {len(mine)} waiting")
    return "media: pending (" + "; ".join(parts) + ")"


def minutes(seconds: float) -> str:
    """``45 s``, ``3 min``: a wait or a duration for a person."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class Notifications:
    """Apprise, imported only when ``[notify] urls`` names a service (the daemon stays small)."""

    name = NOTIFY

    def __init__(self, urls: Sequence[str]) -> None:
        import logging

        import apprise

        logging.getLogger("apprise").setLevel(logging.CRITICAL)  # its messages may carry the URLs' secrets
        self._apprise = apprise.Apprise()
        # Which of the URLs (1-based) Apprise does not understand: numbers, so no secret is shown.
        self.invalid = [number for number, url in enumerate(urls, 1) if not self._apprise.add(url)]

    def send(self, title: str, body: str) -> None:
        # A failed send is a falsy result, not an exception.
        if not self._apprise.notify(title=title, body=body):
            raise ServerError("a notification service did not accept the message (see [notify] urls)")


Senders = dict[str, MediaServer | Notifications]


class Teller:
    """What the main loop calls when a subtitle is written or removed, or a video is done or
    failed: one quick row in the outbox per configured target, nothing sent here."""

    def __init__(self, store: Store, targets: Sequence[str]) -> None:
        self.outbox = Outbox(store)
        self.targets = tuple(targets)

    def subtitles(self, changes: Sequence[Change]) -> None:
        for target in self.targets:
            if target == NOTIFY:
                continue
            for change in changes:
                payload: JsonObject = {"subtitle": change.subtitle, "change": change.kind}
                self.outbox.add(target, str(Path(change.subtitle).parent), payload)

    def message(self, topic: str, title: str, body: str) -> None:
        """``body`` may name a file whose name is not UTF-8: it is sent readable (``\\xNN``)."""
        if NOTIFY in self.targets:
            self.outbox.add(NOTIFY, topic, {"title": printable(title), "body": printable(body)})


class Announcer:
    """Sends what the outbox holds: one thread per target (Jellyfin, Plex, notifications), each
    with its own database connection, so a target that is slow, hangs until its deadline or
    fails never holds up another."""

    def __init__(
        self, open_store: Callable[[], Store], senders: Senders, digest: bool = False, interval: float = 1.0
    ) -> None:
        self.senders = senders
        self.threads = [
            TargetSender(open_store, target, sender, digest and target == NOTIFY, interval)
            for target, sender in senders.items()
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Asks every thread to stop and waits ``timeout`` at most, all together: a call still
        under way ends at its own deadline, its rows stay pending and go out at the next start."""
        for thread in self.threads:
            thread.stopping.set()
            thread.wake.set()
        ends = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, ends - time.monotonic()))

    def send_due(self, outbox: Outbox) -> None:
        """Every target's due rows, here and now, one target after the other (what each thread
        does on its own; a seam for tests)."""
        for thread in self.threads:
            thread.send_due(outbox)


class TargetSender(threading.Thread):
    """Sends one target's rows of the outbox, on its own thread and database connection."""

    def __init__(
        self,
        open_store: Callable[[], Store],
        target: str,
        sender: MediaServer | Notifications,
        digest: bool = False,
        interval: float = 1.0,
    ) -> None:
        super().__init__(name=f"announcer-{target}", daemon=True)
        self.open_store = open_store
        self.target = target
        self.sender = sender
        self.digest = digest
        self.interval = interval
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._logged = ""  # the error last logged

    def _open(self) -> Store | None:
        """Its database connection; while the database is locked or full, it waits (None: stopped)."""
        said = False
        while not self.stopping.is_set():
            try:
                return self.open_store()
            except StorePaused as error:
                if not said:
                    logger.warning("announcements wait: {}", error)
                    said = True
                self.wake.wait(5.0)
        return None

    def run(self) -> None:
        store = self._open()
        if store is None:
            return
        with store:
            outbox = Outbox(store)
            while not self.stopping.is_set():
                try:
                    self.send_due(outbox)
                except StorePaused as error:
                    logger.warning("announcements wait: {}", error)
                except Exception as error:  # noqa: BLE001 - a bug here must not end the announcements
                    logger.error("announcements: unexpected {}: {}", type(error).__name__, printable(error))
                self.wake.wait(self.interval)
                self.wake.clear()

    def send_due(self, outbox: Outbox) -> None:
        now = outbox.store.clock()
        if self.digest:
            queue_digest(outbox, now)
        for group in outbox.due(now, self.target):
            if self.stopping.is_set():
                return
            try:
                _send(self.sender, group)
            except ServerError as error:
                self._failed(outbox, group, error, now)
            except Exception as error:  # noqa: BLE001 - whatever one call does, it is that call's failure
                reason = f"{self.target}: could not be told ({type(error).__name__}); check its url"
                self._failed(outbox, group, Unreachable(reason), now)
            else:
                outbox.finish(group, "sent")
                if self._logged:
                    self._logged = ""
                    logger.info("{}: reachable again, told about {}", self.target, group[0].topic or "a video")

    def _failed(self, outbox: Outbox, group: list[Entry], error: AutoKRError, now: float) -> None:
        """Rejected: kept until a reload. Otherwise tried again later, for a day. Logged when
        this target starts failing, not at every retry."""
        reason = str(error)
        first_time = not self._logged or (isinstance(error, Rejected) and self._logged != reason)
        self._logged = reason
        if isinstance(error, Rejected):
            outbox.finish(group, "rejected", reason)
            if first_time:
                logger.error("{}: not tried again until the configuration is reloaded", reason)
        elif now - min(entry.created_at for entry in group) >= GIVE_UP_SECONDS:
            outbox.finish(group, "expired", reason)
            logger.error("{}: gave up after a day of trying: {}", self.target, reason)
        else:
            wait = outbox.retry_later(group, reason)
            if first_time:
                logger.warning("{} (trying again in {}, for a day)", reason, minutes(wait))


def queue_digest(outbox: Outbox, now: float) -> bool:
    """Once a day: how many videos were done and failed in the last 24 hours (``[notify]
    digest``). The last digest's row in the outbox says when it was."""
    last = outbox.store.db.execute(
        "SELECT MAX(created_at) FROM outbox WHERE target = ? AND topic = 'digest'", (NOTIFY,)
    ).fetchone()[0]
    if last is None:  # the first digest comes a day after it was turned on
        outbox.add(NOTIFY, "digest", {}, state="sent")
        return False
    if now - last < DIGEST_SECONDS:
        return False
    counts = dict(
        outbox.store.db.execute(
            "SELECT state, COUNT(*) FROM jobs WHERE updated_at >= ? AND state IN ('done', 'failed') GROUP BY state",
            (now - DIGEST_SECONDS,),
        ).fetchall()
    )
    body = f"{counts.get('done', 0)} video(s) got subtitles and {counts.get('failed', 0)} failed in the last 24 hours"
    outbox.add(NOTIFY, "digest", {"title": "AutoKR: the day's subtitles", "body": body})
    return True


def _send(sender: MediaServer | Notifications, group: list[Entry]) -> None:
    if isinstance(sender, Notifications):
        for entry in group:
            sender.send(str(entry.payload["title"]), str(entry.payload["body"]))
        return
    changes = [Change(str(entry.payload["subtitle"]), str(entry.payload["change"])) for entry in group]
    # The last word on each subtitle counts (written, then removed, within the debounce).
    latest = list({change.subtitle: change for change in changes}.values())
    sender.announce(group[0].topic, latest)


def announcer_key(config: Config) -> tuple[object, ...]:
    """What the announcer is made of: the servers' and services' settings and their keys as the
    key files hold them now (a digest: a key replaced in its file is a change)."""
    keys = []
    for key, key_file, where in (
        (config.jellyfin.api_key, config.jellyfin.api_key_file, "[jellyfin] api_key_file"),
        (config.plex.token, config.plex.token_file, "[plex] token_file"),
    ):
        try:
            keys.append(
                hashlib.sha256(read_secret(key, key_file, where).encode()).hexdigest() if key or key_file else ""
            )
        except ConfigError as error:
            keys.append(str(error))
    return (config.jellyfin, config.plex, config.notify, tuple(keys))


def server_from_config(config: Config, name: str) -> Jellyfin | Plex | None:
    """The media server ``name`` (``jellyfin``, ``plex``) as configured, or None when it is not.

    Raises:
        ConfigError: its key file cannot be read.
    """
    if name == "jellyfin" and config.jellyfin.url:
        settings = config.jellyfin
        return Jellyfin(
            settings.url, read_secret(settings.api_key, settings.api_key_file, "[jellyfin] api_key_file"),
            settings.path_map,
        )  # fmt: skip
    if name == "plex" and config.plex.url:
        token = read_secret(config.plex.token, config.plex.token_file, "[plex] token_file")
        return Plex(config.plex.url, token, config.plex.path_map)
    return None


def senders_for(config: Config) -> tuple[Senders, list[str]]:
    """What ``config`` says to tell, and why any of it cannot be (an unreadable key file)."""
    senders: Senders = {}
    problems = []
    for name in ("jellyfin", "plex"):
        try:
            server = server_from_config(config, name)
        except ConfigError as error:
            problems.append(f"{name.capitalize()} is not told: {'; '.join(error.problems)}")
            continue
        if server is not None:
            senders[name] = server
    if config.notify.urls:
        notifications = Notifications(config.notify.urls)
        if notifications.invalid:
            numbers = ", ".join(str(number) for number in notifications.invalid)
            problems.append(f"[notify] urls number {numbers} are not URLs Apprise knows; see its wiki for the form")
        senders[NOTIFY] = notifications
    return senders, problems
