"""Per-stage wall time, real-time factor and peak memory of both engines, against faster-whisper's
own batched pipeline and the plain ``whisper`` command on the same audio, measured in one run.

    python -m bench.stages VIDEO... [--whisper-pt FILE] [--whisper-ct2 DIR] [--translator MODEL]
                             [--device cpu] [--reference TEXT_FILE] [--repeat N] [--runs N]

Rows (each the median of ``--runs`` whole processes; peak RSS the largest of them):
- ``transcribe ctranslate2``: the transcribe worker as the daemon runs it, CTranslate2 engine
  (faster-whisper folder ``--whisper-ct2``, int8 on a CPU), batched;
- ``transcribe torch`` and ``torch sequential``: the same worker on openai-whisper (``--whisper-pt``);
- ``faster-whisper``: faster-whisper's own ``BatchedInferencePipeline`` as a plain script,
  batch 8, its own Silero VAD, same decoding options (the peers' engine: subgen, WhisperX);
- ``whisper command``: ``python -m whisper`` with the same options;
- ``translate`` on both engines and ``subtitle``, on the first transcript.
Same options everywhere: Japanese, greedy, temperature 0 without fallback, no previous-text
conditioning, word timestamps; fp16 only on CUDA. ``--reference`` prints each transcript's
character error rate against the spoken text (punctuation and spaces ignored); ``--repeat N``
plays the extracted audio N times in a row, for a longer video's figures.

Times include the process start, imports and model load, as they do for a person. Peak memory
is the process's own maximum resident set (``wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]

# faster-whisper's own pipeline, as a peer runs it: argv = model folder, WAV, output JSON, device.
FASTER_WHISPER = """
import json, sys
from faster_whisper import BatchedInferencePipeline, WhisperModel
model, wav, out, device = sys.argv[1:5]
compute = "float16" if device.startswith("cuda") else "int8"
pipeline = BatchedInferencePipeline(WhisperModel(model, device=device, compute_type=compute, cpu_threads=2))
segments, _ = pipeline.transcribe(wav, batch_size=8, language="ja", beam_size=1, temperature=0.0,
                                  condition_on_previous_text=False, word_timestamps=True, vad_filter=True)
json.dump({"segments": [{"start": s.start, "end": s.end, "text": s.text} for s in segments]}, open(out, "w"))
"""


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; fails loudly if it fails."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPOSITORY)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{errors.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def measured(command: list[str], runs: int) -> tuple[float, float]:
    results = [timed(command) for _ in range(runs)]
    return statistics.median(wall for wall, _ in results), max(peak for _, peak in results)


def repeat_audio(wav: Path, times: int) -> None:
    with wave.open(str(wav), "rb") as reader:
        parameters, frames = reader.getparams(), reader.readframes(reader.getnframes())
    with wave.open(str(wav), "wb") as writer:
        writer.setparams(parameters)
        writer.writeframes(frames * times)


def seconds_of(wav: Path) -> float:
    with wave.open(str(wav), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


def text_of(path: Path) -> str:
    document = json.loads(path.read_text(encoding="utf-8"))
    return document["text"] if "text" in document else "".join(s["text"] for s in document["segments"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--whisper-pt", default=str(REPOSITORY / ".cache" / "whisper-base.pt"))
    parser.add_argument("--whisper-ct2", default=str(REPOSITORY / ".cache" / "whisper-base-ct2"))
    parser.add_argument("--translator", help="NLLB name or directory (default: the tests' tiny NLLB, built here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", type=Path, help="the spoken text, for character error rates")
    parser.add_argument("--repeat", type=int, default=1, help="play the audio this many times in a row")
    parser.add_argument("--runs", type=int, default=3, help="runs of each row (the median is shown)")
    arguments = parser.parse_args(argv)
    python, device = sys.executable, ["--device", arguments.device]
    if arguments.translator is None:
        # Built in a child process: this one must stay small, since a child's peak RSS starts
        # from its parent's at fork.
        built = Path(tempfile.mkdtemp(prefix="autokr-stages-nllb-")) / "nllb"
        build = "import sys, pathlib, testkit.tiny_models as m; m.build_tiny_nllb(pathlib.Path(sys.argv[1]))"
        subprocess.run([python, "-c", build, str(built)], check=True, cwd=REPOSITORY, capture_output=True)
        arguments.translator = str(built)
        print(f"translator: the tests' tiny NLLB ({arguments.translator}); pass --translator for a real one")
    for video in arguments.videos:
        with tempfile.TemporaryDirectory(prefix="autokr-stages-") as work:
            folder = Path(work)
            wav, converted = folder / "audio.wav", folder / "converted"
            out = {name: folder / f"{name}.json" for name in ("ct2", "torch", "sequential", "peer", "ko", "ko-torch")}
            worker = [python, "-m", "workers.transcribe", str(wav)]
            results = {"extract": timed([python, "-m", "workers.extract", str(video.absolute()), str(wav)])}
            if arguments.repeat > 1:
                repeat_audio(wav, arguments.repeat)
            rows = {
                "transcribe ctranslate2": [*worker, str(out["ct2"]), "--model", arguments.whisper_ct2,
                                           "--engine", "ctranslate2", *device],
                "transcribe torch": [*worker, str(out["torch"]), "--model", arguments.whisper_pt, "--engine", "torch",
                                     *device],
                "torch sequential": [*worker, str(out["sequential"]), "--model", arguments.whisper_pt,
                                     "--engine", "torch", "--decoding", "sequential", *device],
                "faster-whisper": [python, "-c", FASTER_WHISPER, arguments.whisper_ct2, str(wav), str(out["peer"]),
                                   arguments.device],
                "whisper command": [
                    python, "-m", "whisper", str(wav), "--model", arguments.whisper_pt, "--language", "ja",
                    "--temperature", "0", "--temperature_increment_on_fallback", "None", "--beam_size", "None",
                    "--best_of", "None", "--condition_on_previous_text", "False", "--word_timestamps", "True",
                    "--fp16", str(arguments.device.startswith("cuda")), "--device", arguments.device,
                    "--output_format", "json", "--output_dir", str(folder / "cli"), "--verbose", "False",
                ],
                "translate ctranslate2": [python, "-m", "workers.translate", str(out["ct2"]), str(out["ko"]),
                                          "--model", arguments.translator, "--converted-dir", str(converted),
                                          *device],
                "translate torch": [python, "-m", "workers.translate", str(out["ct2"]), str(out["ko-torch"]),
                                    "--model", arguments.translator, "--engine", "torch", *device],
                "subtitle": [python, "-m", "workers.subtitle", str(out["ko"]), str(folder / "out.ko.srt")],
            }  # fmt: skip
            for name, command in rows.items():
                results[name] = measured(command, arguments.runs)
            duration = seconds_of(wav)
            print(f"{video.name}: {duration:.1f} s of audio, {arguments.device}, median of {arguments.runs} runs")
            for name, (wall, peak) in results.items():
                print(f"  {name:<24} {wall:7.2f} s  RTF {wall / duration:6.3f}  peak RSS {peak:7.1f} MB")
            ours, peer, command_wall = (results[k][0] for k in ("transcribe ctranslate2", "faster-whisper",
                                                                "whisper command"))  # fmt: skip
            print(f"  ctranslate2 / faster-whisper: {ours / peer:.2f}   ctranslate2 / whisper command: "
                  f"{ours / command_wall:.2f}   torch / whisper command: "
                  f"{results['transcribe torch'][0] / command_wall:.2f}")  # fmt: skip
            memory = results["transcribe ctranslate2"][1] / results["faster-whisper"][1]
            print(f"  peak RSS ctranslate2 / faster-whisper: {memory:.2f}")
            if arguments.reference:
                from testkit.speech import character_error_rate  # after the runs: numpy would count in theirs

                spoken = arguments.reference.read_text(encoding="utf-8").strip() * arguments.repeat
                texts = {"ctranslate2": out["ct2"], "torch": out["torch"], "torch sequential": out["sequential"],
                         "faster-whisper": out["peer"], "whisper command": folder / "cli" / "audio.json"}  # fmt: skip
                rates = ", ".join(
                    f"{label} {character_error_rate(spoken, text_of(path)):.3f}" for label, path in texts.items()
                )
                print(f"  character error rate: {rates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
