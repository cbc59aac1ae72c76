"""The Ray backend on a real Ray cluster of this machine (a head without GPUs and worker nodes
declaring one GPU each, all on 127.0.0.1): the same subtitles as the local backend, a node
killed mid-transcription, a cluster that cannot be reached, a daemon killed with a task in
flight. Transcription and translation run as Ray tasks; extraction and subtitles stay local."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from testkit.daemon import (
    Daemon,
    alive,
    autokr,
    command_line,
    drop,
    job_for,
    start_daemon,
    status,
    stopping,
    wait_finished,
    wait_for,
    write_config,
)
from testkit.ray_cluster import ENVIRONMENT
from testkit.require import skip_or_fail

pytestmark = pytest.mark.slow
CLIPS = 4
RUNNING_ON = re.compile(r"\[transcribe\] running on the Ray node at 127\.0\.0\.1 \((\w{8})\)")


@pytest.fixture(autouse=True)
def _ray_installed() -> None:
    if importlib.util.find_spec("ray") is None:
        skip_or_fail("Ray is not installed (pip install '.[ray]')")


def _listeners() -> set[str]:
    """Every listening TCP address on this machine but loopback."""
    lines = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.splitlines()
    found = {line.split()[3] for line in lines if len(line.split()) > 3}
    return {address for address in found if not address.startswith(("127.", "[::1]", "[::ffff:127."))}


def _ray_section(address: str) -> dict[str, dict[str, str]]:
    return {"cluster": {"backend": "ray", "address": address}}


def _remote_workers() -> list[int]:
    """Stage workers a Ray task started (their manifest is in the task's temporary folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = command_line(int(entry.name))
            if "-m workers." in line and "autokr-ray-" in line and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _run(root: Path, clip: Path, whisper: Path, nllb: Path, sections: dict) -> tuple[dict[str, bytes], list[dict]]:
    inbox = root / "inbox"
    for number in range(CLIPS):
        drop(clip, inbox, f"Clip {number}.mkv")
    daemon = start_daemon(root, inbox, whisper, nllb, env=ENVIRONMENT, videos_per_worker=2, sections=sections)
    with stopping(daemon):
        for number in range(CLIPS):
            wait_finished(daemon, f"Clip {number}.mkv", 300)
        jobs = status(daemon.config)
    return {path.name: path.read_bytes() for path in inbox.glob("*.ko.srt")}, jobs


def test_four_clips_on_two_ray_nodes_give_the_local_backends_subtitles(clip, tiny_whisper, tiny_nllb, tmp_path):
    from testkit.ray_cluster import local_cluster

    local, _ = _run(tmp_path / "local", clip, tiny_whisper, tiny_nllb, {"cluster": {"devices": ["cpu"]}})
    before = _listeners()
    with local_cluster(gpu_nodes=2) as cluster:
        remote, jobs = _run(tmp_path / "ray", clip, tiny_whisper, tiny_nllb, _ray_section(cluster.address))
        opened = _listeners() - before
        doctor = autokr(tmp_path / "ray" / "autokr.toml", "doctor", "--json", check=False).stdout
        nodes = {str(node.node_id)[:8] for node in cluster.nodes}
    assert len(remote) == CLIPS and remote == local  # byte for byte
    assert opened == set(), f"Ray listened beyond loopback: {opened}"
    ran_on = set()
    for job in jobs:
        assert job["runs"] == {"extract": 1, "transcribe": 1, "translate": 1, "subtitle": 1}
        models = job["models"]
        assert models["extract_device"] == models["subtitle_device"] == "cpu"  # beside the videos
        for stage in ("transcribe", "translate"):
            found = re.fullmatch(r"127\.0\.0\.1 \((\w{8})\)", models[f"{stage}_device"])
            assert found and found.group(1) in nodes, models
            ran_on.add(found.group(1))
    assert ran_on == nodes  # two batches at once: one on each node's GPU
    assert _remote_workers() == []
    (cluster_check,) = [check for check in json.loads(doctor) if check["name"].startswith("Ray cluster")]
    assert cluster_check["ok"] and cluster_check["detail"].startswith("3 node(s), 2 GPU(s), AutoKR "), cluster_check


def test_a_node_killed_mid_transcription_leaves_the_job_to_finish_once_on_the_other(
    clip, tiny_whisper, tiny_nllb, tmp_path
):
    from testkit.ray_cluster import local_cluster

    inbox = tmp_path / "inbox"
    drop(clip, inbox, "Clip.mkv")
    with local_cluster(gpu_nodes=2) as cluster:
        daemon = start_daemon(
            tmp_path, inbox, tiny_whisper, tiny_nllb, env=ENVIRONMENT, sections=_ray_section(cluster.address)
        )
        with stopping(daemon):
            node = wait_for(lambda: RUNNING_ON.search(daemon.log()), 120, "the transcription to start on a node")
            # The worker on the node is starting (importing torch, loading the model): no
            # done event can have come yet, and the daemon has recorded none.
            assert job_for(daemon.config, "Clip.mkv")["stage"] == "transcribe"
            killed = node.group(1)
            cluster.kill(cluster.node_with_id(killed))
            job = wait_finished(daemon, "Clip.mkv", 240)
            log = daemon.log()
    assert "that ran the transcribe worker died or lost contact" in log, log[-3000:]
    assert job["runs"]["transcribe"] == 2 and job["runs"]["subtitle"] == 1, job
    assert killed not in job["models"]["transcribe_device"]
    assert sorted(path.name for path in inbox.iterdir()) == ["Clip.ko.srt", "Clip.mkv"]
    assert (inbox / "Clip.ko.srt").read_text(encoding="utf-8").strip()


def test_an_unreachable_cluster_pauses_ray_work_and_it_resumes_when_the_cluster_is_back(
    clip, tiny_whisper, tiny_nllb, tmp_path
):
    from testkit.ray_cluster import free_port, local_cluster

    port = free_port()
    address = f"127.0.0.1:{port}"
    inbox = tmp_path / "inbox"
    drop(clip, inbox, "Clip.mkv")
    daemon = start_daemon(tmp_path, inbox, tiny_whisper, tiny_nllb, env=ENVIRONMENT, sections=_ray_section(address))
    with stopping(daemon):
        # Extraction runs here all the same; transcription waits, not failed, no attempt counted.
        wait_for(
            lambda: (job := job_for(daemon.config, "Clip.mkv")) and job["stage"] == "transcribe",
            60,
            "the audio to be extracted",
        )
        said = autokr(daemon.config, "status").stdout
        assert f"cluster: Ray cluster at {address}: connection refused; transcription and translation wait" in said
        assert "ready: " in daemon.log() and f"Ray cluster at {address}: connection refused" in daemon.log()
        time.sleep(3)
        job = job_for(daemon.config, "Clip.mkv")
        assert job["state"] == "queued" and job["attempts"] == 0 and job["error"] is None, job
        with local_cluster(gpu_nodes=1, port=port):
            wait_finished(daemon, "Clip.mkv", 240)
            said = autokr(daemon.config, "status").stdout
    assert "cluster:" not in said
    assert "the Ray cluster at" in daemon.log() and "answers again" in daemon.log()
    assert (inbox / "Clip.ko.srt").exists()


def test_a_daemon_killed_with_a_task_in_flight_resumes_it_once(clip, tiny_whisper, tiny_nllb, tmp_path):
    """Through Ray Client (``ray://``), as a daemon under systemd reaches its cluster. Its start
    counts the cluster's GPUs, which Ray Client's flaky first session (see workers/cluster.py)
    may make take twice its 30 s."""
    from testkit.ray_cluster import local_cluster

    inbox = tmp_path / "inbox"
    drop(clip, inbox, "Clip.mkv")
    with local_cluster(gpu_nodes=1) as cluster:
        address = f"ray://127.0.0.1:{cluster.client_port}"
        config = write_config(
            tmp_path / "autokr.toml", inbox, tmp_path / "state", tiny_whisper, tiny_nllb,
            sections=_ray_section(address),
        )  # fmt: skip
        daemon = Daemon(config, tmp_path / "daemon.log", env=ENVIRONMENT).start(ready_seconds=90)
        wait_for(lambda: RUNNING_ON.search(daemon.log()), 120, "the transcription to start on the node")
        daemon.kill9()
        # The bridge dies with the daemon and cancels its task: nothing works on for nobody.
        wait_for(lambda: not _remote_workers(), 30, "the worker on the node to be stopped")
        daemon.start(ready_seconds=90)
        with stopping(daemon):
            job = wait_finished(daemon, "Clip.mkv", 240)
    assert job["runs"]["transcribe"] == 2 and job["runs"]["translate"] == 1 and job["runs"]["subtitle"] == 1, job
    assert sorted(path.name for path in inbox.iterdir()) == ["Clip.ko.srt", "Clip.mkv"]


def test_a_batch_waiting_for_a_busy_gpu_is_not_taken_for_a_hung_worker(clip, tiny_whisper, tiny_nllb, tmp_path):
    import ray

    from testkit.ray_cluster import local_cluster

    inbox = tmp_path / "inbox"
    drop(clip, inbox, "Clip.mkv")
    with local_cluster(gpu_nodes=1) as cluster:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        try:
            # Another user of the cluster holds its one GPU for longer than the hang guard waits.
            def hold(seconds: float) -> None:  # defined here: Ray sends it by value
                time.sleep(seconds)

            holder = ray.remote(num_gpus=1)(hold).remote(45)
            wait_for(lambda: ray.available_resources().get("GPU", 0) == 0, 60, "the GPU to be taken")
            daemon = start_daemon(
                tmp_path, inbox, tiny_whisper, tiny_nllb, env=ENVIRONMENT, stage_timeout_seconds=20,
                sections=_ray_section(cluster.address),
            )  # fmt: skip
            with stopping(daemon):
                job = wait_finished(daemon, "Clip.mkv", 240)
                log = daemon.log()
            assert ray.get(holder, timeout=30) is None  # it ran its 45 s, undisturbed
        finally:
            ray.shutdown()
    assert "[transcribe] waiting for a free GPU in the Ray cluster (1 in all, none free)" in log, log[-3000:]
    assert "hung?" not in log
    assert job["runs"] == {"extract": 1, "transcribe": 1, "translate": 1, "subtitle": 1}, job
