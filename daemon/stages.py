"""Where each stage reads and writes, and the worker command line for a cohort of jobs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from contract.files import NAME_MAX, temporary_prefix
from contract.manifest import AudioOrder, ManifestItem, SubtitleOrder, TranslateOrder
from contract.manifest import worker_command as manifest_worker_command
from contract.pipeline import STAGE
from contract.protocol import LLM_KEY_ENV
from daemon.cluster import bridge_command
from daemon.config import Config, read_secret
from daemon.jobs import JobId, Signature, item_id
from daemon.settings import LLM


def job_work_dir(config: Config, job_id: JobId) -> Path:
    return config.work_dir / str(job_id)


def subtitle_path(video: Path, language: str) -> Path:
    """``Show - 01.mkv`` → ``Show - 01.ko.srt``: the sidecar name Plex and Jellyfin read."""
    return video.with_name(f"{video.stem}.{language}.srt")


def name_too_long(path: Path) -> bool:
    """Whether ``path``'s name is longer than its folder's file system allows."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    return len(os.fsencode(path.name)) > (limit if limit and limit > 0 else NAME_MAX)


def manifest_item(
    config: Config,
    stage: str,
    job_id: JobId,
    video: Path,
    force: bool,
    signature: Signature | None = None,
    own_subtitles: dict[str, Signature] | None = None,
    translate: TranslateOrder | None = None,
    listen: bool = False,
) -> ManifestItem:
    """``signature``: the video's (size, mtime_ns) when it became a job; the subtitle worker
    refuses to write beside a video that no longer matches it (replaced or deleted).
    ``own_subtitles``: path → (size, mtime_ns) of each subtitle AutoKR wrote there before; the
    subtitle worker replaces a file only while it still matches (decided when it writes).
    ``force``: a person asked to replace whatever is there (``--force``).
    ``translate``: the glossary and series memory, for the translate stage (``daemon/series.py``).
    ``listen``: the video's track is untagged; the transcribe stage checks its speech first."""
    work = job_work_dir(config, job_id)
    spec = STAGE[stage]
    source = work / spec.reads if spec.reads else video
    if spec.writes:
        audio = AudioOrder()
        if stage in ("extract", "transcribe"):
            audio = AudioOrder(config.spoken_languages, listen and stage == "transcribe")
        return ManifestItem(
            item_id(job_id), source, work / spec.writes, translate=translate or TranslateOrder(), audio=audio
        )
    languages = config.languages
    order = SubtitleOrder(
        source_output=subtitle_path(video, languages.source) if config.daemon.write_source_subtitles else None,
        overwrite=force,
        own_subtitles=dict(own_subtitles or {}),
        video=video if signature is not None else None,
        video_signature=signature,
    )
    return ManifestItem(item_id(job_id), source, subtitle_path(video, languages.target), order)


def stage_options(config: Config, stage: str, device: str | None = None) -> list[str]:
    """``device``: the worker's device (its slot's); default ``[models] device``."""
    models, languages = config.models, config.languages
    device = device or models.device
    engine = [
        "--engine", models.engine, "--compute-type", models.compute_type,
        "--converted-dir", str(config.model_dir / "ctranslate2"),
    ]  # fmt: skip
    if stage == "transcribe":
        switches = [
            flag
            for flag, on in (
                ("--no-vad", not models.vad),
                ("--keep-hallucinations", not models.filter_hallucinations),
                ("--condition-on-previous-text", models.condition_on_previous_text),
                ("--no-packing", models.packing == "off"),
                ("--no-packing-across-pauses", models.packing == "scenes"),
            )
            if on
        ]
        return [
            "--model", models.whisper, "--language", languages.source, "--device", device,
            "--model-dir", str(config.model_dir / "whisper"), "--decoding", models.decoding,
            "--batch-size", str(models.transcribe_batch_size), *engine, *switches,
        ]  # fmt: skip
    if stage == "translate":
        common = [
            "--source", languages.source, "--target", languages.target, "--device", device,
            "--batch-size", str(models.translate_batch_size), "--model-dir", str(config.model_dir / "huggingface"),
            *engine,
        ]  # fmt: skip
        llm = config.llm
        # "auto" with an LLM folder set up: the worker picks it where it fits on the card.
        with_llm = models.translator == LLM or (models.translator == "auto" and llm.model and not llm.url)
        if not with_llm:
            return ["--model", models.translator, *common]
        return [
            "--model", models.translator, "--llm-url", llm.url, "--llm-model", llm.model,
            "--llm-fallback", llm.fallback, "--llm-register", llm.register, "--llm-window", str(llm.window_lines),
            "--llm-context", str(llm.context_lines), "--llm-lookahead", str(llm.lookahead_lines),
            "--llm-timeout", str(llm.timeout_seconds), "--llm-max-tokens", str(llm.max_tokens), *common,
        ]  # fmt: skip
    return []


def worker_environment(config: Config, stage: str) -> dict[str, str]:
    """Keeps model caches under the state folder (writable under systemd's ProtectHome). The
    LLM server's key goes to the translate worker alone, in its environment: a command line is
    readable by every user of the machine (``ps``), a process's environment by its owner only.

    Raises:
        ConfigError: the key file cannot be read (the message names it, never the key).
    """
    environment = {
        "HF_HOME": str(config.model_dir / "huggingface"),
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1",
    }
    llm = config.llm
    if stage == "translate" and config.models.translator == LLM and (llm.api_key or llm.api_key_file):
        environment[LLM_KEY_ENV] = read_secret(llm.api_key, llm.api_key_file, "[llm] api_key_file")
    return environment


def worker_command(
    config: Config, stage: str, manifest: Path, device: str | None = None, remote: bool = False
) -> list[str]:
    """``remote``: the cohort runs on the Ray cluster (one Ray task), through the bridge (``workers/cluster.py``),
    which passes the options after ``--`` on to the same stage worker on a node."""
    options = stage_options(config, stage, device)
    if remote:
        return [*bridge_command(config), "--stage", stage, "--jobs", str(manifest), "--", *options]
    return manifest_worker_command(stage, manifest, options)


def remove_temporary_files(outputs: list[Path]) -> int:
    """Removes the hidden temporary files a killed worker may have left beside ``outputs``."""
    removed = 0
    for output in outputs:
        with contextlib.suppress(OSError):
            for leftover in output.parent.glob(f"{_glob_escape(temporary_prefix(output))}*"):
                leftover.unlink()
                removed += 1
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def remove_work_files(
    config: Config, job_id: JobId, keep: tuple[str, ...] = ("transcript.json", "translation.json")
) -> None:
    """After a job is done: the WAV goes (about 115 MB an hour of audio); the small JSONs stay."""
    work = job_work_dir(config, job_id)
    with contextlib.suppress(OSError):
        for entry in work.iterdir():
            if entry.name not in keep:
                os.unlink(entry)
