"""Logging with loguru to stderr.

Under systemd (``JOURNAL_STREAM`` set) lines carry no timestamp, since journald adds its own,
and start with the sd-daemon priority prefix (``<3>`` error … ``<7>`` debug), so
``journalctl -p warning -u autokr`` filters by level. Every message has its control characters
escaped (``contract.protocol.printable``), so one message is one line whatever a file is called.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from loguru import logger

from contract.protocol import printable

if TYPE_CHECKING:
    from loguru import Record

SYSLOG_PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def _journal_format(record: Record) -> str:
    priority = SYSLOG_PRIORITY.get(record["level"].name, 6)
    # "\<" keeps loguru from reading "<6>" as a colour tag.
    return f"\\<{priority}>{{message}}\n{{exception}}"


def _escape_message(record: Record) -> None:
    # One record is one journal line: a file name's newline or escape sequence is shown
    # escaped, never acted on (a name could otherwise forge a log line or colour a terminal).
    record["message"] = printable(record["message"])


def setup_logging(verbose: bool = False, sink: Callable[[str], None] | None = None) -> None:
    """``sink``: where lines go instead of stderr (``autokr once``'s progress bar clears its
    line first, so a log line never shares a line with it)."""
    logger.remove()
    logger.configure(patcher=_escape_message)
    level = "DEBUG" if verbose or os.environ.get("AUTOKR_DEBUG") else "INFO"
    if os.environ.get("JOURNAL_STREAM"):
        logger.add(sink or sys.stderr, level=level, format=_journal_format, colorize=False)
    else:
        logger.add(sink or sys.stderr, level=level, format="{time:YYYY-MM-DD HH:mm:ss} {level: <7} {message}")
