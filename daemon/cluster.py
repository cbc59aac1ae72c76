"""The Ray backend as the daemon sees it, without importing Ray: how many GPUs the cluster has
(asked of ``python -m workers.cluster --count``), and whether it can be reached.

A bridge that cannot reach the cluster exits with ``EXIT_CLUSTER_UNREACHABLE``; its videos
wait at their stage (no attempt counted) and Ray work pauses: no new Ray task for
``RETRY_SECONDS``, the reason in ``STATUS=`` and in ``autokr status`` (through a small file in
the state folder, written by the daemon and read by the command). The next cohort that reaches
the cluster clears it. Extraction and subtitles carry on meanwhile: they run here.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from contract.files import write_json_atomically
from contract.protocol import JsonObject, whole_number
from daemon.config import Config
from daemon.runner import WorkerAnswerError, ask_worker

RETRY_SECONDS = 30.0
COUNT_SECONDS = 90  # the bridge gives up connecting after 75 s; under the 120 s watchdog
STATUS_FILE = "cluster.json"


def bridge_command(config: Config) -> list[str]:
    return [sys.executable, "-m", "workers.cluster", "--address", config.cluster.address]


def ask_cluster(config: Config) -> JsonObject:
    """``{"gpus", "nodes", "version"}`` from the bridge (``--count``), or ``{"problem": why not}``."""
    try:
        return ask_worker([*bridge_command(config), "--count"], COUNT_SECONDS)
    except WorkerAnswerError as error:
        return {"problem": bridge_reason(str(error))}


def count_cluster_gpus(config: Config) -> tuple[int, str]:
    """The GPUs in the cluster, or (0, why not)."""
    found = ask_cluster(config)
    return whole_number(found, "gpus"), str(found.get("problem", ""))


def bridge_reason(stderr: str) -> str:
    """The reason in a bridge's last log line: ``cannot reach the Ray cluster at X: REASON``."""
    lines = stderr.strip().splitlines()
    return lines[-1].rpartition(": ")[2] if lines else ""


class ClusterWatch:
    """Whether Ray work may start now; what ``STATUS=`` says while it may not."""

    def __init__(self, config: Config, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.address = config.cluster.address
        self.file = config.daemon.state_dir / STATUS_FILE
        self.monotonic = monotonic
        self.problem = ""
        self.retry_at = 0.0

    def may_start(self) -> bool:
        return self.monotonic() >= self.retry_at

    def unreachable(self, reason: str) -> None:
        if not self.problem:
            logger.error("the Ray cluster at {} cannot be used ({}): Ray work pauses", self.address, reason)
        self.retry_at = self.monotonic() + RETRY_SECONDS
        self.problem = (
            f"Ray cluster at {self.address}: {reason}; transcription and translation wait, "
            f"trying again every {RETRY_SECONDS:.0f} s"
        )
        with contextlib.suppress(OSError):
            write_json_atomically(self.file, {"problem": self.problem, "since": time.time()})

    def reachable(self) -> None:
        """It answers: Ray work may start, and what an earlier run said of it goes too."""
        if self.problem:
            logger.info("the Ray cluster at {} answers again: Ray work carries on", self.address)
        self.problem = ""
        self.retry_at = 0.0
        with contextlib.suppress(OSError):
            self.file.unlink()


def last_problem(state_dir: Path) -> str:
    """What the daemon last said of an unreachable cluster (for ``autokr status``), or ""."""
    try:
        found = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(found["since"])))
        return f"cluster: {found['problem']} (last seen {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
