"""The contract between the daemon and its stage workers (stdlib only, shared by both).

A worker is started as ``python -m workers.<stage> --jobs MANIFEST.json [options]``. The
manifest is a JSON list of items ``{"id": str, "input": path, "output": path, ...}``. The worker
reports on stdout, one JSON object per line behind ``EVENT_PREFIX``:

- ``{"event": "progress", "item": id, "percent": 43.5}``
- ``{"event": "done", "item": id, ...extra facts such as "model"}`` after the output file is
  durably in place (fsync + ``os.replace``)
- ``{"event": "failed", "item": id, "reason": "...", "permanent": bool}`` for an item that
  cannot be done; the worker goes on with the next item.

Anything else a worker or its libraries print is log text, not protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

EVENT_PREFIX = "@autokr "

STAGES: tuple[str, ...] = ("extract", "transcribe", "translate", "subtitle")

# Exit statuses with a meaning beyond "something went wrong".
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_OUT_OF_MEMORY = 3  # CUDA ran out of memory: retry with a smaller batch or model
EXIT_ORPHANED = 4  # the daemon that started the worker is gone

# The environment variable that carries the daemon's PID, so a worker whose daemon died
# (kill -9) exits instead of working on as an orphan. See workers.common.die_with_parent.
PARENT_PID_ENV = "AUTOKR_PARENT_PID"


@dataclass(frozen=True)
class WorkerEvent:
    """One protocol message from a worker."""

    kind: str
    item: str
    facts: dict[str, Any] = field(default_factory=dict)


def encode_event(kind: str, item: str, **facts: Any) -> str:
    return EVENT_PREFIX + json.dumps({"event": kind, "item": item, **facts}, ensure_ascii=False)


def decode_event(line: str) -> WorkerEvent | None:
    """Parses one output line; returns None for ordinary log text."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        message = json.loads(line[len(EVENT_PREFIX) :])
        kind = str(message.pop("event"))
        item = str(message.pop("item"))
    except (ValueError, KeyError, AttributeError):
        return None
    return WorkerEvent(kind=kind, item=item, facts=message)
