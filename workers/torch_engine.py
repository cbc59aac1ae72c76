"""Device and model choice, and loading: the one code path for a user's ``large-v3`` and a
test's tiny checkpoint alike. Imported only by the model workers (it imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workers.catalog import (
    CPU_TRANSLATOR,
    CPU_WHISPER,
    GB,
    TRANSLATOR_BY_FREE_MEMORY,
    WHISPER_BY_FREE_MEMORY,
)
from workers.common import log
from workers.gpu import Device, free_gpu_memory, resolve_device

if TYPE_CHECKING:
    from transformers import M2M100ForConditionalGeneration, PreTrainedTokenizerBase
    from whisper.model import Whisper

# (audio layers, text layers, width, vocabulary) → the named model with that shape.
WHISPER_SHAPES = {
    (4, 4, 384, 51864): "tiny.en", (4, 4, 384, 51865): "tiny",
    (6, 6, 512, 51864): "base.en", (6, 6, 512, 51865): "base",
    (12, 12, 768, 51864): "small.en", (12, 12, 768, 51865): "small",
    (24, 24, 1024, 51864): "medium.en", (24, 24, 1024, 51865): "medium",
    (32, 32, 1280, 51865): "large-v2", (32, 32, 1280, 51866): "large-v3",
    (32, 4, 1280, 51866): "turbo",
}  # fmt: skip


def device(setting: str) -> Device:
    """``auto`` → the first GPU when torch sees one, else the CPU."""
    return resolve_device(setting, torch.cuda.device_count)


def free_memory(device: Device) -> int | None:
    """Free bytes on the device's GPU from torch's CUDA runtime (None on a CPU)."""
    return free_gpu_memory(device, lambda index: int(torch.cuda.mem_get_info(index)[0]))


def _choose(requested: str, device: Device, table: tuple[tuple[int, str], ...], cpu_choice: str, kind: str) -> str:
    if requested != "auto":
        return requested
    free = free_memory(device)
    if free is None:
        log(f"auto {kind}: {cpu_choice} (running on CPU)")
        return cpu_choice
    choice = next(name for minimum, name in table if free >= minimum)
    log(f"auto {kind}: {choice} ({free / GB:.1f} GB free on {device.name})")
    return choice


def choose_whisper(requested: str, device: Device) -> str:
    return _choose(requested, device, WHISPER_BY_FREE_MEMORY, CPU_WHISPER, "whisper model")


def choose_translator(requested: str, device: Device) -> str:
    return _choose(requested, device, TRANSLATOR_BY_FREE_MEMORY, CPU_TRANSLATOR, "translator")


# Batched decoding: chunks decoded together at memory level 0 (halved at each level after a
# GPU out-of-memory), and on a CPU, where each decoding step is bound by reading the weights.
WHISPER_BATCH = 16
CPU_WHISPER_BATCH = 8
# GPU memory kept free beside the model and the batch (CUDA context, allocator slack).
GPU_HEADROOM = 1.5 * GB


def whisper_batch_size(model: Whisper, device: Device, cap: int) -> int:
    """Chunks per batch that fit the memory left after loading ``model``, at most ``cap``.

    Per chunk: the encoder's attention scores (heads × 1500² floats) and, for decoding, the
    cross-attention keys and values of every text layer, counted four times over for the
    encoder activations and the allocator's rounding. large-v3: ≈ 1.2 GB a chunk.
    """
    free = free_memory(device)
    if free is None:
        return min(cap, CPU_WHISPER_BATCH)
    dims = model.dims
    cross = dims.n_audio_ctx * dims.n_text_state * dims.n_text_layer * 2 * 2
    scores = dims.n_audio_ctx**2 * dims.n_audio_head * 4
    per_chunk = 4 * cross + scores
    fits = int((free - GPU_HEADROOM) // per_chunk)
    batch = max(1, min(cap, fits))
    log(f"batch of {batch} chunks ({free / GB:.1f} GB free on {device.name} after loading)")
    return batch


def load_whisper(name_or_path: str, device: Device, download_root: Path | None) -> Whisper:
    """``large-v3`` (downloaded once into ``download_root``) or a checkpoint file path."""
    import whisper

    model = whisper.load_model(
        name_or_path, device=device.name, download_root=str(download_root) if download_root else None
    )
    if Path(name_or_path).exists():
        # openai-whisper sets the cross-attention heads used for word timestamps only for models
        # loaded by name; a checkpoint file of a known shape gets that model's heads.
        dims = model.dims
        known = WHISPER_SHAPES.get((dims.n_audio_layer, dims.n_text_layer, dims.n_text_state, dims.n_vocab))
        if known:
            model.set_alignment_heads(whisper._ALIGNMENT_HEADS[known])
    if not device.on_gpu:
        # Each decoding step multiplies by the transposed token embedding (51,865 × width) to get
        # the logits; on a CPU, MKL does that at about half speed from the row-major layout.
        # Stored column-major, the transpose is contiguous: ~0.8 s less on 25 s of base speech,
        # the same tokens. The embedding lookup reads rows from it either way.
        embedding = model.decoder.token_embedding
        embedding.weight = torch.nn.Parameter(embedding.weight.detach().t().contiguous().t(), requires_grad=False)
    log(f"loaded whisper model {name_or_path} on {device.name}")
    return model


def load_translator(
    name_or_directory: str, device: Device, source_code: str, cache_dir: Path | None
) -> tuple[PreTrainedTokenizerBase, M2M100ForConditionalGeneration]:
    """A hub name such as ``facebook/nllb-200-distilled-600M`` or a local directory."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    cache = str(cache_dir) if cache_dir else None
    tokenizer = AutoTokenizer.from_pretrained(name_or_directory, src_lang=source_code, cache_dir=cache)
    dtype = torch.float16 if device.on_gpu else torch.float32
    model = AutoModelForSeq2SeqLM.from_pretrained(name_or_directory, cache_dir=cache, dtype=dtype)
    model = model.to(device.name).eval()
    log(f"loaded translator {name_or_directory} on {device.name}")
    return tokenizer, model
