"""How well subtitles follow the speech and read: cue timing against known speech intervals,
cues over music or silence, the style rules. ``bench/quality.py`` prints these measures and
``tests/integration/test_quality.py`` bounds them; both run the pipeline through ``autokr once``."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pysubs2

from workers.cues import Cue, limits_for, over_reading_speed, reading_speed, style_violations
from workers.timing import merge_intervals, overlapping


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
        "cues over 12 cps": round(over_reading_speed(cues), 3),
    }


def run_pipeline(
    video: Path, whisper: str, translator: str, device: str, work: Path, decoding: str = "batched",
    engine: str = "ctranslate2", packing: str = "on",
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
            packing=packing,
            engine=engine,
            model_dir=work / "models",
        ),
    )
    written = run_once(config, copy, None)
    return {path.suffixes[-2].lstrip("."): path for path in written}
