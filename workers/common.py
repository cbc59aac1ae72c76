"""What every stage worker shares: its command line, the item loop, atomic output files.

A stage module provides one function ``process(item, progress) -> facts`` and calls
``run_worker``; this module turns that into a process that follows ``contract.protocol``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from contract import faults
from contract.errors import PermanentError, TransientError, WorkerError
from contract.files import describe_os_error
from contract.manifest import ManifestItem, read_manifest
from contract.protocol import EXIT_ORPHANED, EXIT_OUT_OF_MEMORY, PARENT_PID_ENV, encode_event

ProgressCallback = Callable[[float], None]
Facts = dict[str, object]
"""What a stage tells the daemon about an item it finished (``contract.protocol`` checks them)."""
ProcessFunction = Callable[[ManifestItem, ProgressCallback], Facts | None]


def base_parser(description: str, input_help: str, output_help: str) -> argparse.ArgumentParser:
    """The shared command line: ``INPUT OUTPUT`` by hand, or ``--jobs MANIFEST`` from the daemon."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input", nargs="?", type=Path, help=input_help)
    parser.add_argument("output", nargs="?", type=Path, help=output_help)
    parser.add_argument("--jobs", type=Path, help="JSON manifest of items (how the daemon calls a worker)")
    return parser


def items_from_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> list[ManifestItem]:
    if arguments.jobs is not None:
        if arguments.input is not None:
            parser.error("give either INPUT OUTPUT or --jobs, not both")
        return read_manifest(arguments.jobs)
    if arguments.input is None or arguments.output is None:
        parser.error("INPUT and OUTPUT are required (or --jobs MANIFEST)")
    return [ManifestItem(id="1", input=arguments.input, output=arguments.output)]


def log(message: str) -> None:
    """Worker log lines go to stderr; the daemon forwards them to its own log."""
    print(message, file=sys.stderr, flush=True)


def emit(kind: str, item: str, **facts: object) -> None:
    print(encode_event(kind, item, **facts), flush=True)


class ProgressReporter:
    """Emits progress events, at most about once a second or per whole percent."""

    def __init__(self, item_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.item_id = item_id
        self.clock = clock
        self.last_percent = -1.0
        self.last_time = 0.0

    def __call__(self, percent: float) -> None:
        percent = max(0.0, min(100.0, percent))
        now = self.clock()
        if percent - self.last_percent >= 1.0 or (now - self.last_time >= 1.0 and percent != self.last_percent):
            self.last_percent, self.last_time = percent, now
            emit("progress", self.item_id, percent=round(percent, 1))


def fail_every_item(items: list[ManifestItem], error: WorkerError) -> int:
    """The model a worker needs cannot be had: every video in its manifest says why (a
    ``PermanentError`` for good, anything else to be retried). Returns the exit status."""
    for item in items:
        emit("failed", item.id, reason=str(error), permanent=isinstance(error, PermanentError))
    return 0


def die_with_parent() -> None:
    """Asks Linux to SIGTERM this worker when the daemon dies, and exits if it already has.

    Without this a ``kill -9`` of the daemon outside systemd would leave a worker holding
    the GPU. (Under systemd, ``KillMode=mixed`` covers it as well.)
    """
    expected_parent = os.environ.get(PARENT_PID_ENV)
    if expected_parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != expected_parent:
        sys.exit(EXIT_ORPHANED)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # A worker is a single-purpose process: unwinding here runs the ``finally`` blocks that
    # remove temporary files and kill an ffmpeg child (subprocess.run kills it on exceptions).
    raise SystemExit(128 + signum)


def _is_out_of_memory(error: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError, matched by name so this module stays torch-free; CTranslate2
    # raises a RuntimeError "CUDA failed with error out of memory".
    text = str(error)
    return type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text or "error out of memory" in text


def start_worker(stage: str) -> None:
    """The first call of every worker's ``main``, before torch or a model is imported, so
    that a daemon killed during a slow import or model load does not leave an orphan."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    die_with_parent()
    # When memory runs out, the kernel should end a worker (which the daemon retries), not
    # the daemon. Raising one's own score needs no privilege.
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("500")
    faults.fail_worker_if_armed(stage)
    faults.pause_if_armed("start", stage)


class OutOfMemory(Exception):
    """The device ran out of memory: the worker exits with ``EXIT_OUT_OF_MEMORY`` and the daemon
    steps down (a smaller batch, then a smaller model) for the whole cohort."""


def fail_items(item_ids: Sequence[str], error: Exception) -> None:
    """Reports ``error`` as the failure of each of ``item_ids`` (a ``PermanentError`` for good,
    anything else to be retried). Raises ``OutOfMemory`` for a device out of memory, and
    re-raises what no video can fail with (a bug: the worker's traceback goes to its log)."""
    if isinstance(error, PermanentError):
        reason, permanent = str(error), True
    elif isinstance(error, (TransientError, WorkerError)):
        reason, permanent = str(error), False
    elif isinstance(error, OSError):
        reason, permanent = describe_os_error(error), False
    elif _is_out_of_memory(error):
        print(f"out of memory: {error}", file=sys.stderr, flush=True)
        raise OutOfMemory(str(error)) from error
    else:
        raise error
    for item_id in item_ids:
        emit("failed", item_id, reason=reason, permanent=permanent)


def run_worker(items: list[ManifestItem], process: ProcessFunction) -> int:
    """Runs ``process`` on each item, reporting done/failed per item. Returns the exit status."""
    for item in items:
        try:
            facts = process(item, ProgressReporter(item.id)) or {}
        except Exception as error:
            try:
                fail_items([item.id], error)
            except OutOfMemory:
                return EXIT_OUT_OF_MEMORY
        else:
            emit("done", item.id, **facts)
    return 0
