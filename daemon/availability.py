"""Whether the configured models can be had, asked by the daemon at start, at each reload and
every ``RECHECK_SECONDS`` without importing a model library (``contract.models`` reads the
settings and the model folder as the workers do).

A model that cannot be had (a path that does not exist or is no model, a name not downloaded
while the hub is out of reach) holds the videos waiting at its stage: they are not tried and
failed three times, they wait, each with one sentence naming the setting and the config file,
and are taken up as soon as the folder appears or a reload fixes the setting. The log and
``STATUS=`` say it once when it starts and once when it ends.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from contract import models
from contract.pipeline import PIPELINE
from daemon.settings import LLM, NO_FALLBACK, Config

HUB = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
RECHECK_SECONDS = 10.0
WAITING = "waiting for the model: "  # how a held job's note begins


def hub_reachable(url: str = HUB, seconds: float = 3.0) -> bool:
    """Whether a TCP connection to the model hub can be made now."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=seconds):
            return True
    except OSError:
        return False


def model_setting(config: Config, kind: str) -> str | None:
    """The model of ``[models] kind`` that AutoKR loads itself: with the LLM engine, the
    translator is the server's and only its NLLB fallback is AutoKR's (None: no fallback)."""
    setting = str(getattr(config.models, kind))
    if kind == "translator" and setting == LLM:
        return None if config.llm.fallback == NO_FALLBACK else config.llm.fallback
    return setting


def model_problems(config: Config, online: Callable[[], bool]) -> dict[str, str]:
    """Stage → why its model cannot be had (one sentence); ``online`` is asked only when a
    named model is not downloaded."""
    found: dict[str, str] = {}
    for stage in PIPELINE:
        if stage.model is None:
            continue
        if stage.model == "translator" and config.models.translator == LLM:
            # The LLM's fallback is loaded only for a line the LLM cannot give: it holds nothing
            # back. A model the worker runs itself must be there; a server's is the server's.
            if not config.llm.url and not Path(config.llm.model).is_dir():
                found[stage.name] = f"{WAITING}no such folder: {config.llm.model} ([llm] model in {config.path})"
            continue
        setting = model_setting(config, stage.model)
        if setting is None:
            continue
        if models.is_path(setting):
            problem = models.folder_problem(stage.model, Path(setting))
            if problem:
                found[stage.name] = f"{WAITING}{problem}, in {config.path}"
            continue
        have = (
            models.downloaded_any(stage.model, config.model_dir)
            if setting == models.AUTO
            else models.downloaded(stage.model, setting, config.model_dir)
        )
        if have is None and not online():
            found[stage.name] = (
                f"{WAITING}[models] {stage.model} = {setting!r} in {config.path} is not downloaded and {HUB} cannot "
                f"be reached; bring the model folder (README: Offline) and set {stage.model} to its path, then reload"
            )
    return found


class ModelWatch:
    """Which stages wait for their model; ``check`` at start and reload, ``tick`` each turn."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, reachable: Callable[[], bool] = hub_reachable):
        self.monotonic = monotonic
        self.reachable = reachable
        self.blocked: dict[str, str] = {}
        self.online: bool | None = None  # the hub, as last asked (asked again at each check)
        self.checked_at = 0.0

    def _online(self) -> bool:
        if self.online is None:
            self.online = self.reachable()
        return self.online

    def check(self, config: Config, ask_hub: bool = True) -> bool:
        """Looks again; True when a stage is held now or was until now (its videos' notes are
        then to be written or cleared). ``ask_hub``: the hub is asked anew (at start and
        reload), else its last answer stands (the periodic look at the folders)."""
        if ask_hub:
            self.online = None
        self.checked_at = self.monotonic()
        found = model_problems(config, self._online)
        for stage, reason in found.items():
            if self.blocked.get(stage) != reason:
                logger.error("{} videos wait: {}", stage, reason[len(WAITING) :])
        for stage in set(self.blocked) - set(found):
            logger.info("the {} model can be had now: its videos carry on", stage)
        held = bool(found or self.blocked)
        self.blocked = found
        return held

    def tick(self, config: Config) -> bool:
        """Every ``RECHECK_SECONDS`` a look at the folders (the hub's last answer stands);
        True as ``check``."""
        if self.monotonic() - self.checked_at < RECHECK_SECONDS:
            return False
        return self.check(config, ask_hub=False)
