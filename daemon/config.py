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
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from contract.languages import LANGUAGE_TAGS, NLLB_CODES
from contract.models import is_path, resolve_setting
from daemon.errors import ConfigError
from daemon.settings import (
    BACKENDS,
    COMPUTE_TYPES,
    DECODINGS,
    DEVICE_PATTERN,
    ENGINES,
    LLM,
    NO_FALLBACK,
    PACKINGS,
    RAY_ADDRESS,
    REGISTERS,
    SECTIONS,
    URL_PATTERN,
    ClusterSettings,
)
from daemon.settings import (
    CREDENTIAL_PREFIX as CREDENTIAL_PREFIX,
)
from daemon.settings import (
    Config as Config,
)
from daemon.settings import (
    LanguageSettings as LanguageSettings,
)
from daemon.settings import (
    _default_state_dir as _default_state_dir,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LISTEN_PATTERN = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$")

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
    if models.packing not in PACKINGS:
        problems.append(f"[models] packing must be on, scenes or off, not {models.packing!r}")
    if not DEVICE_PATTERN.match(models.device):
        problems.append(f"[models] device must be auto, cpu, cuda or cuda:N, not {models.device!r}")
    for name in ("whisper", "translator"):
        if not getattr(models, name).strip():
            problems.append(f"[models] {name} must not be empty")
    _validate_cluster(config.cluster, problems)
    for section, key in (("jellyfin", "api_key"), ("plex", "token")):
        _validate_server(getattr(config, section), section, key, problems)
    _validate_llm(config, problems)
    _validate_web(config, problems)
    unknown = [language for language in config.library.spoken_languages if language not in LANGUAGE_TAGS]
    if unknown:
        problems.append(
            f"[library] spoken_languages: {unknown[0]!r} is not a language code AutoKR knows "
            f"({', '.join(sorted(LANGUAGE_TAGS))})"
        )
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


def _validate_llm(config: Config, problems: list[str]) -> None:
    llm = config.llm
    if config.models.translator == "auto" and llm.model and not llm.url and not is_path(llm.model):
        problems.append('[llm] model must be a model folder for translator = "auto" to choose it by the card')
    if config.models.translator != LLM:
        return
    if not llm.model.strip():
        problems.append('[llm] model must name the model when [models] translator is "llm"')
    if not llm.url:  # the model runs in the translate worker itself (CTranslate2's Generator)
        if llm.model.strip() and not is_path(llm.model):
            problems.append(
                "[llm] model must be a model folder (Hugging Face or CTranslate2) when url is not set; "
                "or set url to an OpenAI-compatible server that has the model"
            )
        if llm.api_key or llm.api_key_file:
            problems.append("[llm] api_key is for a server: set url, or remove the key")
    elif "@" in urllib.parse.urlsplit(llm.url).netloc:
        problems.append("[llm] url must not hold a user name or password (the key goes in api_key or api_key_file)")
    elif not URL_PATTERN.match(llm.url):
        problems.append("[llm] url must be an http:// or https:// address such as http://127.0.0.1:11434/v1")
    if llm.api_key and llm.api_key_file:
        problems.append("[llm] needs at most one of api_key and api_key_file")
    if llm.api_key and _inner_blank_or_control(llm.api_key):
        problems.append("[llm] api_key holds a space, a line break or a control character; give the key alone")
    if llm.register not in REGISTERS:
        problems.append(f"[llm] register must be one of {', '.join(REGISTERS)}, not {llm.register!r}")
    if not llm.fallback.strip():
        problems.append(f'[llm] fallback must name an NLLB model, or be "{NO_FALLBACK}"')


def listen_address(listen: str) -> tuple[str, int] | None:
    """``127.0.0.1:8787`` → ("127.0.0.1", 8787); ``[::1]:8787`` → ("::1", 8787); None if malformed."""
    match = LISTEN_PATTERN.match(listen)
    if not match:
        return None
    host = match.group("v6") or match.group("host")
    port = int(match.group("port"))
    return (host, port) if 0 < port < 65536 else None


def _validate_web(config: Config, problems: list[str]) -> None:
    web = config.web
    if not web.listen:
        if web.token or web.token_file:
            problems.append("[web] token is set but listen is not: set listen (127.0.0.1:8787), or remove the token")
        return
    if listen_address(web.listen) is None:
        problems.append(f'[web] listen must be an address and a port such as "127.0.0.1:8787", not {web.listen!r}')
    if bool(web.token) == bool(web.token_file):
        problems.append("[web] needs exactly one of token and token_file: every request must carry the secret")
    if web.token and (_inner_blank_or_control(web.token) or len(web.token) < 16):
        problems.append(
            "[web] token must be at least 16 characters with no space or control character "
            "(make one: openssl rand -hex 24)"
        )


def _key_file(file: str, base: Path) -> str:
    """A key file is a path as the inbox is: ``~`` expanded, relative to the config file."""
    if not file or file.startswith(CREDENTIAL_PREFIX):
        return file
    return str(base / Path(file).expanduser())


def _resolve_fallback(fallback: str, base: Path) -> str:
    return fallback if fallback == NO_FALLBACK else resolve_setting(fallback, base)


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
        llm=replace(
            config.llm, fallback=_resolve_fallback(config.llm.fallback, base),
            model=config.llm.model if config.llm.url else resolve_setting(config.llm.model, base),
            api_key_file=_key_file(config.llm.api_key_file, base),
        ),
        jellyfin=replace(config.jellyfin, api_key_file=_key_file(config.jellyfin.api_key_file, base)),
        plex=replace(config.plex, token_file=_key_file(config.plex.token_file, base)),
        web=replace(config.web, token_file=_key_file(config.web.token_file, base)),
    )  # fmt: skip
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
