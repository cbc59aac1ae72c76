"""What the GPU side of this machine looks like, for ``autokr doctor``: the device ``auto``
means, its free memory, and the models ``auto`` would choose there. A worker, so the daemon and
the ``autokr`` command stay torch- and CTranslate2-free.

    python -m workers.device --engine ctranslate2 --device auto --whisper auto --translator auto

prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from workers.gpu import free_gpu_memory


def describe(engine: str, setting: str, whisper: str, translator: str, compute: str) -> dict[str, object]:
    if engine == "torch":
        from workers import torch_engine

        device = torch_engine.device(setting)
        free = torch_engine.free_memory(device)
        return {
            "device": device.name, "free_bytes": free, "whisper": torch_engine.choose_whisper(whisper, device),
            "translator": torch_engine.choose_translator(translator, device),
            "compute_type": "float16" if free else "float32",
        }  # fmt: skip
    from workers import ct2
    from workers.catalog import ct2_translator_choice, ct2_whisper_choice

    device = ct2.device(setting)
    free = free_gpu_memory(device)
    whisper_model, whisper_compute, batch = ct2_whisper_choice(whisper, compute, free, 0)
    translator_model, translator_compute = ct2_translator_choice(translator, compute, free)
    return {
        "device": device.name, "free_bytes": free, "whisper": whisper_model, "translator": translator_model,
        "compute_type": f"{whisper_compute} / {translator_compute}", "batch_size": batch,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="ctranslate2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--whisper", default="auto")
    parser.add_argument("--translator", default="auto")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--count", action="store_true", help="only how many CUDA devices there are")
    arguments = parser.parse_args(argv)
    if arguments.count:
        import ctranslate2

        print(json.dumps({"gpus": ctranslate2.get_cuda_device_count()}))
        return 0
    found = describe(
        arguments.engine, arguments.device, arguments.whisper, arguments.translator, arguments.compute_type
    )
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
