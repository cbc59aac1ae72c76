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
from dataclasses import dataclass
from pathlib import Path

from contract.errors import PermanentError, WorkerError

JAPANESE_TAGS = ("jpn", "ja", "jp", "japanese")
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


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream: its index among the audio streams (``0:a:N``) and its facts."""

    audio_index: int
    language: str
    start_time: float
    codec: str


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    audio_tracks: tuple[AudioTrack, ...]
    video_start_time: float | None
    video_duration: float | None = None
    """The video stream's own length (its DURATION tag or stream duration), when known."""

    def choose_audio(self) -> AudioTrack:
        """The first Japanese-tagged track, else the first audio track."""
        if not self.audio_tracks:
            raise PermanentError("the file has no audio track")
        for track in self.audio_tracks:
            if track.language.lower() in JAPANESE_TAGS:
                return track
        return self.audio_tracks[0]

    def audio_offset(self, track: AudioTrack) -> float:
        """Seconds from the video's start to the track's first sample (kept, not dropped)."""
        if self.video_start_time is None:
            return 0.0
        return round(track.start_time - self.video_start_time, 3)


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
    video_start: float | None = None
    video_duration: float | None = None
    for stream in streams:
        kind = stream.get("codec_type")
        if kind == "audio":
            audio_tracks.append(
                AudioTrack(
                    audio_index=len(audio_tracks),
                    language=str(stream.get("tags", {}).get("language", "und")),
                    start_time=_float(stream.get("start_time")),
                    codec=str(stream.get("codec_name", "?")),
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
    return MediaInfo(duration, tuple(audio_tracks), video_start, video_duration)


def _clock(value: object) -> float:
    """Matroska's ``DURATION`` tag, ``HH:MM:SS.nnnnnnnnn``, in seconds; -1 when absent."""
    try:
        hours, minutes, seconds = str(value).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return -1.0
