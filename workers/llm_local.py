"""The LLM engine in AutoKR's own translate worker: a decoder model run by CTranslate2's
``Generator`` (no new dependency), for ``[llm] model`` without a ``url``.

A Hugging Face folder is converted once (``workers/ct2.convert_once``: a lock, a hidden
temporary folder, a rename), with its ``tokenizer.json`` and ``tokenizer_config.json``; a
CTranslate2 folder that has them is used as it is. CTranslate2's converter takes, among others,
Llama, Mistral, Qwen2 (Qwen2.5; HY-MT1.5's HunYuan architecture is not: docs/llm.md), Gemma and
Gemma 3 (``register_loader`` in ``ctranslate2/converters/transformers.py``). The prompt is the
model's own chat template (Jinja, from ``tokenizer_config.json``), tokenized with the
``tokenizers`` library; decoding is greedy. The process imports no torch once converted.

As every model worker, it holds its model only while the stage runs; the NLLB fallback, when a
line needs it, is loaded after this model is unloaded (``park``), never beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from contract import models
from contract.errors import PermanentError
from workers.common import log
from workers.ct2 import conversion_name, convert_once, is_ctranslate2_model, is_download_failure, storage_type
from workers.gpu import Device
from workers.llm import Reply, Request, messages

if TYPE_CHECKING:
    import ctranslate2
    import tokenizers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
TEMPLATE_FILE = "chat_template.jinja"  # where newer Hugging Face folders keep the chat template


def chat_folder(name_or_directory: str, converted_dir: Path, compute: str) -> Path:
    """The CTranslate2 folder of a chat model: given, or converted once from a Hugging Face folder.

    Raises:
        PermanentError: no such folder, or one without its tokenizer files.
    """
    given = Path(name_or_directory)
    if not given.is_dir():
        if models.is_path(name_or_directory):
            raise PermanentError(
                f"no such folder: {name_or_directory} (the [llm] model setting); fix the path, or bring the model there"
            )
        raise PermanentError(
            f"[llm] model {name_or_directory!r} is not a folder: run `hf download {name_or_directory} "
            "--local-dir llm` and set [llm] model to that folder's path (or give [llm] url for a server)"
        )
    lacking = [name for name in TOKENIZER_FILES if not (given / name).is_file()]
    if lacking:
        raise PermanentError(f"the LLM folder {given} has no {lacking[0]}: copy it there from the model it came from")
    if is_ctranslate2_model(given):
        return given
    storage = storage_type(compute)

    def convert(temporary: Path) -> None:
        from ctranslate2.converters import TransformersConverter

        files = [*TOKENIZER_FILES, *([TEMPLATE_FILE] if (given / TEMPLATE_FILE).is_file() else [])]
        TransformersConverter(str(given), copy_files=files).convert(str(temporary), quantization=storage, force=True)

    try:
        return convert_once(
            converted_dir / f"{conversion_name(str(given))}-{storage}", convert, f"converting {given} to CTranslate2"
        )
    except (OSError, ValueError, NotImplementedError) as error:
        if is_download_failure(error):
            raise
        reason = " ".join(str(error).split())[:200]
        raise PermanentError(f"{given} cannot be converted to CTranslate2 ({reason}); see docs/llm.md") from None


class LocalChat:
    """A chat model in this process: ``ask`` as ``workers/llm_server.ChatServer`` has it."""

    def __init__(self, folder: Path, device: Device, compute: str, max_tokens: int) -> None:
        import ctranslate2
        import jinja2
        import tokenizers

        self.folder, self.device, self.compute, self.max_tokens = folder, device, compute, max_tokens
        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        template = settings.get("chat_template")
        if (folder / TEMPLATE_FILE).is_file():
            template = (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
        if not isinstance(template, str):
            raise PermanentError(f"the LLM folder {folder} has no chat template in tokenizer_config.json")
        self.template = jinja2.Environment(autoescape=False).from_string(template)  # noqa: S701 - a prompt, not HTML
        self.bos, self.eos = _token_text(settings.get("bos_token")), _token_text(settings.get("eos_token"))
        self.tokenizer: tokenizers.Tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        # A turn ends at the model's end token, or at the turn markers chat templates use.
        ends = (self.eos, "<|im_end|>", "<|eot_id|>", "<end_of_turn>")
        self.ends = [token for token in ends if token and self.tokenizer.token_to_id(token) is not None]
        self.generator: ctranslate2.Generator = ctranslate2.Generator(
            str(folder), device=device.kind, device_index=device.index, compute_type=compute, inter_threads=1
        )
        log(f"loaded LLM {folder} on {device.kind} ({compute}, CTranslate2)")

    def prompt(self, request: Request) -> list[str]:
        text = self.template.render(
            messages=messages(request), add_generation_prompt=True, bos_token=self.bos or "", eos_token=self.eos or ""
        )
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return list(encoding.tokens)

    def ask(self, request: Request) -> Reply:
        tokens = self.prompt(request)
        budget = min(self.max_tokens, sum(3 * line.budget + 24 for line in request.window) + 64)
        results = self.generator.generate_batch(
            [tokens], max_length=budget, sampling_topk=1, include_prompt_in_result=False,
            end_token=self.ends,
        )  # fmt: skip
        produced = results[0].sequences_ids[0]
        return Reply(self.tokenizer.decode(produced, skip_special_tokens=True), len(tokens), len(produced))

    def park(self) -> None:
        """Frees the model's memory (another model is to load); ``resume`` loads it again."""
        if self.generator.model_is_loaded:
            self.generator.unload_model()
            log(f"unloaded the LLM {self.folder.name}: the fallback loads in its place")

    def resume(self) -> None:
        if not self.generator.model_is_loaded:
            self.generator.load_model()


def _token_text(value: object) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: text, or ``{"content": …}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
