"""Whisper on CTranslate2 (faster-whisper): the model folder, and batched transcription of
AutoKR's own speech chunks.

Which folder a ``whisper`` setting means:
- a folder with ``model.bin`` and ``config.json`` is a CTranslate2 model, used as it is (it
  must carry ``tokenizer.json``: faster-whisper would otherwise fetch one from the hub);
- another folder with a ``config.json`` is a Hugging Face Whisper model
  (``openai/whisper-large-v3`` as ``hf download`` writes it), converted once into
  ``<model_dir>/ctranslate2/`` (``--converted-dir``);
- a name (``large-v3``, ``small``, ... or a hub id such as ``Systran/faster-whisper-small``)
  is the CTranslate2 conversion faster-whisper publishes, downloaded once into
  ``<model_dir>/faster-whisper/<name>`` (into a hidden folder first, renamed when complete);
- a ``.pt`` file is an openai-whisper checkpoint: it runs on the torch engine (the caller's
  choice, see ``workers.transcribe``).

Transcription: the speech is cut into chunks by AutoKR's own rule (``workers.chunks``), and
faster-whisper's ``BatchedInferencePipeline`` decodes them ``batch_size`` at a time as its
``clip_timestamps`` (greedy, temperature 0, no previous text, word timestamps). A chunk whose
decoding ran to the token limit or into a repetition loop is transcribed again on its own by
faster-whisper's sequential ``WhisperModel.transcribe``, as the torch engine does.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contract import models
from contract.errors import PermanentError
from workers import ct2
from workers.chunks import (
    CHUNK_SECONDS,
    COMPRESSION_RATIO_LIMIT,
    CONTINUATIONS,
    LOGPROB_THRESHOLD,
    NO_SPEECH_THRESHOLD,
    SAMPLE_RATE,
    Interval,
    plan_chunks,
    ratios_by_piece,
    unheard,
)
from workers.common import log
from workers.gpu import Device
from workers.segments import Segment, Word, scored

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment as DecodedSegment  # faster-whisper's, not ours

TOKENIZER = "tokenizer.json"
# The batched pipeline asks CTranslate2 for at most 448 tokens (Whisper's text positions), and
# CTranslate2 then stops at 224 new ones, timestamps included (measured; asked for fewer, it
# ended a 25 s chunk's text at 18 s). A chunk whose tokens reach this ran into the limit.
CT2_TOKEN_LIMIT = 448 // 2 - 2


def _download(name: str, target: Path) -> Path:
    from faster_whisper.utils import _MODELS, download_model

    if "/" not in name and name not in _MODELS:
        known = ", ".join(sorted(_MODELS))
        raise PermanentError(f"{name} is not a Whisper model name ({known}) nor a path to one")
    repository = name if "/" in name else _MODELS[name]
    partial = target.with_name(f".{target.name}.partial")  # resumable, never used until complete

    def fetch(temporary: Path) -> None:
        try:
            with warnings.catch_warnings():
                # faster-whisper still passes huggingface_hub's retired local_dir_use_symlinks;
                # its UserWarning would land in the daemon's log at every first download.
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                download_model(name, output_dir=str(partial))
        except Exception as error:  # huggingface_hub and its HTTP client raise many kinds
            if ct2.is_download_failure(error):
                fetch = f"hf download {repository} --local-dir whisper-{name.rsplit('/', 1)[-1]}"
                raise ct2.offline_error("Whisper model", name, fetch, "whisper") from error
            raise
        shutil.rmtree(partial / ".cache", ignore_errors=True)
        os.rename(partial, temporary)

    return ct2.convert_once(target, fetch, f"downloading the Whisper model {name}")


def _convert(source: Path, converted_dir: Path, compute: str) -> Path:
    storage = ct2.storage_type(compute)
    if not (source / TOKENIZER).is_file():
        raise PermanentError(
            f"the Whisper model {source} has no {TOKENIZER}: download the whole model folder "
            "(`hf download openai/whisper-large-v3 --local-dir DIR` writes it)"
        )

    def convert(temporary: Path) -> None:
        from ctranslate2.converters import TransformersConverter

        copied = [name for name in (TOKENIZER, "preprocessor_config.json") if (source / name).is_file()]
        converter = TransformersConverter(str(source), copy_files=copied)
        converter.convert(str(temporary), quantization=storage, force=True)

    return ct2.convert_once(
        converted_dir / f"{ct2.conversion_name(str(source))}-{storage}", convert, f"converting {source} to CTranslate2"
    )


def whisper_folder(name_or_path: str, model_dir: Path, converted_dir: Path, compute: str) -> Path:
    """The CTranslate2 folder for a ``whisper`` setting (see the module's docstring).

    Raises:
        PermanentError: a path that is no Whisper model AutoKR can use.
        TransientError: the model could not be downloaded (no network, say).
    """
    given = Path(name_or_path)
    if given.is_dir():
        if ct2.is_ctranslate2_model(given):
            if not (given / TOKENIZER).is_file():
                raise PermanentError(
                    f"the CTranslate2 Whisper model {given} has no {TOKENIZER}: copy it there from the model it was "
                    "converted from (every openai/whisper-* and Systran/faster-whisper-* repository has it)"
                )
            return given
        if (given / "config.json").is_file():
            return _convert(given, converted_dir, compute)
        raise PermanentError(f"{given} is not a Whisper model folder (it has no config.json)")
    if given.exists():
        raise PermanentError(f"{name_or_path} is not a Whisper model AutoKR can use (a folder or a .pt file)")
    if models.is_path(name_or_path):
        raise PermanentError(models.missing(name_or_path, "whisper"))
    return _download(name_or_path, model_dir / "faster-whisper" / models.slug(name_or_path))


def cpu_threads() -> int:
    """The CPUs this process may run on (systemd's CPUAffinity, a container's cpuset)."""
    return len(os.sched_getaffinity(0)) or 1


class Ct2Whisper:
    """A loaded faster-whisper model and the options AutoKR decodes with."""

    def __init__(self, folder: Path, device: Device, compute: str, language: str, word_timestamps: bool) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        threads = 0 if device.on_gpu else cpu_threads()
        self.model = WhisperModel(
            str(folder),
            device=device.kind,
            device_index=device.index,
            compute_type=compute,
            cpu_threads=threads,
            num_workers=1,
        )
        self.pipeline = BatchedInferencePipeline(self.model)
        self.options: dict[str, object] = {
            "language": language,
            "task": "transcribe",
            "beam_size": 1,
            "temperature": 0.0,
            "condition_on_previous_text": False,
            "word_timestamps": word_timestamps,
            "vad_filter": False,
            # Timestamp tokens: a fifth more decoding steps than without, but they bound each
            # segment's words; decoded without them, the word before a pause stretches over it
            # and cues start or end seconds off (bench/quality.py: 0.99 s instead of 0.07 s).
            "without_timestamps": False,
        }
        log(f"loaded whisper model {folder} on {device.kind} ({compute}, CTranslate2)")

    def detect(self, windows: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Each window's languages and their probabilities (faster-whisper's ``detect_language``
        on that window alone: one encoder pass each)."""
        found = []
        for window in windows:
            _language, _probability, probabilities = self.model.detect_language(audio=window)
            found.append(dict(probabilities))
        return found

    def sequential(self, piece: np.ndarray) -> list[Segment]:
        """faster-whisper's own sliding-window transcription of one piece of audio."""
        segments, _info = self.model.transcribe(piece, **self.options)
        return [_segment(s) for s in segments if s.text.strip()]

    def transcribe(
        self,
        audio: np.ndarray,
        speech: list[Interval],
        batch_size: int,
        progress: Callable[[float], None],
        pieces: Sequence[Interval] = (),
    ) -> list[Segment]:
        """Segments of the speech, chunked by ``plan_chunks`` and decoded ``batch_size`` at a time.

        Whisper sometimes ends a chunk's text early (a timestamp, then the end token) with speech
        still to come; openai-whisper's sliding window then starts its next window there. Here
        the rest of such a chunk, from its last segment's end, goes back into the queue as a
        chunk of its own (at most ``CONTINUATIONS`` times for each chunk). ``pieces``: packed
        speech (``workers.packing``), whose repetition is measured piece by piece."""
        duration = len(audio) / SAMPLE_RATE
        queue = [(start, min(end, duration), 0) for start, end in plan_chunks(speech, CHUNK_SECONDS)]
        found: list[Segment] = []
        done = 0
        while queue:
            batch, queue = queue[:batch_size], queue[batch_size:]
            clips = [{"start": start, "end": end} for start, end, _ in batch]
            segments, _info = self.pipeline.transcribe(
                audio, clip_timestamps=clips, batch_size=batch_size, **self.options
            )
            by_chunk: dict[int, list[DecodedSegment]] = {}
            for segment in segments:
                by_chunk.setdefault(segment.seek, []).append(segment)
            for start, end, continued in batch:
                # faster-whisper marks each segment with its chunk's start, in 10 ms frames.
                decoded = by_chunk.get(int(int(start * SAMPLE_RATE) / SAMPLE_RATE * 100), [])
                kept = self._checked(audio, start, end, decoded, pieces)
                found += kept
                rest = unheard(kept, start, end, speech)
                if rest is not None and continued < CONTINUATIONS:
                    where = f"chunk {start:.1f}-{end:.1f} s"
                    print(f"{where}: its text ended early, decoding {rest:.1f}-{end:.1f} s", file=sys.stderr)
                    queue.append((rest, end, continued + 1))
            done += len(batch)
            progress(min(100.0, 100.0 * done / (done + len(queue))))
        return sorted(found, key=lambda segment: segment.start)

    def _checked(
        self, audio: np.ndarray, start: float, end: float, decoded: list[DecodedSegment], pieces: Sequence[Interval]
    ) -> list[Segment]:
        """One chunk's segments; decoded again on its own when it ran to the token limit or
        looped (the batched pipeline gives no token count: the segments' tokens add up to it).
        Each segment carries the compression ratio of its own piece's text (``ratios_by_piece``)."""
        if not decoded:
            return []
        first = decoded[0]  # every segment of a chunk carries the chunk's scores
        if first.no_speech_prob > NO_SPEECH_THRESHOLD and first.avg_logprob < LOGPROB_THRESHOLD:
            return []
        tokens = sum(len(segment.tokens) for segment in decoded)
        ratios = ratios_by_piece([(segment.start, segment.end, segment.text) for segment in decoded], pieces)
        if tokens >= CT2_TOKEN_LIMIT or max(ratios) > COMPRESSION_RATIO_LIMIT:
            why = "the token limit" if tokens >= CT2_TOKEN_LIMIT else "a repetition loop"
            print(f"chunk {start:.1f}-{end:.1f} s ran into {why}: transcribing it sequentially", file=sys.stderr)
            piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
            return [segment.shifted(start) for segment in self.sequential(piece)]
        # Timestamps past the chunk's end were invented over the padding: cut there.
        inside = [
            _segment(segment, end, ratio)
            for segment, ratio in zip(decoded, ratios, strict=True)
            if segment.text.strip() and segment.start < end
        ]
        return [segment for segment in inside if segment.end > segment.start]


def _segment(segment: DecodedSegment, until: float = float("inf"), ratio: float | None = None) -> Segment:
    """Our segment for faster-whisper's, its times cut at ``until`` (``ratio``: its compression
    ratio, measured by us; faster-whisper's otherwise)."""
    words = [Word(w.word, w.start, min(w.end, until)) for w in segment.words or [] if w.start < until]
    return scored(
        segment.start, min(segment.end, until), segment.text, segment.avg_logprob, segment.no_speech_prob,
        segment.compression_ratio if ratio is None else ratio, words,
    )  # fmt: skip
