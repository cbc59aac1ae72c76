"""``autokr once``: the whole pipeline for one video, without the daemon or its database.

It runs the same worker processes, one stage after the other, in a temporary work folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contract.pipeline import STAGES
from daemon import stages
from daemon.config import Config, _default_state_dir
from daemon.errors import WorkerFailed
from daemon.runner import WorkerProcess, describe_exit


class ProgressBar:
    """A one-line bar on a terminal; plain lines elsewhere (logs, pipes)."""

    def __init__(self, stream=sys.stderr) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.interactive = stream.isatty()

    def show(self, stage: str, percent: float) -> None:
        if self.interactive:
            filled = int(percent / 100 * 30)
            self.stream.write(f"\r{stage:<10} [{'#' * filled}{'.' * (30 - filled)}] {percent:5.1f}%")
            self.stream.flush()

    def finish(self, stage: str, seconds: float) -> None:
        if self.interactive:
            self.stream.write("\r" + " " * 60 + "\r")
        self.stream.write(f"{stage:<10} done in {seconds:.1f} s\n")
        self.stream.flush()


def run_once(config: Config, video: Path, output: Path | None, quiet_logs: bool = True) -> list[Path]:
    """Runs every stage for ``video``; returns the subtitle files written.

    Raises:
        WorkerFailed: a stage failed; carries the reason and the worker's stderr tail.
    """
    video = video.absolute()
    bar = ProgressBar()
    with tempfile.TemporaryDirectory(prefix="autokr-once-") as work:
        config = dataclasses.replace(config, daemon=dataclasses.replace(config.daemon, state_dir=Path(work)))
        if config.models.model_dir is None:
            # Keep downloaded models between runs rather than in the temporary folder.
            config = dataclasses.replace(
                config, models=dataclasses.replace(config.models, model_dir=_persistent_model_dir())
            )
        written: list[Path] = []
        for stage in STAGES:
            item = stages.batch_item(config, stage, 1, video, force=True)
            if stage == "subtitle" and output is not None:
                item = dataclasses.replace(item, output=output.absolute())
            manifest = Path(work) / f"{stage}.json"
            stages.write_manifest(manifest, [item])
            lines: list[str] = []
            worker = WorkerProcess(
                stage,
                stages.worker_command(config, stage, manifest),
                stages.worker_environment(config),
                on_log=lines.append if quiet_logs else None,
            )
            result = None
            returncode = None
            while returncode is None:
                with contextlib.suppress(subprocess.TimeoutExpired):  # keep showing progress
                    worker.process.wait(timeout=0.2)
                returncode = worker.poll()
                for event in worker.events():
                    if event.kind == "progress":
                        bar.show(stage, float(event.facts.get("percent", 0)))
                    else:
                        result = event
            if result is None or result.kind != "done":
                reason = str(result.facts.get("reason")) if result else describe_exit(returncode)
                raise WorkerFailed(f"{stage}: {reason}", worker.stderr_tail(), permanent=True)
            bar.finish(stage, time.monotonic() - worker.started_at)
            if stage == "subtitle":
                written = [Path(p) for p in result.facts.get("written", [])]
                if result.facts.get("note"):
                    sys.stderr.write(f"{result.facts['note']}: no subtitle written\n")
        return written


def _persistent_model_dir() -> Path:
    return _default_state_dir() / "models"
