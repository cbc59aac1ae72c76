"""The daemon → worker direction of the contract: the manifest a worker is given (``--jobs
FILE``), one typed item per video, and the one function that builds a worker's command line.

The worker → daemon direction is ``contract.protocol`` (events on stdout). As rq keeps a job's
wire form in one class, the manifest is written by ``write_manifest`` and read by
``read_manifest`` only; the daemon (``daemon/stages.py``), the Ray bridge (``workers/cluster.py``)
and the task on a node (``workers/remote.py``) all go through them.

The JSON keeps the shape of every release before (a list of flat objects: ``id``, ``input``,
``output``; for the subtitle stage ``overwrite``, ``source_output``, ``own_subtitles``,
``video``, ``video_signature``; for the translate stage ``glossary`` and ``memory``, lists of
``[source, target]`` pairs, only when not empty; for the extract and transcribe stages
``spoken``, a list of language codes, and ``listen``, only when set), so a manifest left by a
killed daemon of the previous release still reads. A path that is not UTF-8 travels as
``\\udcXX`` escapes, which ``json`` keeps.
The id is the job's row id as decimal text: ``contract/`` never imports ``daemon/``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from contract.errors import PermanentError
from contract.files import write_json_atomically
from contract.pipeline import STAGE
from contract.protocol import JsonObject

Signature = tuple[int, int]
"""A file's (size, mtime_ns): how AutoKR recognises a file it wrote."""


class ManifestError(PermanentError):
    """A manifest that is not one AutoKR wrote: said with the file and what is wrong."""


@dataclass(frozen=True)
class SubtitleOrder:
    """What the subtitle stage is asked to do beyond reading ``input`` and writing ``output``."""

    source_output: Path | None = None
    """Also write the source-language SRT here (``write_source_subtitles``)."""
    overwrite: bool = False
    """Replace whatever is there (a person asked: ``--force``)."""
    own_subtitles: dict[str, Signature] = field(default_factory=dict)
    """Path → signature of each subtitle AutoKR wrote there before (replaced only while it still
    matches, decided when writing)."""
    video: Path | None = None
    """The video, checked unchanged before any subtitle lands beside it."""
    video_signature: Signature | None = None
    """The video's signature when it became a job."""


Term = tuple[str, str]
"""(source, target): a name or recurring term and how it is written in the target language."""


@dataclass(frozen=True)
class TranslateOrder:
    """What the translate stage is given beyond the transcript (the LLM engine reads it)."""

    glossary: tuple[Term, ...] = ()
    """The person's own glossary for the video's folders (``autokr-glossary.txt``): it wins."""
    memory: tuple[Term, ...] = ()
    """The series memory: terms earlier episodes of the same series folder were given."""


@dataclass(frozen=True)
class AudioOrder:
    """Which speech counts, for the extract and transcribe stages (``[library]``)."""

    spoken: tuple[str, ...] = ()
    """The spoken languages that are transcribed (ISO 639-1); empty: Japanese."""
    listen: bool = False
    """The chosen track is untagged: the transcribe stage checks by ear that its speech is one
    of ``spoken`` and reports the item skipped when it is not."""


@dataclass(frozen=True)
class ManifestItem:
    """One video's work at one stage."""

    id: str
    input: Path
    output: Path
    subtitle: SubtitleOrder = field(default_factory=SubtitleOrder)
    """Read by the subtitle stage only; the default for the others."""
    translate: TranslateOrder = field(default_factory=TranslateOrder)
    """Read by the translate stage only."""
    audio: AudioOrder = field(default_factory=AudioOrder)
    """Read by the extract and transcribe stages."""

    def moved(self, input: Path, output: Path) -> ManifestItem:  # noqa: A002 - the wire's own names
        """The same work with its files elsewhere (a Ray node's temporary folder)."""
        return replace(self, input=input, output=output)

    def to_json(self) -> JsonObject:
        value: JsonObject = {"id": self.id, "input": str(self.input), "output": str(self.output)}
        order = self.subtitle
        if order != SubtitleOrder():
            value |= {
                "overwrite": order.overwrite,
                "source_output": str(order.source_output) if order.source_output else None,
                "own_subtitles": {path: list(signature) for path, signature in order.own_subtitles.items()},
            }
            if order.video is not None and order.video_signature is not None:
                value |= {"video": str(order.video), "video_signature": list(order.video_signature)}
        for name, terms in (("glossary", self.translate.glossary), ("memory", self.translate.memory)):
            if terms:
                value[name] = [list(term) for term in terms]
        if self.audio.spoken:
            value["spoken"] = list(self.audio.spoken)
        if self.audio.listen:
            value["listen"] = True
        return value

    @classmethod
    def from_json(cls, value: object) -> ManifestItem:
        """Raises ``ValueError``/``KeyError``/``TypeError`` on anything but the form above."""
        if not isinstance(value, dict):
            raise TypeError("an item is not an object")
        source_output = value.get("source_output")
        signature = value.get("video_signature")
        order = SubtitleOrder(
            source_output=Path(_text(source_output)) if source_output else None,
            overwrite=bool(value.get("overwrite", False)),
            own_subtitles={_text(path): _signature(sig) for path, sig in _object(value.get("own_subtitles")).items()},
            video=Path(_text(value["video"])) if value.get("video") else None,
            video_signature=_signature(signature) if signature else None,
        )
        translate = TranslateOrder(_terms(value.get("glossary")), _terms(value.get("memory")))
        spoken = value.get("spoken") or []
        if not isinstance(spoken, list):
            raise TypeError("spoken is not a list of language codes")
        audio = AudioOrder(tuple(_text(language) for language in spoken), bool(value.get("listen", False)))
        return cls(
            _text(value["id"]), Path(_text(value["input"])), Path(_text(value["output"])), order, translate, audio
        )


def _object(value: object) -> dict[object, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("own_subtitles is not an object")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{value!r} is not a non-empty string")
    return value


def _terms(value: object) -> tuple[Term, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TypeError("a glossary is not a list of pairs")
    pairs = []
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise TypeError(f"{pair!r} is not a (source, target) pair")
        pairs.append((_text(pair[0]), _text(pair[1])))
    return tuple(pairs)


def _signature(value: object) -> Signature:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise TypeError(f"{value!r} is not a (size, mtime) pair")
    size, mtime_ns = value
    return int(size), int(mtime_ns)


def write_manifest(path: Path, items: list[ManifestItem]) -> None:
    """Atomically: a worker never reads half a manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, [item.to_json() for item in items])


def read_manifest(path: Path) -> list[ManifestItem]:
    """Raises:
    ManifestError: the file cannot be read, or is not a manifest AutoKR wrote.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, list):
            raise TypeError("not a list of items")
        return [ManifestItem.from_json(entry) for entry in raw]
    except OSError as error:
        raise ManifestError(f"cannot read the manifest {path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ManifestError(f"{path} is not a manifest AutoKR wrote ({type(error).__name__}: {error})") from None


def worker_command(stage: str, manifest: Path, options: list[str], python: str = sys.executable) -> list[str]:
    """``python -m workers.<stage> --jobs MANIFEST OPTIONS…``: how every stage worker is started,
    on this machine or on a Ray node."""
    return [python, "-m", STAGE[stage].worker, "--jobs", str(manifest), *options]
