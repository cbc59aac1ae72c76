"""What the status page, ``/api/v1/status`` and ``autokr status --json`` show beyond the rows
themselves: the queue in the order the scheduler will take it, and when each video should be
ready. Read from the store only, so every view agrees.

The estimate: each stage's real-time factor on this machine (the median, over the last
``RTF_SAMPLE`` videos done, of the stage's share of its worker's wall time over the video's
length: ``StageRecord.seconds``), times the length of each video ahead, added up in queue
order. It counts one worker at a time, so with several slots it errs late; until a stage has
run once there is no estimate (``null``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from contract.pipeline import STAGES
from contract.protocol import JsonObject
from daemon import report
from daemon.jobs import Job, JobId, JobState
from daemon.scheduler import waiting_order
from daemon.store import Store

RTF_SAMPLE = 200
SHOWN = 50
"""Rows of each list the status document carries (``queue_total`` and ``counts`` say how many)."""


def realtime_factors(done: Sequence[Job]) -> dict[str, float]:
    """Per stage, the median of seconds over video length among ``done``."""
    samples: dict[str, list[float]] = {}
    for job in done:
        length = job.facts.duration
        for stage, record in job.facts.stages.items():
            if length and record.seconds is not None:
                samples.setdefault(stage, []).append(record.seconds / length)
    return {stage: round(statistics.median(values), 4) for stage, values in samples.items()}


def estimates(store: Store, now: float) -> tuple[list[Job], dict[JobId, float | None], dict[str, float]]:
    """The waiting videos in the scheduler's order, when each should be ready (epoch seconds,
    or None while a stage has no measured factor yet), and the factors."""
    done = store.recent(JobState.DONE, RTF_SAMPLE)
    factors = realtime_factors(done)
    lengths = [job.facts.duration for job in done if job.facts.duration]
    typical = statistics.median(lengths) if lengths else None
    running = store.select(JobState.RUNNING, None)
    queued = waiting_order(store.select(JobState.QUEUED, None), STAGES)

    def left(job: Job, progress: float = 0.0) -> float | None:
        length = job.facts.duration or typical
        stages = STAGES[STAGES.index(job.stage) :]
        if length is None or any(stage not in factors for stage in stages):
            return None
        first = factors[stages[0]] * length * (1 - progress / 100)
        return first + sum(factors[stage] * length for stage in stages[1:])

    clock: float | None = now
    for job in running:
        taken = left(job, job.progress or 0.0)
        clock = None if clock is None or taken is None else clock + taken
    ready: dict[JobId, float | None] = {}
    for job in queued:
        taken = left(job)
        clock = None if clock is None or taken is None else clock + taken
        ready[job.id] = None if clock is None else round(clock, 1)
    return queued, ready, factors


def row(job: Job, eta: float | None = None) -> JsonObject:
    """One video as the page lists it (the API's ``JobSummary``)."""
    return {
        "id": job.id,
        "name": Path(job.path).name,
        "folder": Path(job.path).parent.name,
        "state": job.state.value,
        "stage": job.stage,
        "progress": job.progress,
        "reason": job.error or job.note,
        "priority": job.priority or None,
        "eta": eta,
        "updated_at": job.updated_at,
    }


def status_document(store: Store, now: float, problems: list[str], media: str | None) -> JsonObject:
    """``GET /api/v1/status``: everything the status page shows, documented in docs/web.md."""
    counts = store.counts()
    skipped: dict[str, int] = {}
    for note in store.skipped_notes():
        kind = report.skip_kind(note)
        skipped[kind] = skipped.get(kind, 0) + 1
    queued, ready, factors = estimates(store, now)
    return {
        "api": 1,
        "now": now,
        "counts": {state.value: counts.get(state, 0) for state in JobState},
        "skipped_by_reason": skipped,
        "running": [row(job) for job in store.select(JobState.RUNNING, None)],
        "queue": [row(job, ready.get(job.id)) for job in queued[:SHOWN]],
        "queue_total": len(queued),
        "done": [row(job) for job in store.recent(JobState.DONE, SHOWN)],
        "failed": [row(job) for job in store.recent(JobState.FAILED, SHOWN)],
        "skipped": [row(job) for job in store.recent(JobState.SKIPPED, SHOWN)],
        "realtime_factors": factors,
        "problems": problems,
        "media": media,
    }


def public_jobs(store: Store, jobs: Sequence[Job], now: float) -> list[JsonObject]:
    """``status --json``'s objects (``Job.as_public_dict``), a waiting video's with its place in
    the queue and its estimate: the CLI and ``/api/v1/jobs`` print the same."""
    queued, ready, _ = estimates(store, now)
    places = {job.id: number for number, job in enumerate(queued, 1)}
    return [{**job.as_public_dict(), "queue_position": places.get(job.id), "eta": ready.get(job.id)} for job in jobs]
