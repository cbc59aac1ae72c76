"""Per-stage wall time, real-time factor and peak memory, and the plain ``whisper`` command on
the same audio with the same model and decoding options, measured in the same run.

    bench/stages.py VIDEO... [--whisper MODEL] [--translator MODEL] [--device cpu]

Each stage runs as the daemon runs it: one worker process (``python -m workers.<stage>``), so
the times include the process start, imports and model load, as they do for ``whisper``. Peak
memory is the worker's own maximum resident set (``wait4``). The ``whisper`` command gets what
AutoKR's transcribe stage uses: temperature 0 without fallback, greedy decoding,
``condition_on_previous_text`` off, word timestamps on, fp16 only on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; fails loudly if it fails."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPOSITORY)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"{command[2]} failed ({process.returncode}):\n{errors.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def seconds_of(wav: Path) -> float:
    with wave.open(str(wav), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--whisper", default=str(REPOSITORY / ".cache" / "whisper-base.pt"))
    parser.add_argument("--translator", default="facebook/nllb-200-distilled-600M")
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args(argv)
    python = sys.executable
    for video in arguments.videos:
        with tempfile.TemporaryDirectory(prefix="autokr-stages-") as work:
            folder = Path(work)
            wav, transcript = folder / "audio.wav", folder / "transcript.json"
            translation, subtitle = folder / "translation.json", folder / "out.ko.srt"
            model = ["--device", arguments.device]
            commands = {
                "extract": [python, "-m", "workers.extract", str(video.absolute()), str(wav)],
                "transcribe": [python, "-m", "workers.transcribe", str(wav), str(transcript), "--model",
                               arguments.whisper, "--language", "ja", *model],
                "translate": [python, "-m", "workers.translate", str(transcript), str(translation), "--model",
                              arguments.translator, *model],
                "subtitle": [python, "-m", "workers.subtitle", str(translation), str(subtitle)],
            }  # fmt: skip
            results = {}
            for stage, command in commands.items():
                results[stage] = timed(command)
            duration = seconds_of(wav)
            cli = [
                python, "-m", "whisper", str(wav), "--model", arguments.whisper, "--language", "ja",
                "--temperature", "0", "--temperature_increment_on_fallback", "None", "--beam_size", "None",
                "--best_of", "None", "--condition_on_previous_text", "False", "--word_timestamps", "True",
                "--fp16", str(arguments.device.startswith("cuda")), "--device", arguments.device,
                "--output_format", "json", "--output_dir", str(folder / "cli"), "--verbose", "False",
            ]  # fmt: skip
            results["whisper command"] = timed(cli)
            name = Path(arguments.whisper).name
            print(f"{video.name}: {duration:.1f} s of audio, whisper {name}, {arguments.device}")
            for name, (wall, peak) in results.items():
                print(f"  {name:<16} {wall:7.2f} s  RTF {wall / duration:6.3f}  peak RSS {peak:7.1f} MB")
            ratio = results["transcribe"][0] / results["whisper command"][0]
            print(f"  transcribe / whisper command: {ratio:.2f} (below 1.0: AutoKR's stage is faster)")
            segments = json.loads(transcript.read_text(encoding="utf-8"))["segments"]
            print(f"  {len(segments)} segments kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
