"""One daemon per state folder: an exclusive ``flock`` on ``<state_dir>/autokr.lock``.

Two daemons on one database would both "resume" each other's running jobs and run two workers
side by side. The lock is taken before anything else touches the state folder and is released
by the kernel when the process ends, however it ends (``kill -9`` included), so a stale lock
never needs clearing. Reading commands (``autokr status``) never take it, so they never wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from daemon.errors import AlreadyRunning

LOCK_NAME = "autokr.lock"


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self.descriptor: int | None = None

    def acquire(self) -> None:
        """Takes the lock and writes this process's PID into the file (for the message a
        second daemon prints).

        Raises:
            AlreadyRunning: another process holds it.
        """
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise AlreadyRunning(
                f"another AutoKR (pid {holder}) is using {self.path.parent}; stop it first "
                "(systemctl stop autokr), or give this one another state_dir"
            ) from None
        with contextlib.suppress(OSError):  # a full disk must not stop the start: the PID is a courtesy
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self.descriptor = descriptor

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


def kernel_locks(path: Path) -> list[tuple[str, str, int, str, str]]:
    """The locks the kernel holds on ``path`` (``/proc/locks``), as (kind, mode, pid, start,
    end): ``FLOCK``/``POSIX``, ``READ``/``WRITE``. Empty when it cannot be read."""
    try:
        status = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    wanted = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    found = []
    for line in table.splitlines():
        fields = line.split()  # 1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
        if len(fields) >= 8 and fields[5] == wanted and fields[4].isdigit():
            found.append((fields[1], fields[3], int(fields[4]), fields[6], fields[7]))
    return found


def holder(state_dir: Path) -> int | None:
    """The pid of the daemon that holds ``state_dir``'s lock, or None when none does; asked of
    ``/proc/locks`` without taking the lock (a daemon starting that instant must not find it
    taken by ``autokr status``)."""
    path = state_dir / LOCK_NAME
    for kind, _, pid, _, _ in kernel_locks(path):
        if kind == "FLOCK":
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text(encoding="ascii").strip())  # the pid as the daemon wrote it
            return pid
    return None
