"""Stage 2: WAV → JSON segments ``{start, end, text}`` with openai-whisper.

By hand: ``python -m workers.transcribe AUDIO.wav OUT.json --model large-v3 --language ja``
(``--model`` also takes a path to a checkpoint file). The model loads once per process, for
every item in the manifest.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workers import faults
from workers.common import (
    Item,
    ProgressCallback,
    base_parser,
    items_from_arguments,
    run_worker,
    start_worker,
    write_json_atomically,
)
from workers.errors import PermanentError
from workers.hallucinations import filter_segments
from workers.timing import follow_speech


def read_audio(path: Path) -> np.ndarray:
    """Reads the extract stage's 16 kHz mono 16-bit WAV as float32 in [-1, 1].

    Any other file (a WAV made by hand, say) goes through whisper's own ffmpeg loader.
    """
    try:
        with wave.open(str(path), "rb") as reader:
            if reader.getframerate() == 16000 and reader.getnchannels() == 1 and reader.getsampwidth() == 2:
                frames = reader.readframes(reader.getnframes())
                return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0
    except wave.Error:
        pass
    import whisper

    return whisper.load_audio(str(path))


@contextlib.contextmanager
def reporting_progress(progress: ProgressCallback) -> Iterator[None]:
    """openai-whisper reports progress only through a tqdm bar over mel frames; this swaps
    that bar, for the duration of one call, for one that emits our progress events."""
    module = importlib.import_module("whisper.transcribe")

    class Bar:
        def __init__(self, total: int = 0, **_: Any) -> None:
            self.total, self.done = max(total, 1), 0

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def update(self, count: int) -> None:
            self.done += count
            progress(100.0 * self.done / self.total)

    original = module.tqdm
    module.tqdm = types.SimpleNamespace(tqdm=Bar)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.tqdm = original  # type: ignore[attr-defined]


def transcribe_audio(model: Any, audio: np.ndarray, options: dict[str, Any], progress: ProgressCallback) -> list[dict]:
    with reporting_progress(progress):
        result = model.transcribe(audio, verbose=False, **{**options, "word_timestamps": False})
    if options.get("word_timestamps"):
        from workers.alignment import add_words_by_window

        add_words_by_window(model, audio, result["segments"], options)
    segments = []
    for segment in result["segments"]:
        text = segment["text"].strip()
        if text:
            words = [
                {"word": w["word"], "start": round(float(w["start"]), 3), "end": round(float(w["end"]), 3)}
                for w in segment.get("words") or []
            ]
            segments.append(
                {
                    "start": round(float(segment["start"]), 3),
                    "end": round(float(segment["end"]), 3),
                    "text": text,
                    "avg_logprob": round(float(segment.get("avg_logprob", 0.0)), 4),
                    "no_speech_prob": round(float(segment.get("no_speech_prob", 0.0)), 4),
                    "compression_ratio": round(float(segment.get("compression_ratio", 0.0)), 3),
                    "words": words,
                }
            )
    return segments


def transcribe_speech(
    model: Any,
    audio: np.ndarray,
    options: dict[str, Any],
    language: str,
    progress: ProgressCallback,
    use_vad: bool = True,
    filter_hallucinations: bool = True,
    batch_size: int = 0,
) -> dict[str, Any]:
    """Voice activity → Whisper (word timestamps) → cues that follow the speech → the
    hallucination filter. Audio with no speech at all is not given to Whisper.

    ``batch_size`` ≥ 1 decodes speech chunks that many at a time (``workers.batched``);
    0 runs openai-whisper's sequential ``model.transcribe``."""
    speech = None
    if use_vad:
        from workers.vad import detect_speech

        speech = detect_speech(audio)
        if not speech:
            progress(100)
            return {"segments": [], "dropped": [], "speech": []}
    if batch_size:
        from workers.batched import transcribe_batched

        regions = speech if speech is not None else [(0.0, len(audio) / 16000)]
        found = transcribe_batched(
            model, audio, regions, options, batch_size, progress,
            sequential=lambda piece: transcribe_audio(model, piece, options, lambda _: None),
        )  # fmt: skip
    else:
        found = transcribe_audio(model, audio, options, progress)
    segments = follow_speech(found, speech)
    kept, dropped = filter_segments(segments, language, speech) if filter_hallucinations else (segments, [])
    for segment, reason in dropped:
        where = f"{segment['start']:.1f}-{segment['end']:.1f} s"
        print(f"dropped {where} {segment['text']!r}: {reason}", file=sys.stderr)
    return {
        "segments": kept,
        "dropped": [{**segment, "reason": reason} for segment, reason in dropped],
        "speech": [[round(a, 3), round(b, 3)] for a, b in speech] if speech is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    start_worker("transcribe")
    from workers.models import (
        SMALLER_WHISPER,
        WHISPER_BATCH,
        choose_whisper,
        load_whisper,
        log,
        resolve_device,
        step_down,
        whisper_batch_size,
    )

    parser = base_parser(__doc__.splitlines()[0], "16 kHz mono WAV", "JSON file to write")
    parser.add_argument("--model", default="auto", help="name (large-v3, small, ...), checkpoint path, or auto")
    parser.add_argument("--language", default="ja")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--model-dir", type=Path, help="where named models are downloaded and cached")
    parser.add_argument(
        "--condition-on-previous-text",
        action="store_true",
        help="feed each window the previous text (off: on Japanese it feeds repetition loops)",
    )
    parser.add_argument("--no-vad", action="store_true", help="no voice activity detection (cue times from Whisper)")
    parser.add_argument("--no-word-timestamps", action="store_true", help="segment times only (faster)")
    parser.add_argument("--keep-hallucinations", action="store_true", help="keep every segment Whisper wrote")
    parser.add_argument(
        "--decoding",
        choices=("batched", "sequential"),
        default="batched",
        help="batched: speech chunks decoded many at a time; sequential: model.transcribe's sliding window",
    )
    parser.add_argument("--batch-size", type=int, default=0, help="chunks decoded together (0: by free memory)")
    parser.add_argument(
        "--memory-level", type=int, default=0, help="after GPU OOM: half the batch, then a smaller model"
    )
    arguments = parser.parse_args(argv)
    items = items_from_arguments(parser, arguments)

    device = resolve_device(arguments.device)
    batched = arguments.decoding == "batched"
    nominal = (arguments.batch_size or WHISPER_BATCH) if batched else 1
    model_name, cap = step_down(
        choose_whisper(arguments.model, device), nominal, arguments.memory_level, SMALLER_WHISPER
    )
    if arguments.memory_level:
        log(f"memory level {arguments.memory_level}: {model_name}, at most {cap} chunks a batch")
    model = load_whisper(model_name, device, arguments.model_dir)
    batch_size = 0  # sequential
    if batched:
        batch_size = cap if arguments.batch_size else whisper_batch_size(model, device, cap)
    # Temperature 0 with no fallback: reruns after a crash give byte-identical subtitles.
    options = {
        "language": arguments.language,
        "task": "transcribe",
        "temperature": 0.0,
        "fp16": device.startswith("cuda"),
        "condition_on_previous_text": arguments.condition_on_previous_text,
        "word_timestamps": not arguments.no_word_timestamps,
    }

    def transcribe(item: Item, progress: ProgressCallback) -> dict[str, Any]:
        if not item.input.exists():
            raise PermanentError(f"audio file not found: {item.input}")
        audio = read_audio(item.input)
        faults.raise_out_of_memory_if_armed("transcribe", batch_size or 1)
        found = transcribe_speech(
            model,
            audio,
            options,
            arguments.language,
            progress,
            use_vad=not arguments.no_vad,
            filter_hallucinations=not arguments.keep_hallucinations,
            batch_size=batch_size,
        )
        segments = found["segments"]
        document = {"language": arguments.language, "model": model_name, **found}
        item.output.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(item.output, document)
        return {
            "model": model_name,
            "segments": len(segments),
            "batch_size": batch_size or 1,
            "decoding": arguments.decoding,
        }

    return run_worker(items, transcribe)


if __name__ == "__main__":
    sys.exit(main())
