"""The Ray backend's parts that need no cluster: its config, its slots, the bridge's command line,
the pause while the cluster cannot be reached, and the bridge itself against a dead address."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.protocol import EXIT_CLUSTER_UNREACHABLE
from daemon import stages
from daemon.cluster import RETRY_SECONDS, ClusterWatch, bridge_reason, last_problem
from daemon.config import ConfigError, load_config
from daemon.slots import CPU_STAGES, GPU_STAGES, ray_slots
from testkit.ray_cluster import free_port


def _config(tmp_path: Path, cluster: str) -> Path:
    path = tmp_path / "autokr.toml"
    state = tmp_path / "state"
    path.write_text(f'[daemon]\nstate_dir = "{state}"\n[cluster]\n{cluster}\n', encoding="utf-8")
    return path


def test_ray_is_a_backend_with_an_address(tmp_path):
    config = load_config(_config(tmp_path, 'backend = "ray"\naddress = "ray://head:10001"'), need_inbox=False)
    assert (config.cluster.backend, config.cluster.address) == ("ray", "ray://head:10001")
    assert load_config(_config(tmp_path, 'backend = "ray"'), need_inbox=False).cluster.address == "auto"


@pytest.mark.parametrize(
    ("cluster", "problem"),
    [
        ('backend = "slurm"', "must be local or ray, not 'slurm'"),
        ('backend = "ray"\naddress = "http://head:8265"', 'address must be "auto", ray://host:port'),
        ('backend = "ray"\naddress = "ray://head"', "address must be"),
        ('backend = "ray"\ndevices = ["cuda:0"]', "devices is for the local backend"),
    ],
)
def test_a_cluster_setting_that_cannot_work_is_refused(tmp_path, cluster, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(_config(tmp_path, cluster), need_inbox=False)


def test_each_gpu_of_the_cluster_is_a_ray_slot_and_the_stages_without_a_model_stay_here():
    slots = ray_slots(2)
    assert [(slot.name, slot.remote, slot.stages) for slot in slots] == [
        ("ray 1", True, GPU_STAGES),
        ("ray 2", True, GPU_STAGES),
        ("cpu", False, CPU_STAGES),
    ]
    # A cluster that is down or has no GPU yet: one slot, whose bridge then pauses Ray work.
    assert [slot.name for slot in ray_slots(0)] == ["ray", "cpu"]


def test_a_remote_batch_runs_the_bridge_with_the_stage_workers_own_options(tmp_path):
    config = load_config(_config(tmp_path, 'backend = "ray"\naddress = "ray://head:10001"'), need_inbox=False)
    manifest = tmp_path / "transcribe.json"
    local = stages.worker_command(config, "transcribe", manifest, "cpu")
    remote = stages.worker_command(config, "transcribe", manifest, None, remote=True)
    assert local[:5] == [sys.executable, "-m", "workers.transcribe", "--jobs", str(manifest)]
    bridge = [sys.executable, "-m", "workers.cluster", "--address", "ray://head:10001", "--stage", "transcribe"]
    assert remote[:7] == bridge
    options = remote[remote.index("--") + 1 :]
    # The node's worker gets [models] device (auto: the card Ray gave the task), not a slot's.
    assert options == stages.stage_options(config, "transcribe")


def test_an_unreachable_cluster_pauses_ray_work_and_says_so_until_it_answers(tmp_path):
    config = load_config(_config(tmp_path, 'backend = "ray"\naddress = "ray://head:10001"'), need_inbox=False)
    now = [100.0]
    watch = ClusterWatch(config, lambda: now[0])
    assert watch.may_start() and watch.problem == "" and last_problem(config.daemon.state_dir) == ""
    watch.unreachable(bridge_reason("...\ncannot reach the Ray cluster at ray://head:10001: connection refused\n"))
    expected = "Ray cluster at ray://head:10001: connection refused; transcription and translation wait"
    assert watch.problem.startswith(expected)
    assert not watch.may_start()
    now[0] += RETRY_SECONDS
    assert watch.may_start()
    assert last_problem(config.daemon.state_dir).startswith(f"cluster: {expected}")  # for autokr status
    watch.reachable()
    assert watch.problem == "" and watch.may_start() and last_problem(config.daemon.state_dir) == ""


def test_the_bridge_tells_a_dead_address_in_seconds_and_exits_with_its_own_status(tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    answer = subprocess.run(
        [sys.executable, "-m", "workers.cluster", "--address", address, "--count"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == EXIT_CLUSTER_UNREACHABLE
    assert answer.stderr.strip().splitlines()[-1] == f"cannot reach the Ray cluster at {address}: connection refused"
    assert time.monotonic() - started < 20  # Ray itself would retry for minutes


def test_doctor_names_a_cluster_that_does_not_answer_as_blocking(tmp_path):
    from daemon.doctor import check_cluster

    address = f"127.0.0.1:{free_port()}"
    config = load_config(_config(tmp_path, f'backend = "ray"\naddress = "{address}"'), need_inbox=False)
    (check,) = check_cluster(config)
    assert (check.name, check.ok, check.blocking) == (f"Ray cluster {address}", False, True)
    assert check.detail == "connection refused" and "ray start --head" in check.fix


def test_a_worker_asked_a_question_answers_with_its_last_json_line_or_its_last_log_line():
    from daemon.runner import WorkerAnswerError, ask_worker

    answer = ask_worker([sys.executable, "-c", "print('loading'); print('{\"gpus\": 2}')"], 30)
    assert answer == {"gpus": 2}
    failing = "import sys; print('starting', file=sys.stderr); sys.exit('cannot reach it: refused')"
    with pytest.raises(WorkerAnswerError, match="^cannot reach it: refused$"):
        ask_worker([sys.executable, "-c", failing], 30)
    with pytest.raises(WorkerAnswerError, match="gave no answer"):
        ask_worker([sys.executable, "-c", "print('[1, 2]')"], 30)
