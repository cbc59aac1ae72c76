"""Worker slots from [cluster] devices, and the scheduler handing each slot its own cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from daemon.slots import ALL_STAGES, CPU_STAGES, GPU_STAGES, slots_for
from daemon.store import Store


def test_each_gpu_is_a_slot_pinned_to_its_card_and_the_cpu_takes_the_other_stages():
    slots = slots_for(["cuda:0", "cuda:1"], visible="")
    assert [(slot.name, slot.device, slot.stages, slot.environment) for slot in slots] == [
        ("cuda:0", "cuda:0", GPU_STAGES, {"CUDA_VISIBLE_DEVICES": "0"}),
        ("cuda:1", "cuda:0", GPU_STAGES, {"CUDA_VISIBLE_DEVICES": "1"}),
        ("cpu", "cpu", CPU_STAGES, {"CUDA_VISIBLE_DEVICES": ""}),
    ]
    assert {"transcribe", "translate"} == GPU_STAGES and {"extract", "subtitle"} == CPU_STAGES


def test_cuda_n_counts_within_the_cards_the_daemon_was_given():
    (first, second, _) = slots_for(["cuda:0", "cuda:1"], visible="2,3")
    assert (first.environment, second.environment) == ({"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "3"})


def test_cpu_listed_twice_is_two_slots_for_every_stage():
    slots = slots_for(["cpu", "cpu"], visible="")
    assert [(slot.name, slot.stages) for slot in slots] == [("cpu", ALL_STAGES), ("cpu 2", ALL_STAGES)]


def _config(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "autokr.toml"
    path.write_text(f"[cluster]\ndevices = {devices}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("devices", "problem"),
    [
        ('["cuda:0", "cuda:0"]', "lists a GPU twice"),
        ('["gpu1"]', "'gpu1' is neither"),
        ('["auto", "cpu"]', "'auto' is neither"),
        ("[]", 'must be "auto" or a list of devices'),
    ],
)
def test_a_device_list_that_cannot_work_is_refused(tmp_path, devices, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(_config(tmp_path, devices), need_inbox=False, need_state_dir=False)


def test_two_slots_take_two_cohorts_and_a_gpu_slot_only_model_stages(tmp_path):
    with Store(tmp_path / "autokr.sqlite3") as store:
        for number in range(4):
            store.add(f"/inbox/{number}.mkv", 1, 1)
        first = store.claim(store.next_cohort(2, ALL_STAGES))
        second = store.claim(store.next_cohort(2, ALL_STAGES))
        assert [job.path for job in first] == ["/inbox/0.mkv", "/inbox/1.mkv"]
        assert [job.path for job in second] == ["/inbox/2.mkv", "/inbox/3.mkv"]
        assert store.next_cohort(2, GPU_STAGES) == []  # nothing extracted yet
        for job in first:
            assert store.complete_stage(job)
        assert [job.stage for job in store.next_cohort(2, GPU_STAGES)] == ["transcribe", "transcribe"]
        assert store.next_cohort(2, CPU_STAGES) == []  # the others are still extracting


def test_the_status_line_shows_every_running_worker_and_where():
    from daemon.jobs import JobState
    from daemon.status import Running, status_line

    running = [Running("transcribing", "A.mkv", 43, 3, "cuda:0"), Running("extracting", "B.mkv", 10, 0, "cpu")]
    line = status_line({JobState.QUEUED: 2}, running, [], paused=False)
    assert line == 'transcribing "A.mkv" 43% (+3) on cuda:0 · extracting "B.mkv" 10% on cpu · 2 queued'
    assert status_line({}, [Running("writing", "C.mkv", 0, 0)], [], paused=False) == 'writing "C.mkv" 0%'
    assert status_line({JobState.DONE: 1}, [], ["state folder is full"], paused=True) == (
        "state folder is full · paused · 1 done"
    )
