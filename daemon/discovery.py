"""Which files in the inbox are videos, and when a video is complete enough to work on.

A file becomes a job only after its size and mtime have held still for ``stable_seconds``
(a copy in progress keeps changing them). Names that copy and download tools use while
writing are ignored until the file is renamed to its real name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# Suffixes of files still being written: browsers, rsync --partial, qBittorrent, curl, etc.
TEMPORARY_SUFFIXES = (
    ".part",
    ".partial",
    ".tmp",
    ".temp",
    ".!qb",
    ".!ut",
    ".crdownload",
    ".download",
    ".filepart",
)
TEMPORARY_PREFIXES = (".", "~$", ".~")


def is_video_name(name: str, extensions: tuple[str, ...]) -> bool:
    """True for a finished video's name: a known extension, no temporary or hidden marker."""
    lowered = name.lower()
    if name.startswith(TEMPORARY_PREFIXES) or lowered.endswith(TEMPORARY_SUFFIXES):
        return False
    return lowered.endswith(extensions)


def _inside(path: Path, folders: tuple[Path, ...]) -> bool:
    # os.path.realpath never raises: a symlink loop resolves to where the loop starts, and the
    # stat() that follows reports ELOOP for the supervisor to record (Path.resolve raises).
    resolved = Path(os.path.realpath(path))
    return any(resolved.is_relative_to(os.path.realpath(folder)) for folder in folders)


def nearest_inbox(path: Path, inboxes: Sequence[Path]) -> Path | None:
    """The inbox that holds ``path`` most closely (inboxes may nest), or None: the one rule
    for which inbox a video belongs to (hidden folders, glossaries, series)."""
    holding = [inbox for inbox in inboxes if path.is_relative_to(inbox)]
    return max(holding, key=lambda inbox: len(inbox.parts)) if holding else None


def _parts_inside_inbox(path: Path, inboxes: tuple[Path, ...]) -> tuple[str, ...]:
    """The path below its nearest inbox: an inbox may itself lie in a hidden folder
    (~/.local/..., or a hidden folder of another inbox)."""
    inbox = nearest_inbox(path, inboxes)
    return path.parts if inbox is None else path.relative_to(inbox).parts


def accept(path: Path, inboxes: tuple[Path, ...], extensions: tuple[str, ...], follow_symlinks: bool) -> bool:
    """Whether ``path`` is a video AutoKR should consider (not its completeness)."""
    if not is_video_name(path.name, extensions):
        return False
    if any(part.startswith(".") for part in _parts_inside_inbox(path, inboxes)[:-1] if part not in (".", "..")):
        return False  # inside a hidden folder of the inbox (.Trash, .grab, ...)
    return not (path.is_symlink() and not follow_symlinks and not _inside(path, inboxes))


def scan(inboxes: tuple[Path, ...], extensions: tuple[str, ...], follow_symlinks: bool) -> Iterator[Path]:
    """Every video under the inboxes, recursively (symlinked folders only if allowed)."""
    for inbox in inboxes:
        for folder, subfolders, files in os.walk(inbox, followlinks=follow_symlinks):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            for name in files:
                path = Path(folder) / name
                if accept(path, inboxes, extensions, follow_symlinks):
                    yield path.absolute()


@dataclass
class Observation:
    size: int
    mtime_ns: int
    since: float


@dataclass(frozen=True)
class StableFile:
    path: Path
    size: int
    mtime_ns: int


class StabilityTracker:
    """Holds candidate files until their size and mtime have not changed for a while."""

    def __init__(self, stable_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stable_seconds = stable_seconds
        self.clock = clock
        self.pending: dict[Path, Observation] = {}

    def observe(self, path: Path) -> None:
        try:
            status = path.stat()
        except OSError:
            self.pending.pop(path, None)
            return
        known = self.pending.get(path)
        if known is None or (known.size, known.mtime_ns) != (status.st_size, status.st_mtime_ns):
            self.pending[path] = Observation(status.st_size, status.st_mtime_ns, self.clock())

    def vouch(self, path: Path) -> None:
        """Someone who knows says ``path`` is complete (Sonarr's import, a server playing it):
        it is ready at the next look, if it is still as it is now."""
        try:
            status = path.stat()
        except OSError:
            self.pending.pop(path, None)
            return
        self.pending[path] = Observation(status.st_size, status.st_mtime_ns, self.clock() - self.stable_seconds)

    def forget(self, path: Path) -> None:
        self.pending.pop(path, None)

    def ready(self) -> list[StableFile]:
        """Pops and returns the files that held still long enough; forgets vanished ones."""
        now = self.clock()
        stable = []
        for path, seen in list(self.pending.items()):
            try:
                status = path.stat()
            except OSError:
                del self.pending[path]
                continue
            if (status.st_size, status.st_mtime_ns) != (seen.size, seen.mtime_ns):
                self.pending[path] = Observation(status.st_size, status.st_mtime_ns, now)
            elif now - seen.since >= self.stable_seconds:
                del self.pending[path]
                stable.append(StableFile(path, status.st_size, status.st_mtime_ns))
        return stable
