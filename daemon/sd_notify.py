"""sd_notify over systemd's ``NOTIFY_SOCKET`` datagram protocol; a no-op elsewhere.

Twenty lines of our own instead of a dependency: the protocol is one ``sendto`` of
``KEY=value`` lines to an ``AF_UNIX`` datagram socket (abstract when it starts with ``@``),
see sd_notify(3). ``sdnotify`` on PyPI does the same but has not been released since 2017.
"""

from __future__ import annotations

import os
import socket

from contract.protocol import printable


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self.socket: socket.socket | None = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self.socket is not None

    def send(self, **fields: str | int) -> bool:
        """Sends e.g. ``send(READY=1, STATUS="idle")``; returns False when not under systemd."""
        if self.socket is None or not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        # One assignment per line: a file name's newline must not start a new one
        # (``x\nWATCHDOG=trigger.mkv``), so every value has its control characters escaped.
        message = "\n".join(f"{key}={printable(value)}" for key, value in fields.items())
        try:
            self.socket.sendto(message.encode("utf-8"), target)
        except OSError:
            return False
        return True
