"""One stage worker subprocess: start it, read its events and log, stop it politely.

Reading happens on two small threads (stdout events, stderr log), so the daemon's main loop
never blocks on a worker. The last lines of stderr are kept, so a failure can be explained.
"""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO

from loguru import logger

from workers.protocol import EXIT_OUT_OF_MEMORY, PARENT_PID_ENV, WorkerEvent, decode_event

STDERR_TAIL_LINES = 25


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
            text=True,
            encoding="utf-8",
            errors="replace",
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

    def _read_events(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            event = decode_event(line.rstrip("\n"))
            if event is not None:
                self._events.put(event)
                if self.wake:
                    self.wake.set()
            elif line.strip():
                self.on_log(line.rstrip())

    def _read_log(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for raw in stream:
            # tqdm-style bars redraw with \r; keep only the last state of such a line.
            line = raw.rstrip("\n").split("\r")[-1].rstrip()
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
