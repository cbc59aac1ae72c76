"""Which subtitles beside a video are already in a language: the sidecar names Plex, Jellyfin
and Kodi read (``Video.ko.srt``, ``Video.kor.ass``, ``Video.Korean.sdh.srt``, ``Video.ko-KR.smi``,
in any case), beside the video or in a ``Subs`` folder beside it, so AutoKR never writes a
second, machine-made subtitle beside a person's. One function, read by intake (before any work)
and by the subtitle worker (at the moment of writing).

A sidecar flagged only ``.forced`` carries signs and songs, not the dialogue: it counts only
when ``forced_counts`` (``[library] forced_subtitles_count``), as a forced-only track inside
the container does. ``Subs/``: release groups ship subtitles there and Plex's forum answers
point at it; Plex's own documentation names only the video's folder, so this is the one rule
here not taken from a server's documentation (a false find only means no machine subtitle)."""

from __future__ import annotations

import os
from pathlib import Path

from contract.languages import language_tags

SUBTITLE_EXTENSIONS = ("srt", "ass", "ssa", "vtt", "sub", "sup", "smi", "idx")
FLAGS = ("forced", "sdh", "cc", "hi", "default")
SUBS_FOLDERS = ("subs", "subtitles")


def is_sidecar_name(name: str, stem: str, language: str, forced_counts: bool = True) -> bool:
    """``Video.kor.sdh.srt`` for ``Video`` and ``ko``: the video's stem, the language's tag,
    any of the usual flags, a subtitle extension; case-insensitive. ``Video.ko.forced.srt``
    only when ``forced_counts``."""
    lowered, prefix = name.lower(), stem.lower() + "."
    if not lowered.startswith(prefix):
        return False
    parts = lowered[len(prefix) :].split(".")
    if len(parts) < 2 or parts[-1] not in SUBTITLE_EXTENSIONS:
        return False
    tags, flags = language_tags(language), parts[:-1]
    if not forced_counts and "forced" in flags:
        return False
    return any(part in tags for part in flags) and all(part in tags or part in FLAGS for part in flags)


def existing_sidecars(video: Path, language: str, forced_counts: bool = False) -> list[Path]:
    """The subtitle files in ``language`` beside ``video`` or in its folder's ``Subs`` folder
    (links included, as names), sorted."""
    found = []
    for folder in _folders(video.parent):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found += [folder / name for name in names if is_sidecar_name(name, video.stem, language, forced_counts)]
    return sorted(found)


def _folders(folder: Path) -> list[Path]:
    """``folder`` and its ``Subs`` folders (any case), never following a link out of it."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    subs = [folder / name for name in names if name.lower() in SUBS_FOLDERS and not (folder / name).is_symlink()]
    return [folder, *(path for path in subs if path.is_dir())]
