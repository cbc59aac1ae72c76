"""``autokr once``: the whole pipeline for one video, without the daemon or its database.

It runs the same worker processes through the same ``CohortRunner`` as the daemon, one stage
after the other, in a temporary work folder; its handler keeps the result in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from contract.errors import AutoKRError
from contract.manifest import write_manifest
from contract.pipeline import LAST_STAGE, STAGES
from contract.protocol import StageDone
from daemon import stages
from daemon.cohort import CohortRunner, Ending
from daemon.config import Config, _default_state_dir
from daemon.errors import WorkerFailed
from daemon.jobs import JobId


class OnceRefused(AutoKRError):
    """``autokr once`` would write where it must not; said before the first stage runs."""


class ProgressBar:
    """A one-line bar on a terminal; plain lines elsewhere (logs, pipes). A log line clears the
    bar first (``log_line``, the logging sink while ``once`` runs)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.drawn = False

    def show(self, stage: str, percent: float) -> None:
        if self.interactive:
            filled = int(percent / 100 * 30)
            self.stream.write(f"\r{stage:<10} [{'#' * filled}{'.' * (30 - filled)}] {percent:5.1f}%")
            self.stream.flush()
            self.drawn = True

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 60 + "\r")
            self.drawn = False

    def log_line(self, message: str) -> None:
        self._clear()
        self.stream.write(message)
        self.stream.flush()

    def finish(self, stage: str, seconds: float) -> None:
        self._clear()
        self.stream.write(f"{stage:<10} done in {seconds:.1f} s\n")
        self.stream.flush()


def check_outputs(config: Config, video: Path, output: Path | None, force: bool) -> None:
    """Before any stage runs: what ``once`` would write is a file it may write. Never the
    video itself, never a folder, never into a folder that is missing or read-only, and never
    over a file that is already there (a person's subtitle, or one of an earlier run) unless
    ``force``.

    Raises:
        OnceRefused: with one sentence that names the file.
    """
    if not video.is_file():
        raise OnceRefused(f"{video} is not a video file")
    outputs = [output or stages.subtitle_path(video, config.languages.target)]
    if config.daemon.write_source_subtitles and output is None:
        outputs.append(stages.subtitle_path(video, config.languages.source))
    for path in outputs:
        if path.exists() and path.samefile(video):
            raise OnceRefused(f"{path} is the video itself; give -o a subtitle name such as {video.stem}.ko.srt")
        if path.is_dir():
            raise OnceRefused(f"{path} is a folder; give -o a file name such as {path / (video.stem + '.ko.srt')}")
        if not path.parent.is_dir():
            raise OnceRefused(f"the folder {path.parent} does not exist; create it first, or give -o another file")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OnceRefused(f"cannot write {path}: its folder is not writable by this user")
        if os.path.lexists(path) and not force:
            raise OnceRefused(f"{path} already exists; AutoKR keeps it (add --force to replace it)")


class _OneVideo:
    """``once``'s ``CohortHandler``: keeps the one video's result and shows its progress."""

    def __init__(self, stage: str, bar: ProgressBar) -> None:
        self.stage = stage
        self.bar = bar
        self.result: StageDone | None = None
        self.failure = ""

    def progress(self, job_id: JobId, percent: float) -> None:
        self.bar.show(self.stage, percent)

    def done(self, job_id: JobId, result: StageDone) -> None:
        self.result = result

    def failed(self, job_id: JobId, reason: str, permanent: bool) -> None:
        self.failure = reason

    def unfinished(self, job_id: JobId, ending: Ending) -> None:
        self.failure = ending.reason


def run_once(
    config: Config,
    video: Path,
    output: Path | None,
    quiet_logs: bool = True,
    force: bool = False,
    bar: ProgressBar | None = None,
) -> list[Path]:
    """Runs every stage for ``video``; returns the subtitle files written. ``force``: replace
    a subtitle that is already there.

    Raises:
        OnceRefused: the output is not a file ``once`` may write (before any stage).
        WorkerFailed: a stage failed; carries the reason and the worker's stderr tail.
    """
    video = video.absolute()
    output = output.absolute() if output is not None else None
    check_outputs(config, video, output, force)
    bar = bar or ProgressBar()
    job_id = JobId(1)
    with tempfile.TemporaryDirectory(prefix="autokr-once-") as work:
        config = dataclasses.replace(config, daemon=dataclasses.replace(config.daemon, state_dir=Path(work)))
        if config.models.model_dir is None:
            # Keep downloaded models between runs rather than in the temporary folder.
            config = dataclasses.replace(
                config, models=dataclasses.replace(config.models, model_dir=_persistent_model_dir())
            )
        written: list[Path] = []
        for stage in STAGES:
            item = stages.manifest_item(config, stage, job_id, video, force=force)
            if stage == LAST_STAGE and output is not None:
                item = dataclasses.replace(item, output=output)
            manifest = Path(work) / f"{stage}.json"
            write_manifest(manifest, [item])
            lines: list[str] = []
            cohort = CohortRunner(config, stage, {job_id: item}, manifest, on_log=lines.append if quiet_logs else None)
            handler = _OneVideo(stage, bar)
            while cohort.pump(handler) is None:
                with contextlib.suppress(subprocess.TimeoutExpired):  # keep showing progress
                    cohort.worker.process.wait(timeout=0.2)
            if handler.result is None:
                raise WorkerFailed(f"{stage}: {handler.failure}", cohort.worker.stderr_tail(), permanent=True)
            bar.finish(stage, time.monotonic() - cohort.worker.started_at)
            if stage == LAST_STAGE:
                written = [Path(path) for path in handler.result.written]
                if handler.result.note:
                    sys.stderr.write(f"{handler.result.note}: no subtitle written\n")
        return written


def _persistent_model_dir() -> Path:
    return _default_state_dir() / "models"
