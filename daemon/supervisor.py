"""The daemon's main loop: find complete videos, run one stage worker at a time, record it.

Signal handlers only set flags; everything happens here, in one thread, in this order each
turn: stop/reload flags → inotify paths → periodic scan → promote stable files to jobs →
read the running worker's events → start the next batch → status and watchdog ping.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from daemon import discovery, stages
from daemon.config import Config, load_config
from daemon.errors import ConfigError
from daemon.notify import Notifier
from daemon.runner import WorkerProcess, describe_exit
from daemon.store import LAST_STAGE, Job, Store
from daemon.watcher import InboxWatcher
from workers import faults
from workers.common import describe_os_error
from workers.errors import PermanentError, WorkerError
from workers.media import probe
from workers.protocol import EXIT_OUT_OF_MEMORY

STAGE_VERBS = {
    "extract": "extracting",
    "transcribe": "transcribing",
    "translate": "translating",
    "subtitle": "writing",
}
MAX_MEMORY_LEVEL = 8  # e.g. batch 16 → 8 → 4 → 2 → 1, then three smaller models
PROMOTIONS_PER_TURN = 25  # bounds the ffprobe calls per turn, so a burst cannot stall the loop


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
        # Test-only ($AUTOKR_DEBUG_STALL_AFTER): the main loop hangs this many seconds after
        # start, to prove that systemd's watchdog restarts a wedged daemon.
        self.stall_after = stall_after

    # --- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        """Recovers interrupted jobs and scans the inboxes; then the daemon is ready."""
        for job in self.store.recover_interrupted():
            logger.info("resuming {} at stage {} (interrupted)", job.path, job.stage)
            self._sweep_temporary_files(job)
        self.watcher.start()
        self._scan()
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
        for path in self.watcher.drain():
            self._consider(path)
        if self.monotonic() >= self.next_scan_at:
            self._scan()
        self._promote_stable_files()
        if self.batch is not None:
            self._pump_batch()
        if self.batch is None and not self.flags.stop:
            self._start_next_batch()
        self._report_status()

    def shutdown(self) -> None:
        self.notifier.send(STOPPING=1, STATUS="stopping")
        if self.batch is not None:
            batch = self.batch
            batch.worker.stop(self.config.daemon.worker_stop_seconds)
            self._pump_batch(stopping=True)
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
        daemon = self.config.daemon
        path = path.absolute()
        if not discovery.accept(path, daemon.inbox, daemon.video_extensions, daemon.follow_symlinks):
            return
        known = self.store.find(str(path))
        try:
            status = path.stat()
        except OSError:
            self.tracker.forget(path)
            if known and known.state == "queued":
                self.store.drop(known.id, "the video was deleted or moved before it was processed")
                logger.info("dropped {}: the video is gone", known.path)
            return
        if known and (known.size, known.mtime_ns) == (status.st_size, status.st_mtime_ns) and known.state != "dropped":
            return
        self.tracker.observe(path)

    def _scan(self) -> None:
        daemon = self.config.daemon
        for path in discovery.scan(daemon.inbox, daemon.video_extensions, daemon.follow_symlinks):
            self._consider(path)
        for job in self.store.jobs():
            if job.state == "queued" and not os.path.exists(job.path):
                self.store.drop(job.id, "the video was deleted or moved before it was processed")
                logger.info("dropped {}: the video is gone", job.path)
        self.next_scan_at = self.monotonic() + daemon.scan_interval_seconds

    def _promote_stable_files(self) -> None:
        ready = self.tracker.ready()
        for stable in ready[:PROMOTIONS_PER_TURN]:
            self._promote(stable)
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
        target = stages.subtitle_path(stable.path, self.config.languages.target)
        ours = bool(known and known.facts.get("subtitles", {}).get(str(target)) == _signature(target))
        if target.exists() and not ours:
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
        job = self.store.add(path, stable.size, stable.mtime_ns, force=ours)
        logger.info("{} {} (job {})", "restarting changed" if replaced else "queued", path, job.id)

    # --- workers -------------------------------------------------------------------------

    def _start_next_batch(self) -> None:
        jobs = self.store.claim_next_batch(self.config.models.videos_per_worker)
        if not jobs:
            return
        stage = jobs[0].stage
        items = {
            str(job.id): stages.batch_item(
                self.config, stage, job.id, Path(job.path), job.force, (job.size, job.mtime_ns)
            )
            for job in jobs
        }
        manifest = self.config.work_dir / "manifests" / f"{stage}.json"
        try:
            stages.write_manifest(manifest, list(items.values()))
        except OSError as error:  # a full or read-only work folder must not stop the daemon
            reason = describe_os_error(error, manifest)
            logger.error("cannot start the {} worker: {}", stage, reason)
            for job in jobs:
                self._stage_failed(job, reason, "", permanent=False)
            return
        level = max(int(job.facts.get("memory_levels", {}).get(stage, 0)) for job in jobs)
        command = stages.worker_command(self.config, stage, manifest)
        command += ["--memory-level", str(level)] if level else []
        faults.crash_daemon_if_armed("before-worker", stage)
        worker = WorkerProcess(stage, command, stages.worker_environment(self.config), wake=self.flags.wake)
        jobs_by_id = {str(job.id): job for job in jobs}
        self.batch = RunningBatch(stage, worker, jobs_by_id, items, last_activity=self.monotonic(), memory_level=level)
        names = ", ".join(Path(job.path).name for job in jobs)
        logger.info("{} {} video(s) in worker pid {}: {}", STAGE_VERBS[stage], len(jobs), worker.pid, names)

    def _pump_batch(self, stopping: bool = False) -> None:
        batch = self.batch
        assert batch is not None
        returncode = batch.worker.poll()
        events = batch.worker.events()
        if events:
            batch.last_activity = self.monotonic()
        for event in events:
            job = batch.jobs.get(event.item)
            if job is None or event.item in batch.reported:
                continue
            if event.kind == "progress":
                self._save_progress(batch, job, float(event.facts.get("percent", 0)))
            elif event.kind == "done":
                batch.reported.add(event.item)
                self._stage_done(batch, job, event.facts)
            elif event.kind == "failed":
                batch.reported.add(event.item)
                reason = str(event.facts.get("reason", "unknown failure"))
                self._stage_failed(job, reason, batch.worker.stderr_tail(), bool(event.facts.get("permanent")))
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
                continue
            else:
                reason = batch.stop_reason or (
                    describe_exit(returncode) if returncode else "worker exited without finishing this video"
                )
                self._stage_failed(job, reason, batch.worker.stderr_tail(), permanent=False)
        stages.remove_temporary_files([item.output for item in batch.items.values()] + _source_outputs(batch))
        elapsed = self.monotonic() - batch.worker.started_at
        ending = "finished" if returncode == 0 else describe_exit(returncode)
        logger.info("{} worker pid {} after {:.1f} s: {}", batch.stage, batch.worker.pid, elapsed, ending)
        self.batch = None

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
        for fact in ("batch_size", "decoding"):
            if facts.get(fact):
                recorded[f"{batch.stage}_{fact}"] = facts[fact]
        if batch.stage == LAST_STAGE:
            recorded["subtitles"] = {str(p): _signature(p) for p in written}
        if not self.store.complete_stage(job, recorded, note=facts.get("note")):
            return  # the job was reset meanwhile (file replaced): this result is stale
        if batch.stage == LAST_STAGE:
            stages.remove_work_files(self.config, job.id)
            logger.info("done: {} ({})", job.path, facts.get("note") or ", ".join(p.name for p in written))
        else:
            logger.info("{}: {} complete", job.path, batch.stage)

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
            head = f'{STAGE_VERBS[self.batch.stage]} "{name}" {percent:.0f}%' + (f" (+{others})" if others else "")
        return " · ".join([*([self.config_problem] if self.config_problem else []), head, *tail])

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


def _signature(path: Path) -> list[int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


def _source_outputs(batch: RunningBatch) -> list[Path]:
    return [Path(item.extra["source_output"]) for item in batch.items.values() if item.extra.get("source_output")]
