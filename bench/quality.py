"""Subtitle quality against known speech intervals.

    python -m bench.quality VIDEO REFERENCE.json [--whisper MODEL] [--translator MODEL]
    python -m bench.quality --make CLIP.mkv REFERENCE.json [--audio-offset 2] [--episode]  # made with pyopenjtalk-plus

Runs the whole pipeline (``autokr once`` code path) on VIDEO, then prints, for the Korean and
the Japanese subtitles: mean absolute boundary error against the reference speech intervals,
seconds of non-speech covered by cues (in all, and the most in one cue), cues over music or
silence, style violations (line width, line count, duration, gaps, overlaps) and reading
speed. REFERENCE.json: ``{"speech": [{"start", "end", ...}], "music": [[start, end]]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from testkit.quality import analyse, load_cues, run_pipeline
from workers.timing import merge_intervals, overlapping

REPOSITORY = Path(__file__).resolve().parents[1]


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
    parser.add_argument("--packing", choices=("on", "scenes", "off"), default="on", help="[models] packing")
    parser.add_argument("--episode", action="store_true", help="with --make: the pause-heavy episode layout")
    parser.add_argument("--cues", action="store_true", help="also list every cue with its non-speech seconds")
    arguments = parser.parse_args(argv)
    if arguments.make:
        from testkit.speech import EPISODE_LAYOUT, LAYOUT, make_quality_clip

        layout = EPISODE_LAYOUT if arguments.episode else LAYOUT
        make_quality_clip(arguments.video, arguments.reference, audio_offset=arguments.audio_offset, layout=layout)
        print(f"wrote {arguments.video} and {arguments.reference}")
        return 0
    from daemon.logs import setup_logging

    setup_logging()
    reference = json.loads(arguments.reference.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="autokr-quality-") as work:
        written = run_pipeline(
            arguments.video, arguments.whisper, arguments.translator, arguments.device, Path(work), arguments.decoding,
            arguments.engine, arguments.packing,
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
