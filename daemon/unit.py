"""The systemd unit: ``autokr systemd-unit`` renders it for this install and config.

``systemd/autokr.service`` in the repository is this module's output for the documented
default install (``/opt/autokr``, ``/etc/autokr/autokr.toml``, library under ``/srv/media``);
a unit test keeps the two identical, so edit the text here.

Only the install-specific lines vary: ``ExecStart=``, the folders the service may write
(``ReadWritePaths=``), ``TimeoutStopSec=`` (from ``worker_stop_seconds``), the memory ceiling
(``MemoryMax=``/``MemoryHigh=``, from ``memory_max``) and, when the venv, the Python it was made
from, a model folder, a key file or a video folder lies under /home, /root or /run/user,
``ProtectHome=tmpfs`` with exactly those folders bound back in (read-only, but for the
folders it writes). Every path is escaped for systemd: ``%`` is a specifier there
(``%h`` is a home directory) and ``$`` an environment variable in ``ExecStart=``, so a folder
named ``Anime 100%`` is written ``Anime 100%%``.
"""

from __future__ import annotations

import math
import shlex
import socket
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from contract import models
from daemon.config import CREDENTIAL_PREFIX, Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))  # hidden by ProtectHome=
TEMPORARY_ROOTS = (Path("/tmp"), Path("/var/tmp"))  # private to the service with PrivateTmp=yes
SERVICE_STATE_DIR = Path("/var/lib/autokr")  # StateDirectory=autokr
STOP_MARGIN_SECONDS = 20  # beyond worker_stop_seconds: the daemon's own exit and the SIGKILL of leftovers


@dataclass(frozen=True)
class Install:
    command: tuple[str, ...]
    """How to start ``autokr`` (the installed console script, or ``python -m daemon``)."""
    config: Path
    write: tuple[Path, ...]
    """Folders the service writes: the inboxes (subtitles go beside the videos), a state_dir
    other than /var/lib/autokr."""
    read: tuple[Path, ...] = ()
    """Folders it only reads that may lie under a home directory: the venv and its Python."""
    worker_stop_seconds: float = 10.0
    memory_max: str = "80%"
    """``[daemon] memory_max``: a percentage, a size (``12G``) or ``infinity``."""
    credentials: tuple[str, ...] = ()
    """systemd credentials the config names (``api_key_file = "credential:jellyfin"``)."""
    servers: tuple[str, ...] = ()
    """The media servers' host names (``[jellyfin] url``, ``[plex] url``)."""
    allow_only: tuple[str, ...] | None = None
    """The addresses the service may reach, when that can be known: every model a local path and
    no notification service; None: the network stays open (downloads, Apprise)."""
    ray_address: str = ""
    """``[cluster] address`` with the Ray backend (the network then stays open: a Ray driver
    talks to the head and to every node)."""
    home: str = ""
    """The home folder ``~`` meant when this was rendered, when the config writes a path with
    ``~``: the service (``User=autokr``) then reads the config with the same ``~``."""
    listen: str = ""
    """``[web] listen``: webhooks come in there (from other machines, when it is not loopback)."""

    @property
    def under_home(self) -> bool:
        return any(_under(path, HOME_ROOTS) for path in self.write + self.read)


DEFAULT_INSTALL = Install(
    command=("/opt/autokr/.venv/bin/autokr",),
    config=Path("/etc/autokr/autokr.toml"),
    write=(Path("/srv/media"),),
)


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def hidden_from_service(path: Path) -> bool:
    """Not visible to the service unless bound back in (BindPaths=/BindReadOnlyPaths=)."""
    return _under(path, HOME_ROOTS + TEMPORARY_ROOTS)


def code_root() -> Path:
    """The folder that holds AutoKR's packages: the checkout itself for ``./setup.sh``'s editable
    install (outside the venv), site-packages otherwise. A checkout under a home folder or /tmp
    must be bound into the service like the venv, or the service cannot import AutoKR."""
    return Path(__file__).resolve().parents[1]


def _installed_command() -> tuple[str, ...]:
    script = Path(sys.executable).parent / "autokr"  # the venv's console script, not resolved
    return (str(script),) if script.exists() else (sys.executable, "-m", "daemon")


def install_for(config: Config, state_dir_set: bool) -> Install:
    """This process's install plus ``config``. ``state_dir_set``: the config names a state_dir
    (otherwise the service uses its StateDirectory=, /var/lib/autokr)."""
    assert config.path is not None
    write = list(config.daemon.inbox)
    for folder in (config.daemon.state_dir if state_dir_set else None, config.models.model_dir):
        if folder is not None and not folder.is_relative_to(SERVICE_STATE_DIR):
            write.append(folder)
    read = [Path(sys.prefix), Path(sys.base_prefix).resolve(), code_root(), config.path.parent, *read_paths(config)]
    servers = tuple(dict.fromkeys(host for host in (_host(config.jellyfin.url), _host(config.plex.url)) if host))
    return Install(
        command=_installed_command(),
        config=config.path,
        write=tuple(dict.fromkeys(write)),
        read=tuple(dict.fromkeys(path for path in read if hidden_from_service(path))),
        worker_stop_seconds=config.daemon.worker_stop_seconds,
        memory_max=config.daemon.memory_max,
        credentials=credentials_named(config),
        servers=servers,
        allow_only=_addresses(servers) if _offline(config) else None,
        ray_address=config.cluster.address if config.cluster.backend == "ray" else "",
        home=str(Path.home()) if _uses_home(config) else "",
        listen=config.web.listen,
    )


def _uses_home(config: Config) -> bool:
    """Whether the config file writes a path with ``~`` (inbox, state_dir, a model, a key file)."""
    assert config.path is not None

    def strings(value: object) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [text for item in value.values() for text in strings(item)]
        if isinstance(value, list):
            return [text for item in value for text in strings(item)]
        return []

    return any(text.startswith("~") for text in strings(tomllib.loads(config.path.read_text(encoding="utf-8"))))


def read_paths(config: Config) -> list[Path]:
    """What else the service reads that the config names: model folders (or ``.pt`` files)
    given as paths, and key files that are not systemd credentials."""
    found = [Path(setting) for setting in (config.models.whisper, config.models.translator) if models.is_path(setting)]
    files = (config.jellyfin.api_key_file, config.plex.token_file, config.llm.api_key_file, config.web.token_file)
    found += [Path(file).expanduser() for file in files if file and not file.startswith(CREDENTIAL_PREFIX)]
    return found


def credentials_named(config: Config) -> tuple[str, ...]:
    files = (config.jellyfin.api_key_file, config.plex.token_file, config.llm.api_key_file, config.web.token_file)
    return tuple(file[len(CREDENTIAL_PREFIX) :] for file in files if file.startswith(CREDENTIAL_PREFIX))


def _host(url: str) -> str | None:
    return urllib.parse.urlsplit(url).hostname if url else None


def _offline(config: Config) -> bool:
    """No model to download (both are paths that exist), no notification service, no Ray cluster."""
    models = (config.models.whisper, config.models.translator)
    local = config.cluster.backend == "local" and not config.notify.urls
    return local and all(Path(model).expanduser().exists() for model in models)


def _addresses(hosts: tuple[str, ...]) -> tuple[str, ...] | None:
    """The IP addresses of ``hosts`` now; None when one does not resolve (the network stays open)."""
    found: list[str] = []
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return None
        found += [str(info[4][0]) for info in infos]
    return tuple(dict.fromkeys(found))


def network_lines(install: Install) -> list[str]:
    """``IPAddressDeny=any`` and exactly the media servers allowed, when nothing else is needed."""
    lines = []
    for name in install.credentials:
        lines += [
            f"# The key of credential:{name}: put it in /etc/credstore/{name} (root, mode 0600); the service reads",
            "# its copy in $CREDENTIALS_DIRECTORY, no one else can.",
            f"LoadCredential={name}:/etc/credstore/{name}",
        ]
    if install.ray_address and not install.ray_address.startswith("ray://"):
        lines += [
            f"# The Ray backend attaches to the node on this machine ({install.ray_address}): its files are in",
            '# /tmp/ray, which PrivateTmp=yes hides from the service. Use address = "ray://HEAD:10001" (Ray',
            "# Client, over TCP) for AutoKR under systemd.",
        ]
    host = install.listen.rpartition(":")[0].strip("[]")
    if install.listen and host not in LOOPBACK and not host.startswith("127."):
        return lines + [
            f"# The network stays open: [web] listen = {install.listen} takes webhooks from other machines",
            "# (Sonarr, Radarr, Plex, Jellyfin), each request authenticated by the [web] token. Listen on",
            "# 127.0.0.1 when they all run here, and autokr systemd-unit closes the network again.",
        ]
    if install.listen:
        lines.append(f"# [web] listen = {install.listen}: webhooks from this machine only (localhost is allowed).")
    if install.allow_only is None:
        if install.servers:
            lines += [
                "# The network stays open: a named model is downloaded on first use, or a notification service",
                "# is named. With both models given as local paths and no [notify] urls, autokr systemd-unit",
                "# allows exactly the media servers instead.",
            ]
        return lines
    allowed = " ".join(["localhost", *install.allow_only])
    return lines + [
        "# The only network traffic: the media servers of the config (their addresses when this was rendered).",
        "IPAddressDeny=any",
        f"IPAddressAllow={allowed}",
    ]


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _quote(path: Path | str) -> str:
    # systemd's own quoting rules are close enough to the shell's for paths: "..." with \" and \\.
    # "%" starts a specifier (%h, %n, ...) everywhere in a unit file: "%%" is a plain "%".
    text = str(path).replace("%", "%%")
    if any(c in text for c in " \"\\'") or not text.isprintable():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _command_word(text: str) -> str:
    # ExecStart= also expands $NAME and ${NAME}: "$$" is a plain "$".
    return shlex.quote(text).replace("%", "%%").replace("$", "$$")


def memory_lines(memory_max: str) -> list[str]:
    """``MemoryHigh=`` (throttling, at 90% of the ceiling) and ``MemoryMax=`` (the ceiling)."""
    if memory_max == "infinity":
        return ["MemoryHigh=infinity", "MemoryMax=infinity"]
    if memory_max.endswith("%"):
        high = f"{max(1, int(memory_max[:-1]) * 9 // 10)}%"
    else:
        multiplier = 1024 ** ("KMGT".index(memory_max[-1]) + 1) if memory_max[-1] in "KMGT" else 1
        high = str(int(memory_max.rstrip("KMGT")) * multiplier * 9 // 10)
    return [f"MemoryHigh={high}", f"MemoryMax={memory_max}"]


def install_lines(install: Install) -> list[str]:
    """The [Service] lines that depend on where AutoKR, its config and the videos are."""
    command = " ".join(_command_word(part) for part in install.command)
    config = _quote(install.config).replace("$", "$$")
    lines = [f"ExecStart={command} --config {config} run"]
    if install.home:
        lines += [
            "# The config writes paths with ~: the service reads them as they were meant when this was rendered.",
            f"Environment={_quote(f'HOME={install.home}')}",
        ]
    stop = math.ceil(install.worker_stop_seconds) + STOP_MARGIN_SECONDS
    lines.append(f"TimeoutStopSec={stop}")
    lines += [
        "# A runaway worker is slowed down, then ended (the daemon retries it), before it can press",
        "# the whole host: [daemon] memory_max (80% of the machine's memory by default).",
        *memory_lines(install.memory_max),
    ]
    if install.under_home:
        lines += [
            "# The install or a video folder lies under a home directory: the homes are replaced by",
            "# an empty read-only tmpfs, with exactly the folders below bound back in.",
            "ProtectHome=tmpfs",
        ]
    else:
        lines.append("ProtectHome=yes")
    bound = [f"BindReadOnlyPaths={_quote(path)}" for path in install.read if path not in install.write]
    bound += [f"BindPaths={_quote(path)}" for path in install.write if hidden_from_service(path)]
    if bound:
        lines += ["# Folders under a home directory or /tmp, which the service would not see otherwise:", *bound]
    # Bound-in folders are read-only under ProtectSystem=strict too, until listed here.
    writable = [f"ReadWritePaths={_quote(path)}" for path in install.write]
    if writable:
        lines += ["# Subtitles are written next to the videos: each inbox folder (or a parent) is listed here."]
        lines += writable
    return lines + network_lines(install)


HEADER = """\
# AutoKR as a systemd service: Korean subtitles for Japanese videos.
# Rendered by `autokr systemd-unit` (daemon/unit.py); `autokr --config FILE systemd-unit` writes
# one for your install, with ExecStart= and ReadWritePaths= filled in from FILE.
[Unit]
Description=AutoKR: Korean subtitles for Japanese videos
# Video libraries on network mounts must be up first (the database itself must be on a local disk).
After=local-fs.target remote-fs.target network-online.target
Wants=network-online.target
# A daemon that keeps failing at start (say, a broken config) stops after 5 tries in 10 minutes.
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# READY=1 only after the database is open and migrated, interrupted jobs are recovered and the
# first scan of the inboxes is done; STATUS= shows the current stage; WATCHDOG=1 comes from the
# main loop only, every second while it is healthy (also while a long worker runs).
Type=notify
# Only the daemon (not a worker) may report readiness, status and watchdog pings.
NotifyAccess=main
WatchdogSec=120
# A large library's first scan and a database migration happen before READY=1.
TimeoutStartSec=300
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=10
# SIGTERM goes to the daemon, which stops its worker politely (SIGTERM, then SIGKILL after
# worker_stop_seconds) and records where each video stands; SIGKILL to whatever is left.
KillMode=mixed
# The kernel's OOM killer may end a worker (a too-large model); the daemon retries that stage
# with backoff, so the service must not be stopped for it (systemd's default is OOMPolicy=stop).
OOMPolicy=continue
# Subtitles are made in the background: Plex/Jellyfin transcodes stay ahead of it.
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
SyslogIdentifier=autokr
"""

HARDENING = """\
# --- Who it runs as and what it may touch -------------------------------------------------
User=autokr
Group=autokr
# /dev/nvidia* and /dev/dri belong to these groups on most distributions.
SupplementaryGroups=video render
# The SQLite database, work files and downloaded models: /var/lib/autokr ($STATE_DIRECTORY).
StateDirectory=autokr
StateDirectoryMode=0750
# Subtitles readable by the media server's user.
UMask=0022
ProtectSystem=strict
PrivateTmp=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
# System calls: what ordinary services need, less whole groups AutoKR never uses. A call
# outside the list fails with EPERM (rather than killing the process), so a library that
# probes for an optional call (NUMA, say) falls back instead of crashing. Checked with PyTorch
# and the CUDA driver (docs/service.md); if your GPU stack needs more, relax
# it with a drop-in holding an empty "SystemCallFilter=" (systemctl edit autokr).
SystemCallFilter=@system-service
SystemCallFilter=~@mount @reboot @swap @raw-io @module @debug @cpu-emulation @obsolete @clock
SystemCallErrorNumber=EPERM
PrivateMounts=yes
# A worker's threads (PyTorch, ffmpeg, tokenizers) stay far below this; a fork bomb does not.
TasksMax=512
# AF_UNIX: journald and sd_notify; AF_INET/AF_INET6: the first download of a named model from
# Hugging Face. AF_NETLINK: CUDA and glibc read network interfaces.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Left out on purpose:
# - PrivateDevices=yes: it would hide the GPU (/dev/nvidia*, /dev/dri).
# - DevicePolicy=closed: the NVIDIA device nodes differ between driver versions (nvidia-uvm,
#   nvidia-modeset, nvidia-caps); a missing one fails only at the first CUDA call.
# - MemoryDenyWriteExecute=yes: PyTorch's CPU kernels (oneDNN) and CUDA's PTX compiler generate
#   machine code at run time.
# - PrivateNetwork=yes / IPAddressDeny=any: named models are downloaded on first use. With
#   models given as local paths, you may add both.
# - PrivateUsers=yes: videos owned by other users would look owned by nobody, and the
#   subtitles could not be written beside them.
# - ProcSubset=pid: PyTorch reads /proc/cpuinfo and /proc/meminfo.
# - SystemCallFilter=~@resources: OpenMP and PyTorch pin their threads (sched_setaffinity)
#   and libraries lower their priority (setpriority). ~@privileged: with no capabilities
#   (CapabilityBoundingSet= above) its calls can do nothing privileged anyway, and chown,
#   which it holds, is how a subtitle keeps a group a person set on the folder.
# - UMask=0077: the media server's user must read the subtitles.
"""

FOOTER = """
[Install]
WantedBy=multi-user.target
"""


def render_unit(install: Install = DEFAULT_INSTALL) -> str:
    return HEADER + "\n".join(install_lines(install)) + "\n" + HARDENING + FOOTER


def render_drop_in(install: Install) -> str:
    """A drop-in (``autokr.service.d/*.conf``) that points the shipped unit at ``install``."""
    lines = install_lines(install)
    return "[Service]\nExecStart=\nReadWritePaths=\nBindPaths=\nBindReadOnlyPaths=\n" + "\n".join(lines) + "\n"
