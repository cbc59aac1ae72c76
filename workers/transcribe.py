"""Stage 2: WAV → JSON segments ``{start, end, text}`` with Whisper.

By hand: ``python -m workers.transcribe AUDIO.wav OUT.json --model large-v3 --language ja``
(``--model`` also takes a model folder or a ``.pt`` checkpoint). The model loads once per
process, for every item in the manifest.

Two engines, one pipeline: voice activity (``workers.vad``) → speech chunks
(``workers.chunks``) decoded by the engine → cues that follow the speech
(``workers.timing``) → the hallucination filter. ``ctranslate2`` (the default) runs
faster-whisper and imports no torch (``workers.ct2_whisper``); ``torch`` runs openai-whisper,
the reference, and is what a ``.pt`` checkpoint runs on whatever the setting says.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
import types
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contract import faults
from contract.errors import PermanentError, TransientError
from contract.manifest import ManifestItem
from contract.protocol import EXIT_OUT_OF_MEMORY
from workers import language_id
from workers.chunks import CHUNK_SECONDS, Interval
from workers.common import (
    Facts,
    OutOfMemory,
    ProgressCallback,
    ProgressReporter,
    base_parser,
    emit,
    fail_every_item,
    fail_items,
    items_from_arguments,
    log,
    run_worker,
    start_worker,
)
from workers.gpu import free_gpu_memory
from workers.hallucinations import filter_segments
from workers.language_id import Detect
from workers.packing import SEAM_SECONDS, pack, pieces_of
from workers.segments import Segment, Transcript, Word, scored, write_stage_file
from workers.timing import follow_speech

if TYPE_CHECKING:
    from whisper.model import Whisper


def read_audio(path: Path) -> np.ndarray:
    """Reads the extract stage's 16 kHz mono 16-bit WAV as float32 in [-1, 1].

    Another file (a WAV made by hand, say) is decoded by faster-whisper's PyAV loader.
    """
    try:
        with wave.open(str(path), "rb") as reader:
            if reader.getframerate() == 16000 and reader.getnchannels() == 1 and reader.getsampwidth() == 2:
                frames = reader.readframes(reader.getnframes())
                return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0
    except wave.Error:
        pass
    from faster_whisper.audio import decode_audio

    audio: np.ndarray = decode_audio(str(path), sampling_rate=16000)
    return audio


@contextlib.contextmanager
def reporting_progress(progress: ProgressCallback) -> Iterator[None]:
    """openai-whisper reports progress only through a tqdm bar over mel frames; this swaps
    that bar, for the duration of one call, for one that emits our progress events."""
    module = importlib.import_module("whisper.transcribe")

    class Bar:
        def __init__(self, total: int = 0, **_: object) -> None:
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


def transcribe_audio(
    model: Whisper, audio: np.ndarray, options: dict[str, object], progress: ProgressCallback
) -> list[Segment]:
    """openai-whisper's own sliding-window ``model.transcribe`` (the torch engine's sequential path)."""
    with reporting_progress(progress):
        result = model.transcribe(audio, verbose=False, **{**options, "word_timestamps": False})
    if options.get("word_timestamps"):
        from workers.alignment import add_words_by_window

        add_words_by_window(model, audio, result["segments"], options)
    return [
        scored(
            segment["start"],
            segment["end"],
            segment["text"],
            segment.get("avg_logprob", 0.0),
            segment.get("no_speech_prob", 0.0),
            segment.get("compression_ratio", 0.0),
            [Word(w["word"], w["start"], w["end"]) for w in segment.get("words") or []],
        )  # fmt: skip
        for segment in result["segments"]
        if segment["text"].strip()
    ]


Decode = Callable[[np.ndarray, list[Interval], ProgressCallback, Sequence[Interval]], list[Segment]]
"""(audio, speech intervals, progress, packed pieces or ()) → segments: what an engine does with
the speech."""


def speech_in(audio: np.ndarray, use_vad: bool) -> list[Interval] | None:
    """The speech intervals voice activity detection finds, or None when it is not run."""
    if not use_vad:
        return None
    from workers.vad import detect_speech

    return detect_speech(audio)


def finished(
    found: list[Segment], speech: list[Interval] | None, language: str, filter_hallucinations: bool
) -> Transcript:
    """The engine's segments → cues that follow the speech → the hallucination filter."""
    segments = follow_speech(found, speech)
    kept, dropped = filter_segments(segments, language, speech) if filter_hallucinations else (segments, [])
    for segment, reason in dropped:
        print(f"dropped {segment.start:.1f}-{segment.end:.1f} s {segment.text!r}: {reason}", file=sys.stderr)
    return Transcript(tuple(kept), language, dropped=tuple(dropped), speech=None if speech is None else tuple(speech))


def transcribe_speech(
    decode: Decode,
    audio: np.ndarray,
    language: str,
    progress: ProgressCallback,
    speech: list[Interval] | None,
    filter_hallucinations: bool = True,
) -> Transcript:
    """One video, not packed: its speech (``speech_in``: None when voice activity detection is
    off) → the engine's segments (word timestamps) → cues that follow the speech → the
    hallucination filter. Audio with no speech is not given to Whisper."""
    if speech == []:
        progress(100)
        return Transcript((), language, speech=())
    found = decode(audio, speech if speech is not None else [(0.0, len(audio) / 16000)], progress, ())
    return finished(found, speech, language, filter_hallucinations)


@dataclass
class Heard:
    """A video of the cohort read and listened to, waiting for its group to be decoded."""

    item: ManifestItem
    audio: np.ndarray
    speech: list[Interval]
    progress: ProgressReporter
    language: language_id.Heard | None = None

    @property
    def packed_seconds(self) -> float:
        return sum(end - start + SEAM_SECONDS for start, end in pieces_of(self.speech, len(self.audio) / 16000))


def transcribe_cohort(items: list[ManifestItem], loaded: Loaded, arguments: argparse.Namespace) -> int:
    """The cohort's speech packed together (``workers.packing``), across its videos: videos are
    read in order and grouped while their packed speech fits one batch of windows (bounded
    memory, however long the cohort); each group is decoded at once and each of its videos
    reported done (or failed) as soon as it is. Returns the exit status."""
    capacity = loaded.batch_size * loaded.window
    group: list[Heard] = []
    held = 0.0
    try:
        for item in items:
            heard = _listen(item, loaded, arguments)
            if heard is None:
                continue
            if group and held + heard.packed_seconds > capacity:
                _decode_group(group, loaded, arguments)
                group, held = [], 0.0
            group.append(heard)
            held += heard.packed_seconds
        if group:
            _decode_group(group, loaded, arguments)
    except OutOfMemory:
        return EXIT_OUT_OF_MEMORY
    return 0


def _facts(
    loaded: Loaded,
    arguments: argparse.Namespace,
    transcript: Transcript,
    packed: int,
    heard: language_id.Heard | None = None,
) -> Facts:
    facts: Facts = {
        "model": loaded.model, "segments": len(transcript.segments), "batch_size": loaded.batch_size,
        "decoding": arguments.decoding, "engine": loaded.engine, "packed_with": packed,
    }  # fmt: skip
    if heard is not None:
        facts |= {"language": heard.language, "language_probability": round(heard.probability, 3)}
    return facts


def _listen(item: ManifestItem, loaded: Loaded, arguments: argparse.Namespace) -> Heard | None:
    """The item's audio and speech; None when it is already reported (no speech: done; a failure)."""
    progress = ProgressReporter(item.id)
    try:
        if not item.input.exists():
            raise PermanentError(f"audio file not found: {item.input}")
        audio = read_audio(item.input)
        faults.raise_out_of_memory_if_armed("transcribe", loaded.batch_size)
        speech = speech_in(audio, use_vad=True) or []
        language = check_language(item, loaded, audio, speech)
        if language is not None and not language.accepted:
            emit("done", item.id, **skipped_facts(loaded, item, language))
            return None
        if speech:
            return Heard(item, audio, speech, progress, language)
        transcript = Transcript((), arguments.language, speech=())
        write_stage_file(item.output, replace(transcript, model=loaded.model))
    except Exception as error:
        fail_items([item.id], error)
        return None
    progress(100)
    emit("done", item.id, **_facts(loaded, arguments, transcript, 1, language))
    return None


def check_language(
    item: ManifestItem, loaded: Loaded, audio: np.ndarray, speech: list[Interval] | None
) -> language_id.Heard | None:
    """The spoken language of an item whose track is untagged (``listen``), else None."""
    if not item.audio.listen or loaded.detect is None:
        return None
    started = time.monotonic()
    spoken = item.audio.spoken or ("ja",)
    found = speech if speech is not None else [(0.0, len(audio) / 16000)]
    heard = language_id.listen(loaded.detect, audio, found, spoken)
    if heard is not None:
        took = time.monotonic() - started
        log(
            f"item {item.id}: speech is {heard.language} (p {heard.probability:.2f}; {heard.windows} windows, "
            f"{heard.share:.0%} of them in {'/'.join(spoken)}), heard in {took:.2f} s"
        )
    return heard


def skipped_facts(loaded: Loaded, item: ManifestItem, heard: language_id.Heard) -> Facts:
    return {
        "skipped": heard.reason(item.audio.spoken or ("ja",)), "written": [], "model": loaded.model,
        "engine": loaded.engine, "language": heard.language, "language_probability": round(heard.probability, 3),
    }  # fmt: skip


def _decode_group(group: list[Heard], loaded: Loaded, arguments: argparse.Namespace) -> None:
    packing = pack([(heard.audio, heard.speech) for heard in group], not arguments.no_packing_across_pauses)
    if len(group) > 1:
        log(f"{len(group)} videos packed together: {packing.seconds:.1f} s of speech")

    def progress(percent: float) -> None:
        for heard in group:
            heard.progress(percent)

    try:
        found = loaded.decode(packing.audio, packing.speech, progress, [(p.at, p.until) for p in packing.pieces])
    except Exception as error:
        fail_items([heard.item.id for heard in group], error)
        return
    for heard, segments in zip(group, packing.unpack(found, len(group)), strict=True):
        try:
            transcript = finished(segments, heard.speech, arguments.language, not arguments.keep_hallucinations)
            write_stage_file(heard.item.output, replace(transcript, model=loaded.model))
        except Exception as error:
            fail_items([heard.item.id], error)
            continue
        heard.progress(100)
        emit("done", heard.item.id, **_facts(loaded, arguments, transcript, len(group), heard.language))


ENGINES = ("ctranslate2", "torch")


@dataclass(frozen=True)
class Loaded:
    """A Whisper model ready to decode, whichever engine it runs on."""

    model: str
    batch_size: int
    decode: Decode
    engine: str
    """What ``autokr status`` shows: ``ctranslate2 int8``, ``torch float16``, ..."""
    window: float = 30.0
    """The longest window the engine decodes, in seconds (its chunk limit)."""
    detect: Detect | None = None
    """Language detection on windows of speech (``workers/language_id.py``)."""


def _whisper_on_torch(arguments: argparse.Namespace) -> Loaded:
    from workers import torch_engine
    from workers.catalog import SMALLER_WHISPER, step_down
    from workers.torch_engine import WHISPER_BATCH, choose_whisper, load_whisper, whisper_batch_size

    device = torch_engine.device(arguments.device)
    batched = arguments.decoding == "batched"
    nominal = (arguments.batch_size or WHISPER_BATCH) if batched else 1
    model_name, cap = step_down(
        choose_whisper(arguments.model, device), nominal, arguments.memory_level, SMALLER_WHISPER
    )
    model = load_whisper(model_name, device, arguments.model_dir)
    batch_size = 0  # sequential
    if batched:
        batch_size = cap if arguments.batch_size else whisper_batch_size(model, device, cap)
    # Temperature 0 with no fallback: reruns after a crash give byte-identical subtitles.
    options = {
        "language": arguments.language,
        "task": "transcribe",
        "temperature": 0.0,
        "fp16": device.on_gpu,
        "condition_on_previous_text": arguments.condition_on_previous_text,
        "word_timestamps": not arguments.no_word_timestamps,
    }

    def decode(
        audio: np.ndarray, speech: list[Interval], progress: ProgressCallback, pieces: Sequence[Interval]
    ) -> list[Segment]:
        if not batch_size:
            return transcribe_audio(model, audio, options, progress)
        from workers.batched import transcribe_batched

        return transcribe_batched(
            model, audio, speech, options, batch_size, progress,
            sequential=lambda piece: transcribe_audio(model, piece, options, lambda _: None), pieces=pieces,
        )  # fmt: skip

    def detect(windows: Sequence[np.ndarray]) -> list[dict[str, float]]:
        import torch
        import whisper

        weights = model.encoder.conv1.weight
        mels = torch.stack(
            [whisper.log_mel_spectrogram(whisper.pad_or_trim(window), n_mels=model.dims.n_mels) for window in windows]
        ).to(weights.device, dtype=weights.dtype)
        with torch.no_grad():
            _tokens, probabilities = model.detect_language(mels)
        return [dict(found) for found in probabilities]

    precision = "float16" if device.on_gpu else "float32"
    return Loaded(model_name, batch_size or 1, decode, f"torch {precision}", CHUNK_SECONDS, detect)


def _whisper_on_ctranslate2(arguments: argparse.Namespace) -> Loaded:
    from workers import catalog, ct2
    from workers.ct2_whisper import Ct2Whisper, whisper_folder

    device = ct2.device(arguments.device)
    free = free_gpu_memory(device)
    model_name, compute, batch_size = catalog.ct2_whisper_choice(
        arguments.model, arguments.compute_type, free, arguments.batch_size
    )
    model_name, compute, batch_size = catalog.ct2_step_down(
        model_name, compute, batch_size, arguments.memory_level, catalog.SMALLER_WHISPER
    )
    where = "CPU" if free is None else f"{free / catalog.GB:.1f} GB free on GPU {device.index}"
    log(f"whisper model {model_name}, {compute}, batches of {batch_size} ({where})")
    # By hand, without --model-dir, named models go where the converted ones do by default.
    model_dir = arguments.model_dir or Path.home() / ".cache" / "autokr" / "whisper"
    folder = whisper_folder(model_name, model_dir, arguments.converted_dir, compute)
    model = Ct2Whisper(folder, device, compute, arguments.language, word_timestamps=not arguments.no_word_timestamps)
    model.options["condition_on_previous_text"] = arguments.condition_on_previous_text

    def decode(
        audio: np.ndarray, speech: list[Interval], progress: ProgressCallback, pieces: Sequence[Interval]
    ) -> list[Segment]:
        if arguments.decoding == "sequential":
            found = model.sequential(audio)
            progress(100)
            return found
        return model.transcribe(audio, speech, batch_size, progress, pieces)

    batch = batch_size if arguments.decoding == "batched" else 1
    return Loaded(model_name, batch, decode, f"ctranslate2 {compute}", CHUNK_SECONDS, model.detect)


def _parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__.splitlines()[0], "16 kHz mono WAV", "JSON file to write")
    parser.add_argument("--model", default="auto", help="name (large-v3, small, ...), model folder, .pt file, or auto")
    parser.add_argument("--language", default="ja")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--model-dir", type=Path, help="where named models are downloaded and cached")
    parser.add_argument(
        "--engine", choices=ENGINES, default="ctranslate2", help="a .pt checkpoint always runs on torch"
    )
    parser.add_argument("--compute-type", default="auto", help="CTranslate2: auto (int8 on CPU, float16 on CUDA), ...")
    parser.add_argument(
        "--converted-dir", type=Path, default=Path.home() / ".cache" / "autokr" / "ctranslate2",
        help="where models converted to CTranslate2 are kept",
    )  # fmt: skip
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
        help="batched: speech chunks decoded many at a time; sequential: Whisper's own sliding window",
    )
    parser.add_argument("--batch-size", type=int, default=0, help="chunks decoded together (0: by free memory)")
    parser.add_argument(
        "--no-packing", action="store_true", help="batched: windows cut at pauses only, speech not packed together"
    )
    parser.add_argument(
        "--no-packing-across-pauses",
        action="store_true",
        help="packed: a pause over 3 s still ends a window (for measuring; docs/performance.md)",
    )
    parser.add_argument(
        "--memory-level", type=int, default=0, help="after GPU OOM: half the batch, then a smaller model"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    start_worker("transcribe")
    parser = _parser()
    arguments = parser.parse_args(argv)
    items = items_from_arguments(parser, arguments)

    checkpoint = arguments.model.endswith(".pt") and Path(arguments.model).is_file()
    if arguments.engine == "ctranslate2" and checkpoint:
        log(f"{arguments.model} is an openai-whisper checkpoint: it runs on the torch engine")
    load = _whisper_on_torch if arguments.engine == "torch" or checkpoint else _whisper_on_ctranslate2
    try:
        loaded = load(arguments)
    except (PermanentError, TransientError) as error:
        return fail_every_item(items, error)
    if arguments.memory_level:
        log(f"memory level {arguments.memory_level}: {loaded.model}, at most {loaded.batch_size} chunks a batch")

    if arguments.decoding == "batched" and not arguments.no_packing and not arguments.no_vad:
        return transcribe_cohort(items, loaded, arguments)

    def transcribe(item: ManifestItem, progress: ProgressCallback) -> Facts:
        if not item.input.exists():
            raise PermanentError(f"audio file not found: {item.input}")
        audio = read_audio(item.input)
        faults.raise_out_of_memory_if_armed("transcribe", loaded.batch_size)
        speech = speech_in(audio, use_vad=not arguments.no_vad)
        heard = check_language(item, loaded, audio, speech)
        if heard is not None and not heard.accepted:
            return skipped_facts(loaded, item, heard)
        found = transcribe_speech(
            loaded.decode,
            audio,
            arguments.language,
            progress,
            speech,
            filter_hallucinations=not arguments.keep_hallucinations,
        )
        write_stage_file(item.output, replace(found, model=loaded.model))
        return _facts(loaded, arguments, found, 1, heard)

    return run_worker(items, transcribe)


if __name__ == "__main__":
    sys.exit(main())
