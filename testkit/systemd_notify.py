"""A datagram socket standing in for systemd's ``NOTIFY_SOCKET`` (sd_notify's protocol): it
keeps every message a daemon sends, for the tests to read its ``STATUS=`` lines."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; keeps every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages: list[str] = []
        self.stamped: list[tuple[float, str]] = []
        """Each message with the ``time.monotonic()`` it arrived at (the daemon's loop pace)."""
        self.running = True
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while self.running:
            try:
                message = self.socket.recv(65536).decode("utf-8")
                self.stamped.append((time.monotonic(), message))
                self.messages.append(message)
            except TimeoutError:
                continue
            except OSError:
                return

    def statuses(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.split("\n") if line.startswith("STATUS=")]

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.socket.close()

    def pings(self) -> list[float]:
        """When each ``WATCHDOG=1`` arrived: the daemon's loop sends one a second while it turns."""
        return [at for at, message in list(self.stamped) if "WATCHDOG=1" in message.split("\n")]
