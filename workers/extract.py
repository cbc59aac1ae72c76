"""Stage 1: video → 16 kHz mono WAV of the Japanese audio track.

By hand: ``python -m workers.extract VIDEO.mkv OUT.wav``

The WAV starts at the video's time zero: when the chosen audio stream starts later than the
video (``start_time`` > 0, common in web rips) the gap is padded with silence, so every time
Whisper reports is already on the video's timeline. ``aresample``'s ``async``/``first_pts``
does this from the packets' own timestamps, which also accounts for the AAC encoder delay
that ffprobe's ``start_time`` includes.

Padding is bounded, so a tiny crafted file cannot fill the disk: an audio start later than the
video's own length, or later than an hour, is refused as implausible, and the WAV's size
(``WAV_BYTES_PER_SECOND`` × its length) is checked against the free space before it is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ffmpeg

from contract.errors import PermanentError, TransientError
from contract.files import atomic_output
from contract.manifest import ManifestItem
from contract.media import CONTAINER_FORMATS, MediaInfo, as_input_url, find_ffmpeg, probe
from workers.common import (
    Facts,
    ProgressCallback,
    base_parser,
    items_from_arguments,
    run_worker,
    start_worker,
)

SAMPLE_RATE = 16000
WAV_BYTES_PER_SECOND = SAMPLE_RATE * 2  # 16-bit mono
MAX_AUDIO_START_SECONDS = 3600.0


def build_command(video: Path, output: Path, audio_index: int, timeline_start: float) -> list[str]:
    """The ffmpeg argument list: one process, the chosen track only, decoded straight to WAV
    whose first sample is at ``timeline_start`` seconds of the container's clock."""
    # ffmpeg-python hashes its arguments as UTF-8, which a file name that is not UTF-8 cannot
    # be: it builds the command around placeholders, and the real URLs go in afterwards.
    urls = {"<input>": as_input_url(video), "<output>": "file:" + str(output.absolute())}
    audio = ffmpeg.input("<input>", protocol_whitelist="file", format_whitelist=",".join(CONTAINER_FORMATS))
    first_sample = int(round(timeline_start * SAMPLE_RATE))
    audio = audio[f"a:{audio_index}"].filter("aresample", SAMPLE_RATE, **{"async": 1, "first_pts": first_sample})
    stream = ffmpeg.output(audio, "<output>", ac=1, ar=SAMPLE_RATE, acodec="pcm_s16le", f="wav")
    stream = stream.global_args("-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1")
    return [urls.get(part, part) for part in stream.overwrite_output().compile(cmd=find_ffmpeg())]


def _raise_for_ffmpeg_failure(stderr: str, output: Path) -> None:
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    if "No space left" in stderr:
        raise TransientError(f"no space left on the disk holding {output.parent}")
    if "Permission denied" in stderr or "Read-only file system" in stderr:
        raise TransientError(f"cannot write {output}: permission denied")
    raise PermanentError(f"ffmpeg could not decode the audio: {last}")


def check_padding_and_space(info: MediaInfo, padding: float, output: Path) -> None:
    """Refuses an implausible audio start, and a WAV the disk cannot hold.

    Raises:
        PermanentError: the audio starts later than the video lasts, or over an hour in.
        TransientError: too little free space for the WAV (retried: space may come back).
    """
    video_length = info.video_duration if info.video_duration is not None else info.duration
    if padding > MAX_AUDIO_START_SECONDS or (video_length > 0 and padding > video_length):
        raise PermanentError(
            f"implausible audio start: the audio starts {padding:.1f} s after the video, which lasts "
            f"{video_length:.1f} s (a damaged or crafted file); remux it with a correct audio start"
        )
    needed = int((max(info.duration, padding) + 1) * WAV_BYTES_PER_SECOND) + 64 * 1024
    stats = os.statvfs(output.parent)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise TransientError(
            f"no space left on the disk holding {output.parent}: the audio needs about "
            f"{needed / 1e6:.0f} MB and {free / 1e6:.0f} MB are free"
        )


def extract(item: ManifestItem, progress: ProgressCallback) -> Facts:
    info = probe(item.input)
    track = info.choose_audio(item.audio.spoken or ("ja",))
    offset = info.audio_offset(track)
    item.output.parent.mkdir(parents=True, exist_ok=True)
    timeline_start = info.video_start_time if info.video_start_time is not None else track.start_time
    check_padding_and_space(info, track.start_time - timeline_start, item.output)
    with atomic_output(item.output) as temporary:
        command = build_command(item.input, temporary, track.audio_index, timeline_start)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.isdigit() and info.duration > 0:
                    progress(int(value) / 1e6 / info.duration * 100)
            stderr = process.stderr.read() if process.stderr else ""
            process.wait()
        finally:
            if process.poll() is None:  # interrupted (SIGTERM): never leave ffmpeg writing
                process.kill()
                process.wait()
        if process.returncode != 0:
            _raise_for_ffmpeg_failure(stderr, item.output)
    progress(100)
    return {"audio_track": track.audio_index, "audio_language": track.language, "audio_offset": offset}


def main(argv: list[str] | None = None) -> int:
    start_worker("extract")
    parser = base_parser(__doc__.splitlines()[0], "video file", "WAV file to write")
    arguments = parser.parse_args(argv)
    return run_worker(items_from_arguments(parser, arguments), extract)


if __name__ == "__main__":
    sys.exit(main())
