"""The daemon's main loop: intake, then one stage worker at a time, then status.

Signal handlers only set flags; everything happens here, in one thread, in this order each
turn: stop/reload flags → intake (inotify paths, periodic scan, promotion: ``daemon/intake.py``)
→ the running cohort's events (``daemon/cohort.py``, recorded by ``daemon/outcomes.py``) → the
next cohort, as ``daemon/scheduler.py`` picks it → status and watchdog ping
(``daemon/status.py``).

A full state folder (``StateFull`` from the store, or too little free space) or a database
locked by another process (``DatabaseLocked``) pauses the daemon: it claims no new work, keeps
the events it could not record, says why in ``STATUS=``, and carries on by itself once there is
space again or the lock is released.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from contract import faults
from contract.files import describe_os_error
from contract.manifest import ManifestItem, write_manifest
from contract.pipeline import PIPELINE, STAGE
from contract.protocol import EXIT_CLUSTER_UNREACHABLE, JsonObject
from daemon import stages
from daemon.announcer import Announcer, Teller, announcer_key, expire_unconfigured, senders_for
from daemon.availability import WAITING, ModelWatch
from daemon.cluster import ClusterWatch, bridge_reason
from daemon.cohort import CohortRunner
from daemon.config import Config, LanguageSettings, load_config
from daemon.errors import ConfigError, DatabaseLocked, StateFull, StorePaused
from daemon.intake import Intake
from daemon.jobs import Job, JobId
from daemon.metrics import Metrics, exit_cause
from daemon.outcomes import Outcomes, failed
from daemon.sd_notify import Notifier
from daemon.series import translate_order
from daemon.settings import LLM
from daemon.slots import Slot, plan_slots
from daemon.status import Running, StatusReporter, status_line, write_problems
from daemon.store import Store, state_space_problem
from daemon.web import WebSide

STATE_FULL_RECHECK_SECONDS = 5.0  # while paused for a full state folder, look again this often
DELETED_CHECK_SECONDS = 1.0  # how often the running cohort's videos are checked to still exist


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
        self.announcer: Announcer | None = None
        self.announcer_key: object = None  # what the running announcer was made from (announcer_key)
        self.teller = Teller(store, ())
        self.announcement_problems: list[str] = []  # shown in STATUS= (a key file that cannot be read)
        self.intake = Intake(config, store, self.flags.wake, self._stop_worker_of, self.teller, monotonic)
        self.metrics = Metrics()  # what /metrics shows (daemon/metrics.py)
        self.web = WebSide(self.intake.hooks, self.flags.wake, self.metrics)  # [web] listen
        self.published: object = None  # the last "live" event sent to the status stream
        self.status = StatusReporter(self.notifier, monotonic)
        self.slots: list[Slot] = []  # where workers may run, from [cluster] (at start)
        self.cluster = ClusterWatch(config, monotonic)  # the Ray backend: reachable, or paused
        self.models = ModelWatch(monotonic)  # which stages wait for a model that cannot be had
        self.busy: dict[str, Busy] = {}  # slot name → the cohort running there
        self.config_problem = ""  # shown in STATUS= until a reload succeeds
        self.problems_written: list[str] | None = None  # what <state_dir>/problems.json holds
        self.state_full = ""  # why the daemon is paused ("state folder is full ...", "... locked ..."), or ""
        self.paused_for_lock = False  # the pause is another process's lock on the database, not a full disk
        self.state_checked_at = 0.0
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
        except StorePaused as error:
            self._pause(error)
        self._plan_slots()
        self._start_announcer()
        self._guarded(lambda: self._check_models(ask_hub=True))
        self.intake.start()
        self.web.apply(self.config)
        if not self.state_full:
            self._guarded(self.intake.scan)
        self.status.send(self._status(), READY=1)
        logger.info("ready: {}", self.status.text)

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
        self.status.tick(self._status)

    def _check_models(self, ask_hub: bool = False) -> None:
        """Whether the configured models can be had (``daemon/availability.py``); the videos
        waiting at a stage whose model cannot be are held there, their note says why."""
        held = self.models.check(self.config, ask_hub=True) if ask_hub else self.models.tick(self.config)
        if not held:
            return
        # At every look: videos that reached a held stage since get the note, a freed one loses it.
        for spec in PIPELINE:
            if spec.model is not None:
                self.store.note_waiting(spec.name, self.models.blocked.get(spec.name), WAITING)

    def _work(self) -> None:
        self._check_models()
        self.intake.turn()
        for busy in list(self.busy.values()):
            self._pump(busy)
        free = [slot for slot in self.slots if slot.name not in self.busy]
        if not self.cluster.may_start():  # the Ray cluster did not answer a moment ago
            free = [slot for slot in free if not slot.remote]
        if free and not self.flags.stop:
            problem = state_space_problem(self.config.daemon.state_dir)
            if problem:
                raise StateFull(problem)
            for slot in free:
                self._start_next_cohort(slot)

    def _guarded(self, step: Callable[[], None]) -> None:
        """Runs ``step``; a full state folder pauses the daemon instead of stopping it."""
        try:
            step()
        except StorePaused as error:
            self._pause(error)

    def _pause(self, error: StorePaused) -> None:
        reason, locked = str(error), isinstance(error, DatabaseLocked)
        if not self.state_full:
            if locked:
                logger.error("{}; AutoKR pauses (no new work) until it is released", reason)
            else:
                logger.error("{}: AutoKR pauses (no new work) until space is freed there", reason)
        self.state_full = reason
        self.paused_for_lock = locked
        self.state_checked_at = self.monotonic()

    def _state_has_room(self) -> bool:
        """While paused: every few seconds, whether there is space again (then it resumes)."""
        now = self.monotonic()
        if now - self.state_checked_at < STATE_FULL_RECHECK_SECONDS:
            return False
        self.state_checked_at = now
        if self.paused_for_lock:
            if not self.store.lock_is_free():
                return False
            logger.info("the database is no longer locked: AutoKR carries on")
        else:
            problem = state_space_problem(self.config.daemon.state_dir)
            if problem:
                self.state_full = problem
                return False
            logger.info("the state folder has space again: AutoKR carries on")
        self.state_full = ""
        self.paused_for_lock = False
        self.intake.next_scan_at = 0.0  # files seen while paused were not recorded: look again
        return True

    def shutdown(self) -> None:
        self.notifier.send(STOPPING=1, STATUS="stopping")
        for busy in list(self.busy.values()):
            try:
                self._stop_cohort(busy)
            except StorePaused as error:  # the jobs stay "running": the next start resumes them
                logger.warning("{}: interrupted jobs are resumed at the next start", error)
        self.intake.stop()
        self.web.stop()
        if self.announcer is not None:
            self.announcer.stop()
        logger.info("stopped")

    def reload(self) -> None:
        """SIGHUP: re-read the config; a bad one is reported and the old one kept."""
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            new = load_config(self.config.path, need_state_dir=False)  # a new state_dir is refused below
        except ConfigError as error:
            logger.error("reload failed, keeping the old configuration: {}", error)
            self.config_problem = f"config reload failed, running on the old one: {error}"
            self.status.send(self._status(), READY=1)
            return
        refused = ""
        if new.daemon.state_dir != self.config.daemon.state_dir:
            # The database, the lock and every job's work folder live there: moving them under
            # running work is a restart's job.
            new = dataclasses.replace(
                new, daemon=dataclasses.replace(new.daemon, state_dir=self.config.daemon.state_dir)
            )
            refused = (
                f"[daemon] state_dir changed in {new.path}: restart AutoKR to use it (systemctl restart autokr); "
                f"it keeps {self.config.daemon.state_dir} until then"
            )
            logger.warning("{}", refused)
        self.intake.reload(new)
        old, self.config = self.config, new
        if (new.cluster, new.models.device) != (old.cluster, old.models.device):
            # A worker running in a slot that is no longer listed finishes its cohort first.
            self.cluster = ClusterWatch(new, self.monotonic)
            self._plan_slots()
        self._start_announcer()
        self.web.apply(new)
        self._guarded(lambda: self._check_models(ask_hub=True))
        self.config_problem = refused
        logger.info("configuration reloaded from {}", new.path)
        self.status.send(self._status(), READY=1)

    def _plan_slots(self) -> None:
        """Where workers may run: the devices of ``[cluster]``, or the Ray cluster's GPUs
        (counted now; a cluster that does not answer pauses Ray work)."""
        self.slots, problem = plan_slots(self.config)
        if problem:
            self.cluster.unreachable(problem)
        else:
            self.cluster.reachable()
        described = ", ".join(f"{slot.name} ({'/'.join(sorted(slot.stages))})" for slot in self.slots)
        logger.info("worker slots: {}", described)

    def _start_announcer(self) -> None:
        """(Re)starts the threads that tell media servers and notification services, from the
        config as it is now; a key refused before may have been replaced, so it is tried again.
        A reload that leaves the servers, services and keys as they were keeps the threads
        running; one that changes them lets the old ones end by themselves (a call under way
        ends at its deadline): the main loop never waits on a server."""
        key = announcer_key(self.config)
        with contextlib.suppress(StorePaused):
            self.teller.outbox.retry_now()
        if self.announcer is not None and key == self.announcer_key:
            return
        if self.announcer is not None:
            self.announcer.stop(timeout=0)
            self.announcer = None
        self.announcer_key = key
        senders, self.announcement_problems = senders_for(self.config)
        for problem in self.announcement_problems:
            logger.error("{}", problem)
        self.teller.targets = tuple(senders)
        with contextlib.suppress(StorePaused):
            expire_unconfigured(self.teller.outbox, tuple(senders))
        if not senders:
            return
        database = self.config.database_path
        self.announcer = Announcer(lambda: Store(database), senders, digest=self.config.notify.digest)
        self.announcer.start()
        logger.info("telling {} about new subtitles", ", ".join(senders))

    # --- the running cohort --------------------------------------------------------------

    def _languages(self, job: Job) -> tuple[str, str]:
        """The job's (source, target): pinned when its first stage started, else the config's."""
        return job.facts.languages or (self.config.languages.source, self.config.languages.target)

    def _config_for(self, job: Job) -> Config:
        """The config a job's stages run with: the current one, with the job's own languages."""
        source, target = self._languages(job)
        if (source, target) == (self.config.languages.source, self.config.languages.target):
            return self.config
        return dataclasses.replace(self.config, languages=LanguageSettings(source=source, target=target))

    def _start_next_cohort(self, slot: Slot) -> None:
        runnable = [stage for stage in slot.stages if stage not in self.models.blocked]
        waiting = self.store.next_cohort(self.config.models.videos_per_worker, runnable)
        if not waiting:
            return
        # One cohort, one pair of languages (a reload may have changed them for newer jobs).
        waiting = [job for job in waiting if self._languages(job) == self._languages(waiting[0])]
        config = self._config_for(waiting[0])
        stage = waiting[0].stage
        manifest = self.config.work_dir / "manifests" / f"{stage}-{slot.name.replace(':', '').replace(' ', '-')}.json"
        # The manifest is written before the jobs are claimed, so a full state folder leaves
        # them waiting untouched (nothing to undo) and the daemon pauses.
        try:
            items = self._write_manifest(config, manifest, stage, waiting)
        except OSError as error:  # a full or read-only work folder must not stop the daemon
            problem = state_space_problem(self.config.daemon.state_dir)
            if problem:
                raise StateFull(problem) from error
            reason = describe_os_error(error, manifest)
            logger.error("cannot start the {} worker: {}", stage, reason)
            for job in self.store.claim(waiting):
                failed(self.config, self.store, self.teller, job, reason)
            return
        jobs = self.store.claim(waiting, languages=self._languages(waiting[0]))
        if not jobs:
            return
        if len(jobs) != len(waiting):  # one changed meanwhile (autokr retry --force): not in this cohort
            items = self._write_manifest(config, manifest, stage, jobs)
        level = max(job.facts.memory_levels.get(stage, 0) for job in jobs)
        faults.crash_daemon_if_armed("before-worker", stage)
        try:
            cohort = CohortRunner(
                config, stage, items, manifest, level, wake=self.flags.wake, monotonic=self.monotonic, slot=slot
            )
        except ConfigError as error:  # the LLM server's key file cannot be read now
            reason = "; ".join(error.problems)
            logger.error("cannot start the {} worker: {}", stage, reason)
            for job in jobs:
                failed(self.config, self.store, self.teller, job, reason)
            return
        claimed = {job.id: job for job in jobs}
        outcomes = Outcomes(self.config, self.store, self.teller, cohort, claimed, self.monotonic, self.metrics)
        self.metrics.worker_starts.labels(stage).inc()
        self.busy[slot.name] = Busy(slot, cohort, outcomes, claimed)
        names = ", ".join(Path(job.path).name for job in jobs)
        where = f" on {slot.name}" if len(self.slots) > 1 else ""
        logger.info(
            "{} {} video(s) in worker pid {}{}: {}", STAGE[stage].verb, len(jobs), cohort.worker.pid, where, names
        )

    def _write_manifest(self, config: Config, manifest: Path, stage: str, jobs: list[Job]) -> dict[JobId, ManifestItem]:
        llm = stage == "translate" and config.models.translator == LLM
        items = {
            job.id: stages.manifest_item(
                config, stage, job.id, Path(job.path), job.force, job.signature,
                own_subtitles=job.facts.subtitles,
                translate=translate_order(self.store, Path(job.path), config.daemon.inbox, logger.warning)
                if llm else None,
                listen=job.listen_first and config.library.check_untagged_audio,
            )
            for job in jobs
        }  # fmt: skip
        write_manifest(manifest, list(items.values()))
        return items

    def _pump(self, busy: Busy) -> None:
        """Records a running worker's events; a worker whose videos were all deleted is
        stopped first."""
        now = self.monotonic()
        if now - busy.deleted_checked_at >= DELETED_CHECK_SECONDS:
            busy.deleted_checked_at = now
            waiting = [busy.jobs[job_id] for job_id in busy.cohort.waiting]
            if waiting and not any(os.path.exists(job.path) for job in waiting):
                logger.info("the video(s) of the running {} worker were deleted: stopping it", busy.cohort.stage)
                busy.cohort.stop()
        self._collect(busy)

    def _stop_cohort(self, busy: Busy) -> None:
        """Stops a running worker on purpose: its unfinished videos wait at their stage (or
        are dropped, when gone)."""
        busy.cohort.stop()
        self._collect(busy)

    def _collect(self, busy: Busy) -> None:
        """Hands the cohort's events to ``Outcomes``; forgets the cohort once it is over."""
        returncode = busy.cohort.pump(busy.outcomes)
        if returncode is None:
            return
        del self.busy[busy.slot.name]
        cohort = busy.cohort
        cause = exit_cause(returncode, cohort.stopped_on_purpose, cohort.timed_out)
        self.metrics.worker_exits.labels(cohort.stage, cause).inc()
        busy.outcomes.timed(cohort.elapsed)
        if not busy.slot.remote:
            return
        if returncode == EXIT_CLUSTER_UNREACHABLE:
            self.cluster.unreachable(bridge_reason(busy.cohort.worker.stderr_tail()) or "no answer")
        elif self.cluster.problem and (returncode == 0 or busy.cohort.reported) and not self.flags.stop:
            self._plan_slots()  # it answered again: it may have more GPUs now, or fewer

    def _stop_worker_of(self, job: Job) -> None:
        """Intake is about to start ``job`` over (its video changed): a worker at it stops first."""
        for busy in list(self.busy.values()):
            if job.id in busy.cohort.waiting:
                stage = busy.cohort.stage
                logger.warning("{} changed while its {} worker ran: stopping it, starting over", job.path, stage)
                self._stop_cohort(busy)

    def _sweep_temporary_files(self, job: Job) -> None:
        item = stages.manifest_item(self._config_for(job), job.stage, job.id, Path(job.path), job.force)
        outputs = [item.output] + ([item.subtitle.source_output] if item.subtitle.source_output else [])
        stages.remove_temporary_files(outputs)

    # --- status --------------------------------------------------------------------------

    def _status(self) -> str:
        running = []
        for busy in self.busy.values():
            first = next(iter(busy.jobs))
            running.append(
                Running(
                    STAGE[busy.cohort.stage].verb,
                    Path(busy.jobs[first].path).name,
                    busy.cohort.progress.get(first, 0.0),
                    len(busy.jobs) - 1,
                    busy.slot.name if len(self.slots) > 1 else "",
                )  # fmt: skip
            )
        lasting = [self.intake.watcher.problem, *self.models.blocked.values(), self.config_problem]
        lasting += [*self.announcement_problems, self.web.problem]
        lasting = [problem for problem in lasting if problem]
        if lasting != self.problems_written:
            write_problems(self.config.daemon.state_dir, lasting)
            self.problems_written = lasting
        problems = [problem for problem in (self.state_full, self.cluster.problem) if problem] + lasting
        counts = self.store.counts()
        live: JsonObject = {
            "counts": {state.value: number for state, number in counts.items()},
            "running": [
                {
                    "id": job_id,
                    "stage": busy.cohort.stage,
                    "progress": round(busy.cohort.progress.get(job_id, 0.0), 1),
                    "slot": busy.slot.name,
                }
                for busy in self.busy.values()
                for job_id in busy.cohort.waiting
            ],  # fmt: skip
            "problems": problems,
        }
        if live != self.published:  # the status page's stream: once a second at most, when it changed
            self.published = live
            self.web.publish("live", live)
        return status_line(counts, running, problems, paused=bool(self.state_full))


@dataclass
class Busy:
    """A slot's running cohort: its worker, who records its events, the jobs it claimed."""

    slot: Slot
    cohort: CohortRunner
    outcomes: Outcomes
    jobs: dict[JobId, Job]
    deleted_checked_at: float = 0.0
