"""Stage 3: Japanese segments → Korean segments with NLLB-200.

By hand: ``python -m workers.translate SEGMENTS.json OUT.json --model facebook/nllb-200-distilled-600M``
(``--model`` also takes a local model directory). Sentences are sorted by length and
translated in batches; the model loads once per process, for every item in the manifest.

Two engines: ``ctranslate2`` (the default: int8 on a CPU, float16 on CUDA; the model is
converted once, see ``workers/ct2.py``, and this process then imports no torch) and ``torch``
(transformers, the reference).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from contract import faults
from contract.errors import PermanentError, TransientError
from contract.languages import nllb_code
from contract.manifest import ManifestItem
from contract.protocol import LLM_KEY_ENV
from workers.common import (
    Facts,
    ProgressCallback,
    base_parser,
    fail_every_item,
    items_from_arguments,
    log,
    run_worker,
    start_worker,
)
from workers.gpu import free_gpu_memory
from workers.llm import REGISTERS, Line, reading_budget, translate_lines
from workers.llm_local import LocalChat, chat_folder
from workers.llm_server import ChatServer
from workers.segments import TranslatedSegment, Translation, read_transcript, write_stage_file
from workers.sentences import join_source, regroup, sentence_groups

if TYPE_CHECKING:
    from transformers import M2M100ForConditionalGeneration, PreTrainedTokenizerBase

# A batch holds at most ``batch_size`` sentences and at most ``batch_size × TOKENS_PER_SENTENCE``
# tokens once padded to its longest: short lines travel sixteen at a time, a run of long
# sentences in smaller batches, so memory per batch stays level.
TOKENS_PER_SENTENCE = 64
LLM = "llm"  # --model llm: the LLM engine
NO_FALLBACK = "none"


def token_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted shortest first and cut into batches by padded token count."""
    budget = batch_size * TOKENS_PER_SENTENCE
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        batch = batches[-1] if batches else None
        if batch is not None and len(batch) < batch_size and (len(batch) + 1) * lengths[index] <= budget:
            batch.append(index)
        else:
            batches.append([index])
    return batches


def translate_texts(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    model: M2M100ForConditionalGeneration,
    target_code: str,
    batch_size: int,
    num_beams: int,
    progress: Callable[[float], None],
) -> list[str]:
    """Translates ``texts`` in batches of similar token length; returns them in the original order."""
    import torch

    results = [""] * len(texts)
    wanted = [i for i, text in enumerate(texts) if text.strip()]
    if not wanted:  # no speech: nothing to translate (the tokenizer refuses an empty batch)
        progress(100.0)
        return results
    lengths = [len(ids) for ids in tokenizer([texts[i] for i in wanted], truncation=True, max_length=512)["input_ids"]]
    forced_bos = tokenizer.convert_tokens_to_ids(target_code)
    device = next(model.parameters()).device
    done = 0
    for positions in token_batches(lengths, batch_size):
        indices = [wanted[position] for position in positions]
        batch = tokenizer(
            [texts[i] for i in indices], return_tensors="pt", padding=True, truncation=True, max_length=512
        )
        batch = {key: value.to(device) for key, value in batch.items()}
        longest = int(batch["input_ids"].shape[1])
        with torch.inference_mode():
            generated = model.generate(
                **batch,
                forced_bos_token_id=forced_bos,
                num_beams=num_beams,
                do_sample=False,
                # Bounded by the input: a runaway generation must not take minutes.
                max_new_tokens=min(512, 2 * longest + 16),
            )
        for index, text in zip(indices, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            results[index] = text.strip()
        done += len(indices)
        progress(100.0 * done / max(len(wanted), 1))
    return results


ENGINES = ("ctranslate2", "torch")
TranslateFunction = Callable[[list[str], str, int, Callable[[float], None]], list[str]]


@dataclass(frozen=True)
class Loaded:
    """A translator ready to use, whichever engine it runs on."""

    model: str
    batch_size: int
    translate: TranslateFunction
    """(texts, target language code, beams, progress) → translations in the same order."""
    engine: str
    """What ``autokr status`` shows: ``ctranslate2 int8``, ``torch float16``, ..."""
    on_gpu: bool


def _translator_on_ctranslate2(arguments: argparse.Namespace, source_code: str) -> Loaded:
    from workers import catalog, ct2

    device = ct2.device(arguments.device)
    free = free_gpu_memory(device)
    model_name, compute = catalog.ct2_translator_choice(arguments.model, arguments.compute_type, free)
    model_name, compute, batch_size = catalog.ct2_step_down(
        model_name, compute, arguments.batch_size, arguments.memory_level, catalog.SMALLER_TRANSLATOR
    )
    where = "CPU" if free is None else f"{free / catalog.GB:.1f} GB free on GPU {device.index}"
    log(f"translator {model_name}, {compute}, batches of {batch_size} ({where})")
    folder = ct2.nllb_folder(model_name, arguments.converted_dir, compute)
    translator = ct2.NllbTranslator(folder, device, compute, source_code)

    def translate(texts: list[str], target_code: str, beams: int, progress: Callable[[float], None]) -> list[str]:
        return ct2.translate_texts(
            texts, translator, target_code, lambda lengths: token_batches(lengths, batch_size), beams, progress
        )

    return Loaded(model_name, batch_size, translate, f"ctranslate2 {compute}", device.on_gpu)


def _translator_on_torch(arguments: argparse.Namespace, source_code: str) -> Loaded:
    from workers import torch_engine
    from workers.catalog import SMALLER_TRANSLATOR, step_down
    from workers.torch_engine import choose_translator, load_translator

    device = torch_engine.device(arguments.device)
    model_name, batch_size = step_down(
        choose_translator(arguments.model, device), arguments.batch_size, arguments.memory_level, SMALLER_TRANSLATOR
    )
    tokenizer, model = load_translator(model_name, device, source_code, arguments.model_dir)

    def translate(texts: list[str], target_code: str, beams: int, progress: Callable[[float], None]) -> list[str]:
        return translate_texts(texts, tokenizer, model, target_code, batch_size, beams, progress)

    precision = "float16" if device.on_gpu else "float32"
    return Loaded(model_name, batch_size, translate, f"torch {precision}", device.on_gpu)


def main(argv: list[str] | None = None) -> int:
    start_worker("translate")

    parser = base_parser(__doc__.splitlines()[0], "transcript JSON", "translated JSON to write")
    parser.add_argument("--model", default="auto", help="hub name, local directory, or auto")
    parser.add_argument("--source", default="ja")
    parser.add_argument("--target", default="ko")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per generate() call")
    parser.add_argument("--num-beams", type=int, help="default: 4 on a GPU, 1 (greedy) on CPU")
    parser.add_argument("--model-dir", type=Path, help="where hub models are downloaded and cached")
    parser.add_argument("--engine", choices=ENGINES, default="ctranslate2")
    parser.add_argument(
        "--converted-dir", type=Path, default=Path.home() / ".cache" / "autokr" / "ctranslate2",
        help="where models converted to CTranslate2 are kept",
    )  # fmt: skip
    parser.add_argument("--compute-type", default="auto", help="CTranslate2: auto (int8 on CPU, float16 on CUDA), ...")
    parser.add_argument(
        "--memory-level", type=int, default=0, help="after GPU OOM: halve the batch, then smaller model"
    )
    llm = parser.add_argument_group("the LLM engine (--model llm; the server's key in $" + LLM_KEY_ENV + ")")
    llm.add_argument("--llm-url", default="", help="an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1")
    llm.add_argument("--llm-model", default="", help="the server's name for the model")
    llm.add_argument("--llm-fallback", default="facebook/nllb-200-distilled-600M", help='NLLB for lines, or "none"')
    llm.add_argument("--llm-register", default="auto", choices=sorted(REGISTERS))
    llm.add_argument("--llm-window", type=int, default=12, help="lines a request")
    llm.add_argument("--llm-context", type=int, default=8, help="lines before, with their Korean")
    llm.add_argument("--llm-lookahead", type=int, default=3, help="lines after, for meaning only")
    llm.add_argument("--llm-timeout", type=float, default=120.0, help="seconds a request may take, all of it")
    llm.add_argument("--llm-max-tokens", type=int, default=2048, help="the most tokens of one answer")
    arguments = parser.parse_args(argv)
    items = items_from_arguments(parser, arguments)

    source_code, target_code = nllb_code(arguments.source), nllb_code(arguments.target)
    if arguments.model == LLM or (arguments.model == "auto" and _llm_chosen(arguments)):
        return translate_with_llm(arguments, items, source_code, target_code)
    load = _translator_on_ctranslate2 if arguments.engine == "ctranslate2" else _translator_on_torch
    try:
        loaded = load(arguments, source_code)
    except (PermanentError, TransientError) as error:
        return fail_every_item(items, error)
    if arguments.memory_level:
        log(f"memory level {arguments.memory_level}: {loaded.model}, batches of {loaded.batch_size}")
    num_beams = arguments.num_beams or (4 if loaded.on_gpu else 1)

    def translate(item: ManifestItem, progress: ProgressCallback) -> Facts:
        transcript = read_transcript(item.input)
        segments = transcript.segments
        # Whole sentences are translated, then spread back over their segments (sentences.py).
        groups = sentence_groups(segments)
        texts = [join_source([segments[i].text for i in group], arguments.source) for group in groups]
        faults.raise_out_of_memory_if_armed("translate", loaded.batch_size)
        translated = loaded.translate(texts, target_code, num_beams, progress)
        translation = Translation(
            tuple(regroup(segments, groups, translated)), arguments.source, arguments.target, loaded.model,
            transcript.model,
        )  # fmt: skip
        write_stage_file(item.output, translation)
        facts = {"model": loaded.model, "batch_size": loaded.batch_size, "engine": loaded.engine}
        return {**facts, "segments": len(segments)}

    return run_worker(items, translate)


def _llm_chosen(arguments: argparse.Namespace) -> bool:
    """``auto`` with an LLM folder set up: the LLM where it fits on the card after Whisper's
    worker has exited (this worker runs alone on it), else NLLB (a CPU, a small card)."""
    if not arguments.llm_model or arguments.llm_url:
        return False
    from workers import catalog, ct2

    device = ct2.device(arguments.device)
    free = free_gpu_memory(device)
    fits, need = catalog.llm_fits(Path(arguments.llm_model), free)
    where = "a CPU" if free is None else f"{free / catalog.GB:.1f} GB free on GPU {device.index}"
    choice = "the LLM" if fits else "NLLB"
    log(f"auto translator: {choice} ({Path(arguments.llm_model).name} needs {need / catalog.GB:.1f} GB; {where})")
    return fits


def translate_with_llm(
    arguments: argparse.Namespace, items: list[ManifestItem], source_code: str, target_code: str
) -> int:
    """The LLM engine: each segment one line (``workers/llm.py``), translated by a server
    (``--llm-url``) or by a model in this process (``workers/llm_local.py``); the lines it cannot
    give go to the NLLB fallback, loaded only if needed (after a local LLM is unloaded)."""
    server: ChatServer | None = None
    local: LocalChat | None = None
    if arguments.llm_url:
        server = ChatServer(
            arguments.llm_url, arguments.llm_model, os.environ.get(LLM_KEY_ENV, ""), arguments.llm_timeout,
            arguments.llm_max_tokens, log,
        )  # fmt: skip
        ollama = server.find_ollama()
        held = f"Ollama {ollama}: unloaded when the stage ends" if ollama else "the server keeps it loaded"
        log(f"translator {arguments.llm_model} on {server.url} ({held})")
        engine = f"llm (Ollama {ollama})" if ollama else "llm (OpenAI-compatible server)"
        ask = server.ask
    else:
        from workers import catalog, ct2

        device = ct2.device(arguments.device)
        compute = catalog.ct2_compute(arguments.llm_model, arguments.compute_type, free_gpu_memory(device))
        try:
            folder = chat_folder(arguments.llm_model, arguments.converted_dir, compute)
            local = LocalChat(folder, device, compute, arguments.llm_max_tokens)
        except (PermanentError, TransientError) as error:
            return fail_every_item(items, error)
        engine, ask = f"llm ctranslate2 {compute}", local.ask
    fallback: list[Loaded] = []  # loaded on first need

    def nllb(texts: list[str]) -> list[str]:
        if local is not None:
            local.park()  # one model at a time: the LLM's memory is given back before NLLB loads
        if not fallback:
            log(f"loading the fallback translator {arguments.llm_fallback} for lines the LLM could not give")
            load = _translator_on_ctranslate2 if arguments.engine == "ctranslate2" else _translator_on_torch
            fallback.append(
                load(argparse.Namespace(**{**vars(arguments), "model": arguments.llm_fallback}), source_code)
            )
        loaded = fallback[0]
        return loaded.translate(texts, target_code, 4 if loaded.on_gpu else 1, lambda _: None)

    def translate(item: ManifestItem, progress: ProgressCallback) -> Facts:
        transcript = read_transcript(item.input)
        segments = transcript.segments
        lines = [Line(i, s.text, reading_budget(s.end - s.start)) for i, s in enumerate(segments)]
        if local is not None:
            local.resume()
        outcome = translate_lines(
            lines, ask, item.translate.glossary, item.translate.memory, arguments.llm_register,
            arguments.llm_window, arguments.llm_context, arguments.llm_lookahead, log, progress,
        )  # fmt: skip
        korean = dict(outcome.korean)
        if outcome.failed:
            first = segments[outcome.failed[0]].text
            if arguments.llm_fallback == NO_FALLBACK:
                raise TransientError(
                    f"the LLM gave no usable Korean for {len(outcome.failed)} line(s), the first {first!r}; "
                    "set [llm] fallback to an NLLB model to translate such lines"
                )
            texts = nllb([segments[i].text for i in outcome.failed])
            if not all(text.strip() for text in texts):
                raise TransientError(f"neither the LLM nor {arguments.llm_fallback} gave Korean for {first!r}")
            korean.update(zip(outcome.failed, texts, strict=True))
            log(f"{len(outcome.failed)} line(s) by {arguments.llm_fallback}, the LLM's answers for them unusable")
        translated = tuple(TranslatedSegment(s.start, s.end, korean.get(i, ""), s.text) for i, s in enumerate(segments))
        translation = Translation(translated, arguments.source, arguments.target, arguments.llm_model, transcript.model)
        write_stage_file(item.output, translation)
        progress(100)
        return {
            "model": arguments.llm_model, "engine": engine, "segments": len(segments),
            "fallback_lines": len(outcome.failed),
            "fallback_model": arguments.llm_fallback if outcome.failed else None,
            "terms": [[source, target] for source, target in sorted(outcome.names.items())],
            "requests": outcome.requests, "prompt_tokens": outcome.prompt_tokens,
            "answer_tokens": outcome.answer_tokens,
        }  # fmt: skip

    try:
        return run_worker(items, translate)
    finally:
        if server is not None and server.unload():
            log(f"Ollama unloaded {arguments.llm_model}")


if __name__ == "__main__":
    sys.exit(main())
