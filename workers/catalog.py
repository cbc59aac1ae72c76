"""Which model for which memory, and the smaller ones to step down to after a GPU ran out of
memory: plain data and one function, shared by both engines (imports nothing heavy)."""

from __future__ import annotations

from pathlib import Path

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


# The CTranslate2 engine on a GPU. A whole stage has the card to itself, so each table asks
# only "what fits in the free memory at stage start". Footprints (weights, CUDA context and
# work memory) from faster-whisper's published figures for large-v3 on an RTX 2080 Ti
# (SYSTRAN/faster-whisper#1030: float16 4.5 GB, int8_float16 3.0 GB with beam 5) plus the
# cross-attention cache of a greedy batch (~0.25 GB a 30 s chunk in float16 for large-v3);
# not measured on a GPU here yet (see docs/engines.md "VRAM").
CT2_WHISPER_BY_FREE_MEMORY = (
    (9 * GB, "large-v3", "float16", 16),
    (6.5 * GB, "large-v3", "float16", 8),
    (4.5 * GB, "large-v3", "int8_float16", 8),
    (2.5 * GB, "medium", "int8_float16", 8),
    (0, "small", "int8_float16", 4),
)
CT2_TRANSLATOR_BY_FREE_MEMORY = (
    (4 * GB, "facebook/nllb-200-1.3B", "float16"),
    (2.5 * GB, "facebook/nllb-200-1.3B", "int8_float16"),
    (0, "facebook/nllb-200-distilled-600M", "int8_float16"),
)
# A named model's float16 footprint with a batch: below it, ``auto`` picks int8_float16.
FLOAT16_NEEDS = {
    "tiny": 0.5 * GB, "base": 0.6 * GB, "small": 1.3 * GB, "medium": 3.0 * GB, "large-v1": 5.5 * GB,
    "large-v2": 5.5 * GB, "large-v3": 5.5 * GB, "large": 5.5 * GB, "turbo": 3.2 * GB, "large-v3-turbo": 3.2 * GB,
    "facebook/nllb-200-distilled-600M": 2.0 * GB, "facebook/nllb-200-1.3B": 3.5 * GB,
    "facebook/nllb-200-distilled-1.3B": 3.5 * GB, "facebook/nllb-200-3.3B": 8.0 * GB,
}  # fmt: skip
CT2_CPU_WHISPER_BATCH = 8  # on a CPU each step reads every weight once: 8 chunks share that (bench/batch.py)


def ct2_compute(model: str, requested: str, free: int | None) -> str:
    """AutoKR's ``auto`` compute type (not CTranslate2's own ``auto``, which picks
    int8_float32 on a CPU like this one): int8 on a CPU; on a GPU float16, or int8_float16
    when the model would not fit in float16."""
    if requested != "auto":
        return requested
    if free is None:
        return "int8"
    return "int8_float16" if free < FLOAT16_NEEDS.get(model, 0) else "float16"


def ct2_whisper_choice(model: str, compute: str, free: int | None, batch_size: int) -> tuple[str, str, int]:
    """(model, compute type, chunks a batch) for the CTranslate2 engine; ``free`` is the free
    GPU memory, None on a CPU; ``batch_size`` 0 means "as the memory allows"."""
    if free is None:
        return (
            (CPU_WHISPER if model == "auto" else model),
            ct2_compute(model, compute, None),
            (batch_size or CT2_CPU_WHISPER_BATCH),
        )
    _, table_model, table_compute, table_batch = next(row for row in CT2_WHISPER_BY_FREE_MEMORY if free >= row[0])
    if model == "auto":
        return table_model, (table_compute if compute == "auto" else compute), batch_size or table_batch
    return model, ct2_compute(model, compute, free), batch_size or table_batch


def ct2_translator_choice(model: str, compute: str, free: int | None) -> tuple[str, str]:
    if free is None:
        return (CPU_TRANSLATOR if model == "auto" else model), ct2_compute(model, compute, None)
    _, table_model, table_compute = next(row for row in CT2_TRANSLATOR_BY_FREE_MEMORY if free >= row[0])
    if model == "auto":
        return table_model, (table_compute if compute == "auto" else compute)
    return model, ct2_compute(model, compute, free)


LLM_HEADROOM = int(1.5 * GB)
"""Beside an LLM's weights on the card: a 4k context's cache and CUDA's own memory."""


def llm_fits(folder: Path, free: int | None) -> tuple[bool, int]:
    """Whether the chat model in ``folder`` fits in ``free`` GPU bytes, and what it needs: its
    weights as stored (16-bit in a Hugging Face folder, as converted in a CTranslate2 one) and
    ``LLM_HEADROOM``. Never on a CPU (``free`` None): there NLLB is the engine."""
    weights = sum(path.stat().st_size for pattern in ("*.safetensors", "*.bin") for path in folder.glob(pattern))
    need = weights + LLM_HEADROOM
    return free is not None and weights > 0 and free >= need, need


def ct2_step_down(
    model: str, compute: str, batch_size: int, level: int, chain: tuple[str, ...]
) -> tuple[str, str, int]:
    """(model, compute type, batch size) for memory ``level`` on the CTranslate2 engine: the
    batch halved while it can be, then float16 (or bfloat16) weights as int8_float16, then
    the next smaller model for each level left."""
    while level > 0 and batch_size > 1:
        batch_size, level = batch_size // 2, level - 1
    if level > 0 and compute in ("float16", "bfloat16", "float32"):
        compute, level = "int8_float16", level - 1
    model, _ = step_down(model, 1, level, chain)
    return model, compute, batch_size
