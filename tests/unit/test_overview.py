"""What the status page and the API show beyond the rows: the queue in the scheduler's order, each
video's estimate from this machine's measured real-time factors, and the metrics' fixed labels."""

from dataclasses import dataclass, replace

from contract.pipeline import STAGES
from daemon.jobs import StageRecord
from daemon.metrics import Metrics, exit_cause, skip_reason
from daemon.overview import estimates, public_jobs, realtime_factors
from daemon.scheduler import next_cohort, waiting_order
from daemon.store import Store
from testkit.clock import Clock


def finish(store: Store, path: str, duration: float, seconds: dict[str, float]) -> None:
    """A video done, with each stage's measured share of its worker."""
    job = store.add(path, 1, 1, duration=duration)
    for stage in STAGES:
        (claimed,) = store.claim([store.get(job.id)])
        assert store.complete_stage(claimed, StageRecord(model="m"))
        store.record_seconds(stage, {job.id: seconds[stage]})


def test_each_waiting_video_gets_its_place_and_an_estimate_from_the_measured_factors(tmp_path):
    clock = Clock(1000.0)
    with Store(tmp_path / "autokr.sqlite3", clock=clock) as store:
        assert estimates(store, clock())[2] == {}
        finish(store, "/inbox/Old/a.mkv", 100.0, {"extract": 1, "transcribe": 10, "translate": 5, "subtitle": 1})
        finish(store, "/inbox/Old/b.mkv", 200.0, {"extract": 2, "transcribe": 20, "translate": 10, "subtitle": 2})
        factors = realtime_factors(store.jobs())
        assert factors == {"extract": 0.01, "transcribe": 0.1, "translate": 0.05, "subtitle": 0.01}
        first = store.add("/inbox/Show/S01E02.mkv", 1, 5, duration=600.0)
        second = store.add("/inbox/Show/S01E01.mkv", 1, 5, duration=300.0)
        unknown = store.add("/inbox/Show/S01E03.mkv", 1, 5)  # a release before measured no length
        queued, ready, _ = estimates(store, clock())
        assert [job.id for job in queued] == [second.id, first.id, unknown.id]  # natural episode order
        assert ready[second.id] == 1000.0 + 300 * 0.17
        assert ready[first.id] == ready[second.id] + 600 * 0.17
        assert ready[unknown.id] == ready[first.id] + 150 * 0.17  # the typical length: the median
        rows = public_jobs(store, store.jobs(), clock())
        assert [(row["queue_position"], row["eta"]) for row in rows][-3:] == [
            (2, ready[first.id]), (1, ready[second.id]), (3, ready[unknown.id])
        ]  # fmt: skip
        assert rows[0]["queue_position"] is None and rows[0]["eta"] is None  # done: not waiting


@dataclass(frozen=True)
class Job:
    id: int
    stage: str
    path: str
    mtime_ns: int = 0
    priority: float = 0.0


def test_the_waiting_order_is_the_order_the_scheduler_takes():
    waiting = [
        Job(1, "extract", "/lib/A/S01E02.mkv", mtime_ns=5),
        Job(2, "transcribe", "/lib/B/x.mkv", mtime_ns=1),
        Job(3, "extract", "/lib/A/S01E01.mkv", mtime_ns=5, priority=9.0),
        Job(4, "extract", "/lib/C/new.mkv", mtime_ns=9),
    ]
    order = waiting_order(waiting, STAGES)
    assert [job.id for job in order] == [3, 2, 4, 1]
    taken = []
    left = list(waiting)
    while left:  # next_cohort, one video a worker, takes them in that order
        (job,) = next_cohort(left, STAGES, 1)
        taken.append(job.id)
        left.remove(job)
    assert taken == [job.id for job in order]


def test_metrics_labels_are_a_fixed_few_and_the_text_format_carries_them():
    assert [skip_reason(note) for note in (
        "has a Korean subtitle: Video.kor.ass", "no Japanese audio (eng)", "speech is English (p 0.97), not Japanese",
        "B.ko.srt already exists", "something new",
    )] == ["subtitle", "audio", "speech", "subtitle", "other"]  # fmt: skip
    assert exit_cause(0, False, False) == "finished" and exit_cause(-9, False, False) == "killed"
    assert exit_cause(3, False, False) == "out_of_memory" and exit_cause(0, True, False) == "stopped"
    assert exit_cause(-15, False, True) == "timeout" and exit_cause(1, False, False) == "failed"
    metrics = Metrics()
    metrics.stage_done("transcribe", 12.0, 240.0)
    metrics.worker_exits.labels("transcribe", "finished").inc()
    text = metrics.render().decode()
    assert 'autokr_stage_realtime_factor_bucket{le="0.05",stage="transcribe"} 1.0' in text
    assert 'autokr_worker_exits_total{cause="finished",stage="transcribe"} 1.0' in text
    assert 'autokr_worker_starts_total{stage="extract"} 0.0' in text  # present before the first start
    assert "process_resident_memory_bytes" in text


def test_a_job_s_seconds_survive_a_round_trip_through_the_facts(tmp_path):
    with Store(tmp_path / "autokr.sqlite3") as store:
        job = store.add("/inbox/a.mkv", 1, 1, duration=61.5)
        store.record_seconds("extract", {job.id: 0.4567})
        facts = store.get(job.id).facts
        assert facts.duration == 61.5 and facts.stages["extract"] == replace(StageRecord(), seconds=0.457)
