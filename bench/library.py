"""A whole library's cases: what language detection costs, and a mixed folder through the daemon.

    python -m bench.library --whisper .cache/whisper-base-ct2 --translator /tmp/nllb [--engine torch]
        [--skip-folder]

1. **Language detection against transcription**, per untagged video, with the worker's own code
   (``workers/transcribe.py``: the model loaded once, voice activity, ``language_id.listen``,
   then the engine's decode): the shared Japanese sample (25.7 s), the pause-heavy episode clip
   (117.6 s), English speech from espeak-ng, and the episode played 12 times (23.5 min, an
   anime episode's length). Detection hears at most 6 windows of 30 s whatever the length, so
   its share falls as the video grows.
2. **The mixed folder of 12** (``testkit.library.mixed_folder``: tagged, untagged, dubbed,
   commentary, Korean inside and beside) through ``autokr run``: each video's end state, how
   many subtitles were written where none should be, and the time to the end.

Prints a table; nothing is asserted (tests/e2e/test_library.py holds the states).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from testkit.daemon import Daemon, status, wait_for, write_config
from testkit.library import english_speech, mixed_folder
from testkit.media import ffmpeg
from testkit.speech import EPISODE_LAYOUT, make_quality_clip

SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "neko_ja.mp4"


def as_wav(source: Path, target: Path, seconds: float | None = None) -> Path:
    ffmpeg("-i", str(source), *(["-t", str(seconds)] if seconds else []), "-ac", "1", "-ar", "16000", str(target))
    return target


def detection_rows(arguments: argparse.Namespace, folder: Path) -> None:
    from contract.manifest import AudioOrder, ManifestItem
    from workers import transcribe
    from workers.transcribe import check_language, read_audio, speech_in

    options = ["--model", str(arguments.whisper), "--engine", arguments.engine, "--device", "cpu"]
    loaded = (transcribe._whisper_on_torch if arguments.engine == "torch" else transcribe._whisper_on_ctranslate2)(
        transcribe._parser().parse_args(["--jobs", "unused", *options])
    )
    episode, _ = make_quality_clip(folder / "episode.mkv", folder / "episode.json", layout=EPISODE_LAYOUT)
    clips = {
        "Japanese sample": as_wav(SHARED_SAMPLE, folder / "ja.wav"),
        "episode clip": as_wav(episode, folder / "episode.wav"),
        "English (espeak-ng)": as_wav(english_speech(folder / "en-raw.wav"), folder / "en.wav"),
    }
    item = ManifestItem("1", Path("unused"), Path("unused"), audio=AudioOrder(("ja",), listen=True))
    print(f"language detection against transcription: {arguments.engine}, {Path(arguments.whisper).name}, CPU")
    print(f"{'video':<24}{'length':>9}{'heard as':>14}{'detect s':>10}{'transcribe s':>14}{'detect/transcribe':>19}")
    audios = {name: read_audio(path) for name, path in clips.items()}
    audios["episode ×12 (23.5 min)"] = np.tile(audios["episode clip"], 12)
    for name, audio in audios.items():
        speech = speech_in(audio, use_vad=True)
        started = time.monotonic()
        heard = check_language(item, loaded, audio, speech)
        detected = time.monotonic() - started
        started = time.monotonic()
        loaded.decode(audio, speech or [], lambda _: None, ())
        decoded = time.monotonic() - started
        words = f"{heard.language} {heard.probability:.2f}" if heard else "-"
        print(f"{name:<24}{len(audio) / 16000:>8.1f}s{words:>14}{detected:>10.2f}{decoded:>14.2f}"
              f"{detected / decoded:>19.1%}")  # fmt: skip


def folder_rows(arguments: argparse.Namespace, folder: Path) -> None:
    inbox = folder / "inbox"
    inbox.mkdir(parents=True)
    voices = {
        "ja": as_wav(SHARED_SAMPLE, folder / "ja12.wav", 12),
        "en": as_wav(english_speech(folder / "en-long.wav"), folder / "en12.wav", 12),
    }
    expected = mixed_folder(inbox, voices)
    config = write_config(
        folder / "autokr.toml", inbox, folder / "state", arguments.whisper, arguments.translator,
        vad=True, filter_hallucinations=True, engine=arguments.engine,
    )  # fmt: skip
    started = time.monotonic()
    daemon = Daemon(config, folder / "daemon.log").start()
    try:

        def ended() -> dict[str, dict] | None:
            found = {Path(job["path"]).name: job for job in status(config)}
            finals = ("done", "skipped", "failed")
            return found if len(found) == len(expected) and all(j["state"] in finals for j in found.values()) else None

        jobs = wait_for(ended, 1200, "the mixed folder")
        took = time.monotonic() - started
        log = daemon.log()
    finally:
        daemon.stop()
    wrong = sum((inbox / name.replace(".mkv", ".ko.srt")).exists() != (state == "done")
                for name, (state, _) in expected.items())  # fmt: skip
    right = sum(jobs[name]["state"] == state for name, (state, _) in expected.items())
    print(f"\nmixed folder of {len(expected)}, {arguments.engine}: {right} in the expected state, {wrong} wrong "
          f"subtitles, {took:.1f} s to the end")  # fmt: skip
    for name, job in sorted(jobs.items()):
        audio = json.dumps(job["audio_language"]) if job["audio_language"] else ""
        print(f"  {name:<26}{job['state']:<9}{','.join(job['runs']) or '(no worker)':<34}{job['note'] or ''} {audio}")
    heard = re.findall(r"heard in ([\d.]+) s", log)
    print(f"  language detection: {', '.join(heard)} s for the {len(heard)} untagged videos")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whisper", type=Path, required=True, help="a Whisper model folder or .pt (real weights)")
    parser.add_argument("--translator", type=Path, required=True, help="an NLLB folder (tiny is fine)")
    parser.add_argument("--engine", default="ctranslate2", choices=("ctranslate2", "torch"))
    parser.add_argument("--skip-folder", action="store_true", help="detection rows only")
    arguments = parser.parse_args()
    arguments.whisper, arguments.translator = arguments.whisper.absolute(), arguments.translator.absolute()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the English speech: apt install espeak-ng")
    with tempfile.TemporaryDirectory(prefix="autokr-library-") as temporary:
        detection_rows(arguments, Path(temporary))
        if not arguments.skip_folder:
            folder_rows(arguments, Path(temporary) / "folder")


if __name__ == "__main__":
    main()
