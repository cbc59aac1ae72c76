"""Which model for which memory, and the smaller ones to step down to after a GPU ran out of
memory: plain data and one function, shared by both engines (imports nothing heavy)."""

from __future__ import annotations

GB = 1000**3
# (free GPU memory at stage start, model) from the design card: the first that fits wins.
WHISPER_BY_FREE_MEMORY = ((12 * GB, "large-v3"), (8 * GB, "medium"), (0, "small"))
TRANSLATOR_BY_FREE_MEMORY = (
    (12 * GB, "facebook/nllb-200-1.3B"),
    (0, "facebook/nllb-200-distilled-600M"),
)
CPU_WHISPER = "small"
CPU_TRANSLATOR = "facebook/nllb-200-distilled-600M"


# After a GPU out-of-memory, each memory level steps down: the batch first (halved while it can
# be), then the model, along these chains (a model outside them, e.g. a path, is kept).
SMALLER_WHISPER = ("large-v3", "large-v2", "medium", "small", "base", "tiny")
SMALLER_TRANSLATOR = (
    "facebook/nllb-200-3.3B", "facebook/nllb-200-1.3B", "facebook/nllb-200-distilled-1.3B",
    "facebook/nllb-200-distilled-600M",
)  # fmt: skip


def step_down(model: str, batch_size: int, level: int, chain: tuple[str, ...]) -> tuple[str, int]:
    """(model, batch size) for memory ``level``: halve the batch ``level`` times while it is
    above 1, then take the next smaller model for each level left."""
    while level > 0 and batch_size > 1:
        batch_size, level = batch_size // 2, level - 1
    if level > 0 and model in chain:
        model = chain[min(chain.index(model) + level, len(chain) - 1)]
    return model, batch_size
