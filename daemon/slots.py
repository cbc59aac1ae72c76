"""Worker slots: where stage workers may run at the same time, one at a time in each slot.

Each GPU in ``[cluster] devices`` is a slot for the stages that run a model, its worker pinned
to that one card (``CUDA_VISIBLE_DEVICES``), so one GPU never holds two models. When the list
names GPUs only, one more slot on the CPU takes the stages that need no model (extract,
subtitle), so they never wait behind a GPU's long transcription. Each ``"cpu"`` listed is a slot
that takes any stage: listing it twice gives two CPU workers (the tests' way to run two at once).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from loguru import logger

from contract.pipeline import PIPELINE
from contract.protocol import whole_number
from daemon.cluster import count_cluster_gpus
from daemon.config import Config
from daemon.runner import WorkerAnswerError, ask_worker

COUNT_SECONDS = 120

GPU_STAGES = frozenset(stage.name for stage in PIPELINE if stage.device == "gpu")
CPU_STAGES = frozenset(stage.name for stage in PIPELINE if stage.device != "gpu")
ALL_STAGES = GPU_STAGES | CPU_STAGES


@dataclass(frozen=True)
class Slot:
    name: str
    """What ``status`` and ``STATUS=`` call it: ``cuda:1``, ``cpu``, ``cpu 2``."""
    device: str
    """The worker's ``--device``: ``cuda:0`` (the one card it sees) or ``cpu``."""
    stages: frozenset[str]
    environment: dict[str, str] = field(default_factory=dict)
    """``CUDA_VISIBLE_DEVICES``: the card this slot's workers see ("" on the CPU: none)."""
    remote: bool = False
    """Its cohorts run as Ray tasks on the cluster (``workers/cluster.py``), not here."""


def slots_for(devices: Sequence[str], visible: str | None = None) -> list[Slot]:
    """The slots for a resolved device list (no ``auto``). ``visible``: the daemon's own
    ``CUDA_VISIBLE_DEVICES`` (a person may have narrowed it), which ``cuda:N`` indexes into."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    cards = [card.strip() for card in visible.split(",")] if visible else None
    slots: list[Slot] = []
    for device in devices:
        if device == "cpu":
            cpus = sum(slot.device == "cpu" for slot in slots)
            name = "cpu" if cpus == 0 else f"cpu {cpus + 1}"
            slots.append(Slot(name, "cpu", ALL_STAGES, {"CUDA_VISIBLE_DEVICES": ""}))
            continue
        index = int(device.partition(":")[2] or 0)
        card = cards[index] if cards is not None and index < len(cards) else str(index)
        slots.append(Slot(f"cuda:{index}", "cuda:0", GPU_STAGES, {"CUDA_VISIBLE_DEVICES": card}))
    if not any(slot.device == "cpu" for slot in slots):
        slots.append(Slot("cpu", "cpu", CPU_STAGES, {"CUDA_VISIBLE_DEVICES": ""}))
    return slots


def ray_slots(gpus: int) -> list[Slot]:
    """The Ray backend: one slot for each GPU in the cluster (at least one: a cluster that is
    down or has no GPU yet pauses Ray work instead), each cohort a Ray task that Ray places on
    a node with a free card; the stages without a model run here, beside the videos."""
    count = max(1, gpus)
    names = ["ray"] if count == 1 else [f"ray {number}" for number in range(1, count + 1)]
    remote = [Slot(name, "", GPU_STAGES, remote=True) for name in names]
    return [*remote, Slot("cpu", "cpu", CPU_STAGES, {"CUDA_VISIBLE_DEVICES": ""})]


def plan_slots(config: Config) -> tuple[list[Slot], str]:
    """The slots for ``config``, and why the Ray cluster could not be counted ("" when it was,
    or for the local backend)."""
    if config.cluster.backend != "ray":
        return slots_for(resolve_devices(config)), ""
    gpus, problem = count_cluster_gpus(config)
    return ray_slots(gpus), problem


def resolve_devices(config: Config) -> list[str]:
    """``[cluster] devices``; for ``"auto"``: ``[models] device`` when it names one, else every
    GPU a worker process sees (``cuda:0``, ``cuda:1``, …), else the CPU."""
    if config.cluster.devices != ("auto",):
        return list(config.cluster.devices)
    if config.models.device != "auto":
        return [config.models.device]
    return [f"cuda:{index}" for index in range(count_gpus())] or ["cpu"]


def count_gpus() -> int:
    """The CUDA devices a worker process sees (``workers/device.py``: the daemon stays free of
    CUDA libraries); 0 when it cannot tell, with the reason logged."""
    try:
        return whole_number(ask_worker([sys.executable, "-m", "workers.device", "--count"], COUNT_SECONDS), "gpus")
    except (WorkerAnswerError, ValueError, KeyError, TypeError) as error:
        logger.warning("could not count the GPUs ({}): working on the CPU", error)
        return 0
