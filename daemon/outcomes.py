"""What the daemon makes of each video's end in a cohort: the stage recorded as done (and, after
the last stage, the work files cleaned and AutoKR's stale subtitle removed), a failed attempt
retried with backoff, a GPU out of memory retried one memory level down, a vanished video
dropped. ``Outcomes`` is the daemon's ``CohortHandler`` (``daemon/cohort.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from contract import faults
from contract.files import file_signature, remove_own_file
from contract.manifest import Term
from contract.pipeline import LAST_STAGE
from contract.protocol import EXIT_CLUSTER_UNREACHABLE, EXIT_OUT_OF_MEMORY, StageDone
from daemon import stages
from daemon.announcer import Teller, minutes
from daemon.cohort import CohortRunner, Ending
from daemon.config import Config
from daemon.jobs import AudioFacts, Job, JobId, JobState, Signature, StageRecord
from daemon.media_servers import Change
from daemon.metrics import Metrics
from daemon.series import SeriesMemory, series_folder
from daemon.store import Store

MAX_MEMORY_LEVEL = 8  # e.g. batch 16 → 8 → 4 → 2 → 1, then three smaller models
PROGRESS_SAVE_SECONDS = 1.0  # a running job's progress is written at most this often


class Outcomes:
    """Records one cohort's events in the store."""

    def __init__(
        self,
        config: Config,
        store: Store,
        teller: Teller,
        cohort: CohortRunner,
        jobs: dict[JobId, Job],
        monotonic: Callable[[], float],
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.finished: list[JobId] = []  # done at this stage, in order: timed at the cohort's end
        self.config = config
        self.store = store
        self.teller = teller
        self.cohort = cohort
        self.jobs = jobs
        self.monotonic = monotonic
        self._saved_at: dict[JobId, float] = {}

    # --- CohortHandler --------------------------------------------------------------------

    def progress(self, job_id: JobId, percent: float) -> None:
        now = self.monotonic()
        if now - self._saved_at.get(job_id, 0.0) >= PROGRESS_SAVE_SECONDS or percent >= 100:
            self._saved_at[job_id] = now
            self.store.set_progress(self.jobs[job_id], percent)

    def done(self, job_id: JobId, result: StageDone) -> None:
        job, stage = self.jobs[job_id], self.cohort.stage
        last = stage == LAST_STAGE
        written = [Path(path) for path in result.written] if last else [self.cohort.items[job_id].output]
        if result.skipped and not last:  # heard speech in another language: nothing was written
            written = []
        missing = [str(path) for path in written if not path.exists()]
        if missing:
            failed(self.config, self.store, self.teller, job, f"worker reported success but {missing[0]} is missing")
            return
        faults.crash_daemon_if_armed("before-commit", stage)
        device = result.node or (self.cohort.slot.name if self.cohort.slot else None)
        record = StageRecord(
            result.model, result.engine, result.decoding, result.batch_size, device,
            result.fallback_lines or None, result.fallback_model,
        )  # fmt: skip
        subtitles: dict[str, Signature] | None = None
        if last:
            # Still AutoKR's own (untouched since): kept, so a later run may replace them.
            subtitles = {path: sig for path, sig in job.facts.subtitles.items() if _signature(Path(path)) == sig}
            subtitles.update({str(path): sig for path in written if (sig := _signature(path)) is not None})
        skipped = result.skipped
        heard = AudioFacts(result.language, "ear", result.language_probability) if result.language else None
        if not self.store.complete_stage(
            job, record, subtitles, subtitles_for=job.signature if last and written else None,
            note=skipped or result.note, skipped=bool(skipped), audio=heard,
        ):  # fmt: skip
            return  # the job was reset meanwhile (file replaced): this result is stale
        self.finished.append(job_id)
        if result.terms:
            self._remember(job, result.terms)
        if skipped:
            stages.remove_work_files(self.config, job.id)
            logger.info("skipped {}: {}", job.path, skipped)
            return
        if not last:
            logger.info("{}: {} complete", job.path, stage)
            return
        stages.remove_work_files(self.config, job.id)
        if not written:  # no speech in this content: AutoKR's subtitle of older content must go
            remove_stale_subtitles(self.store, self.teller, job)
        names = ", ".join(path.name for path in written)
        logger.info("done: {} ({})", job.path, result.note or names)
        self.teller.subtitles([Change(str(path), "Modified" if str(path) in job.facts.subtitles else "Created")
                               for path in written])  # fmt: skip
        took = minutes(self.store.clock() - job.created_at)
        self.teller.message(
            job.path,
            "AutoKR: subtitles ready",
            f"{Path(job.path).name}: {result.note or names} ({took} after it was found)",
        )

    def _remember(self, job: Job, terms: tuple[Term, ...]) -> None:
        """The names the LLM gave, for the later episodes of the same series."""
        folder = series_folder(Path(job.path), self.config.daemon.inbox)
        if folder is None:
            return
        new = SeriesMemory(self.store).remember(folder, terms, job.id)
        if new:
            logger.info("{}: {} new name(s) for the series {}", job.path, new, folder.name)

    def failed(self, job_id: JobId, reason: str, permanent: bool) -> None:
        failed(
            self.config, self.store, self.teller, self.jobs[job_id], reason, self.cohort.worker.stderr_tail(), permanent
        )

    def unfinished(self, job_id: JobId, ending: Ending) -> None:
        job = self.jobs[job_id]
        if ending.on_purpose and not os.path.exists(job.path):
            self.store.drop(job.id, f"the video was deleted or moved during {self.cohort.stage}")
            logger.info("dropped {}: the video is gone", job.path)
        elif ending.on_purpose or ending.returncode == EXIT_CLUSTER_UNREACHABLE:
            self.store.release(job)  # waits at its stage, no attempt counted
        else:
            retried = ending.returncode == EXIT_OUT_OF_MEMORY and self._retry_with_less_memory(job)
            if not retried:
                failed(self.config, self.store, self.teller, job, ending.reason, self.cohort.worker.stderr_tail())

    def timed(self, elapsed: float) -> None:
        """The cohort's worker has ended after ``elapsed`` s: each video done at this stage gets
        its share of that time, by its length (a packed cohort decodes its videos together)."""
        if not self.finished:
            return
        lengths = {job_id: self.jobs[job_id].facts.duration for job_id in self.finished}
        known = [length for length in lengths.values() if length]
        typical = sum(known) / len(known) if known else 1.0
        total = sum(length or typical for length in lengths.values())
        shares = {job_id: elapsed * (length or typical) / total for job_id, length in lengths.items()}
        self.store.record_seconds(self.cohort.stage, shares)
        if self.metrics is not None:
            for job_id, seconds in shares.items():
                self.metrics.stage_done(self.cohort.stage, seconds, lengths[job_id])

    def _retry_with_less_memory(self, job: Job) -> bool:
        """GPU out of memory: queue the stage again one memory level down (half the batch,
        then the next smaller model); False once there is no level left to try."""
        level = self.cohort.memory_level + 1
        if level > MAX_MEMORY_LEVEL:
            return False
        reason = f"out of GPU memory; retrying with less (memory level {level}: smaller batch or model)"
        if self.store.requeue_smaller(job, level, reason):
            logger.warning("{} at {}: {}", job.path, self.cohort.stage, reason)
            if self.metrics is not None:
                self.metrics.memory_stepdowns.labels(self.cohort.stage).inc()
        return True


def failed(
    config: Config, store: Store, teller: Teller, job: Job, reason: str, stderr_tail: str = "", permanent: bool = False
) -> None:
    """A failed attempt at ``job.stage``: queued again after a backoff, or failed for good
    (then AutoKR's subtitle of replaced content goes); a vanished video is dropped instead."""
    if not os.path.exists(job.path):
        store.drop(job.id, f"the video disappeared during {job.stage}")
        logger.info("dropped {}: the video disappeared during {}", job.path, job.stage)
        return
    daemon = config.daemon
    updated = store.fail_stage(job, reason, stderr_tail, permanent, daemon.max_attempts, daemon.retry_backoff_seconds)
    if updated is None:
        return
    if updated.state == JobState.FAILED:
        logger.error("failed: {} at {}: {}", job.path, job.stage, reason)
        teller.message(job.path, "AutoKR: a video failed", f"{Path(job.path).name}: {reason}")
        remove_stale_subtitles(store, teller, updated)
    else:
        wait = max(0.0, updated.not_before - store.clock())
        logger.warning("{} at {}: {}; retrying in {:.0f} s", job.path, job.stage, reason, wait)


def remove_stale_subtitles(store: Store, teller: Teller, job: Job) -> None:
    """The video was replaced and its new content yields no subtitle: AutoKR's own subtitle
    of the old content is removed, only while it is untouched (signature checked), so it
    neither lingers beside new content nor is mistaken later for a person's file."""
    if job.facts.subtitles_for == job.signature:
        return  # written for this very content (a retry): still right
    removed = [path for path, sig in job.facts.subtitles.items() if remove_own_file(Path(path), list(sig))]
    if removed:
        store.forget_subtitles(job, removed)
        teller.subtitles([Change(path, "Deleted") for path in removed])
        logger.info("{}: removed AutoKR's subtitle of the replaced video: {}", job.path, ", ".join(removed))


def _signature(path: Path) -> Signature | None:
    found = file_signature(path)
    return (found[0], found[1]) if found else None
