"""The daemon's main loop: find complete videos, run one stage worker at a time, record it.

Signal handlers only set flags; everything happens here, in one thread, in this order each
turn: stop/reload flags → inotify paths → periodic scan → promote stable files to jobs →
read the running worker's events → start the next batch → status and watchdog ping.

Two rules keep one file or one full disk from stopping the service:
- Whatever goes wrong while looking at or promoting one path (a name that is not UTF-8, a
  symlink loop, a name too long for its subtitle, a file that cannot be read) is recorded on
  that path as ``failed`` with a sentence, logged once, and the loop goes on.
- A full state folder (``StateFull`` from the store, or too little free space) pauses the
  daemon: it claims no new work, keeps the events it could not record, says "state folder is
  full" in ``STATUS=``, and carries on by itself once there is space again.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from contract import faults
from contract.errors import PermanentError, WorkerError
from contract.files import describe_os_error, file_signature, remove_own_file
from contract.media import probe
from contract.pipeline import STAGE
from contract.protocol import EXIT_OUT_OF_MEMORY, WorkerEvent
from daemon import discovery, stages
from daemon.config import Config, load_config
from daemon.errors import ConfigError, StateFull
from daemon.notify import Notifier
from daemon.runner import WorkerProcess, describe_exit
from daemon.store import LAST_STAGE, Job, Store, state_space_problem
from daemon.watcher import InboxWatcher

MAX_MEMORY_LEVEL = 8  # e.g. batch 16 → 8 → 4 → 2 → 1, then three smaller models
PROMOTIONS_PER_TURN = 25  # bounds the ffprobe calls per turn, so a burst cannot stall the loop
STATE_FULL_RECHECK_SECONDS = 5.0  # while paused for a full state folder, look again this often


@dataclass
class Flags:
    """Set by signal handlers, acted on by the main loop."""

    stop: bool = False
    reload: bool = False
    wake: threading.Event = field(default_factory=threading.Event)

    def install(self) -> None:
        def request_stop(signum: int, frame: object) -> None:
            self.stop = True
            self.wake.set()

        def request_reload(signum: int, frame: object) -> None:
            self.reload = True
            self.wake.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, request_reload)


@dataclass
class RunningBatch:
    stage: str
    worker: WorkerProcess
    jobs: dict[str, Job]
    items: dict[str, stages.BatchItem]
    reported: set[str] = field(default_factory=set)
    pending: list[WorkerEvent] = field(default_factory=list)  # read, not yet recorded (full disk)
    progress: dict[str, float] = field(default_factory=dict)
    progress_saved_at: dict[str, float] = field(default_factory=dict)
    last_activity: float = 0.0  # monotonic time of the worker's last event
    stop_reason: str = ""  # why the daemon stopped this worker, when it did
    checked_at: float = 0.0  # when the videos of this batch were last checked to exist
    memory_level: int = 0  # steps down from the configured batch size and model (after GPU OOM)


class Supervisor:
    def __init__(
        self,
        config: Config,
        store: Store,
        notifier: Notifier | None = None,
        flags: Flags | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        stall_after: float | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.notifier = notifier or Notifier(address="")
        self.flags = flags or Flags()
        self.monotonic = monotonic
        self.tracker = discovery.StabilityTracker(config.daemon.stable_seconds, monotonic)
        self.watcher = InboxWatcher(config.daemon.inbox, self.flags.wake)
        self.batch: RunningBatch | None = None
        self.next_scan_at = 0.0
        self.status_text = ""
        self.last_ping = 0.0
        self.config_problem = ""  # shown in STATUS= until a reload succeeds
        self.state_full = ""  # why the daemon is paused ("state folder is full ..."), or ""
        self.state_checked_at = 0.0
        self.unusable_seen: set[tuple[str, int, int, str]] = set()  # problems already logged
        # Test-only ($AUTOKR_DEBUG_STALL_AFTER): the main loop hangs this many seconds after
        # start, to prove that systemd's watchdog restarts a wedged daemon.
        self.stall_after = stall_after

    # --- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        """Recovers interrupted jobs and scans the inboxes; then the daemon is ready (also when
        the state folder is full: it then waits for space, paused)."""
        try:
            for job in self.store.recover_interrupted():
                logger.info("resuming {} at stage {} (interrupted)", job.path, job.stage)
                self._sweep_temporary_files(job)
        except StateFull as error:
            self._pause(str(error))
        self.watcher.start()
        if not self.state_full:
            self._guarded(self._scan)
        self._send_status(READY=1)
        logger.info("ready: {}", self.status_text)

    def run(self) -> int:
        self.start()
        started = self.monotonic()
        while not self.flags.stop:
            if self.stall_after is not None and self.monotonic() - started >= self.stall_after:
                logger.warning("AUTOKR_DEBUG_STALL_AFTER: the main loop hangs now (a test of the watchdog)")
                while True:
                    time.sleep(3600)
            self.turn()
            self.flags.wake.wait(0.5)
            self.flags.wake.clear()
        self.shutdown()
        return 0

    def turn(self) -> None:
        """One pass of the main loop (tests call it directly)."""
        if self.flags.reload:
            self.flags.reload = False
            self.reload()
        if not self.state_full or self._state_has_room():
            self._guarded(self._work)
        self._report_status()

    def _work(self) -> None:
        for path in self.watcher.drain():
            self._consider(path)
        if self.monotonic() >= self.next_scan_at:
            self._scan()
        self._promote_stable_files()
        if self.batch is not None:
            self._pump_batch()
        if self.batch is None and not self.flags.stop:
            problem = state_space_problem(self.config.daemon.state_dir)
            if problem:
                raise StateFull(problem)
            self._start_next_batch()

    def _guarded(self, step: Callable[[], None]) -> None:
        """Runs ``step``; a full state folder pauses the daemon instead of stopping it."""
        try:
            step()
        except StateFull as error:
            self._pause(str(error))

    def _pause(self, reason: str) -> None:
        if not self.state_full:
            logger.error("{}: AutoKR pauses (no new work) until space is freed there", reason)
        self.state_full = reason
        self.state_checked_at = self.monotonic()

    def _state_has_room(self) -> bool:
        """While paused: every few seconds, whether there is space again (then it resumes)."""
        now = self.monotonic()
        if now - self.state_checked_at < STATE_FULL_RECHECK_SECONDS:
            return False
        self.state_checked_at = now
        problem = state_space_problem(self.config.daemon.state_dir)
        if problem:
            self.state_full = problem
            return False
        logger.info("the state folder has space again: AutoKR carries on")
        self.state_full = ""
        self.next_scan_at = 0.0  # files seen while paused were not recorded: look again
        return True

    def shutdown(self) -> None:
        self.notifier.send(STOPPING=1, STATUS="stopping")
        if self.batch is not None:
            batch = self.batch
            batch.worker.stop(self.config.daemon.worker_stop_seconds)
            try:
                self._pump_batch(stopping=True)
            except StateFull as error:  # the jobs stay "running": the next start resumes them
                logger.warning("{}: interrupted jobs are resumed at the next start", error)
        self.watcher.stop()
        logger.info("stopped")

    def reload(self) -> None:
        """SIGHUP: re-read the config; a bad one is reported and the old one kept."""
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            new = load_config(self.config.path)
        except ConfigError as error:
            logger.error("reload failed, keeping the old configuration: {}", error)
            self.config_problem = f"config reload failed, running on the old one: {error}"
            self._send_status(READY=1)
            return
        if new.daemon.inbox != self.config.daemon.inbox:
            self.watcher.stop()
            self.watcher = InboxWatcher(new.daemon.inbox, self.flags.wake)
            self.watcher.start()
        self.config = new
        self.tracker.stable_seconds = new.daemon.stable_seconds
        self.next_scan_at = 0.0
        self.config_problem = ""
        logger.info("configuration reloaded from {}", new.path)
        self._send_status(READY=1)

    # --- discovery -----------------------------------------------------------------------

    def _consider(self, path: Path) -> None:
        """A path inotify or a scan reported: track it until it holds still (or record why it
        cannot be a job). Nothing about one path can stop the daemon."""
        try:
            self._look_at(path.absolute())
        except StateFull:
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
            elif known and known.state == "queued":
                self.store.drop(known.id, "the video was deleted or moved before it was processed")
                logger.info("dropped {}: the video is gone", known.path)
            return
        if known and (known.size, known.mtime_ns) == (status.st_size, status.st_mtime_ns) and known.state != "dropped":
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
            if known and (known.state, known.error, known.size, known.mtime_ns) == ("failed", reason, size, mtime_ns):
                return  # recorded before (this run, or one before a restart)
            self.store.add(str(path), size, mtime_ns, state="failed", error=reason)
        except StateFull:
            self.unusable_seen.discard(key)
            raise
        except Exception as error:  # noqa: BLE001 - not even recordable: say so once and go on
            logger.error("{}: {} (and it could not be recorded: {})", path, reason, error)
            return
        logger.warning("failed: {}: {}", path, reason)

    def _scan(self) -> None:
        daemon = self.config.daemon
        for path in discovery.scan(daemon.inbox, daemon.video_extensions, daemon.follow_symlinks):
            self._consider(path)
        for job in self.store.jobs():
            if job.state == "queued" and not os.path.lexists(job.path):
                self.store.drop(job.id, "the video was deleted or moved before it was processed")
                logger.info("dropped {}: the video is gone", job.path)
        self.next_scan_at = self.monotonic() + daemon.scan_interval_seconds

    def _promote_stable_files(self) -> None:
        ready = self.tracker.ready()
        for number, stable in enumerate(ready[:PROMOTIONS_PER_TURN]):
            try:
                self._promote(stable)
            except StateFull:
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
        if known and (known.size, known.mtime_ns) == (stable.size, stable.mtime_ns) and known.state != "dropped":
            return
        replaced = known is not None
        if self.batch and known and str(known.id) in self.batch.jobs:
            logger.warning("{} changed while its {} worker ran: stopping it, starting over", path, self.batch.stage)
            self.batch.worker.stop(self.config.daemon.worker_stop_seconds)
            self._pump_batch(stopping=True)
        languages = self.config.languages
        targets = [stages.subtitle_path(stable.path, languages.target)]
        if self.config.daemon.write_source_subtitles:
            targets.append(stages.subtitle_path(stable.path, languages.source))
        if any(stages.name_too_long(target) for target in targets):
            reason = "the subtitle's name would be too long for the file system; rename the video to a shorter name"
            self._unusable(stable.path, reason)
            return
        target = targets[0]
        own = known.facts.get("subtitles", {}) if known else {}
        if os.path.lexists(target) and own.get(str(target)) != file_signature(target):
            self.store.add(path, stable.size, stable.mtime_ns, state="skipped", note=f"{target.name} already exists")
            logger.info("skipped {}: {} already exists", path, target.name)
            return
        try:
            probe(stable.path)
        except PermanentError as error:
            self.store.add(path, stable.size, stable.mtime_ns, state="failed", error=str(error))
            logger.warning("{}: {}", path, error)
            return
        except (WorkerError, OSError) as error:
            logger.warning("cannot check {} yet ({}); will look again", path, error)
            self.tracker.observe(stable.path)
            return
        job = self.store.add(path, stable.size, stable.mtime_ns)
        logger.info("{} {} (job {})", "restarting changed" if replaced else "queued", path, job.id)

    # --- workers -------------------------------------------------------------------------

    def _start_next_batch(self) -> None:
        waiting = self.store.next_batch(self.config.models.videos_per_worker)
        if not waiting:
            return
        stage = waiting[0].stage
        manifest = self.config.work_dir / "manifests" / f"{stage}.json"
        # The manifest is written before the jobs are claimed, so a full state folder leaves
        # them waiting untouched (nothing to undo) and the daemon pauses.
        try:
            items = self._write_manifest(manifest, stage, waiting)
        except OSError as error:  # a full or read-only work folder must not stop the daemon
            problem = state_space_problem(self.config.daemon.state_dir)
            if problem:
                raise StateFull(problem) from error
            reason = describe_os_error(error, manifest)
            logger.error("cannot start the {} worker: {}", stage, reason)
            for job in self.store.claim(waiting):
                self._stage_failed(job, reason, "", permanent=False)
            return
        jobs = self.store.claim(waiting)
        if not jobs:
            return
        if len(jobs) != len(waiting):  # one changed meanwhile (autokr retry --force): not in this batch
            items = self._write_manifest(manifest, stage, jobs)
        level = max(int(job.facts.get("memory_levels", {}).get(stage, 0)) for job in jobs)
        command = stages.worker_command(self.config, stage, manifest)
        command += ["--memory-level", str(level)] if level else []
        faults.crash_daemon_if_armed("before-worker", stage)
        worker = WorkerProcess(stage, command, stages.worker_environment(self.config), wake=self.flags.wake)
        jobs_by_id = {str(job.id): job for job in jobs}
        self.batch = RunningBatch(stage, worker, jobs_by_id, items, last_activity=self.monotonic(), memory_level=level)
        names = ", ".join(Path(job.path).name for job in jobs)
        logger.info("{} {} video(s) in worker pid {}: {}", STAGE[stage].verb, len(jobs), worker.pid, names)

    def _batch_item(self, stage: str, job: Job) -> stages.BatchItem:
        return stages.batch_item(
            self.config, stage, job.id, Path(job.path), job.force, (job.size, job.mtime_ns),
            own_subtitles=job.facts.get("subtitles", {}),
        )  # fmt: skip

    def _write_manifest(self, manifest: Path, stage: str, jobs: list[Job]) -> dict[str, stages.BatchItem]:
        items = {str(job.id): self._batch_item(stage, job) for job in jobs}
        stages.write_manifest(manifest, list(items.values()))
        return items

    def _pump_batch(self, stopping: bool = False) -> None:
        """Records the running worker's events and, once it has exited, the end of each of its
        videos. An event is dropped from ``batch.pending`` only once it is recorded, so a full
        state folder (``StateFull``) loses nothing: the rest is recorded after the pause."""
        batch = self.batch
        assert batch is not None
        returncode = batch.worker.poll()
        events = batch.worker.events()
        if events:
            batch.last_activity = self.monotonic()
            batch.pending.extend(events)
        while batch.pending:
            self._record_event(batch, batch.pending[0])
            batch.pending.pop(0)
        if returncode is None and not stopping:
            returncode = self._watch_running_batch(batch)
        if returncode is None:
            return
        for item_id, job in batch.jobs.items():
            if item_id in batch.reported:
                continue
            if stopping and not os.path.exists(job.path):
                self.store.drop(job.id, f"the video was deleted or moved during {batch.stage}")
                logger.info("dropped {}: the video is gone", job.path)
            elif stopping:
                self.store.release(job)
            elif returncode == EXIT_OUT_OF_MEMORY and self._retry_with_less_memory(batch, job):
                pass
            else:
                reason = batch.stop_reason or (
                    describe_exit(returncode) if returncode else "worker exited without finishing this video"
                )
                self._stage_failed(job, reason, batch.worker.stderr_tail(), permanent=False)
            batch.reported.add(item_id)
        stages.remove_temporary_files([item.output for item in batch.items.values()] + _source_outputs(batch))
        elapsed = self.monotonic() - batch.worker.started_at
        ending = "finished" if returncode == 0 else describe_exit(returncode)
        logger.info("{} worker pid {} after {:.1f} s: {}", batch.stage, batch.worker.pid, elapsed, ending)
        self.batch = None

    def _record_event(self, batch: RunningBatch, event: WorkerEvent) -> None:
        job = batch.jobs.get(event.item)
        if job is None or event.item in batch.reported:
            return
        if event.kind == "progress":
            self._save_progress(batch, job, float(event.facts.get("percent", 0)))
        elif event.kind == "done":
            self._stage_done(batch, job, event.facts)
            batch.reported.add(event.item)
        elif event.kind == "failed":
            reason = str(event.facts.get("reason", "unknown failure"))
            self._stage_failed(job, reason, batch.worker.stderr_tail(), bool(event.facts.get("permanent")))
            batch.reported.add(event.item)

    def _watch_running_batch(self, batch: RunningBatch) -> int | None:
        """Stops a worker that hangs, or whose videos were all deleted; returns its exit status
        when it was stopped here."""
        now = self.monotonic()
        timeout = self.config.daemon.stage_timeout_seconds
        if now - batch.last_activity > timeout:
            batch.stop_reason = (
                f"the {batch.stage} worker reported nothing for {timeout:.0f} s and was stopped "
                "(hung? see stage_timeout_seconds)"
            )
            logger.warning("{}: stopping it", batch.stop_reason)
            return batch.worker.stop(self.config.daemon.worker_stop_seconds)
        if now - batch.checked_at < 1.0:
            return None
        batch.checked_at = now
        waiting = [job for item_id, job in batch.jobs.items() if item_id not in batch.reported]
        if waiting and not any(os.path.exists(job.path) for job in waiting):
            logger.info("the video(s) of the running {} worker were deleted: stopping it", batch.stage)
            batch.worker.stop(self.config.daemon.worker_stop_seconds)
            self._pump_batch(stopping=True)
        return None

    def _retry_with_less_memory(self, batch: RunningBatch, job: Job) -> bool:
        """GPU out of memory: queue the stage again one memory level down (half the batch,
        then the next smaller model); False once there is no level left to try."""
        level = batch.memory_level + 1
        if level > MAX_MEMORY_LEVEL:
            return False
        reason = f"out of GPU memory; retrying with less (memory level {level}: smaller batch or model)"
        if self.store.requeue_smaller(job, level, reason):
            logger.warning("{} at {}: {}", job.path, batch.stage, reason)
        return True

    def _save_progress(self, batch: RunningBatch, job: Job, percent: float) -> None:
        batch.progress[str(job.id)] = percent
        now = self.monotonic()
        if now - batch.progress_saved_at.get(str(job.id), 0.0) >= 1.0 or percent >= 100:
            batch.progress_saved_at[str(job.id)] = now
            self.store.set_progress(job, percent)

    def _stage_done(self, batch: RunningBatch, job: Job, facts: dict[str, Any]) -> None:
        item = batch.items[str(job.id)]
        written = [Path(p) for p in facts.get("written", [])] if batch.stage == LAST_STAGE else [item.output]
        missing = [str(p) for p in written if not p.exists()]
        if missing:
            self._stage_failed(job, f"worker reported success but {missing[0]} is missing", "", permanent=False)
            return
        faults.crash_daemon_if_armed("before-commit", batch.stage)
        recorded: dict[str, Any] = {}
        if facts.get("model"):
            recorded[f"{batch.stage}_model"] = facts["model"]
        for fact in ("batch_size", "decoding", "engine"):
            if facts.get(fact):
                recorded[f"{batch.stage}_{fact}"] = facts[fact]
        skipped = str(facts.get("skipped") or "") if batch.stage == LAST_STAGE else ""
        if batch.stage == LAST_STAGE:
            # Still AutoKR's own (untouched since): kept, so a later run may replace them.
            previous = {p: sig for p, sig in job.facts.get("subtitles", {}).items() if file_signature(Path(p)) == sig}
            recorded["subtitles"] = {**previous, **{str(p): file_signature(p) for p in written}}
            if written:
                recorded["subtitles_for"] = [job.size, job.mtime_ns]
        note = skipped or facts.get("note")
        if not self.store.complete_stage(job, recorded, note=note, skipped=bool(skipped)):
            return  # the job was reset meanwhile (file replaced): this result is stale
        if batch.stage != LAST_STAGE:
            logger.info("{}: {} complete", job.path, batch.stage)
            return
        stages.remove_work_files(self.config, job.id)
        if skipped:
            logger.info("skipped {}: {}", job.path, skipped)
            return
        if not written:  # no speech in this content: AutoKR's subtitle of older content must go
            self._remove_stale_subtitles(job)
        logger.info("done: {} ({})", job.path, facts.get("note") or ", ".join(p.name for p in written))

    def _remove_stale_subtitles(self, job: Job) -> None:
        """The video was replaced and its new content yields no subtitle: AutoKR's own subtitle
        of the old content is removed, only while it is untouched (signature checked), so it
        neither lingers beside new content nor is mistaken later for a person's file."""
        if job.facts.get("subtitles_for") == [job.size, job.mtime_ns]:
            return  # written for this very content (a retry): still right
        removed = [path for path, sig in job.facts.get("subtitles", {}).items() if remove_own_file(Path(path), sig)]
        if removed:
            self.store.forget_subtitles(job, removed)
            logger.info("{}: removed AutoKR's subtitle of the replaced video: {}", job.path, ", ".join(removed))

    def _stage_failed(self, job: Job, reason: str, stderr_tail: str, permanent: bool) -> None:
        if not os.path.exists(job.path):
            self.store.drop(job.id, f"the video disappeared during {job.stage}")
            logger.info("dropped {}: the video disappeared during {}", job.path, job.stage)
            return
        daemon = self.config.daemon
        updated = self.store.fail_stage(
            job, reason, stderr_tail, permanent, daemon.max_attempts, daemon.retry_backoff_seconds
        )
        if updated is None:
            return
        if updated.state == "failed":
            logger.error("failed: {} at {}: {}", job.path, job.stage, reason)
            self._remove_stale_subtitles(updated)
        else:
            wait = max(0.0, updated.not_before - self.store.clock())
            logger.warning("{} at {}: {}; retrying in {:.0f} s", job.path, job.stage, reason, wait)

    def _sweep_temporary_files(self, job: Job) -> None:
        item = stages.batch_item(self.config, job.stage, job.id, Path(job.path), job.force)
        outputs = [item.output] + ([Path(item.extra["source_output"])] if item.extra.get("source_output") else [])
        stages.remove_temporary_files(outputs)

    # --- status --------------------------------------------------------------------------

    def _status(self) -> str:
        counts = self.store.counts()
        tail = [f"{counts.get(state, 0)} {state}" for state in ("queued", "done", "failed") if counts.get(state)]
        if self.batch is None:
            head = "idle"
        else:
            first_id = next(iter(self.batch.jobs))
            name = Path(self.batch.jobs[first_id].path).name
            others = len(self.batch.jobs) - 1
            percent = self.batch.progress.get(first_id, 0.0)
            head = f'{STAGE[self.batch.stage].verb} "{name}" {percent:.0f}%' + (f" (+{others})" if others else "")
        problems = [problem for problem in (self.state_full, self.config_problem) if problem]
        if self.state_full:
            head = "paused" if self.batch is None else f"{head}, paused"
        return " · ".join([*problems, head, *tail])

    def _send_status(self, **fields: str | int) -> None:
        self.status_text = self._status()
        self.notifier.send(**fields, STATUS=self.status_text)

    def _report_status(self) -> None:
        """Every second: WATCHDOG=1 (from this loop only, so a wedged loop stops the pings),
        and STATUS= when it changed."""
        now = self.monotonic()
        if now - self.last_ping < 1.0:
            return
        self.last_ping = now
        if self._status() != self.status_text:
            self._send_status(WATCHDOG=1)
        else:
            self.notifier.send(WATCHDOG=1)


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


def _source_outputs(batch: RunningBatch) -> list[Path]:
    return [Path(item.extra["source_output"]) for item in batch.items.values() if item.extra.get("source_output")]
