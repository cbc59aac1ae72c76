"""Per-stage wall time, real-time factor and peak memory, and the plain ``whisper`` command on
the same audio with the same model and decoding options, measured in the same run.

    bench/stages.py VIDEO... [--whisper MODEL] [--translator MODEL] [--device cpu]
                             [--reference TEXT_FILE] [--repeat N]

The transcribe stage runs twice: batched decoding (the default) and ``--decoding sequential``
(openai-whisper's ``model.transcribe``). ``--reference`` prints each transcript's character
error rate against the spoken text (punctuation and spaces ignored); ``--repeat N`` plays the
extracted audio N times in a row, for the figures of a longer video.

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
sys.path.insert(0, str(REPOSITORY / "tests"))

from fixtures.speech import character_error_rate  # noqa: E402


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


def repeat_audio(wav: Path, times: int) -> None:
    with wave.open(str(wav), "rb") as reader:
        parameters, frames = reader.getparams(), reader.readframes(reader.getnframes())
    with wave.open(str(wav), "wb") as writer:
        writer.setparams(parameters)
        writer.writeframes(frames * times)


def seconds_of(wav: Path) -> float:
    with wave.open(str(wav), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--whisper", default=str(REPOSITORY / ".cache" / "whisper-base.pt"))
    parser.add_argument("--translator", help="NLLB name or directory (default: the tests' tiny NLLB, built here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", type=Path, help="the spoken text, for character error rates")
    parser.add_argument("--repeat", type=int, default=1, help="play the audio this many times in a row")
    arguments = parser.parse_args(argv)
    python = sys.executable
    if arguments.translator is None:
        from fixtures.tiny_models import build_tiny_nllb

        built = Path(tempfile.mkdtemp(prefix="autokr-stages-nllb-"))
        arguments.translator = str(build_tiny_nllb(built / "nllb"))
        print(f"translator: the tests' tiny NLLB ({arguments.translator}); pass --translator for a real one")
    for video in arguments.videos:
        with tempfile.TemporaryDirectory(prefix="autokr-stages-") as work:
            folder = Path(work)
            wav, transcript = folder / "audio.wav", folder / "transcript.json"
            translation, subtitle = folder / "translation.json", folder / "out.ko.srt"
            model = ["--device", arguments.device]
            transcribe = [python, "-m", "workers.transcribe", str(wav), str(transcript), "--model", arguments.whisper,
                          "--language", "ja", *model]  # fmt: skip
            sequential = [*transcribe, "--decoding", "sequential"]
            sequential[sequential.index(str(transcript))] = str(folder / "sequential.json")
            commands = {
                "extract": [python, "-m", "workers.extract", str(video.absolute()), str(wav)],
                "transcribe": transcribe,
                "  sequential": sequential,
                "translate": [python, "-m", "workers.translate", str(transcript), str(translation), "--model",
                              arguments.translator, *model],
                "subtitle": [python, "-m", "workers.subtitle", str(translation), str(subtitle)],
            }  # fmt: skip
            results = {}
            for stage, command in commands.items():
                results[stage] = timed(command)
                if stage == "extract" and arguments.repeat > 1:
                    repeat_audio(wav, arguments.repeat)
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
            command_wall = results["whisper command"][0]
            for label, stage in (("transcribe (batched)", "transcribe"), ("transcribe (sequential)", "  sequential")):
                ratio = results[stage][0] / command_wall
                print(f"  {label} / whisper command: {ratio:.2f} ({1 / ratio:.2f}× its speed)")
            texts = {
                "batched": "".join(s["text"] for s in json.loads(transcript.read_text(encoding="utf-8"))["segments"]),
                "sequential": "".join(
                    s["text"] for s in json.loads((folder / "sequential.json").read_text(encoding="utf-8"))["segments"]
                ),
                "whisper command": json.loads((folder / "cli" / "audio.json").read_text(encoding="utf-8"))["text"],
            }
            if arguments.reference:
                spoken = arguments.reference.read_text(encoding="utf-8") * arguments.repeat
                rates = ", ".join(f"{label} {character_error_rate(spoken, text):.3f}" for label, text in texts.items())
                print(f"  character error rate: {rates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
