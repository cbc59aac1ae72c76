"""What a ``[models]`` setting names, and where a named model lies once downloaded: the one
reading of a model setting that the config, ``autokr doctor``, the daemon's start-up check and
the workers share (stdlib only).

A setting is a *path* when it looks like one (``/``, ``~``, ``./``, ``../``, a ``.pt`` file) or
names a folder that exists beside the config file; the config makes it absolute exactly as it
does the inbox (``~`` is the home folder, a relative path is relative to the config file's
folder), so a worker never sees a relative path and never takes one for a hub name to download.
Anything else is a *name* (``large-v3``, ``facebook/nllb-200-distilled-600M``) or ``auto``.
"""

from __future__ import annotations

import re
from pathlib import Path

AUTO = "auto"
PATH_PREFIXES = ("/", "~", "./", "../")


def is_path(setting: str) -> bool:
    """Whether ``setting`` (as the config resolved it: absolute) is a path rather than a name."""
    return setting.startswith(PATH_PREFIXES) or setting.endswith(".pt")


def resolve_setting(setting: str, base: Path) -> str:
    """The model setting as the workers take it: a path made absolute (``~`` expanded, relative
    to ``base``, the config file's folder), or the name as it is."""
    if setting == AUTO or not setting.strip():
        return setting
    if is_path(setting) or (base / setting).is_dir():
        path = Path(setting).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    return setting


def missing(path: str, key: str) -> str:
    """The sentence for a model path that does not exist (never a download of it)."""
    return f"no such folder or file: {path} (the [models] {key} setting); fix the path, or bring the model there"


def slug(name: str) -> str:
    """A hub name as one folder name: ``facebook/nllb-200-1.3B`` → ``facebook--nllb-200-1.3B``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name)


def _complete_ct2(folder: Path) -> bool:
    return (folder / "model.bin").is_file() and (folder / "config.json").is_file()


def _hub_snapshot(cache: Path, name: str) -> Path | None:
    """A complete snapshot of hub model ``name`` in a Hugging Face cache folder."""
    for snapshot in sorted((cache / f"models--{name.replace('/', '--')}" / "snapshots").glob("*")):
        if (snapshot / "config.json").is_file():
            return snapshot
    return None


def downloaded(kind: str, name: str, model_dir: Path) -> Path | None:
    """Where the named ``kind`` model (``whisper`` or ``translator``) lies complete under
    ``model_dir``, as the workers put it there, or None. Exactly those places: a leftover of a
    download or conversion that was cut off (a hidden ``.partial`` or ``.tmp-`` folder) is not a
    model."""
    if kind == "whisper":
        converted = model_dir / "whisper" / "faster-whisper" / slug(name)  # the ctranslate2 engine
        if _complete_ct2(converted):
            return converted
        checkpoint = model_dir / "whisper" / f"{name}.pt"  # the torch engine (openai-whisper's own file name)
        return checkpoint if checkpoint.is_file() else None
    for conversion in sorted((model_dir / "ctranslate2").glob(f"{slug(name)}-*")):
        if _complete_ct2(conversion):
            return conversion
    for cache in (model_dir / "huggingface" / "hub", model_dir / "huggingface"):
        snapshot = _hub_snapshot(cache, name)
        if snapshot is not None:
            return snapshot
    return None


def folder_problem(kind: str, path: Path) -> str | None:
    """Why the ``kind`` model (``whisper`` or ``translator``) at ``path`` cannot be used, in the
    words the workers use when they refuse it, or None: ``autokr doctor`` and the daemon's
    start-up check ask this, so neither says ✓ for a folder a worker would refuse."""
    if not path.exists():
        return missing(str(path), kind)
    if kind == "whisper" and path.is_file():
        return (
            None if path.suffix == ".pt" else f"{path} is not a Whisper model AutoKR can use (a folder or a .pt file)"
        )
    if not path.is_dir():
        return f"{path} is not a model folder"
    if _complete_ct2(path):
        needs = "tokenizer.json" if kind == "whisper" else "sentencepiece.bpe.model"
        return None if (path / needs).is_file() else f"the CTranslate2 model {path} has no {needs}: copy it there"
    if (path / "config.json").is_file():
        return None
    return f"{path} is not a {'Whisper ' if kind == 'whisper' else ''}model folder (it has no config.json)"


def downloaded_any(kind: str, model_dir: Path) -> Path | None:
    """Some complete ``kind`` model under ``model_dir`` (what ``auto`` may pick offline)."""
    if kind == "whisper":
        places = [*(model_dir / "whisper" / "faster-whisper").glob("*"), *(model_dir / "whisper").glob("*.pt")]
        places = [place for place in places if not place.name.startswith(".")]  # a cut-off download
        return next((place for place in sorted(places) if _complete_ct2(place) or place.suffix == ".pt"), None)
    places = [place for place in (model_dir / "ctranslate2").glob("*nllb*") if not place.name.startswith(".")]
    return next((place for place in sorted(places) if _complete_ct2(place)), None) or next(
        (place for place in sorted((model_dir / "huggingface").glob("**/models--*nllb*")) if place.is_dir()), None
    )
