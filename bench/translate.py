"""Translation, both engines, on a random-weight model of the real nllb-200-distilled-600M shape.

Each engine runs in a process of its own, loading the model the way the translate worker does
(``workers.torch_engine.load_translator`` for torch, ``workers.ct2`` for CTranslate2, converted once
as a user's first run converts it), then translates the same batch of sentences to a fixed
number of new tokens (greedy; random weights would otherwise stop at random), ``--repeat``
times. Prints the median translation wall time, the model load time and the process's peak
RSS, and the ratios.

    python3 -m bench.translate                  # 16 sentences × 40 new tokens, 3 runs each
    python3 -m bench.translate --small          # tiny shapes: a check of this script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]

DISTILLED_600M = dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                      decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                      vocab_size=256206, max_position_embeddings=1024)  # fmt: skip
SMALL = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
             encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256206, max_position_embeddings=1024)  # fmt: skip


def build(folder: Path, shape: dict[str, int]) -> Path:
    """A random-weight NLLB (M2M100) of ``shape`` with the tiny test tokenizer (CTranslate2's
    converter pads the vocabulary to the model's 256,206 entries, as the real one has)."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    from testkit.tiny_models import build_tiny_nllb

    if (folder / "config.json").exists():
        return folder
    tokenizer_source = build_tiny_nllb(folder.with_name("tokenizer-source"), steps=1)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in tokenizer_source.iterdir():
        if entry.name.startswith(("sentencepiece", "tokenizer", "special_tokens")):
            shutil.copyfile(entry, folder / entry.name)
    tokenizer = NllbTokenizer.from_pretrained(str(folder))
    torch.manual_seed(0)
    config = M2M100Config(
        **shape, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id, scale_embedding=True,
    )  # fmt: skip
    M2M100ForConditionalGeneration(config).save_pretrained(str(folder))
    return folder


def sentences(count: int) -> list[str]:
    from testkit.tiny_models import SENTENCE_PAIRS

    sources = [source for source, _ in SENTENCE_PAIRS]
    return [sources[i % len(sources)] for i in range(count)]


def run_engine(engine: str, model: Path, converted: Path, count: int, new_tokens: int, repeat: int) -> dict:
    """In this process: load as the worker does, translate ``repeat`` times; the figures."""
    started = time.perf_counter()
    texts = sentences(count)
    if engine == "ctranslate2":
        from workers import ct2
        from workers.catalog import ct2_compute
        from workers.gpu import Device

        compute = ct2_compute("auto", "auto", None)
        folder = ct2.nllb_folder(str(model), converted, compute)
        translator = ct2.NllbTranslator(folder, Device("cpu"), compute, "jpn_Jpan")
        tokens = [translator.tokenize(text) for text in texts]

        def once() -> list[str]:
            return translator.translate(tokens, "kor_Hang", 1, new_tokens, min_new_tokens=new_tokens)

        how = f"CTranslate2 {compute}"
    else:
        import torch

        from workers.gpu import Device
        from workers.torch_engine import load_translator

        tokenizer, network = load_translator(str(model), Device("cpu"), "jpn_Jpan", None)
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        forced = tokenizer.convert_tokens_to_ids("kor_Hang")

        def once() -> list[str]:
            with torch.inference_mode():
                out = network.generate(**batch, forced_bos_token_id=forced, num_beams=1, do_sample=False,
                                       min_new_tokens=new_tokens, max_new_tokens=new_tokens)  # fmt: skip
            return [str(text) for text in tokenizer.batch_decode(out)]

        how = "transformers float32"
    load = time.perf_counter() - started
    once()  # warm-up (allocations, thread pools)
    walls = []
    for _ in range(repeat):
        started = time.perf_counter()
        once()
        walls.append(time.perf_counter() - started)
    # VmHWM: this process's own peak (wait4's ru_maxrss would count the forked parent's image).
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return {"engine": how, "load_s": load, "walls_s": walls, "peak_rss_mb": peak_kb / 1024}


def measure(engine: str, arguments: argparse.Namespace) -> dict:
    """Runs ``engine`` in a child process of its own."""
    command = [sys.executable, "-m", "bench.translate", "--child", engine, "--work", str(arguments.work),
               "--sentences", str(arguments.sentences), "--new-tokens", str(arguments.new_tokens),
               "--repeat", str(arguments.repeat)]  # fmt: skip
    finished = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
        check=False,
        cwd=REPOSITORY,
    )
    if finished.returncode != 0:
        raise SystemExit(f"{engine} failed ({finished.returncode})")
    return dict(json.loads(finished.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes (a check of this script)")
    parser.add_argument("--sentences", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the models (kept between runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    default_work = Path(tempfile.gettempdir()) / ("autokr-bench-nllb" + ("-small" * arguments.small))
    arguments.work = arguments.work or default_work
    model, converted = arguments.work / "nllb", arguments.work / "converted"
    if arguments.child == "convert":  # once, as a user's first run does; not measured
        from workers import ct2
        from workers.catalog import ct2_compute

        ct2.nllb_folder(str(model), converted, ct2_compute("auto", "auto", None))
        return 0
    if arguments.child:
        print(json.dumps(run_engine(arguments.child, model, converted, arguments.sentences, arguments.new_tokens,
                                    arguments.repeat)))  # fmt: skip
        return 0
    started = time.monotonic()
    build(model, SMALL if arguments.small else DISTILLED_600M)
    print(f"model: random weights, {'tiny' if arguments.small else 'nllb-200-distilled-600M'} shape "
          f"({time.monotonic() - started:.0f} s to build or find); {arguments.sentences} sentences × "
          f"{arguments.new_tokens} new tokens, greedy, one batch, CPU, {os.cpu_count()} cores")  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "bench.translate", "--child", "convert", "--work", str(arguments.work)],
        check=True,
        cwd=REPOSITORY,
    )
    results = {engine: measure(engine, arguments) for engine in ("torch", "ctranslate2")}
    for result in results.values():
        walls = ", ".join(f"{wall:.2f}" for wall in result["walls_s"])
        print(f"  {result['engine']:<22} translate median {statistics.median(result['walls_s']):6.2f} s ({walls}); "
              f"load {result['load_s']:5.1f} s; peak RSS {result['peak_rss_mb']:7.0f} MB")  # fmt: skip
    torch_run, ct2_run = results["torch"], results["ctranslate2"]
    speed = statistics.median(torch_run["walls_s"]) / statistics.median(ct2_run["walls_s"])
    memory = ct2_run["peak_rss_mb"] / torch_run["peak_rss_mb"]
    print(f"  CTranslate2: {speed:.2f}× the speed of transformers, {memory:.2f}× its peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
