"""What ``autokr status`` prints: a summary first (a library holds thousands of videos), the
list of every video with ``--all``, or of some (``--state failed``, a folder prefix).

The summary reads counts and a few rows with SQL (20,000 jobs in well under a second); the
list reads the rows it shows. ``status --json`` prints every video, as it always has, or the
selection when one is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from contract.pipeline import PIPELINE, STAGES
from contract.protocol import printable
from daemon.jobs import Job, JobFacts, JobState
from daemon.store import Store

RECENT_FAILURES = 5
RUNNING_SHOWN = 5


@dataclass(frozen=True)
class Selection:
    state: str | None = None
    prefix: str | None = None
    everything: bool = False

    def lists(self) -> bool:
        """Whether a list is asked for (``--all``, ``--state``, a prefix) rather than the summary."""
        return self.everything or self.state is not None or self.prefix is not None


def select(store: Store, selection: Selection) -> list[Job]:
    """The jobs of ``selection`` (every job when it names nothing), in id order."""
    prefix = os.fsencode(str(Path(selection.prefix).absolute())) if selection.prefix else None
    return store.select(JobState(selection.state) if selection.state else None, prefix)


def render(store: Store, selection: Selection) -> str:
    if selection.lists():
        jobs = select(store, selection)
        return format_table(jobs) if jobs else "no videos match"
    return summary(store)


def summary(store: Store) -> str:
    counts = store.counts()
    total = sum(counts.values())
    if not total:
        return "no videos yet"
    order = (JobState.DONE, JobState.RUNNING, JobState.QUEUED, JobState.FAILED, JobState.SKIPPED, JobState.DROPPED)
    lines = [
        f"{total} video(s): " + ", ".join(f"{counts[state]} {state.value}" for state in order if counts.get(state))
    ]
    if counts.get(JobState.SKIPPED):
        kinds: dict[str, int] = {}
        for note in store.skipped_notes():
            kind = skip_kind(note)
            kinds[kind] = kinds.get(kind, 0) + 1
        lines.append("skipped: " + ", ".join(f"{number} {kind}" for kind, number in sorted(kinds.items())))
    waiting = store.queued_by_stage()
    if waiting:
        lines.append("waiting: " + ", ".join(f"{waiting[stage]} to {stage}" for stage in STAGES if waiting.get(stage)))
    running = store.select(JobState.RUNNING, None, limit=RUNNING_SHOWN)
    for job in running:
        progress = f" {job.progress:.0f}%" if job.progress is not None else ""
        lines.append(f"now: {job.stage}{progress}  {printable(Path(job.path).name)}  (job {job.id})")
    failed = store.recent(JobState.FAILED, RECENT_FAILURES)
    if failed:
        lines.append("failed lately:")
        lines += [f"  {job.id}  {printable(Path(job.path).name)}: {printable(job.error)}" for job in failed]
    lines.append("(autokr status --all lists every video; --state failed, or a folder, lists some)")
    return "\n".join(lines)


def skip_kind(note: str) -> str:
    """A skipped video's reason without its particulars, for the summary's counts: ``has a
    Korean subtitle: Video.kor.ass`` → ``has a Korean subtitle``, ``speech is English (p 0.97),
    not Japanese`` → ``speech not Japanese``."""
    if note.startswith("speech is ") and ", not " in note:
        return "speech not " + note.rsplit(", not ", 1)[1]
    if note.endswith(" already exists") or " already exists;" in note:  # before release 25's wording
        return "has a subtitle already"
    return printable(note.split(":", 1)[0].split(" (", 1)[0]) or "no reason given"


def one_line(text: str | None) -> str:
    return printable(text or "")


def models_summary(facts: JobFacts) -> str:
    """``large-v3 ctranslate2 float16 batched ×16 on cuda:0 → nllb-200-1.3B ctranslate2 float16 ×16
    on cuda:1``: what produced a finished job's subtitles, and where."""
    parts = []
    for stage in (spec.name for spec in PIPELINE if spec.device == "gpu"):  # the stages that run a model
        record = facts.stages.get(stage)
        if record is None or not record.model:
            continue
        how = [fact for fact in (record.engine, record.decoding) if fact]
        if record.batch_size:
            how.append(f"×{record.batch_size}")
        if record.device:
            how.append(f"on {record.device}")
        if record.fallback_lines and record.fallback_model:
            how.append(f"({record.fallback_lines} lines by {Path(record.fallback_model).name})")
        parts.append(" ".join([Path(record.model).name, *how]))
    return " → ".join(parts)


def format_table(jobs: list[Job]) -> str:
    rows = [("ID", "STATE", "STAGE", "PROGRESS", "VIDEO", "ERROR / NOTE")]
    for job in jobs:
        progress = f"{job.progress:.0f}%" if job.progress is not None and job.state == "running" else "-"
        detail = job.error or job.note or (models_summary(job.facts) if job.state == JobState.DONE else "")
        if job.state == JobState.QUEUED and job.error:
            detail = f"retrying: {job.error}"
        rows.append((str(job.id), job.state.value, job.stage, progress, one_line(job.path), one_line(detail)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 5 else cell for i, cell in enumerate(row)).rstrip() for row in rows
    )
