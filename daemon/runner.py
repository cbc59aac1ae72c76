"""One stage worker subprocess: start it, read its events and log, stop it politely.

Reading happens on two small threads (stdout events, stderr log), so the daemon's main loop
never blocks on a worker. The last lines of stderr are kept, so a failure can be explained.
Whatever a worker writes, the daemon's memory stays bounded: a line is read at most
``MAX_LINE_BYTES`` at a time (the rest of an over-long line is skipped), and the kept tail is
``STDERR_TAIL_LINES`` lines of at most ``TAIL_LINE_CHARS`` characters.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

from loguru import logger

from contract.errors import AutoKRError
from contract.protocol import (
    EXIT_CLUSTER_UNREACHABLE,
    EXIT_OUT_OF_MEMORY,
    MAX_LINE_BYTES,
    PARENT_PID_ENV,
    JsonObject,
    MalformedEvent,
    WorkerEvent,
    decode_event,
)

STDERR_TAIL_LINES = 25
TAIL_LINE_CHARS = 1024


def bounded_lines(stream: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[tuple[str, int]]:
    """Yields ``(line, skipped)`` for each line of ``stream``: at most ``limit`` bytes of it,
    decoded (invalid UTF-8 replaced), and how many bytes beyond that were thrown away."""
    while True:
        chunk = stream.readline(limit)
        if not chunk:
            return
        skipped = 0
        if not chunk.endswith(b"\n"):
            while True:  # the rest of an over-long line, read and dropped in bounded pieces
                more = stream.readline(limit)
                skipped += len(more)
                if not more or more.endswith(b"\n"):
                    break
        yield chunk.decode("utf-8", "replace").rstrip("\n"), skipped


def _shorten(line: str, limit: int = TAIL_LINE_CHARS) -> str:
    return line if len(line) <= limit else f"{line[:limit]}… ({len(line) - limit} more characters)"


class WorkerAnswerError(AutoKRError):
    """A worker asked a question (``--count``, ``workers.device``) gave no answer."""


def ask_worker(command: list[str], seconds: float, environment: dict[str, str] | None = None) -> JsonObject:
    """Runs a worker that answers with one JSON object on its last line of stdout (the daemon
    asks instead of importing CUDA or Ray libraries itself).

    Raises:
        WorkerAnswerError: its last log line when it failed, or why it could not be run.
    """
    try:
        answer = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds,
            env={**os.environ, **environment} if environment else None,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        raise WorkerAnswerError(f"could not run {command[2] if len(command) > 2 else command[0]} ({error})") from None
    if answer.returncode != 0:
        said = answer.stderr.strip().splitlines()
        raise WorkerAnswerError(said[-1] if said else f"it exited with status {answer.returncode}")
    try:
        found = json.loads(answer.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise WorkerAnswerError("it gave no answer") from None
    if not isinstance(found, dict):
        raise WorkerAnswerError("it gave no answer")
    return found


def describe_exit(returncode: int) -> str:
    """A person's words for how a worker ended."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -returncode == signal.SIGKILL else ""
        return f"worker was killed by {name}{hint}"
    if returncode == 137:
        return "worker was killed (exit 137: SIGKILL, often the out-of-memory killer)"
    if returncode == EXIT_OUT_OF_MEMORY:
        return "worker ran out of GPU memory"
    if returncode == EXIT_CLUSTER_UNREACHABLE:
        return "the Ray cluster could not be reached"
    return f"worker exited with status {returncode}"


class WorkerProcess:
    """A running worker; ``events()`` and ``poll()`` never block."""

    def __init__(
        self,
        stage: str,
        command: list[str],
        environment: dict[str, str] | None = None,
        wake: threading.Event | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.stage = stage
        self.command = command
        self.wake = wake
        self.on_log = on_log or (lambda line: logger.info("[{}] {}", stage, line))
        self._events: queue.SimpleQueue[WorkerEvent] = queue.SimpleQueue()
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        env = {**os.environ, **(environment or {}), PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        logger.debug("started {} worker pid {}: {}", stage, self.process.pid, command)
        self._readers = [
            threading.Thread(target=self._read_events, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._read_log, args=(self.process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_events(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for line, skipped in bounded_lines(stream):
            if skipped:
                self.on_log(f"(skipped a stdout line of {len(line) + skipped} bytes: over {MAX_LINE_BYTES})")
                continue
            try:
                event = decode_event(line)
            except MalformedEvent as error:
                self.on_log(f"(skipped a malformed event: {error}: {_shorten(line, 200)})")
                continue
            if event is not None:
                self._events.put(event)
                if self.wake:
                    self.wake.set()
            elif line.strip():
                self.on_log(_shorten(line.rstrip()))

    def _read_log(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw, skipped in bounded_lines(stream):
            # tqdm-style bars redraw with \r; keep only the last state of such a line.
            line = _shorten(raw.split("\r")[-1].rstrip())
            if skipped:
                line += f" (and {skipped} more bytes)"
            if line:
                self._tail.append(line)
                self.on_log(line)

    def events(self) -> list[WorkerEvent]:
        found = []
        while True:
            try:
                found.append(self._events.get_nowait())
            except queue.Empty:
                return found

    def poll(self) -> int | None:
        """The exit status once the worker has exited and all its output is read."""
        returncode = self.process.poll()
        if returncode is None:
            return None
        for reader in self._readers:
            reader.join(timeout=5)
        return returncode

    def wait(self) -> int:
        self.process.wait()
        returncode = self.poll()
        assert returncode is not None
        return returncode

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    def stop(self, grace_seconds: float) -> int:
        """SIGTERM, wait up to ``grace_seconds``, then SIGKILL; logs each step."""
        if self.process.poll() is None:
            logger.info("stopping {} worker (pid {}): SIGTERM", self.stage, self.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                logger.warning("{} worker did not stop within {:.0f} s: SIGKILL", self.stage, grace_seconds)
                self.process.kill()
                self.process.wait()
        returncode = self.poll()
        assert returncode is not None
        return returncode
