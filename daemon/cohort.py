"""One cohort: the videos one stage worker is started on (a manifest of up to
``[models] videos_per_worker``; a "batch" is only ever a decoding batch inside a model), its
worker, its events read, a hang stopped,
and each video's end reported exactly once to whoever ran it.

The daemon (``daemon/outcomes.py`` records into the store) and ``autokr once`` (keeps the result
in memory) both run cohorts through this class; only their ``CohortHandler`` differs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loguru import logger

from contract.manifest import ManifestItem
from contract.protocol import StageDone, WorkerEvent
from daemon import stages
from daemon.config import Config
from daemon.jobs import JobId, job_id_from_item
from daemon.runner import WorkerProcess, describe_exit
from daemon.slots import Slot


@dataclass(frozen=True)
class Ending:
    """How the worker ended for a video it never reported done or failed."""

    returncode: int
    on_purpose: bool
    """Stopped by the daemon on purpose (shutdown, the video changed or vanished): not a failure."""
    reason: str
    """A person's words for it, when it is a failure."""


class CohortHandler(Protocol):
    """What becomes of each video's events. A method may raise ``StateFull``: the event is then
    kept and handed over again on the next ``pump``."""

    def progress(self, job_id: JobId, percent: float) -> None: ...

    def done(self, job_id: JobId, result: StageDone) -> None: ...

    def failed(self, job_id: JobId, reason: str, permanent: bool) -> None: ...

    def unfinished(self, job_id: JobId, ending: Ending) -> None: ...


class CohortRunner:
    """A running cohort; ``pump`` never blocks."""

    def __init__(
        self,
        config: Config,
        stage: str,
        items: dict[JobId, ManifestItem],
        manifest: Path,
        memory_level: int = 0,
        wake: threading.Event | None = None,
        on_log: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        slot: Slot | None = None,
    ) -> None:
        """``slot``: where it runs (its device and ``CUDA_VISIBLE_DEVICES``); None: as
        ``[models] device`` says (``autokr once``)."""
        self.stage = stage
        self.slot = slot
        self.items = items
        self.memory_level = memory_level
        self.timeout = config.daemon.stage_timeout_seconds
        self.grace = config.daemon.worker_stop_seconds
        self.monotonic = monotonic
        self.reported: set[JobId] = set()
        self.progress: dict[JobId, float] = {}
        self._pending: list[WorkerEvent] = []  # read, not yet recorded (a full state folder)
        self._stop_reason: str | None = None  # set when the worker was stopped; "" on purpose
        self.timed_out = False  # stopped for reporting nothing for stage_timeout_seconds
        device, remote = (slot.device or None, slot.remote) if slot else (None, False)
        command = stages.worker_command(config, stage, manifest, device, remote)
        command += ["--memory-level", str(memory_level)] if memory_level else []
        environment = {**stages.worker_environment(config, stage), **(slot.environment if slot else {})}
        self.worker = WorkerProcess(stage, command, environment, wake=wake, on_log=on_log)
        self.last_activity = monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds since the worker started."""
        return self.monotonic() - self.worker.started_at

    @property
    def stopped_on_purpose(self) -> bool:
        return self._stop_reason == ""

    @property
    def waiting(self) -> list[JobId]:
        """The videos the worker has not reported on yet."""
        return [job_id for job_id in self.items if job_id not in self.reported]

    def stop(self, reason: str = "") -> None:
        """Stops the worker: on purpose (``reason`` empty: its videos are not failed), or because
        it misbehaved (``reason`` is what each unreported video fails with)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self.worker.stop(self.grace)

    def pump(self, handler: CohortHandler) -> int | None:
        """Hands every new event to ``handler``; once the worker has exited, reports each video
        it left unreported as ``unfinished`` and returns its exit status (else None)."""
        returncode = self.worker.poll()
        events = self.worker.events()
        if events:
            self.last_activity = self.monotonic()
            self._pending.extend(events)
        while self._pending:
            self._hand_over(handler, self._pending[0])
            self._pending.pop(0)  # only once handled: StateFull keeps it for the next pump
        if returncode is None and self.monotonic() - self.last_activity > self.timeout:
            reason = (
                f"the {self.stage} worker reported nothing for {self.timeout:.0f} s and was stopped "
                "(hung? see stage_timeout_seconds)"
            )
            logger.warning("{}: stopping it", reason)
            self.timed_out = True
            self.stop(reason)
            returncode = self.worker.poll()
        if returncode is None:
            return None
        on_purpose = self._stop_reason == ""
        if self._stop_reason:
            reason = self._stop_reason
        else:
            reason = describe_exit(returncode) if returncode else "worker exited without finishing this video"
        for job_id in self.waiting:
            handler.unfinished(job_id, Ending(returncode, on_purpose, reason))
            self.reported.add(job_id)
        outputs = [item.output for item in self.items.values()]
        outputs += [item.subtitle.source_output for item in self.items.values() if item.subtitle.source_output]
        stages.remove_temporary_files(outputs)
        elapsed = self.elapsed
        ending = "finished" if returncode == 0 else describe_exit(returncode)
        logger.info("{} worker pid {} after {:.1f} s: {}", self.stage, self.worker.pid, elapsed, ending)
        return returncode

    def _hand_over(self, handler: CohortHandler, event: WorkerEvent) -> None:
        job_id = job_id_from_item(event.item)
        if job_id is None or job_id not in self.items or job_id in self.reported:
            return
        if event.kind == "progress":
            self.progress[job_id] = float(event.facts.get("percent", 0))
            handler.progress(job_id, self.progress[job_id])
        elif event.kind == "done":
            handler.done(job_id, StageDone.from_event(event))
            self.reported.add(job_id)
        elif event.kind == "failed":
            reason = str(event.facts.get("reason", "unknown failure"))
            handler.failed(job_id, reason, bool(event.facts.get("permanent")))
            self.reported.add(job_id)
