"""What every stage worker shares: its command line, the item loop, atomic output files.

A stage module provides one function ``process(item, progress) -> facts`` and calls
``run_worker``; this module turns that into a process that follows ``workers.protocol``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers import faults
from workers.errors import PermanentError, TransientError, WorkerError
from workers.protocol import EXIT_ORPHANED, EXIT_OUT_OF_MEMORY, PARENT_PID_ENV, dumps_json, encode_event

# Temporary files are hidden (leading dot, so media servers and our own scanner ignore them)
# and carry this marker, so that the daemon can sweep the ones a killed worker left behind.
TEMP_MARKER = ".autokr-tmp-"


@dataclass(frozen=True)
class Item:
    """One video's work at this stage."""

    id: str
    input: Path
    output: Path
    extra: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[float], None]
ProcessFunction = Callable[[Item, ProgressCallback], dict[str, Any] | None]


def base_parser(description: str, input_help: str, output_help: str) -> argparse.ArgumentParser:
    """The shared command line: ``INPUT OUTPUT`` by hand, or ``--jobs MANIFEST`` from the daemon."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input", nargs="?", type=Path, help=input_help)
    parser.add_argument("output", nargs="?", type=Path, help=output_help)
    parser.add_argument("--jobs", type=Path, help="JSON manifest of items (how the daemon calls a worker)")
    return parser


def items_from_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> list[Item]:
    if arguments.jobs is not None:
        if arguments.input is not None:
            parser.error("give either INPUT OUTPUT or --jobs, not both")
        raw = json.loads(arguments.jobs.read_text(encoding="utf-8"))
        return [
            Item(
                id=str(entry["id"]),
                input=Path(entry["input"]),
                output=Path(entry["output"]),
                extra={k: v for k, v in entry.items() if k not in ("id", "input", "output")},
            )
            for entry in raw
        ]
    if arguments.input is None or arguments.output is None:
        parser.error("INPUT and OUTPUT are required (or --jobs MANIFEST)")
    return [Item(id="1", input=arguments.input, output=arguments.output)]


def log(message: str) -> None:
    """Worker log lines go to stderr; the daemon forwards them to its own log."""
    print(message, file=sys.stderr, flush=True)


def emit(kind: str, item: str, **facts: Any) -> None:
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


def describe_os_error(error: OSError, path: Path | None = None) -> str:
    """Words a person understands for the OS errors that matter to a media daemon."""
    where = str(path or error.filename or "")
    if error.errno == errno.ENOSPC:
        return f"no space left on the disk holding {Path(where).parent if where else 'the output'}"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {where}: permission denied"
    if error.errno == errno.EROFS:
        return f"cannot write {where}: read-only file system"
    if error.errno == errno.ENOENT:
        return f"file not found: {where}"
    return f"{error.strerror or error} ({where})" if where else str(error)


NAME_MAX = 255  # bytes, on every Linux file system a media library lives on


def temporary_prefix(path: Path) -> str:
    """``.Video.ko.srt.autokr-tmp-``: hidden (media servers skip it), and recognisably ours so a
    leftover of a killed worker can be removed. Names too long for that get a digest instead."""
    prefix = f".{path.name}{TEMP_MARKER}"
    if len(os.fsencode(prefix)) + 10 > NAME_MAX:  # room for the pid
        digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:16]
        prefix = f".{digest}{TEMP_MARKER}"
    return prefix


def temporary_path(path: Path) -> Path:
    return path.with_name(f"{temporary_prefix(path)}{os.getpid()}")


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def finish_atomically(temporary: Path, path: Path) -> None:
    """fsyncs ``temporary``, renames it over ``path`` and fsyncs the folder."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it becomes ``path`` durably.

    On any failure the temporary file is removed, so a reader never sees half a file.
    """
    temporary = temporary_path(path)
    try:
        yield temporary
        finish_atomically(temporary, path)
    except OSError as error:
        if error.filename is None:  # a failed write() names no file; say which one
            error.filename = str(temporary)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def file_signature(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of ``path``: how AutoKR recognises a file it wrote itself."""
    try:
        status = path.stat()
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


_RENAME_NOREPLACE = 1  # linux/fs.h


def _rename_noreplace(source: Path, target: Path) -> bool | None:
    """``renameat2(RENAME_NOREPLACE)``: True when renamed, False when ``target`` exists, None
    when the system or file system does not offer it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return None
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), _RENAME_NOREPLACE)
    if result == 0:
        return True
    number = ctypes.get_errno()
    if number == errno.EEXIST:
        return False
    if number in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return None
    raise OSError(number, os.strerror(number), str(target))


def place_without_clobbering(temporary: Path, path: Path) -> bool:
    """Puts the finished ``temporary`` at ``path`` only if nothing is there; False otherwise.

    A hard link is atomic and fails if ``path`` exists, however late it appeared. File systems
    that refuse hard links (some SMB and FUSE shares) get ``renameat2(RENAME_NOREPLACE)``; where
    that is missing too, a check just before a plain rename, whose window is the one moment
    between two system calls (documented in the README).
    """
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        renamed = _rename_noreplace(temporary, path)
        if renamed is False or (renamed is None and os.path.lexists(path)):
            return False
        if renamed is None:
            os.rename(temporary, path)
    fsync_directory(path.parent)
    return True


def remove_own_file(path: Path, signature: list[int] | None) -> bool:
    """Removes ``path`` only while it is still the file AutoKR wrote (``signature``)."""
    if not signature or file_signature(path) != list(signature):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        return True
    return False


def write_atomically(path: Path, data: bytes) -> None:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def write_json_atomically(path: Path, value: Any) -> None:
    write_atomically(path, dumps_json(value, indent=1).encode("utf-8"))


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


def run_worker(items: list[Item], process: ProcessFunction) -> int:
    """Runs ``process`` on each item, reporting done/failed per item. Returns the exit status."""
    for item in items:
        try:
            facts = process(item, ProgressReporter(item.id)) or {}
        except PermanentError as error:
            emit("failed", item.id, reason=str(error), permanent=True)
        except (TransientError, WorkerError) as error:
            emit("failed", item.id, reason=str(error), permanent=False)
        except OSError as error:
            emit("failed", item.id, reason=describe_os_error(error), permanent=False)
        except Exception as error:
            if _is_out_of_memory(error):
                print(f"out of memory: {error}", file=sys.stderr, flush=True)
                return EXIT_OUT_OF_MEMORY
            raise
        else:
            emit("done", item.id, **facts)
    return 0
