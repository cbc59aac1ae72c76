"""The scheduling policy, on plain data: cohorts, the odd one first, each through every stage."""

from dataclasses import dataclass, replace

from contract.pipeline import STAGES
from daemon.scheduler import next_cohort


@dataclass(frozen=True)
class Job:
    id: int
    stage: str
    path: str = ""
    mtime_ns: int = 0
    priority: float = 0.0


def run_to_the_end(count: int, limit: int) -> tuple[list[tuple[str, int]], list[int]]:
    """Plays the scheduler over ``count`` videos dropped at once: the batches it starts, and
    the order in which videos get their subtitles."""
    waiting = [Job(number, STAGES[0]) for number in range(count)]
    batches, finished = [], []
    while waiting:
        batch = next_cohort(waiting, STAGES, limit)
        batches.append((batch[0].stage, len(batch)))
        for job in batch:
            waiting.remove(job)
            if job.stage == STAGES[-1]:
                finished.append(job.id)
            else:
                waiting.append(replace(job, stage=STAGES[STAGES.index(job.stage) + 1]))
    return batches, finished


def test_twelve_videos_run_as_a_cohort_of_four_then_one_of_eight():
    batches, finished = run_to_the_end(12, 8)
    assert batches == [(stage, 4) for stage in STAGES] + [(stage, 8) for stage in STAGES]
    assert finished[:4] == [0, 1, 2, 3]  # the oldest videos get their subtitles first, a third of the way in


def test_up_to_a_worker_s_worth_of_videos_is_one_cohort_one_model_load_per_stage():
    batches, _ = run_to_the_end(8, 8)
    assert batches == [(stage, 8) for stage in STAGES]
    batches, _ = run_to_the_end(16, 8)
    assert [size for stage, size in batches if stage == "transcribe"] == [8, 8]  # as many loads as before


def test_a_cohort_on_its_way_finishes_before_new_videos_start():
    ready = [Job(1, "translate"), Job(2, "transcribe"), Job(3, "extract"), Job(4, "translate")]
    assert next_cohort(ready, STAGES, 8) == [Job(1, "translate"), Job(4, "translate")]
    assert next_cohort([Job(3, "extract")], STAGES, 8) == [Job(3, "extract")]
    assert next_cohort([], STAGES, 8) == []
