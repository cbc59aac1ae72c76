"""The first hour (issue 21): a newcomer with no internet reaches a Korean subtitle with local
models given as ``~/…`` and as a path relative to the config; a model that cannot be had holds
the video with one sentence until it can; every message on the way is true and every command it
names exists. The real daemon and ``autokr`` command run as subprocesses."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from daemon.once import ProgressBar
from testkit.daemon import Daemon, autokr, drop, job_for, stopping, wait_finished, wait_for
from testkit.require import REPOSITORY

pytestmark = pytest.mark.slow
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing answers there


def _write(path: Path, inbox: Path, state: Path, whisper: str, translator: str) -> Path:
    path.write_text(
        "\n".join(
            [
                "[daemon]",
                f'inbox = ["{inbox}"]',
                f'state_dir = "{state}"',
                "stable_seconds = 0.5",
                "retry_backoff_seconds = 0.5",
                "[models]",
                f'whisper = "{whisper}"',
                f'translator = "{translator}"',
                'device = "cpu"',
                "vad = false",
                "filter_hallucinations = false",
                "",
            ]
        ),  # fmt: skip
        encoding="utf-8",
    )
    return path


def test_offline_with_models_under_home_and_beside_the_config_then_a_missing_model_waits_until_it_is_there(
    tmp_path, clip, tiny_whisper, tiny_nllb, ledger
):
    home, place = tmp_path / "home", tmp_path / "autokr"
    (home / "models").mkdir(parents=True)
    (place / "models").mkdir(parents=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copyfile(tiny_whisper, home / "models" / "whisper.pt")
    shutil.copytree(tiny_nllb, place / "models" / "nllb")
    config = _write(place / "autokr.toml", inbox, tmp_path / "state", "~/models/whisper.pt", "models/nllb")
    env = {**OFFLINE, "HOME": str(home)}
    daemon = Daemon(config, tmp_path / "daemon.log", env=env).start()
    with stopping(daemon):
        first = wait_finished(daemon, drop(clip, inbox, "First.mkv").name)
        doctor = subprocess.run(
            [sys.executable, "-m", "daemon", "--config", str(config), "doctor", "--json"],
            capture_output=True, text=True, env={**os.environ, **env}, timeout=240,
        )  # fmt: skip
        # Now the translator is a folder that is not there (yet).
        text = config.read_text(encoding="utf-8").replace('"models/nllb"', '"~/models/nllb-later"')
        config.write_text(text, encoding="utf-8")
        os.kill(daemon.pid, signal.SIGHUP)
        time.sleep(1.5)
        drop(clip, inbox, "Second.mkv")
        waiting = wait_for(
            lambda: (job := job_for(config, "Second.mkv")) and job["stage"] == "translate" and job["note"] and job,
            90,
            "Second.mkv to wait for its model",
        )
        time.sleep(3)  # it stays waiting: no attempt is counted, nothing fails
        still = job_for(config, "Second.mkv")
        shown = autokr(config, "status").stdout
        shutil.copytree(tiny_nllb, home / "models" / "nllb-later")
        os.kill(daemon.pid, signal.SIGHUP)
        second = wait_finished(daemon, "Second.mkv", 120)
    ledger.finished(first, "First.mkv (offline, models under ~ and beside the config)")
    ledger.finished(second, "Second.mkv (its model came later)")
    checks = {check["name"]: check for check in json.loads(doctor.stdout)}
    assert checks["whisper model"]["ok"] and checks["translator model"]["ok"], doctor.stdout
    assert checks["whisper model"]["detail"] == str(home / "models" / "whisper.pt")
    assert checks["translator model"]["detail"] == str(place / "models" / "nllb")
    note = waiting["note"]
    assert "[models] translator" in note and str(config) in note and str(home / "models" / "nllb-later") in note
    assert still["state"] == "queued" and still["attempts"] == 0 and still["note"] == note
    assert "waiting for the model" in shown
    assert second["state"] == "done" and second["note"] is None and second["runs"]["translate"] == 1
    assert "Traceback" not in daemon.log() and "failed" not in json.dumps([first, second])
    assert daemon.log().count("translate videos wait") == 1


def test_doctor_never_says_yes_to_a_model_a_worker_refuses(tmp_path, tiny_whisper_hf):
    """The same settings through ``autokr doctor``'s check and the transcribe worker's own
    model loading code (``workers.ct2_whisper.whisper_folder``)."""
    from contract.errors import PermanentError
    from daemon.doctor import check_models
    from workers.ct2_whisper import whisper_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    no_tokenizer = tmp_path / "ct2-without-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "model.bin").write_bytes(b"x")
    (no_tokenizer / "config.json").write_text("{}")
    cases = {"missing": tmp_path / "nowhere", "an empty folder": empty, "no tokenizer": no_tokenizer}
    cases["a Hugging Face folder"] = tiny_whisper_hf
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for what, folder in cases.items():
        config = load_config(_write(tmp_path / "autokr.toml", inbox, tmp_path / "state", str(folder), "auto"))
        (whisper_check, _) = check_models(config, {}, reachable=lambda url: False)
        try:
            whisper_folder(config.models.whisper, tmp_path / "models", tmp_path / "converted", "int8")
            refused = ""
        except PermanentError as error:
            refused = str(error)
        assert whisper_check.ok == (not refused), (what, whisper_check, refused)


def test_a_relative_model_path_is_relative_to_the_config_and_never_a_download(tmp_path, monkeypatch):
    (tmp_path / "conf" / "models" / "whisper-base-ct2").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = load_config(
        _write(tmp_path / "conf" / "autokr.toml", inbox, tmp_path / "s", "models/whisper-base-ct2", "./nllb-missing")
    )
    assert config.models.whisper == str(tmp_path / "conf" / "models" / "whisper-base-ct2")
    assert config.models.translator == str(tmp_path / "conf" / "nllb-missing")
    tilde = load_config(_write(tmp_path / "conf" / "autokr.toml", inbox, tmp_path / "s", "~/w", "facebook/nllb-x"))
    assert tilde.models.whisper == str(tmp_path / "home" / "w") and tilde.models.translator == "facebook/nllb-x"
    from workers.ct2 import nllb_folder

    started = time.monotonic()
    with pytest.raises(Exception, match="no such folder or file") as raised:
        nllb_folder(config.models.translator, tmp_path / "converted", "int8")
    assert time.monotonic() - started < 5 and "download" not in str(raised.value)


# --- Every command a message or the docs name exists in what setup installs -------------------

COMMAND = re.compile(r"`((?:hf|autokr|\.venv/bin/autokr|\.venv/bin/hf) [a-z][a-z-]*)")


def test_every_command_the_code_and_the_docs_name_exists():
    sources = [*REPOSITORY.glob("daemon/*.py"), *REPOSITORY.glob("workers/*.py"), *REPOSITORY.glob("contract/*.py")]
    sources += [REPOSITORY / "README.md", REPOSITORY / "config" / "autokr.toml", *REPOSITORY.glob("docs/*.md")]
    named = {match for path in sources for match in COMMAND.findall(path.read_text(encoding="utf-8"))}
    assert any(command.startswith("hf download") for command in named), named
    bin_folder = Path(sys.executable).parent
    for command in sorted(named):
        program, subcommand = command.split()
        answer = subprocess.run(
            [str(bin_folder / Path(program).name), subcommand, "--help"], capture_output=True, text=True, timeout=60
        )
        assert answer.returncode == 0, (command, answer.stderr[-500:])
    assert not any("huggingface-cli" in path.read_text(encoding="utf-8") for path in sources)


# --- CLI manners -------------------------------------------------------------------------------


def test_cli_manners_help_pipes_places_and_suggestions(tmp_path):
    bare = subprocess.run([sys.executable, "-m", "daemon"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and "usage: autokr" in bare.stdout and "status" in bare.stdout
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = _write(tmp_path / "autokr.toml", inbox, tmp_path / "state", "auto", "auto")
    from daemon.store import Store

    (tmp_path / "state").mkdir()
    with Store(tmp_path / "state" / "autokr.sqlite3") as store:
        for number in range(2000):
            store.add(f"{inbox}/Show - {number:04}.mkv", 1, 1)
    piped = subprocess.run(
        f"{sys.executable} -m daemon --config {config} status --json | head -c 100 > /dev/null",
        shell=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert piped.stderr == "", piped.stderr
    nowhere = subprocess.run(
        [sys.executable, "-m", "daemon", "status"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path / "nohome"), "AUTOKR_CONFIG": ""},
    )  # fmt: skip
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    for place in (tmp_path / "config" / "autokr.toml", tmp_path / "nohome" / ".config/autokr/autokr.toml"):
        assert str(place) in nowhere.stderr, nowhere.stderr
    assert "/etc/autokr/autokr.toml" in nowhere.stderr
    config.write_text(config.read_text().replace("stable_seconds", "stable_second"), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert "unknown key [daemon] stable_second (did you mean stable_seconds?)" in str(raised.value)
    shown = autokr(_write(config, inbox, tmp_path / "state", "auto", "auto"), "status").stdout
    assert shown.startswith("daemon: not running")


def test_a_log_line_never_shares_a_line_with_the_progress_bar():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar(screen)
    bar.show("transcribe", 42.0)
    bar.log_line("2026-12-04 03:06:11 INFO    loaded whisper model\n")
    bar.show("transcribe", 100.0)
    bar.finish("transcribe", 1.0)
    lines = screen.getvalue().split("\n")
    logged = next(line for line in lines if "loaded whisper model" in line)
    assert logged.rpartition("\r")[2].startswith("2026-12-04"), repr(logged)
    assert "%" not in logged.rpartition("\r")[2]


# --- status on a library: a summary first ---------------------------------------------------------


def test_status_on_twenty_thousand_videos_is_a_screenful_and_lists_on_request(tmp_path):
    from daemon.jobs import JobState
    from daemon.store import Store

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = _write(tmp_path / "autokr.toml", inbox, tmp_path / "state", "auto", "auto")
    (tmp_path / "state").mkdir()
    with Store(tmp_path / "state" / "autokr.sqlite3") as store:
        jobs = [store.add(f"{inbox}/Season {n // 100}/Show - {n:05}.mkv", 1, 1) for n in range(20_000)]
        for job in jobs[:3]:
            (claimed,) = store.claim([job])
            store.fail_stage(claimed, f"not a readable video ({job.id})", "", True, 3, 1)
        store.claim([jobs[3]])
    started = time.monotonic()
    summary = autokr(config, "status").stdout
    took = time.monotonic() - started
    lines = summary.splitlines()
    assert len(lines) <= 25, summary
    assert "20000 video(s): 1 running, 19996 queued, 3 failed" in summary
    assert "not a readable video (1)" in summary and "Show - 00003.mkv" in summary
    failed = autokr(config, "status", "--state", "failed").stdout
    assert len(failed.splitlines()) == 1 + 1 + 3 and "Show - 00002.mkv" in failed  # daemon line, header, 3 rows
    season = autokr(config, "status", str(inbox / "Season 7")).stdout
    assert len(season.splitlines()) == 2 + 100
    everything = json.loads(autokr(config, "status", "--json").stdout)
    assert len(everything) == 20_000 and everything[0]["state"] == JobState.FAILED.value
    print(f"autokr status on 20,000 jobs: {len(lines)} lines, {len(summary)} bytes, {took:.2f} s (one run)")
