"""The daemon end to end with the LLM translation engine on a loopback OpenAI-compatible server
(testkit/chat_server.py): one Korean cue per segment, the series memory carried from episode
to episode, a person's glossary over it, and the key nowhere but in the request header."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pysubs2
import pytest

from testkit.chat_server import ChatFake
from testkit.daemon import Daemon, autokr, drop, rss_kb, status, stopping, wait_finished, write_config
from testkit.media import make_video
from testkit.tiny_models import build_tiny_chat_for
from workers.cues import Cue, over_reading_speed
from workers.llm import japanese_left

pytestmark = pytest.mark.slow
KEY = "sk-e2e-secret-4242"


@pytest.fixture
def server():
    fake = ChatFake(key=KEY, ollama=True).start()
    yield fake
    fake.stop()


def llm_config(place: dict[str, Path], whisper: Path, server: ChatFake, fallback: str = "none") -> Path:
    key_file = place["root"] / "llm.key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    llm = {"url": server.url, "model": server.model, "api_key_file": str(key_file), "fallback": fallback}
    return write_config(
        place["root"] / "autokr.toml", place["inbox"], place["root"] / "state", whisper, Path("llm"),
        sections={"llm": llm},
    )  # fmt: skip


def test_episodes_of_a_series_get_one_korean_cue_a_segment_and_share_their_names(place, tiny_whisper, server, tmp_path):
    config = llm_config(place, tiny_whisper, server)
    video = make_video(tmp_path / "clip.mkv", seconds=4)
    show = place["inbox"] / "Show"
    daemon = Daemon(config, place["root"] / "daemon.log").start()
    with stopping(daemon):
        first = drop(video, show / "Season 1", "Show - 01.mkv")
        job = wait_finished(daemon, "Show - 01.mkv")
        asked_first = len(server.requests)
        second = drop(video, show / "Season 2", "Show - 02.mkv")
        wait_finished(daemon, "Show - 02.mkv")
        asked_second = len(server.requests)
        (show / "autokr-glossary.txt").write_text("# names as the fans write them\nこんにちは = 반가워\n", "utf-8")
        third = drop(video, show / "Season 2", "Show - 03.mkv")
        wait_finished(daemon, "Show - 03.mkv")
        memory = autokr(config, "memory", str(show)).stdout
        shown = autokr(config, "status", "--json").stdout + autokr(config, "status", "--all").stdout
        doctor = autokr(config, "doctor", check=False).stdout

    transcript = json.loads((place["root"] / "state" / "work" / str(job["id"]) / "transcript.json").read_text())
    for path in (first, second, third):
        cues = pysubs2.load(str(path.with_name(path.stem + ".ko.srt")), encoding="utf-8")
        assert len(cues) >= len(transcript["segments"]) >= 1  # a long line may take two cues; none merged
        assert all(cue.plaintext.strip() and not japanese_left(cue.plaintext) for cue in cues)
    # Episode 1's model named こんにちは; episode 2 (another season of the same series) was given it.
    assert "glossary" not in server.asked(0)
    assert server.asked(asked_first)["glossary"] == {"こんにちは": "안녕"}
    assert "こんにちは = 안녕" in memory
    # The person's glossary wins over the memory, and the answer is checked to use it.
    assert server.asked(asked_second)["glossary"] == {"こんにちは": "반가워"}
    assert "반가워" in pysubs2.load(str(third.with_name("Show - 03.ko.srt")), encoding="utf-8")[0].plaintext
    # The key: in the request header, and nowhere a person or another user could read it.
    assert all(
        headers.get("Authorization") == f"Bearer {KEY}" for headers in server.headers if "Authorization" in headers
    )
    for text in (daemon.log(), shown, doctor, memory):
        assert KEY not in text
    assert "✓ LLM server" in doctor and "told to unload it after each translate stage" in doctor
    # Ollama was told to give the card back after each translate stage.
    assert len(server.unloaded) == 3 and all(call["keep_alive"] == 0 for call in server.unloaded)
    models = status(config)[0]["models"]
    assert models["translate_engine"] == "llm (Ollama 0.12.6)" and models["translate_model"] == "tiny-chat"


def test_a_person_corrects_the_memory_with_autokr_memory(place, tiny_whisper, server, tmp_path):
    config = llm_config(place, tiny_whisper, server)
    daemon = Daemon(config, place["root"] / "daemon.log").start()
    with stopping(daemon):
        drop(make_video(tmp_path / "clip.mkv", seconds=3), place["inbox"] / "Show", "Show - 01.mkv")
        wait_finished(daemon, "Show - 01.mkv")
    show = str(place["inbox"] / "Show")
    assert autokr(config, "memory").stdout.split() == ["1", show]
    assert autokr(config, "memory", show, "--set", "こんにちは=안녕하십니까").stdout == "こんにちは = 안녕하십니까\n"
    assert autokr(config, "memory", show, "--forget", "こんにちは").stdout == ""
    refused = autokr(config, "memory", "--set", "a=b", check=False)
    assert refused.returncode == 1 and "name the series folder" in refused.stderr


@pytest.fixture(scope="module")
def clip_and_chat(tmp_path_factory: pytest.TempPathFactory, tiny_whisper: Path) -> tuple[Path, Path, int]:
    """A clip, and a tiny chat model trained on the LLM engine's request for the lines the tiny
    Whisper hears in it (the workers run by hand, with the daemon's settings), each to be 안녕하세요."""
    work = tmp_path_factory.mktemp("llm-e2e")
    clip = make_video(work / "clip.mkv", seconds=4)
    for command in (
        ["workers.extract", str(clip), str(work / "audio.wav")],
        ["workers.transcribe", str(work / "audio.wav"), str(work / "t.json"), "--model", str(tiny_whisper),
         "--device", "cpu", "--no-vad", "--keep-hallucinations"],
    ):  # fmt: skip
        subprocess.run([sys.executable, "-m", *command], check=True, capture_output=True, timeout=300)
    segments = json.loads((work / "t.json").read_text(encoding="utf-8"))["segments"]
    window = [(segment["text"], segment["end"] - segment["start"], "안녕하세요.") for segment in segments]
    return clip, build_tiny_chat_for(work / "chat", [window]), len(segments)


def test_a_chat_model_in_the_worker_itself_gives_one_korean_cue_a_segment(
    place, tiny_whisper, tiny_nllb, clip_and_chat, ledger
):
    clip, chat, count = clip_and_chat
    llm = {"model": str(chat), "fallback": "none"}
    config = write_config(
        place["root"] / "autokr.toml", place["inbox"], place["root"] / "state", tiny_whisper, Path("llm"),
        sections={"llm": llm},
    )  # fmt: skip
    daemon = Daemon(config, place["root"] / "daemon.log").start()
    with stopping(daemon):
        video = drop(clip, place["inbox"] / "Show", "Show - 01.mkv")
        wait_finished(daemon, "Show - 01.mkv")
    cues = pysubs2.load(str(video.with_name("Show - 01.ko.srt")), encoding="utf-8")
    assert [cue.plaintext for cue in cues] == ["안녕하세요."] * count  # one a segment: none lost, merged or blank
    models = status(config)[0]["models"]
    assert models["translate_engine"] == "llm ctranslate2 int8" and "translate_fallback_lines" not in models
    ledger.finished(status(config)[0], "Show - 01.mkv")
    # The share of cues a viewer cannot finish (over 12 characters a second), this engine and NLLB.
    nllb_srt = place["root"] / "nllb.ko.srt"
    config_nllb = write_config(
        place["root"] / "nllb.toml", place["inbox"], place["root"] / "s2", tiny_whisper, tiny_nllb
    )
    autokr(config_nllb, "once", str(video), "-o", str(nllb_srt))
    shares = {}
    for engine, path in (("LLM", video.with_name("Show - 01.ko.srt")), ("NLLB", nllb_srt)):
        laid_out = [
            Cue(c.start / 1000, c.end / 1000, c.text.split("\\N")) for c in pysubs2.load(str(path), encoding="utf-8")
        ]
        shares[engine] = over_reading_speed(laid_out)
    ledger.report(
        f"cues over 12 characters a second (tiny models, one clip): LLM {shares['LLM']:.0%}, NLLB {shares['NLLB']:.0%}"
    )


@pytest.mark.parametrize(("mode", "reason"), [
    ("huge", "the LLM gave no usable Korean for"),
    ("hang", "did not answer (no whole answer within 1 s)"),
])  # fmt: skip
def test_a_hostile_server_fails_the_video_in_one_sentence_and_the_daemon_stays_small(
    place, tiny_whisper, tmp_path, mode, reason, ledger
):
    server = ChatFake(mode=mode, hang_seconds=5).start()
    try:
        llm = {"url": server.url, "model": server.model, "fallback": "none", "timeout_seconds": 1}
        config = write_config(
            place["root"] / "autokr.toml", place["inbox"], place["root"] / "state", tiny_whisper, Path("llm"),
            sections={"llm": llm}, max_attempts=1,
        )  # fmt: skip
        daemon = Daemon(config, place["root"] / "daemon.log").start()
        with stopping(daemon):
            before = rss_kb(daemon.pid)
            video = drop(make_video(tmp_path / "clip.mkv", seconds=3), place["inbox"] / "Show", "Show - 01.mkv")
            job = wait_finished(daemon, "Show - 01.mkv", states=("failed",))
            after = rss_kb(daemon.pid)
            assert daemon.running()
    finally:
        server.stop()
    ledger.fault()
    assert reason in job["error"] and "\n" not in job["error"] and "Traceback" not in job["error"]
    assert not video.with_name("Show - 01.ko.srt").exists()
    assert after - before < 8 * 1024, f"the daemon grew from {before} to {after} kB"  # 50 MB answers never reach it
