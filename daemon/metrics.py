"""What the daemon counts for Prometheus (``GET /metrics`` on the ``[web]`` listener), after
Prometheus's naming conventions: ``autokr_…_total`` for counters, ``_seconds`` for times, base
units. No label can grow without bound: labels are stages, states, exit causes, skip reasons
and announcement targets, each a short fixed list; never a path.

Two kinds of figures:
- **counted as they happen**, in the daemon's loop (``Metrics``): stage durations and real-time
  factors (histograms), worker starts and how they ended, GPU out-of-memory step-downs,
  webhook requests by outcome;
- **read at each scrape** from the store (``StoreCollector``): jobs by state, the queue at each
  stage, skipped videos by reason, announcements pending and failed. ``status --json`` reads
  the same rows: one source of truth.

The process's own figures (``process_resident_memory_bytes``, CPU seconds, open files) are
prometheus_client's ``ProcessCollector``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contract.pipeline import STAGES
from daemon.jobs import JobState
from daemon.store import Store

EXIT_CAUSES = ("finished", "failed", "out_of_memory", "killed", "stopped", "timeout")
SKIP_REASONS = ("subtitle", "audio", "speech", "other")
WEBHOOK_OUTCOMES = ("accepted", "ignored", "refused", "unauthorized", "rate_limited", "timed_out")
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


def skip_reason(note: str) -> str:
    """One of ``SKIP_REASONS`` for a skipped video's note."""
    if "subtitle" in note or "already exists" in note:
        return "subtitle"
    if note.startswith("no ") and " audio" in note:
        return "audio"
    if note.startswith("speech is "):
        return "speech"
    return "other"


class Metrics:
    """The counters and histograms the daemon's loop feeds; exposed by ``render``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stage_seconds = Histogram(
            "autokr_stage_duration_seconds", "Wall time a stage took for one video (its share of its cohort's worker)",
            ["stage"], buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.realtime_factor = Histogram(
            "autokr_stage_realtime_factor", "A stage's wall time over the video's length (0.05: 20 times real time)",
            ["stage"], buckets=RTF_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.worker_starts = Counter(
            "autokr_worker_starts_total", "Stage workers started", ["stage"], registry=self.registry
        )
        self.worker_exits = Counter(
            "autokr_worker_exits_total", "Stage workers ended, by cause", ["stage", "cause"], registry=self.registry
        )
        self.memory_stepdowns = Counter(
            "autokr_memory_stepdowns_total", "Stages queued again with less GPU memory after running out",
            ["stage"], registry=self.registry,
        )  # fmt: skip
        self.webhooks = Counter(
            "autokr_webhook_requests_total", "Requests to the listener, by outcome", ["outcome"], registry=self.registry
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome)
        for stage in STAGES:  # every series exists from the start: a rate() over it is never empty
            self.worker_starts.labels(stage)
            self.memory_stepdowns.labels(stage)
            for cause in EXIT_CAUSES:
                self.worker_exits.labels(stage, cause)
        ProcessCollector(registry=self.registry)
        self._lock = threading.Lock()
        self._watching = False

    def watch_store(self, open_store: Callable[[], Store]) -> None:
        """Adds the figures read from the store at each scrape (a read-only connection of its
        own), once: a listener opened again after a reload finds them there."""
        if not self._watching:
            self._watching = True
            self.registry.register(StoreCollector(open_store))

    def stage_done(self, stage: str, seconds: float, media_seconds: float | None) -> None:
        self.stage_seconds.labels(stage).observe(seconds)
        if media_seconds:
            self.realtime_factor.labels(stage).observe(seconds / media_seconds)

    def render(self) -> bytes:
        """The text exposition format (called on the listener's threads, one at a time)."""
        with self._lock:
            return generate_latest(self.registry)


def exit_cause(returncode: int, on_purpose: bool, timed_out: bool) -> str:
    from contract.protocol import EXIT_OUT_OF_MEMORY

    if timed_out:
        return "timeout"
    if on_purpose:
        return "stopped"
    if returncode == 0:
        return "finished"
    if returncode == EXIT_OUT_OF_MEMORY:
        return "out_of_memory"
    return "killed" if returncode < 0 or returncode == 137 else "failed"


class StoreCollector(Collector):
    """Jobs by state, the queue at each stage, skipped by reason and the outbox, read from the
    store at each scrape."""

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self.open_store = open_store
        self.store: Store | None = None

    def collect(self) -> Iterator[Metric]:
        if self.store is None:
            self.store = self.open_store()
        store = self.store
        jobs = GaugeMetricFamily("autokr_jobs", "Videos by state", labels=["state"])
        counts = store.counts()
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs
        queue = GaugeMetricFamily("autokr_queue_length", "Videos waiting at each stage", labels=["stage"])
        waiting = store.queued_by_stage()
        for stage in STAGES:
            queue.add_metric([stage], waiting.get(stage, 0))
        yield queue
        skipped = GaugeMetricFamily("autokr_skipped", "Skipped videos by reason", labels=["reason"])
        reasons = dict.fromkeys(SKIP_REASONS, 0)
        for note in store.skipped_notes():
            reasons[skip_reason(note)] += 1
        for reason, number in reasons.items():
            skipped.add_metric([reason], number)
        yield skipped
        pending = GaugeMetricFamily(
            "autokr_announcements", "Media-server calls and notifications by state", labels=["target", "state"]
        )
        for target, kind, number in store.outbox_counts():
            pending.add_metric([target, kind], number)
        yield pending
