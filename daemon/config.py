"""Configuration: frozen dataclasses loaded from TOML, with every problem reported at once.

``config/autokr.toml`` is the documented default; each key below is described there too.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from contract.languages import NLLB_CODES
from contract.models import resolve_setting
from daemon.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_VIDEO_EXTENSIONS = (
    ".mkv",
    ".mp4",
    ".m4v",
    ".avi",
    ".mov",
    ".webm",
    ".ts",
    ".m2ts",
    ".wmv",
    ".flv",
    ".mpg",
)


def _default_state_dir() -> Path:
    # systemd's StateDirectory=autokr sets $STATE_DIRECTORY (/var/lib/autokr).
    return Path(os.environ.get("STATE_DIRECTORY") or "~/.local/state/autokr").expanduser()


@dataclass(frozen=True)
class DaemonSettings:
    inbox: tuple[Path, ...] = field(default=(), metadata={"type": "paths"})
    """Folders watched recursively for videos (often Plex/Jellyfin library folders)."""
    state_dir: Path = field(default_factory=_default_state_dir, metadata={"type": "path"})
    """Where the SQLite database, work files and downloaded models live."""
    stable_seconds: float = field(default=10.0, metadata={"type": "number", "range": (0, 86400)})
    """A file becomes a job once its size and mtime have not changed for this long."""
    scan_interval_seconds: float = field(default=300.0, metadata={"type": "number", "range": (0, 86400)})
    """Full rescan of the inboxes this often, for events inotify dropped."""
    write_source_subtitles: bool = field(default=False, metadata={"type": "bool"})
    """Also write ``Video.ja.srt`` (the transcript) beside the video."""
    max_attempts: int = field(default=3, metadata={"type": "int", "range": (1, 100)})
    """Attempts at one stage before a job is failed, for causes that may pass."""
    retry_backoff_seconds: float = field(default=30.0, metadata={"type": "number", "range": (0, 86400)})
    """Wait before the first retry; doubled for each further attempt."""
    worker_stop_seconds: float = field(default=10.0, metadata={"type": "number", "range": (0, 3600)})
    """On shutdown, how long a worker gets after SIGTERM before SIGKILL."""
    stage_timeout_seconds: float = field(default=3600.0, metadata={"type": "number", "range": (1, 7 * 86400)})
    """A worker that reports nothing (no progress, no result) for this long is stopped and
    the stage retried: the daemon never waits forever on a hung worker."""
    follow_symlinks: bool = field(default=False, metadata={"type": "bool"})
    """Follow symbolic links in the inbox that point outside it."""
    video_extensions: tuple[str, ...] = field(default=DEFAULT_VIDEO_EXTENSIONS, metadata={"type": "strings"})
    """File name endings treated as videos (case-insensitive)."""
    memory_max: str = field(default="80%", metadata={"type": "str"})
    """The service's memory ceiling (systemd ``MemoryMax=``; ``MemoryHigh=`` throttles at 90%
    of it): a percentage of the machine's memory, a size such as ``12G``, or ``infinity``.
    Used by ``autokr systemd-unit``; a runaway worker is then ended, not the whole host pressed."""


DECODINGS = ("batched", "sequential")
ENGINES = ("ctranslate2", "torch")
COMPUTE_TYPES = ("auto", "int8", "int8_float16", "int8_bfloat16", "int8_float32", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class ModelSettings:
    whisper: str = field(default="auto", metadata={"type": "str"})
    """Whisper model name (large-v3, medium, small, ...), a model folder (CTranslate2 or Hugging
    Face), an openai-whisper ``.pt`` checkpoint, or auto."""
    translator: str = field(default="auto", metadata={"type": "str"})
    """NLLB model name (facebook/nllb-200-distilled-600M, ...), a local directory, or auto."""
    device: str = field(default="auto", metadata={"type": "str"})
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    videos_per_worker: int = field(default=8, metadata={"type": "int", "range": (1, 1000)})
    """Videos waiting at one stage that one worker process takes (the model loads once)."""
    vad: bool = field(default=True, metadata={"type": "bool"})
    """Voice activity detection (Silero): cues follow the speech, silence and music get none."""
    filter_hallucinations: bool = field(default=True, metadata={"type": "bool"})
    """Drop segments Whisper likely invented (loops, repeats, outro phrases over silence)."""
    condition_on_previous_text: bool = field(default=False, metadata={"type": "bool"})
    """Feed Whisper the previous window's text (off: on Japanese it feeds repetition loops)."""
    engine: str = field(default="ctranslate2", metadata={"type": "str"})
    """ctranslate2 (faster-whisper and CTranslate2: int8 on a CPU, float16 on CUDA; models are
    downloaded or converted once into ``<model_dir>``) or torch (openai-whisper and
    transformers, the reference). A ``.pt`` Whisper checkpoint always runs on torch."""
    compute_type: str = field(default="auto", metadata={"type": "str"})
    """CTranslate2's number format: auto (int8 on a CPU; on CUDA float16, or int8_float16 when
    the model would not fit in float16), int8, int8_float16, float16, bfloat16, float32, ..."""
    decoding: str = field(default="batched", metadata={"type": "str"})
    """batched: speech chunks of up to 30 s decoded many at a time (faster); sequential:
    openai-whisper's sliding 30 s window, each window after the previous one."""
    transcribe_batch_size: int = field(default=0, metadata={"type": "int", "range": (0, 256)})
    """Speech chunks decoded together; 0: as many as free GPU memory allows (16 at most), 8 on CPU."""
    translate_batch_size: int = field(default=16, metadata={"type": "int", "range": (1, 1024)})
    """Sentences per translation batch."""
    model_dir: Path | None = field(default=None, metadata={"type": "path"})
    """Where named models are downloaded; default ``<state_dir>/models``."""


@dataclass(frozen=True)
class LanguageSettings:
    source: str = field(default="ja", metadata={"type": "str"})
    """Spoken language of the videos (ISO 639-1)."""
    target: str = field(default="ko", metadata={"type": "str"})
    """Subtitle language; also the tag in ``Video.<target>.srt``."""


@dataclass(frozen=True)
class JellyfinSettings:
    url: str = field(default="", metadata={"type": "str"})
    """Jellyfin's address, e.g. ``http://127.0.0.1:8096``; empty: Jellyfin is not told."""
    api_key: str = field(default="", repr=False, metadata={"type": "str", "secret": True})
    """An API key (Dashboard → API Keys); or ``api_key_file``."""
    api_key_file: str = field(default="", metadata={"type": "str"})
    """A file holding the key, or ``credential:NAME``: systemd's credential NAME
    (``$CREDENTIALS_DIRECTORY/NAME``; ``autokr systemd-unit`` adds its ``LoadCredential=``)."""
    path_map: tuple[tuple[str, str], ...] = field(default=(), metadata={"type": "pairs"})
    """``[["/srv/media", "/media"]]``: AutoKR's path prefix → the server's (a server in a container)."""


@dataclass(frozen=True)
class PlexSettings:
    url: str = field(default="", metadata={"type": "str"})
    """Plex's address, e.g. ``http://127.0.0.1:32400``; empty: Plex is not told."""
    token: str = field(default="", repr=False, metadata={"type": "str", "secret": True})
    """An X-Plex-Token; or ``token_file``."""
    token_file: str = field(default="", metadata={"type": "str"})
    """A file holding the token, or ``credential:NAME`` (as for Jellyfin)."""
    path_map: tuple[tuple[str, str], ...] = field(default=(), metadata={"type": "pairs"})
    """As for Jellyfin."""


@dataclass(frozen=True)
class NotifySettings:
    urls: tuple[str, ...] = field(default=(), repr=False, metadata={"type": "strings", "secret": True})
    """Apprise URLs (``ntfy://…``, ``discord://…``, ``json://host/path``): a message when a video
    is done or has failed."""
    digest: bool = field(default=False, metadata={"type": "bool"})
    """Also one message a day: how many videos were done and failed in the last 24 hours."""


BACKENDS = ("local", "ray")
RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[^\s:/]+:\d+)$")


@dataclass(frozen=True)
class ClusterSettings:
    backend: str = field(default="local", metadata={"type": "str"})
    """local: every stage worker runs on this machine. ray: transcription and translation run as
    Ray tasks on the cluster's GPUs (``workers/cluster.py``); extraction and subtitles stay here,
    beside the videos."""
    address: str = field(default="auto", metadata={"type": "str"})
    """The Ray cluster (backend ray): ``ray://head:10001`` (Ray Client, what a systemd unit
    needs), ``head:6379`` when this machine is itself a node of it, or ``auto`` for the node
    running here."""
    devices: tuple[str, ...] = field(default=("auto",), metadata={"type": "devices"})
    """Where stage workers run, one at a time on each: ``"auto"`` (every GPU a worker process
    sees, else the CPU; a ``[models] device`` other than auto is taken as the one device), or a
    list such as ``["cuda:0", "cuda:1"]``. Listing ``"cpu"`` twice makes two CPU worker slots.
    Overrides ``[models] device``."""


@dataclass(frozen=True)
class Config:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    languages: LanguageSettings = field(default_factory=LanguageSettings)
    jellyfin: JellyfinSettings = field(default_factory=JellyfinSettings)
    plex: PlexSettings = field(default_factory=PlexSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    path: Path | None = None

    @property
    def database_path(self) -> Path:
        return self.daemon.state_dir / "autokr.sqlite3"

    @property
    def work_dir(self) -> Path:
        return self.daemon.state_dir / "work"

    @property
    def model_dir(self) -> Path:
        return self.models.model_dir or self.daemon.state_dir / "models"


SECTIONS: dict[str, type] = {
    "daemon": DaemonSettings, "models": ModelSettings, "languages": LanguageSettings,
    "jellyfin": JellyfinSettings, "plex": PlexSettings, "notify": NotifySettings, "cluster": ClusterSettings,
}  # fmt: skip
CREDENTIAL_PREFIX = "credential:"
URL_PATTERN = re.compile(r"^https?://[^/\s]+(/\S*)?$")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


CONFIG_PLACES = ("config/autokr.toml", "~/.config/autokr/autokr.toml", "/etc/autokr/autokr.toml")
"""Where the config is looked for (after ``--config`` and ``$AUTOKR_CONFIG``), in this order."""


def config_candidates() -> list[Path]:
    """``$AUTOKR_CONFIG`` when set, else the places of ``CONFIG_PLACES``, made absolute."""
    if os.environ.get("AUTOKR_CONFIG"):
        return [Path(os.environ["AUTOKR_CONFIG"]).absolute()]
    return [Path(place).expanduser().absolute() for place in CONFIG_PLACES]


def default_config_path() -> Path:
    """``$AUTOKR_CONFIG``, else the first of ./config/autokr.toml, ~/.config/autokr/autokr.toml,
    /etc/autokr/autokr.toml that exists.

    Raises:
        ConfigError: none exists; the message lists every place looked in.
    """
    candidates = config_candidates()
    found = next((path for path in candidates if path.exists()), None)
    if found is None:
        where = "$AUTOKR_CONFIG" if os.environ.get("AUTOKR_CONFIG") else "any of the usual places"
        raise ConfigError(
            None, [f"no configuration file in {where}: looked for {', '.join(map(str, candidates))}; "
                   "copy config/autokr.toml of AutoKR to one of them, or give --config FILE"],
        )  # fmt: skip
    return found


def _convert(value: Any, kind: str, base: Path, problems: list[str], where: str, secret: bool = False) -> Any:
    """``value`` as a setting of ``kind``, or None with the problem appended. The value of a
    ``secret`` setting (a key, a token, an Apprise URL) is never shown, not even when wrong."""

    def as_path(text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else (base / path)

    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "path" and isinstance(value, str):
        return as_path(value)
    if kind == "paths" and isinstance(value, str):
        return (as_path(value),)
    if kind == "devices" and value == "auto":
        return ("auto",)
    if kind == "devices" and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    if kind == "pairs" and isinstance(value, list) and all(_is_pair(v) for v in value):
        return tuple((str(ours).rstrip("/") or "/", str(theirs).rstrip("/") or "/") for ours, theirs in value)
    if kind in ("paths", "strings") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(as_path(v) for v in value) if kind == "paths" else tuple(value)
    expected = {
        "bool": "true or false", "int": "a whole number", "number": "a number", "str": "a string",
        "path": "a path string", "paths": "a list of path strings", "strings": "a list of strings",
        "pairs": 'a list of ["AutoKR\'s path", "the server\'s path"] pairs',
        "devices": '"auto" or a list of devices such as ["cuda:0", "cuda:1"] or ["cpu", "cpu"]',
    }[kind]  # fmt: skip
    shown = "its value is not shown: it may hold a key" if secret else f"not {value!r}"
    problems.append(f"{where} must be {expected} ({shown})" if secret else f"{where} must be {expected}, {shown}")
    return None


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v.startswith("/") for v in value)


def _build_section(cls: type, table: Any, base: Path, problems: list[str], section: str) -> Any:
    if not isinstance(table, dict):
        problems.append(f"[{section}] must be a table")
        return cls()
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in table.items():
        where = f"[{section}] {key}"
        if key not in known:
            problems.append(f"unknown key {where}{_suggestion(key, known)}")
            continue
        spec = known[key]
        converted = _convert(value, spec.metadata["type"], base, problems, where, spec.metadata.get("secret", False))
        if converted is not None:
            values[key] = converted
    return cls(**values)


def _suggestion(name: str, known: Collection[str]) -> str:
    """`` (did you mean stable_seconds?)`` for a name one typo away from a known one."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _inner_blank_or_control(text: str) -> bool:
    """A space, a line break or a control character inside a key: never part of a real one (a
    comment line in a key file, a pasted line break), and fatal in an HTTP header."""
    return any(character.isspace() or not character.isprintable() for character in text)


MEMORY_PATTERN = re.compile(r"^(infinity|([1-9]\d?|100)%|\d+[KMGT]?)$")


def _check_ranges(config: Config, problems: list[str]) -> None:
    """Every number is finite and inside the range its field declares (``metadata["range"]``)."""
    for section, cls in SECTIONS.items():
        settings = getattr(config, section)
        for spec in fields(cls):
            if "range" not in spec.metadata:
                continue
            low, high = spec.metadata["range"]
            value = getattr(settings, spec.name)
            if not (math.isfinite(value) and low <= value <= high):
                kind = "a whole number" if spec.metadata["type"] == "int" else "a number"
                problems.append(f"[{section}] {spec.name} must be {kind} from {low} to {high}, not {value!r}")


def _validate(config: Config, problems: list[str], need_inbox: bool, need_state_dir: bool) -> None:
    daemon, models, languages = config.daemon, config.models, config.languages
    _check_ranges(config, problems)
    if not daemon.video_extensions or not all(extension.strip(".") for extension in daemon.video_extensions):
        problems.append('[daemon] video_extensions must list at least one file name ending, such as ".mkv"')
    if not MEMORY_PATTERN.match(daemon.memory_max):
        problems.append(
            f"[daemon] memory_max must be a percentage (1% to 100%), a size such as 12G, or infinity, "
            f"not {daemon.memory_max!r}"
        )
    if need_inbox and not daemon.inbox:
        problems.append("[daemon] inbox must name at least one folder")
    for folder in daemon.inbox if need_inbox else ():
        if not folder.is_dir():
            problems.append(f"[daemon] inbox folder does not exist: {folder}")
    try:
        if need_state_dir:
            daemon.state_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(daemon.state_dir, os.W_OK | os.X_OK):
                problems.append(f"[daemon] state_dir is not writable: {daemon.state_dir}")
    except OSError as error:
        problems.append(f"[daemon] state_dir cannot be created: {daemon.state_dir} ({error.strerror})")
    if models.engine not in ENGINES:
        problems.append(f"[models] engine must be ctranslate2 or torch, not {models.engine!r}")
    if models.compute_type not in COMPUTE_TYPES:
        problems.append(f"[models] compute_type must be one of {', '.join(COMPUTE_TYPES)}, not {models.compute_type!r}")
    if models.decoding not in DECODINGS:
        problems.append(f"[models] decoding must be batched or sequential, not {models.decoding!r}")
    if not DEVICE_PATTERN.match(models.device):
        problems.append(f"[models] device must be auto, cpu, cuda or cuda:N, not {models.device!r}")
    for name in ("whisper", "translator"):
        if not getattr(models, name).strip():
            problems.append(f"[models] {name} must not be empty")
    _validate_cluster(config.cluster, problems)
    for section, key in (("jellyfin", "api_key"), ("plex", "token")):
        _validate_server(getattr(config, section), section, key, problems)
    for name in ("source", "target"):
        if getattr(languages, name) not in NLLB_CODES:
            known = ", ".join(sorted(NLLB_CODES))
            problems.append(f"[languages] {name} {getattr(languages, name)!r} is not supported (known: {known})")


def _validate_cluster(cluster: ClusterSettings, problems: list[str]) -> None:
    if cluster.backend not in BACKENDS:
        problems.append(f"[cluster] backend must be local or ray, not {cluster.backend!r}")
    if cluster.backend == "ray":
        if importlib.util.find_spec("ray") is None:  # found, not imported: the daemon never imports Ray
            problems.append("[cluster] backend is ray but Ray is not installed: pip install 'autokr[ray]'")
        if not RAY_ADDRESS.match(cluster.address):
            problems.append(f'[cluster] address must be "auto", ray://host:port or host:port, not {cluster.address!r}')
        if cluster.devices != ("auto",):
            problems.append('[cluster] devices is for the local backend; with ray, leave it "auto" (all its GPUs)')
    if cluster.devices != ("auto",):
        wrong = [device for device in cluster.devices if device == "auto" or not DEVICE_PATTERN.match(device)]
        if wrong:
            problems.append(f'[cluster] devices must be "auto" or a list of cpu, cuda:N; {wrong[0]!r} is neither')
        gpus = [device for device in cluster.devices if device.startswith("cuda")]
        if len(set(gpus)) != len(gpus):
            problems.append("[cluster] devices lists a GPU twice: one GPU never holds two models")


def _validate_server(settings: Any, section: str, key: str, problems: list[str]) -> None:
    given = [name for name in (key, f"{key}_file") if getattr(settings, name)]
    if not settings.url:
        if given:
            problems.append(f"[{section}] {given[0]} is set but url is not: set url, or remove the section")
        return
    # The URL itself is not shown: a user:password@ or a ?token= in it would be a secret.
    if "@" in urllib.parse.urlsplit(settings.url).netloc:
        problems.append(f"[{section}] url must not hold a user name or password (the key goes in {key} or {key}_file)")
    elif not URL_PATTERN.match(settings.url):
        problems.append(f"[{section}] url must be an http:// or https:// address such as http://127.0.0.1:8096")
    if len(given) != 1:
        problems.append(f"[{section}] needs exactly one of {key} and {key}_file")
    if getattr(settings, key) and _inner_blank_or_control(getattr(settings, key)):
        problems.append(f"[{section}] {key} holds a space, a line break or a control character; give the key alone")


def read_secret(value: str, file: str, where: str) -> str:
    """The key itself, or read from ``file`` (``credential:NAME``: systemd's credential NAME).

    Raises:
        ConfigError: the file cannot be read (the message names it, never its content).
    """
    if value:
        return value
    if file.startswith(CREDENTIAL_PREFIX):
        name = file[len(CREDENTIAL_PREFIX) :]
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(
                None, [f"{where} names the systemd credential {name!r}, but AutoKR was not started by systemd with it "
                       f"(LoadCredential={name}; autokr systemd-unit adds it)"],
            )  # fmt: skip
        path = Path(folder) / name
    else:
        path = Path(file).expanduser()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(None, [f"{where}: cannot read {path} ({reason})"]) from None
    if not secret:
        raise ConfigError(None, [f"{where}: {path} is empty"])
    if _inner_blank_or_control(secret):
        raise ConfigError(
            None, [f"{where}: {path} holds more than the key (a second line, a space or a control character); "
                   "leave only the key in it"],
        )  # fmt: skip
    return secret


def load_config(path: Path | None = None, need_inbox: bool = True, need_state_dir: bool = True) -> Config:
    """Reads and validates the config file (``need_inbox=False`` for ``autokr once``;
    ``need_state_dir=False`` where the state folder is not used, so it is not created).

    Raises:
        ConfigError: listing every problem found, with the file name and key.
    """
    path = Path(path).absolute() if path else default_config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, ["file not found (check --config, or $AUTOKR_CONFIG)"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [f"cannot read: {error}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, [f"not valid TOML: {error}"]) from None
    problems: list[str] = []
    base = path.parent.absolute()
    sections = {}
    for key, value in raw.items():
        if key not in SECTIONS:
            problems.append(f"unknown section [{key}]{_suggestion(key, SECTIONS)}")
            continue
        sections[key] = _build_section(SECTIONS[key], value, base, problems, key)
    config = Config(path=path.absolute(), **sections)
    # A model given as a path is one exactly as the inbox is: ~ expanded, relative to this file.
    config = replace(
        config,
        models=replace(
            config.models,
            whisper=resolve_setting(config.models.whisper, base),
            translator=resolve_setting(config.models.translator, base),
        ),
    )
    if config.daemon.video_extensions and all(isinstance(e, str) for e in config.daemon.video_extensions):
        lowered = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in config.daemon.video_extensions)
        config = replace(config, daemon=replace(config.daemon, video_extensions=lowered))
    _validate(config, problems, need_inbox, need_state_dir)
    if problems:
        raise ConfigError(path, problems)
    return config


def is_set(config: Config, section: str, key: str) -> bool:
    """Whether the config file names ``key`` itself (rather than leaving the default)."""
    if config.path is None:
        return False
    table = tomllib.loads(config.path.read_text(encoding="utf-8")).get(section, {})
    return isinstance(table, dict) and key in table
