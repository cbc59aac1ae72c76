"""Intake: from a path in an inbox to a job. inotify events and periodic scans name paths; a
video becomes a job once it holds still (``discovery.StabilityTracker``) and ffprobe finds it
usable; a subtitle that is already there (and not AutoKR's own) makes it ``skipped``.

Whatever goes wrong while looking at or promoting one path (a name that is not UTF-8, a symlink
loop, a name too long for its subtitle, a file that cannot be read) is recorded on that path as
``failed`` with a sentence, logged once, and intake goes on. Only ``StateFull`` escapes: the
supervisor pauses.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from contract.errors import PermanentError, WorkerError
from contract.files import file_signature
from contract.media import probe
from contract.subtitles import existing_sidecars
from daemon import discovery, stages
from daemon.announcer import Teller
from daemon.config import Config
from daemon.errors import StorePaused
from daemon.jobs import Job, JobState
from daemon.store import Store
from daemon.watcher import InboxWatcher

PROMOTIONS_PER_TURN = 25  # bounds the ffprobe calls per turn, so a burst cannot stall the loop


class Intake:
    def __init__(
        self,
        config: Config,
        store: Store,
        wake: threading.Event,
        on_replaced: Callable[[Job], None],
        teller: Teller,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_replaced``: called before a known video starts over (its content changed), so a
        worker still at it is stopped first."""
        self.config = config
        self.store = store
        self.wake = wake
        self.on_replaced = on_replaced
        self.teller = teller
        self.monotonic = monotonic
        self.tracker = discovery.StabilityTracker(config.daemon.stable_seconds, monotonic)
        self.watcher = InboxWatcher(config.daemon.inbox, wake, monotonic)
        self.next_scan_at = 0.0
        self.unusable_seen: set[tuple[str, int, int, str]] = set()  # problems already logged

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    def reload(self, config: Config) -> None:
        if config.daemon.inbox != self.config.daemon.inbox:
            self.watcher.stop()
            self.watcher = InboxWatcher(config.daemon.inbox, self.wake, self.monotonic)
            self.watcher.start()
        self.config = config
        self.tracker.stable_seconds = config.daemon.stable_seconds
        self.next_scan_at = 0.0

    def turn(self) -> None:
        """The paths inotify reported, a scan when one is due, and the files now stable."""
        self.watcher.check()
        for path in self.watcher.drain():
            self.consider(path)
        if self.monotonic() >= self.next_scan_at:
            self.scan()
        self.promote_stable_files()

    def consider(self, path: Path) -> None:
        """A path inotify or a scan reported: track it until it holds still (or record why it
        cannot be a job). Nothing about one path can stop the daemon."""
        try:
            self._look_at(path.absolute())
        except StorePaused:
            raise
        except Exception as error:  # noqa: BLE001 - one odd file must never stop the daemon
            self._unusable(path.absolute(), _describe_path_problem(error))

    def _look_at(self, path: Path) -> None:
        daemon = self.config.daemon
        if not discovery.accept(path, daemon.inbox, daemon.video_extensions, daemon.follow_symlinks):
            return
        known = self.store.find(str(path))
        try:
            status = path.stat()
        except OSError as error:
            self.tracker.forget(path)
            if error.errno not in (errno.ENOENT, errno.ENOTDIR):
                self._unusable(path, _describe_path_problem(error))
            elif known and known.state == JobState.QUEUED:
                self.store.drop(known.id, "the video was deleted or moved before it was processed")
                logger.info("dropped {}: the video is gone", known.path)
            return
        if (
            known
            and (known.size, known.mtime_ns) == (status.st_size, status.st_mtime_ns)
            and known.state != JobState.DROPPED
        ):
            return
        self.tracker.observe(path)

    def _unusable(self, path: Path, reason: str) -> None:
        """Records ``path`` as ``failed`` with ``reason`` and logs it, once: the same problem
        on the same file (after a restart, say) is neither recorded nor logged again."""
        self.tracker.forget(path)
        try:
            status = path.lstat()
            size, mtime_ns = status.st_size, status.st_mtime_ns
        except OSError:
            size, mtime_ns = 0, 0
        key = (str(path), size, mtime_ns, reason)
        if key in self.unusable_seen:
            return
        self.unusable_seen.add(key)
        try:
            known = self.store.find(str(path))
            if known and (known.state, known.error, known.signature) == (JobState.FAILED, reason, (size, mtime_ns)):
                return  # recorded before (this run, or one before a restart)
            self.store.add(str(path), size, mtime_ns, state=JobState.FAILED, error=reason)
        except StorePaused:
            self.unusable_seen.discard(key)
            raise
        except Exception as error:  # noqa: BLE001 - not even recordable: say so once and go on
            logger.error("{}: {} (and it could not be recorded: {})", path, reason, error)
            return
        logger.warning("failed: {}: {}", path, reason)

    def scan(self) -> None:
        daemon = self.config.daemon
        for path in discovery.scan(daemon.inbox, daemon.video_extensions, daemon.follow_symlinks):
            self.consider(path)
        for job in self.store.jobs():
            if job.state == JobState.QUEUED and not os.path.lexists(job.path):
                self.store.drop(job.id, "the video was deleted or moved before it was processed")
                logger.info("dropped {}: the video is gone", job.path)
        self.next_scan_at = self.monotonic() + daemon.scan_interval_seconds

    def promote_stable_files(self) -> None:
        ready = self.tracker.ready()
        for number, stable in enumerate(ready[:PROMOTIONS_PER_TURN]):
            try:
                self._promote(stable)
            except StorePaused:
                for later in ready[number:]:  # recorded once there is space again
                    self.tracker.pending[later.path] = discovery.Observation(later.size, later.mtime_ns, 0.0)
                raise
            except Exception as error:  # noqa: BLE001 - one odd file must never stop the daemon
                self._unusable(stable.path, _describe_path_problem(error))
        for stable in ready[PROMOTIONS_PER_TURN:]:  # next turn
            self.tracker.pending[stable.path] = discovery.Observation(stable.size, stable.mtime_ns, 0.0)

    def _promote(self, stable: discovery.StableFile) -> None:
        """A complete file becomes a job: queued, skipped (subtitle exists) or failed (unreadable)."""
        path = str(stable.path)
        known = self.store.find(path)
        if known and (known.size, known.mtime_ns) == (stable.size, stable.mtime_ns) and known.state != JobState.DROPPED:
            return
        replaced = known is not None
        if known is not None:
            self.on_replaced(known)
        languages = self.config.languages
        targets = [stages.subtitle_path(stable.path, languages.target)]
        if self.config.daemon.write_source_subtitles:
            targets.append(stages.subtitle_path(stable.path, languages.source))
        if any(stages.name_too_long(target) for target in targets):
            reason = "the subtitle's name would be too long for the file system; rename the video to a shorter name"
            self._unusable(stable.path, reason)
            return
        target = targets[0]
        own = known.facts.subtitles.get(str(target)) if known else None
        theirs = [
            sidecar
            for sidecar in existing_sidecars(stable.path, languages.target)
            if sidecar != target or own is None or list(own) != file_signature(target)
        ]
        if theirs:
            note = f"{theirs[0].name} already exists"
            self.store.add(path, stable.size, stable.mtime_ns, state=JobState.SKIPPED, note=note)
            logger.info("skipped {}: {}", path, note)
            return
        folder_problem = _unwritable(stable.path.parent)
        if folder_problem:
            self._unusable(stable.path, folder_problem)
            return
        try:
            probe(stable.path)
        except PermanentError as error:
            self.store.add(path, stable.size, stable.mtime_ns, state=JobState.FAILED, error=str(error))
            logger.warning("{}: {}", path, error)
            self.teller.message(path, "AutoKR: a video failed", f"{stable.path.name}: {error}")
            return
        except (WorkerError, OSError) as error:
            logger.warning("cannot check {} yet ({}); will look again", path, error)
            self.tracker.observe(stable.path)
            return
        job = self.store.add(path, stable.size, stable.mtime_ns)
        logger.info("{} {} (job {})", "restarting changed" if replaced else "queued", path, job.id)


def _unwritable(folder: Path) -> str | None:
    """Why no subtitle could be written into ``folder`` (said now, before any stage runs)."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return None
    if read_only:
        return (
            f"cannot write subtitles beside it: {folder} is not writable (a read-only file system); mount it writable"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write subtitles beside it: {folder} is not writable by the user AutoKR runs as"
    return None


def _describe_path_problem(error: BaseException) -> str:
    """One sentence, for a person, on why a path cannot be looked at."""
    if isinstance(error, OSError):
        if error.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself); fix or remove the link"
        if error.errno == errno.ENAMETOOLONG:
            return "the name is too long for the file system; rename the video to a shorter name"
        if error.errno in (errno.EACCES, errno.EPERM):
            return "permission denied; let the user AutoKR runs as read the file and its folder"
        return f"cannot read the file ({error.strerror or error}); check the disk and the file"
    if isinstance(error, RuntimeError) and "loop" in str(error).lower():
        return "a symbolic link loop (the link leads back to itself); fix or remove the link"
    return f"AutoKR could not look at this file ({type(error).__name__}: {error}); please report it"
