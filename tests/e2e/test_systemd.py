"""The shipped unit under a real systemd (booted as PID 1 of private namespaces, see
testkit/systemd_sandbox.py), driven with ``systemctl`` like a person would.

Each test installs ``systemd/autokr.service`` as shipped, plus a drop-in rendered by
``daemon.unit`` that points it at this test's venv, config and folders, and asserts what
``systemctl show``, ``journalctl`` and ``autokr status --json`` report. The service runs as
the unit's own ``User=autokr`` with every hardening line of the shipped unit in force.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysubs2
import pytest

from daemon import unit
from daemon.config import load_config
from testkit.daemon import drop, wait_for
from testkit.media import make_video
from testkit.require import REPOSITORY, skip_or_fail
from testkit.systemd_sandbox import SERVICE_UID, SystemdSandbox, unavailable_reason

pytestmark = pytest.mark.slow

UNIT = "autokr.service"
STAGES = ("extract", "transcribe", "translate", "subtitle")
WORKER_STOP_SECONDS = 5
STAGE_TEXT = re.compile(r'^(extracting|transcribing|translating|writing) "Episode\.mkv" \d+%')


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdSandbox]:
    reason = unavailable_reason()
    if reason:
        skip_or_fail(f"cannot boot a real systemd here: {reason}")
    base = tmp_path_factory.getbasetemp()
    keep = [REPOSITORY, base, Path(sys.prefix), Path(sys.base_prefix).resolve()]
    box = SystemdSandbox(keep, base / "systemd-console.log")
    box.boot()
    try:
        yield box
    finally:
        box.teardown()


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Long enough that the transcribe worker is still running when the test acts on it.
    return make_video(tmp_path_factory.mktemp("media") / "long.mkv", seconds=90)


def open_for_service(path: Path, up_to: Path, writable: bool = False) -> Path:
    """pytest makes its folders 0700; the service runs as another user. Opens ``path`` and
    its parents up to ``up_to`` (pytest's own folder) for reading, and hands an inbox to it."""
    for folder in [path, *path.parents]:
        folder.chmod(folder.stat().st_mode | 0o055)
        if folder == up_to or folder == Path("/"):
            break
    for child in path.rglob("*") if path.is_dir() else []:
        child.chmod(child.stat().st_mode | (0o055 if child.is_dir() else 0o044))
    if writable:
        os.chown(path, SERVICE_UID, SERVICE_UID)
    return path


class Service:
    """The unit inside the sandbox, with this test's folders."""

    def __init__(self, box: SystemdSandbox, root: Path, pytest_root: Path, whisper: Path, translator: Path) -> None:
        self.box = box
        self.pytest_root = pytest_root
        self.root = open_for_service(root, pytest_root)
        self.inbox = self.new_inbox("inbox")
        self.config = root / "autokr.toml"
        self.models = (whisper, translator)
        for model in self.models:
            open_for_service(model.parent, pytest_root)
        self.write_config([self.inbox])
        self.cursor = ""

    def new_inbox(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return open_for_service(path, self.pytest_root, writable=True)

    def write_config(self, inboxes: list[Path], text: str | None = None) -> None:
        whisper, translator = self.models
        text = text or "\n".join(
            [
                "[daemon]",
                f"inbox = {json.dumps([str(p) for p in inboxes])}",
                f'state_dir = "{unit.SERVICE_STATE_DIR}"',
                "stable_seconds = 0.5",
                "retry_backoff_seconds = 0.5",
                f"worker_stop_seconds = {WORKER_STOP_SECONDS}",
                "[models]",
                f"whisper = {json.dumps(str(whisper))}",
                f"translator = {json.dumps(str(translator))}",
                'device = "cpu"',
                "vad = false",  # tones and a random model: see fixtures.daemon.write_config
                "filter_hallucinations = false",
                "",
            ]
        )
        self.config.write_text(text, encoding="utf-8")
        self.config.chmod(0o644)

    def install(self, **extra: str) -> None:
        """The shipped unit plus a drop-in for this test (and ``extra`` [Service] settings)."""
        python = Path(sys.executable)
        read = [
            Path(sys.prefix),
            Path(sys.base_prefix).resolve(),
            REPOSITORY,
            self.root,
            *(m.parent for m in self.models),
        ]
        install = unit.Install(
            command=(str(python.parent / "autokr"),),
            config=self.config,
            write=(self.root,),  # the parent of every inbox, as README advises for a library
            read=tuple(dict.fromkeys(p for p in read if unit.hidden_from_service(p))),
            worker_stop_seconds=WORKER_STOP_SECONDS,
        )
        drop_in = unit.render_drop_in(install)
        drop_in += "RestartSec=1\n" + "".join(f"{key}={value}\n" for key, value in extra.items())
        self.box.write(f"/run/systemd/system/{UNIT}", (REPOSITORY / "systemd" / UNIT).read_text())
        self.box.write(f"/run/systemd/system/{UNIT}.d/test.conf", drop_in)
        self.box.systemctl("daemon-reload")
        self.box.systemctl("reset-failed", UNIT, check=False)
        self.cursor = self.box.journal_cursor()

    def uninstall(self) -> None:
        self.box.systemctl("stop", UNIT, check=False)
        self.box.systemctl("reset-failed", UNIT, check=False)
        self.box.run("rm", "-rf", f"/run/systemd/system/{UNIT}", f"/run/systemd/system/{UNIT}.d", "/var/lib/autokr")
        self.box.systemctl("daemon-reload")

    # --- what systemd and AutoKR report ---------------------------------------------------

    def show(self, *properties: str) -> dict[str, str]:
        return self.box.show(UNIT, *properties)

    def journal(self) -> str:
        """The unit's journal since this test installed it."""
        return self.box.journal(UNIT, after=self.cursor)

    def journal_debug(self) -> str:
        return self.box.run("journalctl", "--no-pager", "-o", "short-monotonic", check=False).stdout

    def status(self) -> list[dict[str, Any]]:
        command = [sys.executable, "-m", "daemon", "--config", str(self.config), "status", "--json"]
        return json.loads(self.box.run(*command).stdout)

    def job(self, name: str) -> dict[str, Any] | None:
        return next((job for job in self.status() if Path(job["path"]).name == name), None)

    def processes(self) -> dict[int, str]:
        """PID (inside the sandbox) → command line, for every process in the unit's cgroup."""
        group = self.show("ControlGroup")["ControlGroup"]
        if not group:
            return {}
        script = (
            "for root in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup;"
            f' do f="$root{group}/cgroup.procs";'
            ' if [ -r "$f" ]; then for p in $(cat "$f"); do echo "$p $(tr "\\0" " " < /proc/$p/cmdline)"; done; break;'
            " fi; done"
        )
        lines = self.box.run("sh", "-c", script, check=False).stdout.splitlines()
        return {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in lines if " " in line}

    def worker(self, stage: str) -> int | None:
        return next((pid for pid, line in self.processes().items() if f"-m workers.{stage} " in line), None)

    def pid_exists(self, pid: int) -> bool:
        return self.box.run("test", "-d", f"/proc/{pid}", check=False).returncode == 0

    def wait_done(self, name: str, timeout: float = 240) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job(name)
            if job and job["state"] == "failed":
                raise AssertionError(f"{name} failed: {job['error']}\n{job['stderr_tail']}\n{self.journal()[-3000:]}")
            return job if job and job["state"] == "done" else None

        return wait_for(finished, timeout, f"{name} to be done", interval=0.5)


@pytest.fixture
def service(sandbox, tmp_path, tmp_path_factory, tiny_whisper, tiny_nllb) -> Iterator[Service]:
    installed = Service(sandbox, tmp_path, tmp_path_factory.getbasetemp().parent, tiny_whisper, tiny_nllb)
    installed.install()
    try:
        yield installed
    finally:
        installed.uninstall()


def test_start_returns_once_ready_with_a_status_text(service):
    service.box.systemctl("start", UNIT)  # Type=notify: returns after READY=1
    shown = service.show("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running")
    assert shown["StatusText"] == "idle"
    assert shown["NRestarts"] == "0"
    owner = service.box.run("ps", "-o", "user=", "-p", shown["MainPID"]).stdout.strip()
    assert owner == "autokr"  # User= of the shipped unit
    journal = service.journal()
    assert "ready: idle" in journal
    assert "AutoKR" in journal and "starting" in journal, service.journal_debug()[-4000:]
    assert service.status() == []  # the database exists, migrated, in StateDirectory=


def test_a_dropped_video_gets_korean_subtitles_and_the_status_shows_the_stage(service, tone_video):
    service.box.systemctl("start", UNIT)
    video = drop(tone_video, service.inbox, "Episode.mkv")
    seen: set[str] = set()

    def finished() -> dict[str, Any] | None:
        seen.add(service.show("StatusText")["StatusText"])
        job = service.job("Episode.mkv")
        return job if job and job["state"] in ("done", "failed") else None

    job = wait_for(finished, 240, "the video to be processed", interval=0.1)
    assert job["state"] == "done", f"{job}\n{service.journal()[-3000:]}"
    assert job["runs"] == {stage: 1 for stage in STAGES}
    assert any(STAGE_TEXT.match(text) for text in seen), seen
    subtitle = video.with_name("Episode.ko.srt")
    assert pysubs2.load(str(subtitle), encoding="utf-8").events
    assert subtitle.stat().st_uid == SERVICE_UID
    assert subtitle.stat().st_mode & 0o777 == 0o644  # UMask=0022: the media server can read it
    assert wait_for(lambda: service.show("StatusText")["StatusText"] == "idle · 1 done", 10, "the idle status")


def test_kill_9_of_the_daemon_restarts_it_and_the_job_resumes_at_its_stage(service, long_video):
    service.box.systemctl("start", UNIT)
    old_main = int(service.show("MainPID")["MainPID"])
    drop(long_video, service.inbox, "Episode.mkv")
    worker = wait_for(lambda: service.worker("transcribe"), 120, "the transcribe worker", interval=0.05)
    service.box.run("kill", "-9", str(old_main))

    wait_for(lambda: service.show("NRestarts")["NRestarts"] == "1", 30, "systemd to restart the service")
    wait_for(lambda: service.show("ActiveState")["ActiveState"] == "active", 30, "the service to be active again")
    assert int(service.show("MainPID")["MainPID"]) != old_main
    assert not service.pid_exists(worker), "the old daemon's worker is still running"
    assert worker not in service.processes()
    job = service.wait_done("Episode.mkv")
    assert job["runs"] == {"extract": 1, "transcribe": 2, "translate": 1, "subtitle": 1}
    assert service.show("NRestarts")["NRestarts"] == "1"
    assert "resuming" in service.journal()


def test_stop_while_a_worker_runs_is_polite_and_start_resumes_at_that_stage(service, long_video):
    service.box.systemctl("start", UNIT)
    drop(long_video, service.inbox, "Episode.mkv")
    worker = wait_for(lambda: service.worker("transcribe"), 120, "the transcribe worker", interval=0.05)
    timeout = float(service.show("TimeoutStopUSec")["TimeoutStopUSec"].rstrip("s"))
    started = time.monotonic()
    service.box.systemctl("stop", UNIT)
    took = time.monotonic() - started
    shown = service.show("ActiveState", "Result", "ExecMainStatus")
    assert shown["ActiveState"] == "inactive"
    assert took < timeout, f"stop took {took:.1f} s, TimeoutStopSec is {timeout:.0f} s"
    assert (shown["Result"], shown["ExecMainStatus"]) == ("success", "0")  # not killed: a clean exit
    assert not service.pid_exists(worker)
    assert service.processes() == {}
    job = service.job("Episode.mkv")
    assert job is not None and (job["state"], job["stage"]) == ("queued", "transcribe")
    assert "stopped" in service.journal()

    service.box.systemctl("start", UNIT)
    job = service.wait_done("Episode.mkv")
    assert job["runs"] == {"extract": 1, "transcribe": 2, "translate": 1, "subtitle": 1}


def test_a_folder_the_service_user_cannot_write_fails_clearly_until_fixed(service, tone_video):
    service.box.systemctl("start", UNIT)
    locked = service.root / "inbox" / "Not ours"
    locked.mkdir()
    locked.chmod(0o755)  # root's folder: the service user can read the video, not write beside it
    video = drop(tone_video, locked, "Episode.mkv")
    failed = wait_for(
        lambda: (job := service.job("Episode.mkv")) and job["state"] == "failed" and job, 240, "the job to fail"
    )
    # Said before any stage runs (reliability round 3, item 19), naming the folder, not a temporary file.
    assert failed["stage"] == "extract" and failed["runs"] == {}
    assert failed["error"] == f"cannot write subtitles beside it: {locked} is not writable by the user AutoKR runs as"
    assert list(locked.iterdir()) == [video]  # no partial subtitle, no temporary file
    assert service.show("ActiveState")["ActiveState"] == "active"
    os.chown(locked, SERVICE_UID, SERVICE_UID)  # what the README tells the user to do
    command = [sys.executable, "-m", "daemon", "--config", str(service.config), "retry", str(failed["id"])]
    service.box.run(*command)
    service.wait_done("Episode.mkv")
    assert video.with_name("Episode.ko.srt").exists()


def test_reload_applies_a_new_inbox_and_keeps_running_on_a_broken_config(service, tone_video):
    service.box.systemctl("start", UNIT)
    main = service.show("MainPID")["MainPID"]
    second = service.new_inbox("second inbox")
    service.write_config([service.inbox, second])
    service.box.systemctl("reload", UNIT)
    assert "configuration reloaded" in service.journal()
    video = drop(tone_video, second, "Episode.mkv")
    job = service.wait_done("Episode.mkv")
    assert Path(job["path"]) == video
    assert video.with_name("Episode.ko.srt").exists()

    service.write_config([], text="[daemon]\ninbox = 5\nstable_seconds = -1\n")
    service.box.systemctl("reload", UNIT)
    shown = service.show("ActiveState", "MainPID", "StatusText", "NRestarts")
    assert (shown["ActiveState"], shown["MainPID"], shown["NRestarts"]) == ("active", main, "0")
    assert shown["StatusText"].startswith("config reload failed, running on the old one")
    time.sleep(2)  # and it stays there, not overwritten by the next status update
    assert service.show("StatusText")["StatusText"].startswith("config reload failed")
    journal = service.journal()
    assert "reload failed, keeping the old configuration" in journal
    assert "[daemon] inbox must be a list of path strings" in journal
    assert "[daemon] stable_seconds must be a number from 0 to 86400, not -1.0" in journal


def test_a_wedged_main_loop_is_killed_by_the_watchdog_and_restarted(service):
    service.install(Environment="AUTOKR_DEBUG_STALL_AFTER=2", WatchdogSec="4")
    service.box.systemctl("start", UNIT)
    first = service.show("MainPID")["MainPID"]
    wait_for(lambda: int(service.show("NRestarts")["NRestarts"]) >= 1, 60, "the watchdog to restart the service")
    journal = service.journal()
    assert "the main loop hangs now" in journal
    assert f"{UNIT}: Watchdog timeout" in service.journal()  # systemd's own line about the unit
    wait_for(lambda: service.show("ActiveState")["ActiveState"] == "active", 30, "the restarted service")
    assert service.show("MainPID")["MainPID"] != first


def test_a_unit_rendered_for_models_under_a_home_folder_binds_them_and_the_service_loads_them(
    service, tone_video, tiny_whisper, tiny_nllb, monkeypatch
):
    """The first hour (issue 21): models kept under the person's home, written with ``~`` in
    the config, reach the service through exactly what ``autokr systemd-unit`` renders."""
    home = Path("/home/autokr-first-hour")
    shutil.rmtree(home, ignore_errors=True)
    (home / "models").mkdir(parents=True)
    try:
        shutil.copyfile(tiny_whisper, home / "models" / "whisper.pt")
        shutil.copytree(tiny_nllb, home / "models" / "nllb")
        for path in [home, *home.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        text = service.config.read_text(encoding="utf-8")
        text = text.replace(json.dumps(str(tiny_whisper)), '"~/models/whisper.pt"')
        text = text.replace(json.dumps(str(tiny_nllb)), '"~/models/nllb"')
        service.config.write_text(text, encoding="utf-8")
        monkeypatch.setenv("HOME", str(home))
        config = load_config(service.config, need_inbox=False, need_state_dir=False)
        rendered = unit.render_drop_in(unit.install_for(config, state_dir_set=True))
        for line in (
            "ProtectHome=tmpfs",
            f"BindReadOnlyPaths={home}/models/whisper.pt",
            f"BindReadOnlyPaths={home}/models/nllb",
            f"Environment=HOME={home}",
        ):
            assert line in rendered.splitlines(), rendered
        if unit.hidden_from_service(unit.code_root()):  # a checkout in a home folder or /tmp: its code too
            assert f"BindReadOnlyPaths={unit.code_root()}" in rendered.splitlines(), rendered
        service.box.write(f"/run/systemd/system/{UNIT}.d/test.conf", rendered + "RestartSec=1\n")
        service.box.systemctl("daemon-reload")
        service.box.systemctl("start", UNIT)
        drop(tone_video, service.inbox, "Episode.mkv")
        job = service.wait_done("Episode.mkv")
        assert job["models"]["transcribe_model"] == str(home / "models" / "whisper.pt")
        assert job["models"]["translate_model"] == str(home / "models" / "nllb")
        assert "Traceback" not in service.journal()
    finally:
        shutil.rmtree(home, ignore_errors=True)
