"""Finding ffmpeg/ffprobe, probing media and choosing the audio track (stdlib only).

The daemon uses ``probe`` to decide whether a stable file is a video it can work on, and the
extract worker uses it to choose the track and keep the audio's offset on the video's
timeline. Neither ever goes through a shell: arguments are lists, and input paths are given
as ``file:`` URLs so that a name such as ``-y.mkv`` is a file, not an option.

Both read only real media containers: ``INPUT_OPTIONS`` limits ffprobe and ffmpeg to the
demuxers behind the default video extensions and to local files, so a playlist (HLS, concat
list, image sequence) renamed ``evil.mkv`` is refused as "not a video container" and can make
them open no other file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.errors import PermanentError, WorkerError
from contract.languages import language_name, language_tags

# Longer than any film, concert or day-long stream recording; a container that claims more (a
# damaged or crafted header: 10^12 s) is refused at once rather than sized for its audio.
MAX_PLAUSIBLE_SECONDS = 48 * 3600
# The demuxers behind DEFAULT_VIDEO_EXTENSIONS (daemon/config.py): mkv/webm → matroska,
# mp4/m4v/mov → mov, avi, ts/m2ts → mpegts, flv, ogg, wmv → asf, mpg → mpeg (program stream).
CONTAINER_FORMATS = ("matroska", "mov", "avi", "mpegts", "flv", "ogg", "asf", "mpeg")
INPUT_OPTIONS = ("-protocol_whitelist", "file", "-format_whitelist", ",".join(CONTAINER_FORMATS))


class ToolMissing(WorkerError):
    """ffmpeg or ffprobe is not installed where AutoKR can find it."""


def find_ffmpeg() -> str:
    """``$AUTOKR_FFMPEG``, else ``ffmpeg`` on PATH, else the binary the imageio-ffmpeg wheel ships."""
    configured = os.environ.get("AUTOKR_FFMPEG") or shutil.which("ffmpeg")
    if configured:
        return configured
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as error:
        raise ToolMissing("ffmpeg not found: install it (e.g. apt install ffmpeg)") from error


def find_ffprobe() -> str:
    """``$AUTOKR_FFPROBE``, else ``ffprobe`` on PATH, else beside ffmpeg."""
    configured = os.environ.get("AUTOKR_FFPROBE") or shutil.which("ffprobe")
    if configured:
        return configured
    beside = Path(find_ffmpeg()).with_name("ffprobe")
    if beside.exists():
        return str(beside)
    raise ToolMissing("ffprobe not found: install ffmpeg (e.g. apt install ffmpeg), which ships it")


def as_input_url(path: Path) -> str:
    """A path ffmpeg reads as a file whatever its name (leading '-', ':' or '|' included)."""
    return "file:" + str(Path(path).absolute())


UNTAGGED = ("", "und", "unk", "unknown", "mis", "zxx", "mul", "none")
"""Language tags that say nothing about the speech: such a track is checked by ear."""
COMMENTARY_WORDS = ("commentary", "comment", "コメンタリー", "해설")


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream: its index among the audio streams (``0:a:N``) and its facts."""

    audio_index: int
    language: str
    start_time: float
    codec: str
    title: str = ""
    default: bool = False
    commentary: bool = False
    """Marked as a commentary by its disposition or named so in its title."""

    @property
    def tagged(self) -> bool:
        """Whether the container says which language the track speaks."""
        return self.language.strip().lower() not in UNTAGGED


@dataclass(frozen=True)
class SubtitleTrack:
    """One subtitle stream inside the container."""

    index: int
    language: str
    codec: str
    forced: bool = False
    title: str = ""


@dataclass(frozen=True)
class AudioChoice:
    """Which audio track to transcribe, and whether its language must first be checked by ear.

    ``track`` is None when every track is tagged and none speaks a language that counts: the
    video is skipped before any model runs (``reason`` says why)."""

    track: AudioTrack | None
    listen: bool = False
    """The track is untagged: the transcribe worker checks its speech (``workers/language_id.py``)."""
    reason: str = ""


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    audio_tracks: tuple[AudioTrack, ...]
    video_start_time: float | None
    video_duration: float | None = None
    """The video stream's own length (its DURATION tag or stream duration), when known."""
    subtitle_tracks: tuple[SubtitleTrack, ...] = ()

    def choose_audio(self, spoken: Sequence[str] = ("ja",)) -> AudioTrack:
        """The track to transcribe: ``audio_choice``'s, or (nothing speaks a language that
        counts: ``autokr retry --force`` asked for it anyway) the default track."""
        choice = self.audio_choice(spoken)
        if choice.track is not None:
            return choice.track
        return _preferred(self.audio_tracks)

    def audio_choice(self, spoken: Sequence[str] = ("ja",)) -> AudioChoice:
        """Which track speaks one of ``spoken`` (ISO 639-1 codes, ``ja``).

        A track tagged with one of them wins (the default one among several, commentaries
        last); else an untagged track (the same preference), to be checked by ear; a video whose
        tracks are all tagged, none in ``spoken``, gets no track and a reason.

        Raises:
            PermanentError: the file has no audio track at all.
        """
        if not self.audio_tracks:
            raise PermanentError("the file has no audio track")
        tags = {tag for language in spoken for tag in language_tags(language)}
        speaking = [track for track in self.audio_tracks if track.language.strip().lower() in tags]
        if speaking:
            return AudioChoice(_preferred(speaking))
        untagged = [track for track in self.audio_tracks if not track.tagged]
        if untagged:
            return AudioChoice(_preferred(untagged), listen=True)
        named = ", ".join(dict.fromkeys(track.language.strip().lower() for track in self.audio_tracks))
        wanted = " or ".join(language_name(language) for language in spoken)
        return AudioChoice(None, reason=f"no {wanted} audio ({named})")

    def subtitles_in(self, language: str, forced_counts: bool = False) -> list[SubtitleTrack]:
        """The subtitle streams tagged ``language`` (forced-only ones when ``forced_counts``)."""
        tags = language_tags(language)
        return [
            track
            for track in self.subtitle_tracks
            if track.language.strip().lower() in tags and (forced_counts or not track.forced)
        ]

    def audio_offset(self, track: AudioTrack) -> float:
        """Seconds from the video's start to the track's first sample (kept, not dropped)."""
        if self.video_start_time is None:
            return 0.0
        return round(track.start_time - self.video_start_time, 3)


def _preferred(tracks: Sequence[AudioTrack]) -> AudioTrack:
    """Of ``tracks``: not a commentary before a commentary, then the default one, then the first."""
    return min(tracks, key=lambda track: (track.commentary, not track.default, track.audio_index))


def _float(value: object, default: float = 0.0) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def probe(path: Path, timeout: float = 60.0) -> MediaInfo:
    """Reads the streams of ``path`` with ffprobe.

    Raises:
        PermanentError: the file is empty or not a media file ffprobe can read.
        ToolMissing: ffprobe is not installed.
    """
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):  # a FIFO would block ffprobe; a device is no video
        raise PermanentError("not a regular file (a device, pipe or socket); AutoKR reads video files only")
    if status.st_size == 0:
        raise PermanentError("the file is empty (0 bytes)")
    command = [
        find_ffprobe(), "-v", "error", "-print_format", "json",
        "-show_format", "-show_streams", *INPUT_OPTIONS, as_input_url(path),
    ]  # fmt: skip
    try:
        finished = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise WorkerError(f"ffprobe took longer than {timeout:.0f} s to read the file") from error
    message = finished.stderr.decode("utf-8", "replace").strip().splitlines()
    refused = [line for line in message if "not on whitelist" in line]
    if refused:
        kind = refused[0].partition("[")[2].partition(" @")[0] or "another kind of file"
        raise PermanentError(
            f"not a video container (it is {kind}; AutoKR reads {', '.join(CONTAINER_FORMATS)} files only)"
        )
    if finished.returncode != 0:
        detail = message[-1] if message else f"ffprobe exited with status {finished.returncode}"
        detail = detail.replace(as_input_url(path), "").strip(": ")
        raise PermanentError(f"not a readable video ({detail})")
    report = json.loads(finished.stdout or b"{}")
    streams = report.get("streams", [])
    if not streams:
        raise PermanentError("not a readable video (no audio or video streams)")
    audio_tracks: list[AudioTrack] = []
    subtitle_tracks: list[SubtitleTrack] = []
    video_start: float | None = None
    video_duration: float | None = None
    for stream in streams:
        kind = stream.get("codec_type")
        tags = {str(key).lower(): str(value) for key, value in (stream.get("tags") or {}).items()}
        disposition = stream.get("disposition") or {}
        title = tags.get("title", "")
        if kind == "audio":
            audio_tracks.append(
                AudioTrack(
                    audio_index=len(audio_tracks),
                    language=tags.get("language", "und"),
                    start_time=_float(stream.get("start_time")),
                    codec=str(stream.get("codec_name", "?")),
                    title=title,
                    default=bool(disposition.get("default")),
                    commentary=bool(disposition.get("comment"))
                    or any(word in title.lower() for word in COMMENTARY_WORDS),
                )
            )
        elif kind == "subtitle":
            subtitle_tracks.append(
                SubtitleTrack(
                    index=len(subtitle_tracks),
                    language=tags.get("language", "und"),
                    codec=str(stream.get("codec_name", "?")),
                    forced=bool(disposition.get("forced")),
                    title=title,
                )
            )
        elif kind == "video" and video_start is None and not stream.get("disposition", {}).get("attached_pic"):
            video_start = _float(stream.get("start_time"))
            lengths = [_float(stream.get("duration"), -1), _clock(stream.get("tags", {}).get("DURATION"))]
            video_duration = min((length for length in lengths if length > 0), default=None)
    duration = _float(report.get("format", {}).get("duration"))
    if not 0 <= duration <= MAX_PLAUSIBLE_SECONDS:
        raise PermanentError(
            f"not a plausible video: its container claims {duration / 3600:.0f} hours (AutoKR takes videos of up "
            f"to {MAX_PLAUSIBLE_SECONDS // 3600} hours); remux it (ffmpeg -i IN -c copy OUT) if it is a real one"
        )
    return MediaInfo(duration, tuple(audio_tracks), video_start, video_duration, tuple(subtitle_tracks))


def _clock(value: object) -> float:
    """Matroska's ``DURATION`` tag, ``HH:MM:SS.nnnnnnnnn``, in seconds; -1 when absent."""
    try:
        hours, minutes, seconds = str(value).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return -1.0
