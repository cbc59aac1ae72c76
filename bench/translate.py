"""Translation, both engines, on a random-weight model of the real nllb-200-distilled-600M shape.

Each engine runs in a process of its own, loading the model the way the translate worker does
(``workers.torch_engine.load_translator`` for torch, ``workers.ct2`` for CTranslate2, converted once
as a user's first run converts it), then translates the same batch of sentences to a fixed
number of new tokens (greedy; random weights would otherwise stop at random), ``--repeat``
times. Prints the median translation wall time, the model load time and the process's peak
RSS, and the ratios.

    python3 -m bench.translate                  # 16 sentences × 40 new tokens, 3 runs each
    python3 -m bench.translate --small          # tiny shapes: a check of this script
    python3 -m bench.translate --llm            # the LLM engine: a random-weight Qwen3-1.7B shape
    python3 -m bench.translate --llm --llm-shape qwen3-0.6b   # or the 0.6B shape; --small: tiny

``--llm`` runs the LLM engine in the worker's own code (``workers/llm_local.py``: converted by
CTranslate2's converter, int8, its Generator) on windows of subtitle lines as the protocol sends
them (``workers/llm.py``: the lines before with their Korean as context, the next ones as
look-ahead), each answer forced to the length a real answer has (random weights would stop at
random): lines and tokens per second, peak RSS, and the prompt tokens sent per line translated,
with and without the context and look-ahead.
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


QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)  # fmt: skip
QWEN3_0_6B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)  # fmt: skip
SMALL_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=151936, tie_word_embeddings=True)  # fmt: skip
LLM_SHAPES = {"qwen3-1.7b": QWEN3_1_7B, "qwen3-0.6b": QWEN3_0_6B, "small": SMALL_LLM}


def subtitle_lines(count: int) -> list[tuple[str, float, str]]:
    """``count`` lines of (Japanese, seconds, the Korean a good answer has), 2.5 s each."""
    from testkit.tiny_models import SENTENCE_PAIRS

    return [(SENTENCE_PAIRS[i % len(SENTENCE_PAIRS)][0], 2.5, SENTENCE_PAIRS[i % len(SENTENCE_PAIRS)][1])
            for i in range(count)]  # fmt: skip


def build_llm(folder: Path, shape: dict[str, int]) -> Path:
    """A random-weight Qwen3 of ``shape`` in bfloat16 (1.7B: 3.4 GB, not float32's 6.8), with a
    byte-level BPE tokenizer trained on the engine's own prompts (CTranslate2's converter pads
    the vocabulary to the model's 151,936 entries)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from testkit.tiny_models import build_chat_tokenizer
    from workers.llm import Line, Request, messages

    if (folder / "config.json").exists():
        return folder
    lines = [Line(i, source, 30) for i, (source, _, _) in enumerate(subtitle_lines(24))]
    texts = [message["content"] for message in messages(Request(tuple(lines[:12])))] + [
        k for _, _, k in subtitle_lines(12)
    ]
    tokenizer = build_chat_tokenizer(folder, texts, vocab_size=2000)
    torch.manual_seed(0)
    config = Qwen3Config(
        **shape, max_position_embeddings=8192, bos_token_id=tokenizer.token_to_id("<s>"),
        eos_token_id=tokenizer.token_to_id("</s>"), pad_token_id=tokenizer.token_to_id("<pad>"),
    )  # fmt: skip
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(str(folder))
    return folder


def run_llm(
    model: Path, converted: Path, count: int, window: int, repeat: int, device: str = "cpu", compute: str = "int8"
) -> dict:
    """In this process: load as the worker does, then each window's first request as the
    protocol sends it, the answer forced to a good answer's length (bench/gpu.py runs it on CUDA)."""
    import json as json_module

    from workers.gpu import Device
    from workers.llm import Line, Request, reading_budget
    from workers.llm_local import LocalChat, chat_folder

    started = time.perf_counter()
    kind, _, index = device.partition(":")
    local = LocalChat(chat_folder(str(model), converted, compute), Device(kind, int(index or 0)), compute, 4096)
    load = time.perf_counter() - started
    given = subtitle_lines(count)
    lines = [Line(i, source, reading_budget(seconds)) for i, (source, seconds, _) in enumerate(given)]
    korean = {i: k for i, (_, _, k) in enumerate(given)}

    def requests(context: int, lookahead: int) -> list[Request]:
        found = []
        for start in range(0, count, window):
            chunk = tuple(lines[start : start + window])
            before = tuple((line, korean[line.id]) for line in lines[max(0, start - context) : start])
            found.append(Request(chunk, before, tuple(lines[start + window : start + window + lookahead])))
        return found

    def answer_tokens(request: Request) -> int:
        answer = {"lines": [{"id": line.id, "ko": korean[line.id]} for line in request.window], "names": {}}
        return len(local.tokenizer.encode(json_module.dumps(answer, ensure_ascii=False)).ids)

    sent = requests(8, 3)
    bare = sum(len(local.prompt(request)) for request in requests(0, 0))

    def once() -> tuple[int, int]:
        prompt_total = answer_total = 0
        for request in sent:
            tokens, length = local.prompt(request), answer_tokens(request)
            local.generator.generate_batch([tokens], max_length=length, min_length=length, sampling_topk=1,
                                           include_prompt_in_result=False)  # fmt: skip
            prompt_total, answer_total = prompt_total + len(tokens), answer_total + length
        return prompt_total, answer_total

    once()  # warm-up
    walls = []
    for _ in range(repeat):
        started = time.perf_counter()
        prompt_total, answer_total = once()
        walls.append(time.perf_counter() - started)
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return {"load_s": load, "walls_s": walls, "peak_rss_mb": peak_kb / 1024, "lines": count,
            "requests": len(sent), "prompt_tokens": prompt_total, "answer_tokens": answer_total,
            "bare_prompt_tokens": bare}  # fmt: skip


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


def llm_main(arguments: argparse.Namespace) -> int:
    shape = "small" if arguments.small else arguments.llm_shape
    work = arguments.work or Path(tempfile.gettempdir()) / f"autokr-bench-llm-{shape}"
    model, converted = work / "model", work / "converted"
    if arguments.child == "llm":
        print(json.dumps(run_llm(model, converted, arguments.lines, arguments.window, arguments.repeat)))
        return 0
    started = time.monotonic()
    build_llm(model, LLM_SHAPES[shape])
    print(f"model: random weights, {shape} shape ({time.monotonic() - started:.0f} s to build or find); "
          f"{arguments.lines} lines, {arguments.window} a request, 8 lines of context and 3 of look-ahead, "
          f"greedy, int8, CPU, {os.cpu_count()} cores")  # fmt: skip
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import sys; from workers.llm_local import chat_folder; "
                    "chat_folder(sys.argv[1], __import__('pathlib').Path(sys.argv[2]), 'int8')", str(model),
                    str(converted)], check=True, cwd=REPOSITORY)  # fmt: skip
    print(f"  converted once in {time.monotonic() - started:.0f} s (a person's first run does this)")
    finished = subprocess.run(
        [sys.executable, "-m", "bench.translate", "--llm", "--child", "llm", "--work", str(work), "--lines",
         str(arguments.lines), "--window", str(arguments.window), "--repeat", str(arguments.repeat),
         *(["--small"] if arguments.small else ["--llm-shape", shape])],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, check=True, cwd=REPOSITORY,
    )  # fmt: skip
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    wall = statistics.median(result["walls_s"])
    walls = ", ".join(f"{value:.1f}" for value in result["walls_s"])
    print(f"  LLM int8: {result['lines']} lines in {result['requests']} requests, median {wall:.1f} s ({walls}): "
          f"{result['lines'] / wall:.2f} lines/s, {result['answer_tokens'] / wall:.1f} answer tokens/s, "
          f"{(result['prompt_tokens'] + result['answer_tokens']) / wall:.0f} tokens/s in all; load "
          f"{result['load_s']:.1f} s; peak RSS {result['peak_rss_mb']:.0f} MB")  # fmt: skip
    print(f"  prompt tokens sent a line translated: {result['prompt_tokens'] / result['lines']:.0f} with the "
          f"context and look-ahead, {result['bare_prompt_tokens'] / result['lines']:.0f} without; "
          f"{result['answer_tokens'] / result['lines']:.0f} answer tokens a line")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes (a check of this script)")
    parser.add_argument("--sentences", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the models (kept between runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--llm", action="store_true", help="the LLM engine instead of NLLB")
    parser.add_argument("--llm-shape", choices=sorted(LLM_SHAPES), default="qwen3-1.7b")
    parser.add_argument("--lines", type=int, default=24, help="--llm: subtitle lines translated")
    parser.add_argument("--window", type=int, default=12, help="--llm: lines a request")
    arguments = parser.parse_args(argv)
    if arguments.llm:
        return llm_main(arguments)
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
