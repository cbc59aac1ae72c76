"""Per-stage wall time, real-time factor and peak memory of both engines, against faster-whisper's
own batched pipeline and the plain ``whisper`` command on the same audio, measured in one run.

    python -m bench.stages VIDEO... [--whisper-pt FILE] [--whisper-ct2 DIR] [--translator MODEL]
                             [--device cpu] [--reference TEXT_FILE] [--repeat N] [--runs N]
                             [--episode] [--rows NAME,NAME] [--worker-option OPTION]

Rows (each the median of ``--runs`` whole processes, the rows taking turns round by round;
peak RSS the largest of them):
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
plays the extracted audio N times in a row, for a longer video's figures. ``--episode`` adds
a pause-heavy clip made here (``testkit.speech.EPISODE_LAYOUT``: about two minutes of lines with
pauses of 1 to 8 s and two music passages, its spoken text as its reference); ``--rows`` runs
only the rows named (e.g. ``transcribe ctranslate2,faster-whisper``); ``--worker-option`` is
passed on to the transcribe worker rows (``--no-packing``, say).

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


def measured(commands: dict[str, list[str]], runs: int) -> dict[str, tuple[float, float]]:
    """(median wall, largest peak RSS) of each command, run round by round (each row once a
    round), so the machine's drift during the bench falls on every row alike."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            results[name].append(timed(command))
    return {name: (statistics.median(w for w, _ in got), max(p for _, p in got)) for name, got in results.items()}


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
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--episode", action="store_true", help="add the pause-heavy episode clip, made here")
    parser.add_argument("--rows", help="only these rows, comma-separated")
    parser.add_argument("--worker-option", action="append", default=[], help="passed on to the transcribe rows")
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
    references: dict[Path, str] = {}
    if arguments.reference:
        references = {video: arguments.reference.read_text(encoding="utf-8").strip() for video in arguments.videos}
    if arguments.episode:
        from testkit.speech import EPISODE_LAYOUT, SENTENCES, make_quality_clip

        built = Path(tempfile.mkdtemp(prefix="autokr-stages-episode-"))
        episode, _ = make_quality_clip(built / "episode.mkv", built / "episode.json", layout=EPISODE_LAYOUT)
        arguments.videos.append(episode)
        references[episode] = "".join(SENTENCES[int(kind)] for kind, _ in EPISODE_LAYOUT if isinstance(kind, int))
    wanted = None if not arguments.rows else {name.strip() for name in arguments.rows.split(",")}
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
            chosen = {
                name: [*command, *(arguments.worker_option if command[:3] == worker[:3] else [])]
                for name, command in rows.items()
                if wanted is None or name in wanted
            }
            # The transcripts come first: the translate and subtitle rows read the ctranslate2 one.
            later = ("translate", "subtitle")
            early = {name: command for name, command in chosen.items() if not name.startswith(later)}
            results |= measured(early, arguments.runs)
            results |= measured({k: v for k, v in chosen.items() if k not in early}, arguments.runs)
            duration = seconds_of(wav)
            print(f"{video.name}: {duration:.1f} s of audio, {arguments.device}, median of {arguments.runs} runs")
            for name, (wall, peak) in results.items():
                print(f"  {name:<24} {wall:7.2f} s  RTF {wall / duration:6.3f}  peak RSS {peak:7.1f} MB")
            ratios = [("ctranslate2 / faster-whisper", "transcribe ctranslate2", "faster-whisper"),
                      ("ctranslate2 / whisper command", "transcribe ctranslate2", "whisper command"),
                      ("torch / whisper command", "transcribe torch", "whisper command")]  # fmt: skip
            shown = [
                f"{label}: {results[a][0] / results[b][0]:.2f}" for label, a, b in ratios if {a, b} <= set(results)
            ]
            if shown:
                print("  " + "   ".join(shown))
            if {"transcribe ctranslate2", "faster-whisper"} <= set(results):
                memory = results["transcribe ctranslate2"][1] / results["faster-whisper"][1]
                print(f"  peak RSS ctranslate2 / faster-whisper: {memory:.2f}")
            if video in references:
                from testkit.speech import character_error_rate  # after the runs: numpy would count in theirs

                spoken = references[video] * arguments.repeat
                texts = {"ctranslate2": out["ct2"], "torch": out["torch"], "torch sequential": out["sequential"],
                         "faster-whisper": out["peer"], "whisper command": folder / "cli" / "audio.json"}  # fmt: skip
                rates = ", ".join(
                    f"{label} {character_error_rate(spoken, text_of(path)):.3f}"
                    for label, path in texts.items()
                    if path.exists()
                )
                print(f"  character error rate: {rates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
