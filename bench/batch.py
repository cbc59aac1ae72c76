"""8 short clips queued in the daemon at once, against ``autokr once`` on each in turn.

usage: python -m bench.batch [--whisper MODEL] [--translator MODEL] [--clips 8] [--seconds 5]
                             [--speech MEDIA]

Without model arguments it builds the tests' tiny models (random-weight Whisper, tiny
NLLB), which isolates what batching saves: process starts and model loads. Prints both wall
times and their ratio, measured in the same run. ``--speech`` gives the clips that media's
first seconds as their audio (a 440 Hz tone otherwise). ``autokr once`` runs a person's
defaults (voice activity detection and the hallucination filter on); with a real Whisper the
daemon does too. With the tiny one the daemon runs them off, as the tests do (it turns any
audio into a loop of one token, which they would rightly remove, leaving the daemon nothing to
write): that compares the machinery, not the same work. (Before this was said here, a real
Whisper was run that way too, and the daemon's cohort looked 0.4× as fast as ``once``: it was
transcribing a tone's hallucinations that ``once`` never decoded.)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit.daemon import Daemon, status, wait_for, write_config
from testkit.media import make_video
from testkit.tiny_models import build_tiny_nllb, build_tiny_whisper

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper")
    parser.add_argument("--translator")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--speech", type=Path, help="media whose first seconds are each clip's audio")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autokr-bench-") as scratch:
        root = Path(scratch)
        # Absolute: the daemon reads a relative model path from its config file's folder.
        whisper = Path(arguments.whisper).resolve() if arguments.whisper else build_tiny_whisper(root / "tiny.pt")
        translator = Path(arguments.translator).resolve() if arguments.translator else build_tiny_nllb(root / "nllb")
        clips = [
            make_video(root / "clips" / f"clip {i}.mkv", seconds=arguments.seconds, speech=arguments.speech)
            for i in range(arguments.clips)
        ]

        started = time.monotonic()
        for clip in clips:
            subprocess.run(
                [sys.executable, "-m", "daemon", "once", str(clip), "-o", str(clip.with_suffix(".once.srt")),
                 "-w", str(whisper), "-t", str(translator), "--device", "cpu"],
                check=True, capture_output=True,
            )  # fmt: skip
        sequential = time.monotonic() - started

        inbox = root / "inbox"
        inbox.mkdir()
        # The same pipeline on both sides: `autokr once` below runs the defaults (VAD and filter on).
        real = arguments.whisper is not None
        config = write_config(root / "autokr.toml", inbox, root / "state", whisper, translator, stable_seconds=0.5,
                              vad=real, filter_hallucinations=real)  # fmt: skip
        daemon = Daemon(config, root / "daemon.log").start()
        try:
            started = time.monotonic()
            for clip in clips:
                shutil.copy(clip, inbox / clip.name)
            wait_for(
                lambda: len([j for j in status(config) if j["state"] == "done"]) == len(clips),
                1800,
                "every clip to be done",
                interval=0.5,
            )
            batched = time.monotonic() - started
        finally:
            daemon.stop()
        loads = daemon.log().count("loaded whisper model")
    print(f"clips: {len(clips)} x {arguments.seconds:.0f} s; whisper {whisper.name}; translator {translator.name}")
    print(f"autokr once, one clip after another: {sequential:.1f} s")
    print(f"daemon, all clips queued together:  {batched:.1f} s (whisper loaded {loads} time(s))")
    print(f"speed-up: {sequential / batched:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
