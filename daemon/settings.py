"""The configuration's shape: one frozen dataclass per TOML section, each setting with its
type, range and what it does (``config/autokr.toml`` describes each key too). Reading and
checking a file is ``daemon/config.py``'s."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

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
PACKINGS = ("on", "scenes", "off")
ENGINES = ("ctranslate2", "torch")
COMPUTE_TYPES = ("auto", "int8", "int8_float16", "int8_bfloat16", "int8_float32", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class ModelSettings:
    whisper: str = field(default="auto", metadata={"type": "str"})
    """Whisper model name (large-v3, medium, small, ...), a model folder (CTranslate2 or Hugging
    Face), an openai-whisper ``.pt`` checkpoint, or auto."""
    translator: str = field(default="auto", metadata={"type": "str"})
    """NLLB model name (facebook/nllb-200-distilled-600M, ...), a local directory, auto, or
    ``llm``: a large language model, as ``[llm]`` says (docs/llm.md)."""
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
    packing: str = field(default="on", metadata={"type": "str"})
    """batched decoding: on (the speech of the cohort's videos laid end to end into full windows,
    the silence and music between lines left out), scenes (the same, but a pause over 3 s still
    ends a window) or off (windows cut at pauses only)."""
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
class LibrarySettings:
    """Pointed at a whole library: which videos are AutoKR's to subtitle (docs/library.md)."""

    spoken_languages: tuple[str, ...] = field(default=(), metadata={"type": "strings"})
    """The spoken languages that are transcribed (ISO 639-1); empty: ``[languages] source``. A
    video whose audio tracks are all tagged with other languages is skipped before any model runs."""
    check_untagged_audio: bool = field(default=True, metadata={"type": "bool"})
    """An untagged (``und``) track is listened to first (Whisper's language detection on speech
    sampled across the whole video); a video whose speech is not one of ``spoken_languages`` is
    skipped. false: an untagged track is transcribed as it is."""
    forced_subtitles_count: bool = field(default=False, metadata={"type": "bool"})
    """Whether a forced-only Korean subtitle (signs and songs) means the video already has one."""


@dataclass(frozen=True)
class WebSettings:
    """AutoKR's one listening socket: webhooks from Jellyfin, Plex, Sonarr and Radarr, and the
    status stream (``daemon/web.py``). Off unless ``listen`` is set."""

    listen: str = field(default="", metadata={"type": "str"})
    """``127.0.0.1:8787`` (a host name or address, and a port); empty: no socket is opened."""
    token: str = field(default="", repr=False, metadata={"type": "str", "secret": True})
    """The shared secret every request must carry (``Authorization: Bearer …``, or as HTTP basic
    auth's password); or ``token_file``."""
    token_file: str = field(default="", metadata={"type": "str"})
    """A file holding the secret, or ``credential:NAME`` (as for Jellyfin's key)."""
    path_map: tuple[tuple[str, str], ...] = field(default=(), metadata={"type": "pairs"})
    """For Sonarr's and Radarr's paths: ``[["/srv/media", "/tv"]]``, AutoKR's prefix → theirs."""


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


LLM = "llm"
"""``[models] translator = "llm"``: the LLM translation engine, set up in ``[llm]``."""
REGISTERS = ("auto", "haeyo", "hapsyo", "banmal")
NO_FALLBACK = "none"


@dataclass(frozen=True)
class LlmSettings:
    url: str = field(default="", metadata={"type": "str"})
    """An OpenAI-compatible chat server's address, such as ``http://127.0.0.1:11434/v1``
    (Ollama), ``http://127.0.0.1:8080/v1`` (llama.cpp's llama-server) or a cloud endpoint;
    empty: ``model`` runs in AutoKR's own translate worker (CTranslate2's Generator)."""
    model: str = field(default="", metadata={"type": "str"})
    """The server's name for the model (``qwen3:8b``, ...), or without ``url`` a chat-model
    folder (Hugging Face or CTranslate2)."""
    api_key: str = field(default="", repr=False, metadata={"type": "str", "secret": True})
    """The server's key, when it wants one; or ``api_key_file``."""
    api_key_file: str = field(default="", metadata={"type": "str"})
    """A file holding the key, or ``credential:NAME`` (as for Jellyfin)."""
    fallback: str = field(default="facebook/nllb-200-distilled-600M", metadata={"type": "str"})
    """The NLLB model (a name or folder, as ``[models] translator`` takes) for the lines the LLM
    cannot give after every retry; ``"none"``: such a video fails instead."""
    register: str = field(default="auto", metadata={"type": "str"})
    """Korean speech level: auto (from who speaks to whom), haeyo (해요체), hapsyo (합쇼체) or
    banmal (반말)."""
    window_lines: int = field(default=12, metadata={"type": "int", "range": (1, 200)})
    """Lines translated in one request."""
    context_lines: int = field(default=8, metadata={"type": "int", "range": (0, 200)})
    """Lines before the window sent with their accepted Korean, for continuity."""
    lookahead_lines: int = field(default=3, metadata={"type": "int", "range": (0, 50)})
    """Lines after the window sent for meaning only."""
    timeout_seconds: float = field(default=120.0, metadata={"type": "number", "range": (1, 3600)})
    """The longest one request may take, all of it."""
    max_tokens: int = field(default=2048, metadata={"type": "int", "range": (64, 65536)})
    """The most tokens one answer may have (less for a short window)."""


@dataclass(frozen=True)
class Config:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    languages: LanguageSettings = field(default_factory=LanguageSettings)
    jellyfin: JellyfinSettings = field(default_factory=JellyfinSettings)
    plex: PlexSettings = field(default_factory=PlexSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    library: LibrarySettings = field(default_factory=LibrarySettings)
    web: WebSettings = field(default_factory=WebSettings)
    path: Path | None = None

    @property
    def spoken_languages(self) -> tuple[str, ...]:
        return self.library.spoken_languages or (self.languages.source,)

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
    "llm": LlmSettings, "library": LibrarySettings, "web": WebSettings,
}  # fmt: skip
CREDENTIAL_PREFIX = "credential:"
URL_PATTERN = re.compile(r"^https?://[^/\s]+(/\S*)?$")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
