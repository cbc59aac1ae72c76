"""Which videos the next worker takes: a pure function of the waiting jobs (no I/O).

The policy, "cohorts, the odd one first": videos go through the stages in cohorts of at most
``videos_per_worker``, oldest first, and a cohort goes through every stage before the next one
starts (a later stage with work waiting goes first). When the videos waiting to start need
more than one cohort, the partial cohort goes first: 12 videos with 8 a worker run as 4, then
8. Every stage still loads its model once per cohort, as many times as before (a worker per
``videos_per_worker`` videos), but the first subtitles appear after a third of the work instead
of at the very end (docs/performance.md "Scheduling", bench/schedule.py). Up to ``videos_per_worker``
videos dropped together stay one cohort: one model load per stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Waiting(Protocol):
    """What the scheduler reads of a job (``daemon.store.Job`` has it)."""

    @property
    def id(self) -> int: ...

    @property
    def stage(self) -> str: ...


J = TypeVar("J", bound=Waiting)


def next_cohort(ready: Sequence[J], stages: Sequence[str], limit: int) -> list[J]:
    """The jobs the next worker takes, in arrival (id) order, from the jobs ``ready`` to run.

    ``stages`` is the pipeline in order; ``limit`` is ``videos_per_worker``."""
    if not ready:
        return []
    ordered = sorted(ready, key=lambda job: job.id)
    started = [job for job in ordered if job.stage != stages[0]]
    if started:  # a cohort on its way: its latest stage first, so that it finishes
        stage = max((job.stage for job in started), key=stages.index)
        return [job for job in started if job.stage == stage][:limit]
    cohorts = math.ceil(len(ordered) / limit)
    return ordered[: len(ordered) - limit * (cohorts - 1)]
