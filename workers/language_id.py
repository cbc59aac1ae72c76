"""Which language a video's speech is in, by ear: Whisper's language detection on speech windows
sampled across the whole video, their probabilities combined.

faster-whisper's ``detect_language`` (and openai-whisper's) looks at the first 30 s of audio,
``language_detection_segments`` at the first few windows: at the start of an anime episode that
is its opening song, whose language says little about the dialogue. Here the video's speech (as
voice activity detection found it) is laid end to end (``workers.packing``) and up to
``SAMPLE_WINDOWS`` windows of 30 s are taken evenly across it, so a 24-minute episode is heard
at its start, middle and end. Each window gives a distribution over languages; the video's is
their mean.

A track is taken for one of the spoken languages that count when the combined distribution's
top language is one of them, or when at least ``MIXED_SHARE`` of the windows are: a Japanese
film with English lines is still Japanese, an English dub with a Japanese song is not.

Used by the transcribe worker for a video whose track carries no language tag (``listen`` in
its manifest item); the engines give ``Detect`` (``workers/transcribe.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from contract.languages import language_name
from workers.chunks import SAMPLE_RATE, Interval
from workers.packing import pack

SAMPLE_WINDOWS = 6
"""Windows heard per video: each costs one encoder pass (``bench/library.py`` measures it)."""
WINDOW_SECONDS = 30.0
MIXED_SHARE = 0.25
MIN_SPEECH_SECONDS = 2.0
"""Less speech than this says nothing reliable: the track is transcribed as it is."""

Detect = Callable[[Sequence[np.ndarray]], list[dict[str, float]]]
"""Windows of 16 kHz audio → for each, its languages' probabilities (ISO 639-1 code → p)."""


@dataclass(frozen=True)
class Heard:
    language: str
    """The language the combined distribution ranks first."""
    probability: float
    accepted: bool
    """Whether the speech counts as one of the spoken languages (transcribed)."""
    windows: int
    share: float
    """The share of the windows whose own first language is one of the spoken languages."""

    def reason(self, spoken: Sequence[str]) -> str:
        """Why the video is skipped: ``speech is English (p 0.97), not Japanese``."""
        wanted = " or ".join(language_name(language) for language in spoken)
        return f"speech is {language_name(self.language)} (p {self.probability:.2f}), not {wanted}"


def sample_windows(audio: np.ndarray, speech: Sequence[Interval], count: int = SAMPLE_WINDOWS) -> list[np.ndarray]:
    """Up to ``count`` windows of ``WINDOW_SECONDS`` of speech, evenly spread over all of it."""
    if not speech:
        return []
    packed = pack([(audio, speech)]).audio
    window = int(WINDOW_SECONDS * SAMPLE_RATE)
    total = len(packed)
    if total <= window:
        return [packed]
    count = min(count, math.ceil(total / window))
    step = (total - window) / (count - 1) if count > 1 else 0
    return [packed[int(i * step) : int(i * step) + window] for i in range(count)]


def combine(distributions: Sequence[dict[str, float]], spoken: Sequence[str]) -> Heard:
    """The video's language from its windows' distributions (see the module's docstring)."""
    languages = {language for distribution in distributions for language in distribution}
    mean = {
        language: sum(distribution.get(language, 0.0) for distribution in distributions) / len(distributions)
        for language in languages
    }
    top = max(mean, key=lambda language: mean[language])
    firsts = [max(distribution, key=lambda language: distribution[language]) for distribution in distributions]
    share = sum(first in spoken for first in firsts) / len(firsts)
    accepted = top in spoken or share >= MIXED_SHARE
    if accepted and top not in spoken:  # mixed: the spoken language it holds
        top = max(spoken, key=lambda language: mean.get(language, 0.0))
    return Heard(top, mean.get(top, 0.0), accepted, len(distributions), share)


def listen(detect: Detect, audio: np.ndarray, speech: Sequence[Interval], spoken: Sequence[str]) -> Heard | None:
    """The video's spoken language, or None when it has too little speech to tell."""
    if sum(end - start for start, end in speech) < MIN_SPEECH_SECONDS:
        return None
    windows = sample_windows(audio, speech)
    return combine(detect(windows), spoken)
