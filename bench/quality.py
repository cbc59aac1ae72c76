"""Subtitle quality against known speech intervals.

    bench/quality.py VIDEO REFERENCE.json [--whisper MODEL] [--translator MODEL]
    bench/quality.py --make CLIP.mkv REFERENCE.json [--audio-offset 2]  # a clip made with pyopenjtalk-plus

Runs the whole pipeline (``autokr once`` code path) on VIDEO, then prints, for the Korean and
the Japanese subtitles: mean absolute boundary error against the reference speech intervals,
seconds of non-speech covered by cues (in all, and the most in one cue), cues over music or
silence, style violations (line width, line count, duration, gaps, overlaps) and reading
speed. REFERENCE.json: ``{"speech": [{"start", "end", ...}], "music": [[start, end]]}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import pysubs2  # noqa: E402

from workers.cues import Cue, limits_for, reading_speed, style_violations  # noqa: E402
from workers.timing import merge_intervals, overlapping  # noqa: E402


def load_cues(path: Path) -> list[Cue]:
    subtitles = pysubs2.load(str(path), encoding="utf-8")
    return [Cue(event.start / 1000, event.end / 1000, event.text.split("\\N")) for event in subtitles]


def analyse(cues: list[Cue], reference: dict[str, Any], language: str) -> dict[str, Any]:
    utterances = [(float(u["start"]), float(u["end"])) for u in reference["speech"]]
    speech = merge_intervals(utterances)
    errors, missed = [], 0
    for start, end in utterances:
        touching = [cue for cue in cues if cue.end > start and cue.start < end]
        if not touching:
            missed += 1
            continue
        errors += [abs(touching[0].start - start), abs(touching[-1].end - end)]
    non_speech = [
        (cue.end - cue.start) - sum(b - a for a, b in overlapping(cue.start, cue.end, speech)) for cue in cues
    ]
    # A cue over music or silence carries (almost) no speech: less than 0.2 s of it. A short
    # fragment lengthened to the minimum duration still carries its own speech.
    over_nothing = sum(1 for cue, outside in zip(cues, non_speech, strict=True) if cue.end - cue.start - outside < 0.2)
    return {
        "language": language,
        "cues": len(cues),
        "utterances missed": missed,
        "mean boundary error s": round(sum(errors) / len(errors), 3) if errors else None,
        "non-speech covered s": round(sum(non_speech), 3),
        "most non-speech in one cue s": round(max(non_speech, default=0.0), 3),
        "cues over music/silence": over_nothing,
        "style violations": style_violations(cues, limits_for(language)),
        "reading speed cps": round(reading_speed(cues), 1),
    }


def run_pipeline(
    video: Path, whisper: str, translator: str, device: str, work: Path, decoding: str = "batched",
    engine: str = "ctranslate2",
) -> dict[str, Path]:  # fmt: skip
    from daemon.config import Config
    from daemon.once import run_once

    copy = work / video.name
    shutil.copyfile(video, copy)
    config = Config()
    config = dataclasses.replace(
        config,
        daemon=dataclasses.replace(config.daemon, write_source_subtitles=True),
        models=dataclasses.replace(
            config.models,
            whisper=whisper,
            translator=translator,
            device=device,
            decoding=decoding,
            engine=engine,
            model_dir=work / "models",
        ),
    )
    written = run_once(config, copy, None)
    return {path.suffixes[-2].lstrip("."): path for path in written}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--make", action="store_true", help="write a test clip and its reference instead")
    parser.add_argument("--audio-offset", type=float, default=0.0, help="with --make: audio muxed this late (s)")
    parser.add_argument("--whisper", default="small")
    parser.add_argument("--translator", default="facebook/nllb-200-distilled-600M")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decoding", choices=("batched", "sequential"), default="batched")
    parser.add_argument("--engine", choices=("ctranslate2", "torch"), default="ctranslate2")
    parser.add_argument("--cues", action="store_true", help="also list every cue with its non-speech seconds")
    arguments = parser.parse_args(argv)
    if arguments.make:
        sys.path.insert(0, str(REPOSITORY / "tests"))
        from fixtures.speech import make_quality_clip

        make_quality_clip(arguments.video, arguments.reference, audio_offset=arguments.audio_offset)
        print(f"wrote {arguments.video} and {arguments.reference}")
        return 0
    from daemon.logs import setup_logging

    setup_logging()
    reference = json.loads(arguments.reference.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="autokr-quality-") as work:
        written = run_pipeline(
            arguments.video, arguments.whisper, arguments.translator, arguments.device, Path(work), arguments.decoding,
            arguments.engine,
        )  # fmt: skip
        for language, path in sorted(written.items()):
            cues = load_cues(path)
            print(json.dumps(analyse(cues, reference, language), ensure_ascii=False))
            speech = merge_intervals([(float(u["start"]), float(u["end"])) for u in reference["speech"]])
            for cue in cues if arguments.cues else []:
                outside = (cue.end - cue.start) - sum(b - a for a, b in overlapping(cue.start, cue.end, speech))
                print(f"  {cue.start:7.3f} {cue.end:7.3f} non-speech {outside:5.2f} s  {' / '.join(cue.lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
