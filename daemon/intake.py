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
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from contract.errors import AutoKRError, PermanentError, WorkerError
from contract.files import file_signature
from contract.languages import language_code, language_name
from contract.media import MediaInfo, probe
from contract.protocol import printable
from contract.subtitles import existing_sidecars
from daemon import discovery, stages
from daemon.announcer import Teller
from daemon.config import Config
from daemon.errors import StorePaused
from daemon.hooks import PLAY, Action, Hook
from daemon.jobs import UNCHECKED, AudioFacts, Job, JobId, JobState
from daemon.scheduler import following
from daemon.store import Store
from daemon.watcher import InboxWatcher

PROMOTIONS_PER_TURN = 25  # bounds the ffprobe calls per turn, so a burst cannot stall the loop
MAX_WANTED = 1000  # play requests for files not yet jobs, remembered until they are


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _video_names(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if discovery.is_video_name(name, extensions)]
    except OSError:
        return []


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
        self.wanted: dict[str, float] = {}
        """Paths someone asked for first (a play webhook) before they were jobs: path → when."""
        self.hooks: queue.SimpleQueue[Hook | Action] = queue.SimpleQueue()
        """Webhooks' and the status page's requests, from the listener's thread (``daemon/web.py``)."""

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
        """Webhooks' requests, the paths inotify reported, a scan when one is due, and the
        files now stable."""
        while True:
            try:
                hook = self.hooks.get_nowait()
            except queue.Empty:
                break
            try:
                if isinstance(hook, Action):
                    self._act(hook)
                else:
                    self._hooked(hook)
            except StorePaused:
                raise
            except AutoKRError as error:  # a retry of a job that is no longer failed
                logger.warning("{}", error)
            except Exception as error:  # noqa: BLE001 - one odd request must never stop the daemon
                logger.warning("{}: {}", hook, _describe_path_problem(error))
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

    def _act(self, action: Action) -> None:
        """The status page's buttons: retry a failed video, put a waiting one first."""
        job = self.store.get(JobId(action.job_id))
        if action.kind == "retry":
            job = self.store.retry(str(job.id))
            logger.info("retry asked from the status page: {} waits at {}", job.path, job.stage)
        elif action.kind == "front" and self.store.prioritize([job.id], self.store.clock()):
            logger.info("asked from the status page: {} goes first", job.path)

    def _hooked(self, hook: Hook) -> None:
        """A webhook's video (in an inbox: ``daemon/web.py`` checked): an import is looked at
        now rather than at the next scan (inotify does not fire on NFS or SMB shares); a play
        puts the video, and the next episode in its folder, before every other waiting video."""
        targets = [hook.path]
        if hook.kind == PLAY:
            names = _video_names(hook.path.parent, self.config.daemon.video_extensions)
            after = following(hook.path.name, names)
            if after is not None:
                targets.append(hook.path.parent / after)
        now = self.store.clock()
        for path in targets:
            known = self.store.find(str(path))
            unchanged = known is not None and known.signature == _signature(path)
            if known is not None and unchanged and known.state in (JobState.QUEUED, JobState.RUNNING):
                if hook.kind == PLAY and not known.priority:
                    self.store.prioritize([known.id], now)
                    logger.info("{} is being watched: {} goes first", hook.path.name, path.name)
                continue
            if known is not None and unchanged and known.state != JobState.DROPPED:
                continue  # done, skipped or failed: a play is no reason to redo it
            if hook.kind == PLAY:
                if len(self.wanted) >= MAX_WANTED:
                    self.wanted.pop(next(iter(self.wanted)))
                self.wanted[str(path)] = now
            self._look_at(path.absolute())
            if path in self.tracker.pending:
                self.tracker.vouch(path)

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
            for sidecar in existing_sidecars(stable.path, languages.target, self.config.library.forced_subtitles_count)
            if sidecar != target or own is None or list(own) != file_signature(target)
        ]
        if theirs:
            shown = theirs[0].relative_to(stable.path.parent)
            self._skip(stable, f"has a {language_name(languages.target)} subtitle: {shown}")
            return
        folder_problem = _unwritable(stable.path.parent)
        if folder_problem:
            self._unusable(stable.path, folder_problem)
            return
        try:
            info = probe(stable.path)
            verdict = self._verdict(info)
        except PermanentError as error:
            self.store.add(path, stable.size, stable.mtime_ns, state=JobState.FAILED, error=str(error))
            logger.warning("{}: {}", path, error)
            self.teller.message(path, "AutoKR: a video failed", f"{stable.path.name}: {error}")
            return
        except (WorkerError, OSError) as error:
            logger.warning("cannot check {} yet ({}); will look again", path, error)
            self.tracker.observe(stable.path)
            return
        if isinstance(verdict, str):
            self._skip(stable, verdict)
            return
        job = self.store.add(
            path, stable.size, stable.mtime_ns, audio=verdict, priority=self.wanted.pop(path, 0.0),
            duration=info.duration or None,
        )  # fmt: skip
        logger.info("{} {} (job {})", "restarting changed" if replaced else "queued", path, job.id)

    def _skip(self, stable: discovery.StableFile, note: str) -> None:
        path = str(stable.path)
        self.wanted.pop(path, None)
        self.store.add(path, stable.size, stable.mtime_ns, state=JobState.SKIPPED, note=note)
        logger.info("skipped {}: {}", path, note)

    def _verdict(self, info: MediaInfo) -> AudioFacts | str:
        """What the container says: why the video is skipped (a subtitle in the target language
        inside it, no track in a spoken language that counts), or its track's language (tagged,
        or to be checked by ear).

        Raises:
            PermanentError: it has no audio track.
        """
        library, target = self.config.library, self.config.languages.target
        inside = info.subtitles_in(target, library.forced_subtitles_count)
        if inside:
            track = inside[0]
            what = f"{track.codec}{', ' + printable(track.title) if track.title else ''}"
            return f"has a {language_name(target)} subtitle inside the video (subtitle track {track.index + 1}, {what})"
        choice = info.audio_choice(self.config.spoken_languages)
        if choice.track is None:
            return choice.reason
        if choice.listen:
            if library.check_untagged_audio:
                return AudioFacts(choice.track.language.strip().lower() or "und", UNCHECKED)
            return AudioFacts(self.config.spoken_languages[0], "assumed")
        return AudioFacts(language_code(choice.track.language) or choice.track.language, "tag")


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
