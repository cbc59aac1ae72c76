"""Voice activity detection, the same for both engines: Silero VAD's ONNX model as
faster-whisper ships it, run by onnxruntime (no torch; the model file travels in the
faster-whisper wheel, so it works offline)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def detect_speech(audio: np.ndarray) -> list[tuple[float, float]]:
    """Speech intervals in seconds of 16 kHz mono float audio.

    Silero's own defaults (threshold 0.5, speech of at least 250 ms) with short pauses kept
    apart (200 ms) and 30 ms of padding: the cue times follow these intervals, so they are
    kept tight here; faster-whisper's defaults (2 s, 400 ms) suit cutting, not timing.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=0.5, min_speech_duration_ms=250, min_silence_duration_ms=200, speech_pad_ms=30)
    found = get_speech_timestamps(np.ascontiguousarray(audio, dtype=np.float32), options, sampling_rate=SAMPLE_RATE)
    return [(item["start"] / SAMPLE_RATE, item["end"] / SAMPLE_RATE) for item in found]
