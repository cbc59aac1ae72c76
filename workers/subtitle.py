"""Stage 4: translated segments → ``Video.ko.srt`` (and ``Video.ja.srt``) beside the video.

By hand: ``python -m workers.subtitle TRANSLATED.json Video.ko.srt [--source-output Video.ja.srt]``

Files are UTF-8 SRT written atomically. Whether an existing subtitle may be replaced is
decided at the moment of writing, not when the job was queued: only a file that still has the
signature (size, mtime) AutoKR recorded for its own subtitle is replaced, and a new file is
placed without clobbering (``place_without_clobbering``), so a subtitle a person saves while
the video is being transcribed, or in the last instant before AutoKR's lands, is kept and the
job ends ``skipped``. ``--overwrite`` (``autokr retry --force``) replaces whatever is there.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import pysubs2

from contract import faults
from contract.errors import TransientError
from contract.files import (
    create_temporary,
    file_signature,
    fsync_directory,
    place_without_clobbering,
    write_descriptor,
)
from contract.languages import language_name
from contract.manifest import ManifestItem, SubtitleOrder
from contract.subtitles import existing_sidecars
from workers.common import (
    Facts,
    ProgressCallback,
    base_parser,
    items_from_arguments,
    run_worker,
    start_worker,
)
from workers.cues import Timed, layout_cues, limits_for
from workers.segments import read_translation

NO_SPEECH_NOTE = "no speech found"


def render_srt(lines: Iterable[Timed], language: str) -> bytes:
    """UTF-8 SRT laid out for reading (workers/cues.py: line length, line count, duration,
    gaps), with the limits of ``language``."""
    subtitles = pysubs2.SSAFile()
    for cue in layout_cues(lines, limits_for(language)):
        start, end = int(round(cue.start * 1000)), int(round(cue.end * 1000))
        subtitles.append(pysubs2.SSAEvent(start=start, end=max(end, start + 1), text=r"\N".join(cue.lines)))
    return subtitles.to_string("srt").encode("utf-8")


def _same_content(path: Path, content: bytes) -> bool:
    """Whether ``path`` itself (never a file a link there points to) holds ``content``."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(descriptor, "rb") as handle:
        return os.fstat(handle.fileno()).st_size == len(content) and handle.read(len(content) + 1) == content


def place_subtitle(path: Path, content: bytes, own_signature: Sequence[int] | None, overwrite: bool) -> str | None:
    """Writes ``content`` to ``path`` atomically unless somebody else's file is there.

    Returns None when ``path`` holds ``content``, else why it was left alone. A file may be
    replaced when it still has ``own_signature`` (AutoKR wrote it), or when ``overwrite``. The
    same bytes already there are fine: our own file from a run whose database commit was
    interrupted.
    """
    if path.is_symlink() and not overwrite:
        return f"{path.name} is a symbolic link; AutoKR writes no subtitle through a link and left it as it is"
    temporary, descriptor = create_temporary(path)
    try:
        write_descriptor(descriptor, content)
        faults.pause_if_armed("before-place", "subtitle", path.name)
        if place_without_clobbering(temporary, path):
            return None
        if _same_content(path, content):
            return None
        if overwrite or (own_signature and file_signature(path) == list(own_signature)):
            os.replace(temporary, path)  # replaces the name itself: a link there is not followed
            fsync_directory(path.parent)
            return None
        return f"{path.name} was not written by AutoKR (someone saved their own); AutoKR left it as it is"
    except OSError as error:
        error.filename = str(path)  # the subtitle a person knows, not the hidden temporary file
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _check_video_unchanged(item: ManifestItem) -> None:
    """Subtitles of the old content must never land beside a replaced video."""
    video, expected = item.subtitle.video, item.subtitle.video_signature
    if video is None or expected is None:
        return
    try:
        status = video.stat()
    except FileNotFoundError:
        raise TransientError(f"the video {video} was deleted or moved; no subtitle written") from None
    if (status.st_size, status.st_mtime_ns) != expected:
        raise TransientError(f"the video {video} changed since it was transcribed; no subtitle written")


def write_subtitles(item: ManifestItem, progress: ProgressCallback) -> Facts:
    translation = read_translation(item.input)
    segments = translation.segments
    if not any(segment.text.strip() for segment in segments):
        # An empty .ko.srt would show up as a useless Korean track in Plex/Jellyfin.
        return {"note": NO_SPEECH_NOTE, "written": []}
    order = item.subtitle
    overwrite, own = order.overwrite, order.own_subtitles
    _check_video_unchanged(item)
    target, source = translation.target_language, translation.source_language
    if order.video is not None and not overwrite:
        # A person's subtitle in the target language under another name (Video.kor.ass), saved
        # since the job was queued: theirs stands (intake checks the same before any work).
        theirs = [path for path in existing_sidecars(order.video, target) if path != item.output]
        if theirs:
            shown = theirs[0].relative_to(order.video.parent)
            return {"skipped": f"has a {language_name(target)} subtitle: {shown} (left as it is)", "written": []}
    korean = render_srt((Timed(s.start, s.end, s.text) for s in segments), target)
    refused = place_subtitle(item.output, korean, own.get(str(item.output)), overwrite)
    if refused:
        return {"skipped": refused, "written": []}
    written, notes = [str(item.output)], []
    source_output = order.source_output
    if source_output:
        content = render_srt((Timed(s.start, s.end, s.source_text) for s in segments), source)
        refused = place_subtitle(source_output, content, own.get(str(source_output)), overwrite)
        if refused:
            notes.append(refused)
        else:
            written.append(str(source_output))
    progress(100)
    return {"written": written, "cues": len(segments), **({"note": notes[0]} if notes else {})}


def main(argv: list[str] | None = None) -> int:
    start_worker("subtitle")
    parser = base_parser(__doc__.splitlines()[0], "translated JSON", "SRT file to write")
    parser.add_argument("--source-output", type=Path, help="also write the source-language SRT here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing subtitle file")
    arguments = parser.parse_args(argv)
    items = items_from_arguments(parser, arguments)
    if arguments.jobs is None:
        order = SubtitleOrder(source_output=arguments.source_output, overwrite=arguments.overwrite)
        items = [replace(item, subtitle=order) for item in items]
    return run_worker(items, write_subtitles)


if __name__ == "__main__":
    sys.exit(main())
