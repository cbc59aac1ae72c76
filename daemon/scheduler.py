"""Which videos the next worker takes: a pure function of the waiting jobs (no I/O).

The policy, "cohorts, the odd one first": videos go through the stages in cohorts of at most
``videos_per_worker``, and a cohort goes through every stage before the next one starts (a
later stage with work waiting goes first). When the videos waiting to start need more than one
cohort, the partial cohort goes first: 12 videos with 8 a worker run as 4, then 8. Every stage
still loads its model once per cohort, as many times as before (a worker per
``videos_per_worker`` videos), but the first subtitles appear after a third of the work instead
of at the very end (docs/performance.md "Scheduling", bench/schedule.py). Up to
``videos_per_worker`` videos dropped together stay one cohort: one model load per stage.

Which videos start first (``library_order``), for a library's backlog: the folder holding the
newest video (by modification time) first, so last night's episode is ready before a 2015
season; within a folder, episodes in their natural order (``S01E02`` before ``S01E10``, ``第2話``
before ``第10話``, ``Show - 02`` before ``Show - 10``), and other videos newest first.

Someone asked for it (``priority``, a play webhook: ``daemon/web.py``): such videos go before
everything else, a cohort of their own at their latest stage, ahead of a cohort on its way.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Waiting(Protocol):
    """What the scheduler reads of a job (``daemon.store.Job`` has it)."""

    @property
    def id(self) -> int: ...

    @property
    def stage(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def mtime_ns(self) -> int: ...

    @property
    def priority(self) -> float: ...


J = TypeVar("J", bound=Waiting)

_SEASON_EPISODE = re.compile(r"(?i)(?<![a-z0-9])s(\d{1,4})[ ._-]?e(\d{1,4})(?!\d)|(?<!\d)(\d{1,2})x(\d{1,4})(?!\d)")
_EPISODE = re.compile(
    r"(?i)第\s*(\d+)\s*[話话回集]|(?<![a-z])(?:ep|episode|e)[ ._-]?(\d{1,4})(?!\d)|[ _]-[ _](\d{1,4})(?:v\d)?(?![\d])"
)
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """``Show 2`` before ``Show 10``: digits compared as numbers, the rest case-insensitively."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower()) for part in _DIGITS.split(name) if part)


def episode_number(name: str) -> tuple[int, int] | None:
    """(season, episode) a file name gives, or None when it names no episode. A name with an
    episode but no season (``第2話``, ``Show - 02``) is season 0."""
    found = _SEASON_EPISODE.search(name)
    if found:
        season, episode = (found.group(1), found.group(2)) if found.group(1) else (found.group(3), found.group(4))
        return int(season), int(episode)
    found = _EPISODE.search(name)
    if found:
        return 0, int(next(group for group in found.groups() if group))
    return None


def library_order(jobs: Sequence[J]) -> list[J]:
    """``jobs`` in the order a library's backlog starts (see the module's docstring)."""
    newest: dict[str, int] = {}
    for job in jobs:
        folder = os.path.dirname(job.path)
        newest[folder] = max(newest.get(folder, job.mtime_ns), job.mtime_ns)

    def key(job: J) -> tuple[object, ...]:
        folder, name = os.path.split(job.path)
        episode = episode_number(name)
        within = (0, *episode, natural_key(name)) if episode else (1, -job.mtime_ns, natural_key(name))
        return (-newest[folder], folder, within, job.id)

    return sorted(jobs, key=key)


def next_cohort(ready: Sequence[J], stages: Sequence[str], limit: int) -> list[J]:
    """The jobs the next worker takes, from the jobs ``ready`` to run.

    ``stages`` is the pipeline in order; ``limit`` is ``videos_per_worker``."""
    if not ready:
        return []
    asked = [job for job in ready if job.priority]
    if asked:  # someone is about to watch these: their latest stage, before anything else
        stage = max((job.stage for job in asked), key=stages.index)
        # The earliest asked first; asked together (a video and its next episode), in order.
        return sorted(library_order([job for job in asked if job.stage == stage]), key=lambda job: job.priority)[:limit]
    ordered = library_order(ready)
    started = [job for job in ordered if job.stage != stages[0]]
    if started:  # a cohort on its way: its latest stage first, so that it finishes
        stage = max((job.stage for job in started), key=stages.index)
        return [job for job in started if job.stage == stage][:limit]
    cohorts = math.ceil(len(ordered) / limit)
    return ordered[: len(ordered) - limit * (cohorts - 1)]


def episode_key(name: str) -> tuple[object, ...]:
    """Where a file name stands among its folder's videos: episodes in order, then the rest."""
    episode = episode_number(name)
    return (0, *episode, natural_key(name)) if episode else (1, 0, 0, natural_key(name))


def following(name: str, names: Sequence[str]) -> str | None:
    """The episode after ``name`` among ``names`` (a folder's videos), or None: only when
    ``name`` is an episode and a later one is there."""
    if episode_number(name) is None:
        return None
    ordered = sorted({*names, name}, key=episode_key)
    index = ordered.index(name)
    later = ordered[index + 1] if index + 1 < len(ordered) else None
    return later if later is not None and episode_number(later) is not None else None


def waiting_order(waiting: Sequence[J], stages: Sequence[str]) -> list[J]:
    """Every waiting video in the order the workers will take them, as ``next_cohort`` picks:
    the asked-for first (latest stage first), then the videos on their way (latest stage first),
    then the backlog in ``library_order``."""
    asked = [job for job in waiting if job.priority]
    started = [job for job in waiting if not job.priority and job.stage != stages[0]]
    rest = [job for job in waiting if not job.priority and job.stage == stages[0]]

    def later_first(jobs: list[J]) -> list[J]:
        return sorted(library_order(jobs), key=lambda job: -stages.index(job.stage))

    asked = sorted(later_first(asked), key=lambda job: (-stages.index(job.stage), job.priority))
    return [*asked, *later_first(started), *library_order(rest)]
