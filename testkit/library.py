"""A media library's cases, made with the real ffmpeg: several audio tracks with language tags,
titles and dispositions, subtitle streams inside the container, English speech from espeak-ng
(Debian's ``espeak-ng``) and Japanese speech from the shared sample."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testkit.media import ffmpeg

ENGLISH = (
    "Good evening, and welcome back to the show. Tonight we travel north along the coast, where the "
    "fishermen have worked the same waters for three hundred years. The weather was cold this morning, "
    "but the boats went out before sunrise, as they always do. Later, we meet a family who has baked "
    "bread in the same small shop since their grandfather opened it after the war."
)


def english_speech(path: Path, text: str = ENGLISH) -> Path:
    """English speech (espeak-ng, 16 kHz WAV), about 20 s for the default text."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FileNotFoundError("espeak-ng is not installed (apt install espeak-ng)")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path


@dataclass(frozen=True)
class Audio:
    source: Path | None = None
    """A media file whose first audio stream is used; None: a 440 Hz tone."""
    language: str | None = None
    """The track's language tag; None: untagged."""
    title: str = ""
    default: bool = False
    comment: bool = False


@dataclass(frozen=True)
class Subtitle:
    language: str | None
    forced: bool = False
    text: str = "자막"


def make_mkv(path: Path, audio: list[Audio], subtitles: tuple[Subtitle, ...] = (), seconds: float = 4.0) -> Path:
    """A Matroska file with a small video stream, ``audio`` tracks in order and ``subtitles``
    streams (SRT), tags and dispositions as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arguments = ["-f", "lavfi", "-i", f"color=size=64x48:rate=5:duration={seconds}"]
    for track in audio:
        if track.source is not None:
            arguments += ["-i", str(track.source)]
        else:
            arguments += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}"]
    for number, subtitle in enumerate(subtitles):
        srt = path.with_name(f".{path.stem}.{number}.srt")
        srt.write_text(f"1\n00:00:00,500 --> 00:00:02,000\n{subtitle.text}\n", encoding="utf-8")
        arguments += ["-i", str(srt)]
    arguments += ["-map", "0:v"]
    for number in range(len(audio)):
        arguments += ["-map", f"{number + 1}:a:0"]
    for number in range(len(subtitles)):
        arguments += ["-map", f"{len(audio) + 1 + number}:0"]
    arguments += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt"]
    for number, track in enumerate(audio):
        arguments += ["-metadata:s:a:" + str(number), f"language={track.language or 'und'}"]
        if track.title:
            arguments += ["-metadata:s:a:" + str(number), f"title={track.title}"]
        flags = [flag for flag, on in (("default", track.default), ("comment", track.comment)) if on]
        arguments += [f"-disposition:a:{number}", "+".join(flags) or "0"]
    for number, subtitle in enumerate(subtitles):
        arguments += ["-metadata:s:s:" + str(number), f"language={subtitle.language or 'und'}"]
        arguments += [f"-disposition:s:{number}", "forced" if subtitle.forced else "0"]
    arguments += ["-t", str(seconds), "file:" + str(path)]
    ffmpeg(*arguments)
    for number in range(len(subtitles)):
        path.with_name(f".{path.stem}.{number}.srt").unlink()
    return path


def mixed_folder(inbox: Path, voices: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """The twelve cases; name → (the state it must end in, words its note must hold)."""
    ja, en = voices["ja"], voices["en"]
    make_mkv(inbox / "01 Japanese.mkv", [Audio(ja, "jpn")])
    make_mkv(inbox / "02 Dub first.mkv", [Audio(en, "eng", default=True), Audio(ja, "jpn")])
    make_mkv(inbox / "03 English.mkv", [Audio(en, "eng")])
    make_mkv(inbox / "04 English Korean.mkv", [Audio(en, "eng"), Audio(None, "kor")])
    make_mkv(inbox / "05 Untagged English.mkv", [Audio(en, None)])
    make_mkv(inbox / "06 Untagged Japanese.mkv", [Audio(ja, None)])
    make_mkv(inbox / "07 Korean inside.mkv", [Audio(ja, "jpn")], (Subtitle("eng"), Subtitle("kor")))
    make_mkv(inbox / "08 Forced Korean.mkv", [Audio(ja, "jpn")], (Subtitle("kor", forced=True),))
    make_mkv(inbox / "09 Sidecar.mkv", [Audio(ja, "jpn")])
    (inbox / "09 Sidecar.kor.ass").write_text("[Script Info]\n", encoding="utf-8")
    make_mkv(inbox / "10 Subs folder.mkv", [Audio(ja, "jpn")])
    (inbox / "Subs").mkdir()
    (inbox / "Subs" / "10 Subs folder.ko-KR.smi").write_text("<SAMI></SAMI>\n", encoding="utf-8")
    make_mkv(inbox / "11 SDH.mkv", [Audio(ja, "jpn")])
    (inbox / "11 SDH.Korean.sdh.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\n자막\n", encoding="utf-8")
    make_mkv(inbox / "12 Commentary.mkv", [Audio(en, "jpn", title="Commentary", default=True), Audio(ja, "jpn")])
    return {
        "01 Japanese.mkv": ("done", ""),
        "02 Dub first.mkv": ("done", ""),
        "03 English.mkv": ("skipped", "no Japanese audio (eng)"),
        "04 English Korean.mkv": ("skipped", "no Japanese audio (eng, kor)"),
        "05 Untagged English.mkv": ("skipped", "speech is English (p "),
        "06 Untagged Japanese.mkv": ("done", ""),
        "07 Korean inside.mkv": ("skipped", "has a Korean subtitle inside the video (subtitle track 2, subrip)"),
        "08 Forced Korean.mkv": ("done", ""),
        "09 Sidecar.mkv": ("skipped", "has a Korean subtitle: 09 Sidecar.kor.ass"),
        "10 Subs folder.mkv": ("skipped", "has a Korean subtitle: Subs/10 Subs folder.ko-KR.smi"),
        "11 SDH.mkv": ("skipped", "has a Korean subtitle: 11 SDH.Korean.sdh.srt"),
        "12 Commentary.mkv": ("done", ""),
    }
