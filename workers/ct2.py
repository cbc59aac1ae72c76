"""CTranslate2 models: the device and compute type, NLLB converted once, and its translator.

The translate worker on the ``ctranslate2`` engine imports this module and neither torch nor
transformers, unless a model has to be converted first (the converter reads the Hugging Face
model through transformers, once). A conversion goes into a hidden temporary folder beside its
place under ``<model_dir>/ctranslate2/`` (``--converted-dir``), under a file lock (two workers
never convert the same model at once), and is renamed into place only when complete with its sentencepiece model, so
a folder that exists there is always whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from contract import models
from contract.errors import PermanentError, TransientError
from workers.common import log
from workers.gpu import Device, resolve_device

SENTENCEPIECE = "sentencepiece.bpe.model"  # what every NLLB checkpoint tokenizes with


def device(setting: str) -> Device:
    """``auto`` → CUDA when CTranslate2 sees a GPU, else the CPU; ``cuda:1`` → GPU 1."""
    import ctranslate2

    return resolve_device(setting, ctranslate2.get_cuda_device_count)


def is_ctranslate2_model(folder: Path) -> bool:
    return (folder / "model.bin").is_file() and (folder / "config.json").is_file()


def conversion_name(name_or_directory: str) -> str:
    """The folder name of a conversion: the hub name, or a local folder's name with a digest
    of its path and its weights' size and mtime (a changed model converts anew)."""
    source = Path(name_or_directory)
    if not source.is_dir():
        return models.slug(name_or_directory)
    stamp = [str(source.absolute())]
    for weights in sorted(source.glob("*.safetensors")) + sorted(source.glob("*.bin")):
        status = weights.stat()
        stamp.append(f"{weights.name}:{status.st_size}:{status.st_mtime_ns}")
    return f"{source.name}-{hashlib.sha1('|'.join(stamp).encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def _sentencepiece_of(name_or_directory: str) -> Path:
    local = Path(name_or_directory) / SENTENCEPIECE
    if local.is_file():
        return local
    from transformers import AutoTokenizer

    vocabulary = getattr(AutoTokenizer.from_pretrained(name_or_directory), "vocab_file", None)
    if not vocabulary or not Path(vocabulary).is_file():
        raise PermanentError(f"{name_or_directory} has no {SENTENCEPIECE}: it is not an NLLB model AutoKR can use")
    return Path(vocabulary)


def storage_type(compute: str) -> str:
    """How a conversion for ``compute`` is stored: int8 weights for the int8 compute types
    (a quarter of float32 on disk and in memory while loading, and no conversion at each load),
    else the compute type itself."""
    return "int8" if compute.startswith("int8") else compute


def offline_error(kind: str, name: str, fetch: str, setting: str) -> TransientError:
    """The error for a model that is not here and cannot be downloaded now."""
    return TransientError(
        f"the {kind} {name} is not downloaded yet and cannot be downloaded now (no connection to huggingface.co); "
        f"on a machine with internet run `{fetch}`, copy that folder here and set {setting} to its path"
    )


def is_download_failure(error: BaseException) -> bool:
    """A failure to reach (or to be allowed to reach) the model hub, whatever library raised it."""
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("offline", "connect", "localentrynotfound", "timed out", "resolve"))


def convert_once(target: Path, produce: Callable[[Path], None], what: str) -> Path:
    """``target``, made by ``produce(temporary folder)`` unless it exists: under a file lock
    (two workers never convert at once), into a hidden temporary folder renamed into place
    only when complete, so a folder at ``target`` is always whole."""
    if is_ctranslate2_model(target):
        return target
    with _locked(target.with_name(f".{target.name}.lock")):
        if is_ctranslate2_model(target):  # another worker converted it while this one waited
            return target
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        log(f"{what} (once) into {target}")
        try:
            produce(temporary)
            os.rename(temporary, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return target


def nllb_folder(name_or_directory: str, converted_dir: Path, compute: str = "int8") -> Path:
    """The CTranslate2 folder for an NLLB name, a Hugging Face folder or a CTranslate2 folder,
    converting (once for each storage type, see ``storage_type``) when needed.

    Raises:
        PermanentError: a CTranslate2 folder without its sentencepiece model.
        TransientError: the model could not be downloaded (no network, say).
    """
    given = Path(name_or_directory)
    if models.is_path(name_or_directory) and not given.exists():
        raise PermanentError(models.missing(name_or_directory, "translator"))
    if given.is_dir() and is_ctranslate2_model(given):
        if not (given / SENTENCEPIECE).is_file():
            raise PermanentError(
                f"the CTranslate2 model {given} has no {SENTENCEPIECE}: copy it there from the NLLB model it was "
                "converted from (every facebook/nllb-200-* repository has it)"
            )
        return given
    storage = storage_type(compute)

    def convert(temporary: Path) -> None:
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(name_or_directory).convert(str(temporary), quantization=storage, force=True)
        shutil.copyfile(_sentencepiece_of(name_or_directory), temporary / SENTENCEPIECE)

    try:
        return convert_once(
            converted_dir / f"{conversion_name(name_or_directory)}-{storage}", convert,
            f"converting {name_or_directory} to CTranslate2",
        )  # fmt: skip
    except (OSError, ValueError) as error:
        if is_download_failure(error):
            fetch = f"hf download {name_or_directory} --local-dir nllb"
            raise offline_error("translator", name_or_directory, fetch, "translator") from error
        raise


class NllbTranslator:
    """NLLB on CTranslate2, tokenized with its sentencepiece model directly (as transformers'
    ``NllbTokenizer`` does: ``[source language] pieces </s>``, the target language forced first)."""

    def __init__(self, folder: Path, device: Device, compute: str, source_code: str) -> None:
        import ctranslate2
        import sentencepiece

        self.folder = folder
        self.source_code = source_code
        self.pieces = sentencepiece.SentencePieceProcessor(model_file=str(folder / SENTENCEPIECE))
        self.model = ctranslate2.Translator(
            str(folder), device=device.kind, device_index=device.index, compute_type=compute, inter_threads=1
        )
        log(f"loaded translator {folder} on {device.kind} ({compute}, CTranslate2)")

    def tokenize(self, text: str) -> list[str]:
        return [self.source_code, *self.pieces.encode(text, out_type=str)[:510], "</s>"]

    def translate(
        self, tokens: list[list[str]], target_code: str, num_beams: int, max_new_tokens: int, min_new_tokens: int = 0
    ) -> list[str]:
        results = self.model.translate_batch(
            tokens,
            target_prefix=[[target_code]] * len(tokens),
            beam_size=num_beams,
            max_batch_size=len(tokens),
            max_decoding_length=max_new_tokens + 1,  # + the target language token
            min_decoding_length=min_new_tokens + 1 if min_new_tokens else 0,
        )
        return [self.pieces.decode(result.hypotheses[0][1:]).strip() for result in results]


def translate_texts(
    texts: list[str],
    translator: NllbTranslator,
    target_code: str,
    batches: Callable[[list[int]], list[list[int]]],
    num_beams: int,
    progress: Callable[[float], None],
) -> list[str]:
    """Translates ``texts`` in ``batches`` (of indices into the non-empty ones, by token count);
    returns them in the original order."""
    results = [""] * len(texts)
    wanted = [i for i, text in enumerate(texts) if text.strip()]
    tokens = [translator.tokenize(texts[i]) for i in wanted]
    done = 0
    for positions in batches([len(t) for t in tokens]):
        batch = [tokens[position] for position in positions]
        longest = max(len(t) for t in batch)
        # Bounded by the input, as on the torch engine: a runaway generation must not take minutes.
        outputs = translator.translate(batch, target_code, num_beams, min(512, 2 * longest + 16))
        for position, text in zip(positions, outputs, strict=True):
            results[wanted[position]] = text
        done += len(positions)
        progress(100.0 * done / max(len(wanted), 1))
    if not wanted:
        progress(100.0)
    return results
