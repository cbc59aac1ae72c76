"""Inotify (through watchdog) → a queue of paths worth a look. Scans back it up, since
inotify drops events when its queue overflows and sees nothing while the daemon is down.

inotify is a help, never a need: when the user's inotify instances or watches are used up by
other programs (IDEs and Syncthing take many), the daemon starts without it, says so in the
log, ``STATUS=`` and ``autokr status`` (``problem``), finds new videos by the periodic scan,
and tries inotify again every ``RETRY_SECONDS``. An inbox folder that is deleted (a share
unmounted) loses its watch with it: ``check`` sees that and watches the folder again once it is
back, and logs both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

RETRY_SECONDS = 60.0  # how often inotify is tried again after it could not be had
CHECK_SECONDS = 1.0  # how often the inboxes' watches are checked to be alive


class _Handler(FileSystemEventHandler):
    def __init__(self, paths: queue.SimpleQueue[Path], wake: threading.Event) -> None:
        self.paths = paths
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory and event.event_type != "moved":
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self.paths.put(Path(os.fsdecode(raw)))  # bytes that are not UTF-8 stay losslessly escaped
        self.wake.set()


def describe_inotify_error(error: OSError) -> str:
    """Why inotify could not be had, with the limit to raise."""
    if error.errno == errno.EMFILE:
        return "the user's inotify instances are used up (fs.inotify.max_user_instances)"
    if error.errno == errno.ENOSPC:
        return "the user's inotify watches are used up (fs.inotify.max_user_watches)"
    return f"inotify failed ({error.strerror or error})"


class InboxWatcher:
    def __init__(
        self, inboxes: tuple[Path, ...], wake: threading.Event, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.paths: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self.inboxes = inboxes
        self.wake = wake
        self.monotonic = monotonic
        self.observer: Observer | None = None  # type: ignore[valid-type]
        self.handler = _Handler(self.paths, wake)
        self.watches: dict[Path, tuple[ObservedWatch, tuple[int, int]]] = {}
        self.gone: set[Path] = set()  # inboxes that were missing at the last check
        self.problem = ""  # why inotify is not watching (shown in STATUS=), or ""
        self.checked_at = 0.0
        self.failed_at = 0.0

    def start(self) -> None:
        self.observer = Observer()
        self.observer.daemon = True
        self.observer.start()
        for inbox in self.inboxes:
            self._watch(inbox)
        if self.watches:
            logger.info("watching {}", ", ".join(str(inbox) for inbox in self.watches))

    def _watch(self, inbox: Path) -> bool:
        """Watches ``inbox`` (recursively); False when it is missing or inotify cannot be had."""
        assert self.observer is not None
        try:
            status = os.stat(inbox)
        except OSError:
            if inbox not in self.gone:
                logger.warning("inbox {} is gone (deleted or unmounted); it is watched again once it is back", inbox)
                self.gone.add(inbox)
            return False
        try:
            watch = self.observer.schedule(self.handler, str(inbox), recursive=True)
        except OSError as error:
            self.failed_at = self.monotonic()
            problem = f"inotify is not watching: {describe_inotify_error(error)}; new videos are found by the scan"
            if problem != self.problem:
                logger.warning("{} every scan_interval_seconds (autokr doctor says how to raise the limit)", problem)
            self.problem = problem
            return False
        self.watches[inbox] = (watch, (status.st_dev, status.st_ino))
        self.gone.discard(inbox)
        return True

    def check(self) -> None:
        """Every ``CHECK_SECONDS``: an inbox that was deleted and made again, or whose watch
        died with its folder, is watched again; after an inotify failure, every
        ``RETRY_SECONDS``, inotify is tried again."""
        now = self.monotonic()
        if self.observer is None or now - self.checked_at < CHECK_SECONDS:
            return
        self.checked_at = now
        if self.problem and now - self.failed_at < RETRY_SECONDS:
            return
        alive = {emitter.watch for emitter in self.observer.emitters if emitter.is_alive()}
        for inbox in self.inboxes:
            known = self.watches.get(inbox)
            try:
                status = os.stat(inbox)
                identity: tuple[int, int] | None = (status.st_dev, status.st_ino)
            except OSError:
                identity = None
            if known is not None and known[0] in alive and known[1] == identity:
                continue
            if known is not None:
                self._unwatch(inbox)
            if identity is None:
                self._watch(inbox)  # logs that it is gone, once
                continue
            was_failing = bool(self.problem)
            if self._watch(inbox):
                if was_failing:
                    self.problem = ""
                    logger.info("inotify works again: watching {}", inbox)
                else:
                    logger.info("watching {} again", inbox)

    def _unwatch(self, inbox: Path) -> None:
        watch, _ = self.watches.pop(inbox)
        with contextlib.suppress(Exception):  # its emitter may have ended with the folder
            assert self.observer is not None
            self.observer.unschedule(watch)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    def drain(self) -> set[Path]:
        """Every path seen since the last call (a moved directory yields its new path)."""
        seen: set[Path] = set()
        while True:
            try:
                seen.add(self.paths.get_nowait())
            except queue.Empty:
                return seen
