"""``autokr doctor``: one checklist of what AutoKR needs, each ✗ with its fix.

A ✗ that stops videos from being processed (ffmpeg missing, an inbox unreadable, the state
folder not writable, no model to be had) makes the command exit 1; the rest (a media server
down, a low inotify limit) is reported with exit 0, unless ``--strict``. The device is asked of
a worker process (``workers/device.py``): this command stays torch-free like the daemon.
"""

from __future__ import annotations

import ctypes
import errno
import http.client
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from contract import models
from contract.errors import AutoKRError
from contract.media import find_ffmpeg, find_ffprobe
from contract.protocol import JsonObject, printable, whole_number
from daemon import stages
from daemon.announcer import Notifications, senders_for
from daemon.availability import HUB, hub_reachable, model_setting
from daemon.cluster import ask_cluster
from daemon.config import Config, listen_address, read_secret
from daemon.errors import ConfigError
from daemon.media_servers import MediaServer, ServerError
from daemon.runner import ask_worker
from daemon.settings import LLM
from daemon.store import MIN_STATE_FREE_BYTES
from daemon.unit import install_for, render_unit
from daemon.watcher import describe_inotify_error

INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")
UNIT_PATHS = (Path("/etc/systemd/system/autokr.service"), Path("/usr/lib/systemd/system/autokr.service"))
DEVICE_SECONDS = 180
LLM_SECONDS = 30
IN_CREATE = 0x100  # linux/inotify.h


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = False
    """Whether this ✗ stops videos from being processed (exit 1)."""


def _version(tool: str) -> str:
    try:
        answer = subprocess.run([tool, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as error:
        return f"cannot run it ({error})"
    first = (answer.stdout.splitlines() or [""])[0]
    return first.split(" Copyright")[0].strip() or f"exit status {answer.returncode}"


def check_tools(config: Config) -> Iterator[Check]:
    for name, find in (("ffmpeg", find_ffmpeg), ("ffprobe", find_ffprobe)):
        fix = "install ffmpeg (apt install ffmpeg), which ships both"
        try:
            tool = find()
        except AutoKRError as error:
            yield Check(name, False, str(error), fix, True)
            continue
        if not (shutil.which(tool) or os.access(tool, os.X_OK)):
            yield Check(name, False, f"{tool} is not an executable file", f"{fix}, or fix $AUTOKR_{name.upper()}", True)
        else:
            yield Check(name, True, f"{_version(tool)} ({tool})")


def check_folders(config: Config) -> Iterator[Check]:
    for inbox in config.daemon.inbox:
        if not inbox.is_dir():
            yield Check(f"inbox {inbox}", False, "does not exist", "create it or fix [daemon] inbox", True)
        elif not os.access(inbox, os.R_OK | os.X_OK):
            yield Check(f"inbox {inbox}", False, "not readable by this user", f"let this user read {inbox}", True)
        elif not os.access(inbox, os.W_OK):
            fix = f"let this user write {inbox}: subtitles go beside the videos"
            yield Check(f"inbox {inbox}", False, "not writable by this user", fix, True)
        else:
            yield Check(f"inbox {inbox}", True, "readable and writable")
    state = config.daemon.state_dir
    if not os.access(state if state.exists() else state.parent, os.W_OK):
        yield Check("state folder", False, f"{state} is not writable", f"let this user write {state}", True)
        return
    free = shutil.disk_usage(state if state.exists() else state.parent).free
    roomy = free >= 4 * MIN_STATE_FREE_BYTES
    fix = "" if roomy else f"free space on the disk of {state}"
    yield Check("state folder", roomy, f"{state}, {free / 1e9:.1f} GB free", fix, not roomy)


def count_folders(inboxes: tuple[Path, ...], limit: int) -> int:
    """Folders under the inboxes (each is one inotify watch), counting up to ``limit`` + 1."""
    count = 0
    for inbox in inboxes:
        for _, folders, _ in os.walk(inbox):
            count += 1
            folders[:] = [folder for folder in folders if not folder.startswith(".")]
            if count > limit:
                return count
    return count


def try_inotify(folders: tuple[Path, ...]) -> OSError | None:
    """Makes an inotify instance and adds a watch on each folder, as the daemon will, then lets
    them go: the error the daemon would meet, or None."""
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = libc.inotify_init1(os.O_CLOEXEC)
    if descriptor < 0:
        number = ctypes.get_errno()
        return OSError(number, os.strerror(number))
    try:
        for folder in folders:
            if folder.is_dir() and libc.inotify_add_watch(descriptor, os.fsencode(folder), IN_CREATE) < 0:
                number = ctypes.get_errno()
                return OSError(number, os.strerror(number), str(folder))
    finally:
        os.close(descriptor)
    return None


def check_inotify(config: Config) -> Iterator[Check]:
    failure = try_inotify(config.daemon.inbox)
    if failure is not None:
        name = "max_user_instances" if failure.errno == errno.EMFILE else "max_user_watches"
        fix = (
            f"other programs of this user hold them (IDEs, Syncthing); or raise the limit: echo "
            f"fs.inotify.{name}={1024 if name == 'max_user_instances' else 524288} | sudo tee "
            "/etc/sysctl.d/90-autokr.conf && sudo sysctl --system"
        )
        detail = f"{describe_inotify_error(failure)}: new videos are found by the periodic scan only"
        yield Check("inotify", False, detail, fix)
        return
    try:
        limit = int(INOTIFY_LIMIT.read_text())
    except (OSError, ValueError):
        yield Check("inotify", True, "a watch can be added; the limit is unknown here")
        return
    folders = count_folders(config.daemon.inbox, limit)
    ok = folders * 2 <= limit  # other programs of this user watch folders too
    fix = (
        f"raise it: echo fs.inotify.max_user_watches={max(524288, folders * 4)} | "
        "sudo tee /etc/sysctl.d/90-autokr.conf && sudo sysctl --system"
    )
    detail = f"{folders} folder(s) under the inboxes, fs.inotify.max_user_watches = {limit}"
    yield Check("inotify", ok, detail, "" if ok else fix)


def ask_device(config: Config) -> JsonObject:
    """What a worker process sees: the device, its free memory, the models ``auto`` picks."""
    models = config.models
    command = [
        sys.executable, "-m", "workers.device", "--engine", models.engine, "--device", models.device,
        "--whisper", models.whisper, "--translator", model_setting(config, "translator") or "auto",
        "--compute-type", models.compute_type,
    ]  # fmt: skip
    return ask_worker(command, DEVICE_SECONDS)


def check_device(config: Config) -> tuple[Check, JsonObject]:
    try:
        found = ask_device(config)
    except (AutoKRError, OSError, subprocess.SubprocessError, ValueError) as error:
        fix = "run ./setup.sh again (the worker packages may be broken)"
        return Check("device", False, f"a worker could not report it: {error}", fix, True), {}
    free_bytes = whole_number(found, "free_bytes")
    free = f", {free_bytes / 1e9:.1f} GB free" if free_bytes else ""
    detail = (
        f"{found['device']}{free}: {Path(str(found['whisper'])).name} → {Path(str(found['translator'])).name} "
        f"({found['compute_type']})"
    )
    hint = "" if found["device"] != "cpu" else " (no CUDA GPU seen: runs on the CPU, far slower)"
    return Check("device", True, detail + hint), found


def check_models(
    config: Config, chosen: JsonObject, reachable: Callable[[str], bool] = hub_reachable
) -> Iterator[Check]:
    online: bool | None = None
    for kind in ("whisper", "translator"):
        found_setting = model_setting(config, kind)
        if found_setting is None:  # the LLM engine with no NLLB fallback: the server has the model
            continue
        setting = found_setting
        name = str(chosen.get(kind) or setting)
        # The LLM's fallback is loaded only for a line the LLM cannot give: missing, it stops no video.
        fallback = kind == "translator" and config.models.translator == LLM
        label, key = (f"{kind} model", f"[models] {kind}")
        if fallback:
            label, key = "translator fallback model", "[llm] fallback"
        if models.is_path(setting):
            problem = models.folder_problem(kind, Path(setting))
            what = "the path does not exist" if not Path(setting).exists() else "it is no model AutoKR can use"
            fix = "" if problem is None else f"fix {key}: {what}"
            detail = setting if problem is None else f"{problem} (in {config.path})"
            yield Check(label, problem is None, detail, fix, problem is not None and not fallback)
        elif (found := models.downloaded(kind, name, config.model_dir)) is not None:
            yield Check(label, True, f"{name}, downloaded ({found})")
        else:
            online = reachable(HUB) if online is None else online
            fix = f"connect this machine to the internet once, or download {name} elsewhere and set {key}"
            detail = (
                f"{name}: downloaded on first use" if online else f"{name} is not downloaded and {HUB} is unreachable"
            )
            yield Check(label, online, detail, "" if online else fix, not online and not fallback)


def check_servers(config: Config) -> Iterator[Check]:
    senders, problems = senders_for(config)
    for problem in problems:
        yield Check("media servers", False, problem, "fix the key file or its permissions")
    probe = str(config.daemon.inbox[0] / "AutoKR doctor.mkv") if config.daemon.inbox else "/"
    for name, sender in senders.items():
        if isinstance(sender, Notifications):
            ok = not sender.invalid
            detail = f"{len(config.notify.urls)} URL(s)" + ("" if ok else f"; number {sender.invalid} not understood")
            yield Check("notifications", ok, detail, "" if ok else "see Apprise's wiki for each service's URL form")
            continue
        yield _check_server(name, sender, probe)


def _check_server(name: str, server: MediaServer, probe: str) -> Check:
    try:
        unmapped = server.check(probe)
    except ServerError as error:
        return Check(name, False, str(error), "check its url and key, and that it runs")
    except Exception as error:  # noqa: BLE001 - whatever a server answers, doctor reports it
        return Check(name, False, f"could not be checked ({type(error).__name__})", "check its url, and that it runs")
    if unmapped:
        return Check(name, False, unmapped[0], f"set [{name}] path_map so the inbox maps into one of its libraries")
    return Check(name, True, "reachable, key accepted, the inbox is in one of its libraries")


def check_unit(config: Config, state_dir_set: bool) -> Iterator[Check]:
    installed = next((path for path in UNIT_PATHS if path.exists()), None)
    if installed is None:
        yield Check("systemd unit", False, "not installed", "see docs/service.md")
        return
    try:
        answer = subprocess.run(["systemctl", "is-enabled", "autokr"], capture_output=True, text=True, timeout=20)
        enabled = answer.stdout.strip() or "state unknown"
    except (OSError, subprocess.SubprocessError):
        enabled = "state unknown"
    if installed.read_text(encoding="utf-8") != render_unit(install_for(config, state_dir_set)):
        fix = f"autokr --config {config.path} systemd-unit | sudo tee {installed} && sudo systemctl daemon-reload"
        yield Check("systemd unit", False, f"{installed} ({enabled}) differs from `autokr systemd-unit`", fix)
    elif enabled != "enabled":
        yield Check("systemd unit", False, f"{installed} is {enabled}", "sudo systemctl enable --now autokr")
    else:
        yield Check("systemd unit", True, f"{installed}, enabled, as `autokr systemd-unit` renders it")


def check_cluster(config: Config) -> Iterator[Check]:
    """The Ray backend: the cluster answers, and has a GPU (asked through the bridge)."""
    if config.cluster.backend != "ray":
        return
    name = f"Ray cluster {config.cluster.address}"
    answer = ask_cluster(config)
    if answer.get("problem"):
        yield Check(name, False, str(answer["problem"]), "start it (ray start --head …) or fix [cluster] address", True)
    elif not answer.get("gpus"):
        yield Check(name, False, f"{answer['nodes']} node(s), no GPU", "start a node with ray start --num-gpus=N", True)
    else:
        yield Check(name, True, f"{answer['nodes']} node(s), {answer['gpus']} GPU(s), AutoKR {answer['version']}")


def check_llm(config: Config) -> Iterator[Check]:
    """The LLM engine's server: it answers, takes the key, has the model; and whether it gives
    the card back after each stage (Ollama is told to) or keeps the model loaded."""
    llm = config.llm
    if config.models.translator != LLM:
        return
    name = "LLM server"
    try:
        environment = stages.worker_environment(config, "translate")
        found = ask_worker(
            [sys.executable, "-m", "workers.llm_server", "--url", llm.url, "--model", llm.model], LLM_SECONDS,
            environment,
        )  # fmt: skip
    except (AutoKRError, OSError) as error:
        yield Check(name, False, f"{llm.url}: {printable(error)}", "check [llm] url and api_key_file", True)
        return
    problem, listed, ollama = found.get("problem"), found.get("models"), found.get("ollama")
    if problem:
        yield Check(name, False, f"{llm.url}: {problem}", "start the server, or fix [llm] url and api_key", True)
        return
    if isinstance(listed, list) and listed and llm.model not in listed:
        shown = ", ".join(str(model) for model in listed[:8])
        fix = f"set [llm] model to one of them, or fetch it there (ollama pull {llm.model})"
        yield Check(name, False, f"{llm.url} has no model {llm.model!r} (it has: {shown})", fix, True)
        return
    if ollama:
        held = f"Ollama {ollama}: told to unload it after each translate stage, so Whisper gets the card back"
    else:
        held = (
            "this server keeps the model loaded between stages: on a shared card, leave Whisper room "
            "beside it (docs/llm.md)"
        )
    yield Check(name, True, f"{llm.url}, {llm.model}: {held}")


def check_web(config: Config) -> Iterator[Check]:
    """``[web] listen``: the secret can be read, and the running daemon answers with it there."""
    web = config.web
    if not web.listen:
        return
    name = f"webhooks on {web.listen}"
    try:
        token = read_secret(web.token, web.token_file, "[web] token_file")
    except ConfigError as error:
        yield Check(name, False, "; ".join(error.problems), "fix [web] token_file or its permissions", True)
        return
    address = listen_address(web.listen)
    assert address is not None
    host, port = address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", "/api/v1/health", headers={"Authorization": f"Bearer {token}"})
        answer = connection.getresponse()
        answer.read(4096)
    except OSError as error:
        detail = f"nothing answers ({error.strerror or type(error).__name__})"
        yield Check(name, False, detail, "start the daemon (systemctl start autokr); its log says why it cannot listen")
        return
    finally:
        connection.close()
    if answer.status == 401:
        yield Check(name, False, "AutoKR answers but refuses the [web] token", "reload it: systemctl reload autokr")
        return
    ok = answer.status == 200
    detail = "AutoKR answers and takes the token" if ok else f"something else answers there (HTTP {answer.status})"
    yield Check(name, ok, detail, "" if ok else "choose another [web] listen address")


def run_checks(config: Config, state_dir_set: bool) -> list[Check]:
    checks = [*check_tools(config), *check_folders(config), *check_inotify(config), *check_cluster(config)]
    device, chosen = check_device(config)
    checks += [device, *check_models(config, chosen), *check_llm(config), *check_servers(config), *check_web(config)]
    checks += [*check_unit(config, state_dir_set)]
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{'✓' if check.ok else '✗'} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"    fix: {check.fix}")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> str:
    return json.dumps([asdict(check) for check in checks], ensure_ascii=False, indent=1)


def exit_status(checks: list[Check], strict: bool) -> int:
    failed = [check for check in checks if not check.ok]
    return 1 if any(check.blocking for check in failed) or (strict and failed) else 0
