"""What the daemon tells systemd: the one-line ``STATUS=`` (what ``systemctl status`` shows),
``READY=1`` and the watchdog ping, sent from the main loop only (a wedged loop stops pinging)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contract.files import write_json_atomically
from daemon.jobs import JobState
from daemon.sd_notify import Notifier

PING_SECONDS = 1.0
PROBLEMS_FILE = "problems.json"  # what the running daemon says is wrong, for `autokr status`


def write_problems(state_dir: Path, problems: list[str]) -> None:
    """The daemon's current problems (inotify not watching, a reload refused, a key file that
    cannot be read), where ``autokr status`` reads them; a full disk must not stop the daemon."""
    with contextlib.suppress(OSError):
        write_json_atomically(state_dir / PROBLEMS_FILE, problems)


def read_problems(state_dir: Path) -> list[str]:
    try:
        found = json.loads((state_dir / PROBLEMS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(problem) for problem in found] if isinstance(found, list) else []


@dataclass(frozen=True)
class Running:
    """The running cohort as ``STATUS=`` shows it: its verb, its first video and how far along."""

    verb: str
    name: str
    percent: float
    others: int
    where: str = ""
    """The slot, when there is more than one: ``cuda:1``."""

    def __str__(self) -> str:
        others = f" (+{self.others})" if self.others else ""
        where = f" on {self.where}" if self.where else ""
        return f'{self.verb} "{self.name}" {self.percent:.0f}%{others}{where}'


def status_line(counts: dict[JobState, int], running: list[Running], problems: list[str], paused: bool) -> str:
    """``transcribing "Show - 01.mkv" 43% (+3) · 2 queued · 10 done``, after any problem; one
    part per running worker (``… on cuda:0 · extracting "Film.mkv" 10% on cpu · …``)."""
    states = (JobState.QUEUED, JobState.DONE, JobState.FAILED)
    tail = [f"{counts[state]} {state}" for state in states if counts.get(state)]
    heads = [str(worker) for worker in running] or ["idle"]
    if paused:
        heads = ["paused"] if not running else [*heads[:-1], f"{heads[-1]}, paused"]
    return " · ".join([*problems, *heads, *tail])


class StatusReporter:
    def __init__(self, notifier: Notifier, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.monotonic = monotonic
        self.text = ""
        self.last_ping = 0.0

    def send(self, text: str, **fields: str | int) -> None:
        """``STATUS=text`` with ``fields`` (``READY=1``, ``WATCHDOG=1``)."""
        self.text = text
        self.notifier.send(**fields, STATUS=text)

    def tick(self, current: Callable[[], str]) -> None:
        """Every second: ``WATCHDOG=1``, with ``STATUS=`` when it changed."""
        now = self.monotonic()
        if now - self.last_ping < PING_SECONDS:
            return
        self.last_ping = now
        text = current()
        if text != self.text:
            self.send(text, WATCHDOG=1)
        else:
            self.notifier.send(WATCHDOG=1)
