"""The contract between the daemon and its stage workers (stdlib only, shared by both).

A worker is started as ``python -m workers.<stage> --jobs MANIFEST.json [options]``. The
manifest is a JSON list of items ``{"id": str, "input": path, "output": path, ...}``. The worker
reports on stdout, one JSON object per line behind ``EVENT_PREFIX``:

- ``{"event": "progress", "item": id, "percent": 43.5}``
- ``{"event": "done", "item": id, ...extra facts such as "model"}`` after the output file is
  durably in place (fsync + ``os.replace``)
- ``{"event": "failed", "item": id, "reason": "...", "permanent": bool}`` for an item that
  cannot be done; the worker goes on with the next item.

Anything else a worker or its libraries print is log text, not protocol. A line is at most
``MAX_LINE_BYTES`` long; the daemon skips longer ones, and events of the wrong shape, with a
log line (a misbehaving worker must not take the daemon's memory or its reader down).

Paths travel losslessly: a file name that is not valid UTF-8 (a Shift-JIS name from an old
Windows disk) is a ``str`` with surrogate escapes in Python (``os.fsdecode``), and
``dumps_json`` writes those as JSON ``\\udcXX`` escapes, which ``json.loads`` turns back into
the same ``str``, so ``os.fsencode`` gives back the same bytes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

EVENT_PREFIX = "@autokr "
EVENT_KINDS = ("progress", "done", "failed")
MAX_LINE_BYTES = 64 * 1024


# Exit statuses with a meaning beyond "something went wrong".
EXIT_OUT_OF_MEMORY = 3  # CUDA ran out of memory: retry with a smaller batch or model
EXIT_ORPHANED = 4  # the daemon that started the worker is gone
EXIT_CLUSTER_UNREACHABLE = 5  # the Ray backend's bridge could not reach the cluster: not the video's fault

# The environment variable that carries the daemon's PID, so a worker whose daemon died
# (kill -9) exits instead of working on as an orphan. See workers.common.die_with_parent.
PARENT_PID_ENV = "AUTOKR_PARENT_PID"
# The LLM server's key, for the translate worker alone (never on a command line).
LLM_KEY_ENV = "AUTOKR_LLM_API_KEY"


class MalformedEvent(ValueError):
    """A line that claims to be an event (it starts with ``EVENT_PREFIX``) but is not one."""


JsonObject = dict[str, object]
"""A JSON object as ``json.loads`` gives it: its values are checked where they are read."""


def whole_number(document: JsonObject, key: str) -> int:
    """``document[key]`` as a whole number, 0 when it is absent or null.

    Raises:
        ValueError: it is something else (text, a fraction, true/false).
    """
    value = document.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} is not a whole number: {value!r}")
    return value


@dataclass(frozen=True)
class WorkerEvent:
    """One protocol message from a worker."""

    kind: str
    item: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageDone:
    """A ``done`` event's facts as the daemon reads them (a worker may send more, for its log)."""

    written: tuple[str, ...] = ()
    """The subtitle files written (the last stage); the other stages write their one output."""
    note: str | None = None
    """Why nothing was written although the stage succeeded (no speech in the video)."""
    skipped: str | None = None
    """Why the stage ends the job skipped: the last stage refused to write (a subtitle AutoKR
    must not replace is there), or the transcribe stage heard speech in another language."""
    language: str | None = None
    """The transcribe stage, on an untagged track: the spoken language it heard (ISO 639-1)."""
    language_probability: float | None = None
    model: str | None = None
    engine: str | None = None
    decoding: str | None = None
    batch_size: int | None = None
    node: str | None = None
    """Where it ran, when not on this machine: the Ray node (added by ``workers/cluster.py``)."""
    fallback_lines: int = 0
    """Lines the LLM translation engine could not give, translated by its NLLB fallback."""
    fallback_model: str | None = None
    terms: tuple[tuple[str, str], ...] = ()
    """Names and recurring terms the LLM engine used (source → target): the series memory."""

    @classmethod
    def from_event(cls, event: WorkerEvent) -> StageDone:
        facts = event.facts
        batch_size = facts.get("batch_size")
        return cls(
            written=tuple(facts.get("written", ())),
            note=facts.get("note") or None,
            skipped=facts.get("skipped") or None,
            model=facts.get("model") or None,
            engine=facts.get("engine") or None,
            decoding=facts.get("decoding") or None,
            batch_size=int(batch_size) if batch_size else None,
            node=facts.get("node") or None,
            fallback_lines=int(facts.get("fallback_lines") or 0),
            fallback_model=facts.get("fallback_model") or None,
            terms=tuple((str(source), str(target)) for source, target in facts.get("terms") or ()),
            language=facts.get("language") or None,
            language_probability=facts.get("language_probability"),
        )


def dumps_json(value: Any, indent: int | None = None) -> str:
    """JSON text that encodes to UTF-8 whatever file names ``value`` holds (see the module's
    docstring): Japanese stays readable, lone surrogates become ``\\udcXX`` escapes."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    # Only surrogates cannot be encoded to UTF-8; backslashreplace writes them as \udcXX,
    # which is also JSON's escape for that code point (they occur only inside strings).
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def encode_event(kind: str, item: str, **facts: Any) -> str:
    return EVENT_PREFIX + dumps_json({"event": kind, "item": item, **facts})


def _check_facts(kind: str, facts: dict[str, Any]) -> None:
    if kind == "progress":
        percent = facts.get("percent", 0)
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent):
            raise MalformedEvent(f"progress percent is not a number: {percent!r}")
    elif kind == "failed":
        if not isinstance(facts.get("reason", ""), str) or not isinstance(facts.get("permanent", False), bool):
            raise MalformedEvent("a failed event needs a text reason and a true/false permanent")
    elif kind == "done":
        written = facts.get("written", [])
        if not isinstance(written, list) or not all(isinstance(path, str) for path in written):
            raise MalformedEvent("a done event's written must be a list of paths")
        probability = facts.get("language_probability")
        if probability is not None and (
            isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 <= probability <= 1
        ):
            raise MalformedEvent("a done event's language_probability must be a number from 0 to 1")
        for name in ("note", "skipped", "model", "decoding", "engine", "node", "fallback_model", "language"):
            if facts.get(name) is not None and not isinstance(facts[name], str):
                raise MalformedEvent(f"a done event's {name} must be text")
        for name in ("batch_size", "fallback_lines"):
            number = facts.get(name)
            if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
                raise MalformedEvent(f"a done event's {name} must be a whole number")
        terms = facts.get("terms", [])
        if not isinstance(terms, list) or not all(
            isinstance(term, list) and len(term) == 2 and all(isinstance(part, str) for part in term) for term in terms
        ):
            raise MalformedEvent("a done event's terms must be a list of [source, target] pairs")


def decode_event(line: str) -> WorkerEvent | None:
    """Parses one output line; returns None for ordinary log text.

    Raises:
        MalformedEvent: the line starts with ``EVENT_PREFIX`` but is not a valid event.
    """
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        message = json.loads(line[len(EVENT_PREFIX) :])
    except ValueError as error:
        raise MalformedEvent(f"not JSON ({error})") from None
    if not isinstance(message, dict):
        raise MalformedEvent(f"not a JSON object but {type(message).__name__}")
    kind, item = message.pop("event", None), message.pop("item", None)
    if kind not in EVENT_KINDS or not isinstance(item, str):
        raise MalformedEvent(f"unknown event {kind!r} for item {item!r}")
    _check_facts(kind, message)
    return WorkerEvent(kind=kind, item=item, facts=message)


# C0 and C1 control characters, DEL, and the surrogates that stand for bytes of a file name
# that are not UTF-8. Line and paragraph separators too: some viewers break lines at them.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name (os.fsdecode)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """One line of text safe for a terminal, the journal and sd_notify: every control
    character escaped (``\\n``, ``\\x1b``), non-UTF-8 bytes of a file name as ``\\xNN``."""
    return _UNPRINTABLE.sub(_escape, str(text))
