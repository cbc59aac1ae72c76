"""Stage 4: translated segments → ``Video.ko.srt`` (and ``Video.ja.srt``) beside the video.

By hand: ``python -m workers.subtitle TRANSLATED.json Video.ko.srt [--source-output Video.ja.srt]``

Files are UTF-8 SRT written atomically. An existing subtitle that AutoKR did not write is
never replaced unless ``--overwrite`` (``autokr retry --force``) asks for it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pysubs2

from workers.common import (
    Item,
    ProgressCallback,
    base_parser,
    items_from_arguments,
    run_worker,
    start_worker,
    write_atomically,
)
from workers.cues import layout_cues, limits_for
from workers.errors import PermanentError, TransientError

NO_SPEECH_NOTE = "no speech found"


def render_srt(segments: list[dict[str, Any]], text_key: str, language: str) -> bytes:
    """UTF-8 SRT laid out for reading (workers/cues.py: line length, line count, duration,
    gaps), with the limits of ``language``."""
    subtitles = pysubs2.SSAFile()
    for cue in layout_cues(segments, text_key, limits_for(language)):
        start, end = int(round(cue.start * 1000)), int(round(cue.end * 1000))
        subtitles.append(pysubs2.SSAEvent(start=start, end=max(end, start + 1), text=r"\N".join(cue.lines)))
    return subtitles.to_string("srt").encode("utf-8")


def place_subtitle(path: Path, content: bytes, overwrite: bool) -> None:
    """Writes ``content`` to ``path`` atomically, refusing to replace somebody else's file.

    The same bytes already there are fine: that is our own file from a run whose database
    commit was interrupted.
    """
    if path.exists() and not overwrite:
        if path.read_bytes() == content:
            return
        raise PermanentError(
            f"a subtitle already exists at {path}; AutoKR does not overwrite it (autokr retry --force replaces it)"
        )
    write_atomically(path, content)


def _check_video_unchanged(item: Item) -> None:
    """Subtitles of the old content must never land beside a replaced video."""
    expected = item.extra.get("video_signature")
    if not expected:
        return
    video = Path(item.extra["video"])
    try:
        status = video.stat()
    except FileNotFoundError:
        raise TransientError(f"the video {video} was deleted or moved; no subtitle written") from None
    if [status.st_size, status.st_mtime_ns] != list(expected):
        raise TransientError(f"the video {video} changed since it was transcribed; no subtitle written")


def write_subtitles(item: Item, progress: ProgressCallback) -> dict[str, Any]:
    try:
        document = json.loads(item.input.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PermanentError(f"cannot read the translation {item.input}: {error}") from error
    segments = document.get("segments", [])
    if not any(str(segment.get("text", "")).strip() for segment in segments):
        # An empty .ko.srt would show up as a useless Korean track in Plex/Jellyfin.
        return {"note": NO_SPEECH_NOTE, "written": []}
    overwrite = bool(item.extra.get("overwrite", False))
    _check_video_unchanged(item)
    written = []
    target, source = document.get("target_language", "ko"), document.get("source_language", "ja")
    place_subtitle(item.output, render_srt(segments, "text", target), overwrite)
    written.append(str(item.output))
    source_output = item.extra.get("source_output")
    if source_output:
        place_subtitle(Path(source_output), render_srt(segments, "source_text", source), overwrite)
        written.append(str(source_output))
    progress(100)
    return {"written": written, "cues": len(segments)}


def main(argv: list[str] | None = None) -> int:
    start_worker("subtitle")
    parser = base_parser(__doc__.splitlines()[0], "translated JSON", "SRT file to write")
    parser.add_argument("--source-output", type=Path, help="also write the source-language SRT here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing subtitle file")
    arguments = parser.parse_args(argv)
    items = items_from_arguments(parser, arguments)
    if arguments.jobs is None:
        extra = {"source_output": str(arguments.source_output) if arguments.source_output else None}
        extra["overwrite"] = arguments.overwrite
        items = [Item(id=item.id, input=item.input, output=item.output, extra=extra) for item in items]
    return run_worker(items, write_subtitles)


if __name__ == "__main__":
    sys.exit(main())
