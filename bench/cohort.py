"""The transcribe worker on a cohort: N clips of real speech in one worker process, against the
same audio as one video and against one worker process per clip, with each video's own time.

    python -m bench.cohort [--sample neko_ja.mp4] [--clips 8] [--seconds 6] [--engine both]
                           [--whisper-pt FILE] [--whisper-ct2 DIR] [--no-pack]

The clips are consecutive pieces of the sample's extracted audio (real Japanese speech), so the
one video holds exactly the cohort's audio. Rows, each one run (``--runs`` for more, median):
- ``cohort``: one worker, a manifest of the N clips; the wall time, and each video's time from
  the previous video's ``done`` event to its own (flat when nothing grows from video to video);
- ``one video``: one worker on the N clips' audio joined;
- ``a process each``: N workers one after another, one clip each (what ``autokr once`` per
  video pays for this stage).
Times include the process start, imports and model load, as they do for a person.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

from contract.manifest import ManifestItem, write_manifest

REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLE = REPOSITORY.parent / "shared" / "samples" / "neko_ja.mp4"


def clips_of(sample: Path, folder: Path, count: int, seconds: float) -> tuple[list[Path], Path]:
    """``count`` WAVs of ``seconds`` each, cut one after another from ``sample``'s audio
    (looped when it is shorter), and one WAV of them all."""
    whole = folder / "sample.wav"
    subprocess.run([sys.executable, "-m", "workers.extract", str(sample), str(whole)], check=True, cwd=REPOSITORY,
                   capture_output=True)  # fmt: skip
    with wave.open(str(whole), "rb") as reader:
        parameters, frames = reader.getparams(), reader.readframes(reader.getnframes())
    width = parameters.sampwidth * parameters.nchannels
    step = int(seconds * parameters.framerate) * width
    while len(frames) < step * count:
        frames += frames
    clips = []
    for index in range(count):
        path = folder / f"clip{index}.wav"
        with wave.open(str(path), "wb") as writer:
            writer.setparams(parameters)
            writer.writeframes(frames[index * step : (index + 1) * step])
        clips.append(path)
    joined = folder / "joined.wav"
    with wave.open(str(joined), "wb") as writer:
        writer.setparams(parameters)
        writer.writeframes(frames[: step * count])
    return clips, joined


def run_worker(command: list[str]) -> tuple[float, list[float]]:
    """(wall seconds, the moment of each ``done`` event after the start) of one worker."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
    assert process.stdout is not None and process.stderr is not None
    done = []
    for line in process.stdout:
        if line.startswith("@autokr "):
            event = json.loads(line[8:])
            if event["event"] == "done":
                done.append(time.monotonic() - started)
            elif event["event"] == "failed":
                raise SystemExit(f"{event['reason']}\n{process.stderr.read()[-3000:]}")
    errors = process.stderr.read()
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{errors[-3000:]}")
    return time.monotonic() - started, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--engine", choices=("ctranslate2", "torch", "both"), default="both")
    parser.add_argument("--whisper-pt", default=str(REPOSITORY / ".cache" / "whisper-base.pt"))
    parser.add_argument("--whisper-ct2", default=str(REPOSITORY / ".cache" / "whisper-base-ct2"))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-each", action="store_true", help="leave out the one-process-per-clip row")
    parser.add_argument("--worker-option", action="append", default=[], help="passed on to every worker")
    arguments = parser.parse_args(argv)
    engines = ("ctranslate2", "torch") if arguments.engine == "both" else (arguments.engine,)
    with tempfile.TemporaryDirectory(prefix="autokr-cohort-") as scratch:
        folder = Path(scratch)
        clips, joined = clips_of(arguments.sample, folder, arguments.clips, arguments.seconds)
        manifest = folder / "manifest.json"
        write_manifest(manifest, [ManifestItem(str(i), clip, clip.with_suffix(".json")) for i, clip in
                                  enumerate(clips)])  # fmt: skip
        print(f"{arguments.clips} clips of {arguments.seconds:g} s from {arguments.sample.name}; "
              f"median of {arguments.runs} run(s); times include start, imports and model load")  # fmt: skip
        for engine in engines:
            model = arguments.whisper_pt if engine == "torch" else arguments.whisper_ct2
            worker = [sys.executable, "-m", "workers.transcribe", "--model", model, "--engine", engine,
                      "--device", "cpu", *arguments.worker_option]  # fmt: skip
            cohorts = [run_worker([*worker, "--jobs", str(manifest)]) for _ in range(arguments.runs)]
            cohort = statistics.median(wall for wall, _ in cohorts)
            moments = cohorts[0][1]
            each_video = [later - earlier for earlier, later in zip([0.0, *moments], moments, strict=False)]
            one = statistics.median(
                run_worker([*worker, str(joined), str(folder / "joined.json")])[0] for _ in range(arguments.runs)
            )
            print(f"{engine}:")
            print(f"  cohort of {len(clips)}        {cohort:7.2f} s   each video (from the previous one's end): "
                  + ", ".join(f"{value:.1f}" for value in each_video))  # fmt: skip
            print(f"  one video of {arguments.clips * arguments.seconds:g} s  {one:7.2f} s   cohort / one video: "
                  f"{cohort / one:.2f}")  # fmt: skip
            if not arguments.skip_each:
                each = statistics.median(
                    sum(run_worker([*worker, str(clip), str(clip.with_suffix(".one.json"))])[0] for clip in clips)
                    for _ in range(arguments.runs)
                )
                print(f"  a process each   {each:7.2f} s   a process each / cohort: {each / cohort:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
