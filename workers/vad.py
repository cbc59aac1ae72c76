"""Voice activity detection with Silero VAD (the ``silero-vad`` wheel carries its model, so it
works offline). Imported only by the transcribe worker (it imports torch)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def detect_speech(audio: np.ndarray) -> list[tuple[float, float]]:
    """Speech intervals in seconds of 16 kHz mono float audio."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad()
    with torch.inference_mode():
        found = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            model,
            sampling_rate=SAMPLE_RATE,
            return_seconds=True,
            min_silence_duration_ms=200,
            speech_pad_ms=30,
        )
    return [(float(item["start"]), float(item["end"])) for item in found]
