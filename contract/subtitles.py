"""Which subtitles beside a video are already in a language: the sidecar names Plex, Jellyfin
and Kodi read (``Video.ko.srt``, ``Video.kor.ass``, ``Video.Korean.forced.srt``, in any case),
so AutoKR never writes a second, machine-made subtitle beside a person's. One function, read by
intake (before any work) and by the subtitle worker (at the moment of writing)."""

from __future__ import annotations

import os
from pathlib import Path

from contract.languages import language_tags

SUBTITLE_EXTENSIONS = ("srt", "ass", "ssa", "vtt", "sub", "sup", "smi", "idx")
FLAGS = ("forced", "sdh", "cc", "hi", "default")


def is_sidecar_name(name: str, stem: str, language: str) -> bool:
    """``Video.kor.forced.srt`` for ``Video`` and ``ko``: the video's stem, the language's tag,
    any of the usual flags, a subtitle extension; case-insensitive."""
    lowered, prefix = name.lower(), stem.lower() + "."
    if not lowered.startswith(prefix):
        return False
    parts = lowered[len(prefix) :].split(".")
    if len(parts) < 2 or parts[-1] not in SUBTITLE_EXTENSIONS:
        return False
    tags = language_tags(language)
    return any(part in tags for part in parts[:-1]) and all(part in tags or part in FLAGS for part in parts[:-1])


def existing_sidecars(video: Path, language: str) -> list[Path]:
    """The subtitle files in ``language`` beside ``video`` (links included, as names), sorted."""
    try:
        names = os.listdir(video.parent)
    except OSError:
        return []
    return sorted(video.parent / name for name in names if is_sidecar_name(name, video.stem, language))
