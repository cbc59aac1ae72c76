"""Inotify (through watchdog) → a queue of paths worth a look. Scans back it up, since
inotify drops events when its queue overflows and sees nothing while the daemon is down."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

from loguru import logger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


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


class InboxWatcher:
    def __init__(self, inboxes: tuple[Path, ...], wake: threading.Event) -> None:
        self.paths: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self.inboxes = inboxes
        self.wake = wake
        self.observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        self.observer = Observer()
        handler = _Handler(self.paths, self.wake)
        for inbox in self.inboxes:
            self.observer.schedule(handler, str(inbox), recursive=True)
        self.observer.daemon = True
        self.observer.start()
        logger.info("watching {}", ", ".join(str(p) for p in self.inboxes))

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
