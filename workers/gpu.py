"""Which device a model worker runs on, and how much memory is free there: one answer for both
engines (torch and CTranslate2 differ only in how they count GPUs and read free memory).
Imports nothing heavy; each engine passes in its own way of asking."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """``cpu``, or CUDA GPU ``index``."""

    kind: str
    index: int = 0

    @property
    def on_gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def name(self) -> str:
        """How torch and the logs write it: ``cpu``, ``cuda:0``."""
        return f"cuda:{self.index}" if self.on_gpu else self.kind


def resolve_device(setting: str, gpu_count: Callable[[], int]) -> Device:
    """``auto`` → the first GPU when the engine sees one, else the CPU; ``cuda:1`` → GPU 1."""
    if setting == "auto":
        setting = "cuda" if gpu_count() > 0 else "cpu"
    kind, _, index = setting.partition(":")
    return Device(kind, int(index or 0))


def free_gpu_memory(device: Device, ask_runtime: Callable[[int], int] | None = None) -> int | None:
    """Free bytes on the device's GPU; None on a CPU or when it cannot be read.

    ``ask_runtime(index)`` asks the CUDA runtime of an engine that has a context already
    (torch); without it the NVIDIA driver is asked (``nvidia-smi``), so no CUDA context is
    created here (CTranslate2 makes its own).
    """
    if not device.on_gpu:
        return None
    if ask_runtime is not None:
        return ask_runtime(device.index)
    try:
        answer = subprocess.run(
            ["nvidia-smi", f"--id={device.index}", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        return int(answer.stdout.strip().splitlines()[0]) * 1024 * 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
