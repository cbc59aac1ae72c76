"""The translate worker's LLM engine as a real subprocess against a loopback server that speaks
the OpenAI chat-completions API and misbehaves on request (testkit/chat_server.py): whatever it
does, each line ends Korean (by the LLM, or by the NLLB fallback, counted) or the video fails
with one sentence; never Japanese left, a blank line or two lines merged."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.chat_server import PHRASES, ChatFake
from testkit.require import skip_or_fail
from testkit.tiny_models import SENTENCE_PAIRS
from workers.llm import japanese_left

SOURCES = [source for source, _ in SENTENCE_PAIRS[:4]]


@pytest.fixture
def server():
    fake = ChatFake().start()
    yield fake
    fake.stop()


def translate(tmp_path: Path, server: ChatFake, *options: str, key: str = "", fallback: str = "none") -> dict:
    """Runs the worker on four lines; returns its last event, with its log and the lines written."""
    segments = [{"start": 2.0 * i, "end": 2.0 * i + 1.5, "text": text} for i, text in enumerate(SOURCES)]
    (tmp_path / "t.json").write_text(json.dumps({"language": "ja", "segments": segments}), encoding="utf-8")
    (tmp_path / "k.json").unlink(missing_ok=True)
    environment = {**os.environ, **({"AUTOKR_LLM_API_KEY": key} if key else {})}
    finished = subprocess.run(
        [sys.executable, "-m", "workers.translate", str(tmp_path / "t.json"), str(tmp_path / "k.json"),
         "--model", "llm", "--llm-url", server.url, "--llm-model", server.model, "--llm-window", "4",
         "--llm-timeout", "3", "--llm-fallback", fallback, "--device", "cpu",
         "--converted-dir", str(tmp_path / "converted"), *options],
        capture_output=True, text=True, timeout=300, env=environment,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    events = [json.loads(line[8:]) for line in finished.stdout.splitlines() if line.startswith("@autokr ")]
    event = events[-1]
    event["log"] = finished.stderr + finished.stdout
    if (tmp_path / "k.json").exists():
        event["lines"] = json.loads((tmp_path / "k.json").read_text(encoding="utf-8"))["segments"]
    return event


def all_korean(lines: list[dict]) -> bool:
    return len(lines) == len(SOURCES) and all(
        line["text"].strip() and not japanese_left(line["text"]) for line in lines
    )


def test_a_good_server_gives_each_line_its_korean_in_one_constrained_request(tmp_path, server):
    event = translate(tmp_path, server)
    assert event["event"] == "done" and event["engine"] == "llm (OpenAI-compatible server)"
    assert [line["text"] for line in event["lines"]] == [PHRASES[source] for source in SOURCES]
    assert [line["source_text"] for line in event["lines"]] == SOURCES  # one line a segment, none merged
    assert (event["fallback_lines"], event["requests"]) == (0, 1)
    request = server.requests[0]
    assert request["response_format"]["type"] == "json_schema" and request["temperature"] == 0
    assert "the server keeps it loaded" in event["log"]


@pytest.mark.parametrize("mode", ["drop", "merge", "invalid_json", "echo", "blank", "extra", "open_think", "huge"])
def test_a_bad_answer_is_asked_again_and_every_line_still_comes_from_the_llm(tmp_path, server, mode):
    server.script = [mode, mode]  # twice for the whole window: then halves, which it answers well
    event = translate(tmp_path, server)
    assert event["event"] == "done" and all_korean(event["lines"]), event["log"][-2000:]
    assert event["fallback_lines"] == 0 and event["requests"] == 4  # the window twice, then its two halves
    assert "could not be used" in event["log"]


def test_a_think_block_never_reaches_the_subtitles(tmp_path, server):
    server.mode = "think"
    event = translate(tmp_path, server)
    assert all_korean(event["lines"]) and not any("think" in line["text"] for line in event["lines"])
    assert event["requests"] == 1


def test_lines_the_llm_never_gives_are_translated_by_the_nllb_fallback_and_counted(tmp_path, server, tiny_nllb):
    server.mode = "echo"  # the Japanese back, every time
    event = translate(tmp_path, server, fallback=str(tiny_nllb))
    assert event["event"] == "done" and all_korean(event["lines"])
    assert [line["text"] for line in event["lines"]] == [target for _, target in SENTENCE_PAIRS[:4]]
    assert (event["fallback_lines"], event["fallback_model"]) == (4, str(tiny_nllb))


def test_without_a_fallback_such_a_video_fails_with_one_sentence_and_writes_nothing(tmp_path, server):
    server.mode = "echo"
    event = translate(tmp_path, server)
    assert (event["event"], event["permanent"]) == ("failed", False)
    assert event["reason"].startswith("the LLM gave no usable Korean for 4 line(s), the first 'こんにちは。'")
    assert "\n" not in event["reason"] and not (tmp_path / "k.json").exists()


def test_429_is_waited_out_as_retry_after_says_and_a_refused_schema_form_is_stepped_down(tmp_path, server):
    server.script = ["429", "no_schema"]
    started = time.monotonic()
    event = translate(tmp_path, server)
    assert event["event"] == "done" and all_korean(event["lines"])
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    forms = [request.get("response_format", {}).get("type") for request in server.requests]
    assert forms == ["json_schema", "json_schema", "json_object"]
    assert "refused the answer's schema (HTTP 400): asking with the schema as 'json_object'" in event["log"]
    # A server that takes neither form is asked for the JSON in words; the refusals are no failed tries.
    server.requests.clear()
    server.script = ["no_schema", "no_schema", "500", "500"]
    event = translate(tmp_path, server)
    assert event["event"] == "done" and all_korean(event["lines"])
    forms = [request.get("response_format", {}).get("type") for request in server.requests]
    assert forms == ["json_schema", "json_object", None, None, None]
    assert "asking with the JSON in words only" in event["log"]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("500", "kept failing (HTTP 500)"), ("hang", "did not answer (no whole answer within 1 s)"),
     ("trickle", "did not answer (no whole answer within 1 s)")],
)  # fmt: skip
def test_a_failing_hanging_or_trickling_server_fails_the_video_in_one_sentence(tmp_path, server, mode, reason):
    server.mode, server.hang_seconds = mode, 5
    started = time.monotonic()
    event = translate(tmp_path, server, "--llm-timeout", "1")
    assert (event["event"], event["permanent"]) == ("failed", False)
    assert event["reason"] == f"the LLM server at {server.url} {reason}; AutoKR tries the video again later"
    assert time.monotonic() - started < 60 and not (tmp_path / "k.json").exists()


def test_the_key_goes_in_the_header_only_and_a_wrong_one_is_said_without_it(tmp_path):
    server = ChatFake(key="sk-the-secret-123").start()
    try:
        event = translate(tmp_path, server, key="sk-the-secret-123")
        assert event["event"] == "done" and server.headers[-1]["Authorization"] == "Bearer sk-the-secret-123"
        assert "sk-the-secret" not in event["log"]
        event = translate(tmp_path, server, key="sk-wrong-456")
        assert event["reason"] == (
            f"the LLM server at {server.url} refused the key (HTTP 401); check [llm] api_key or api_key_file; "
            "AutoKR tries the video again later"
        )
        assert "sk-wrong" not in event["log"]
    finally:
        server.stop()


def test_ollama_is_told_to_unload_the_model_when_the_stage_ends(tmp_path):
    server = ChatFake(ollama=True).start()
    try:
        event = translate(tmp_path, server)
        assert event["engine"] == "llm (Ollama 0.12.6)"
        assert server.unloaded == [{"model": "tiny-chat", "keep_alive": 0}]
        assert "Ollama unloaded tiny-chat" in event["log"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def llama_server(tiny_chat, tmp_path_factory):
    """llama.cpp's server (llama-cpp-python's, built from source by ./setup.sh --dev) serving
    the tiny chat model written as a GGUF file: a real server, not a fake."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("gguf") is None:
        skip_or_fail("llama-cpp-python[server] and gguf are not installed (./setup.sh --dev installs them)")
    from testkit.gguf_model import LlamaServer, write_gguf

    server = LlamaServer(write_gguf(tiny_chat, tmp_path_factory.mktemp("gguf") / "tiny-chat.gguf")).start()
    yield server
    server.stop()


def test_a_real_llama_cpp_server_gives_each_line_its_korean_and_takes_the_schema_in_its_own_form(
    tmp_path, llama_server
):
    event = translate(tmp_path, llama_server, "--llm-timeout", "60")
    assert (event["event"], event["engine"]) == ("done", "llm (OpenAI-compatible server)"), event["log"][-2000:]
    assert [line["text"] for line in event["lines"]] == [target for _, target in SENTENCE_PAIRS[:4]]
    assert (event["fallback_lines"], event["requests"]) == (0, 1)
    # llama-cpp-python answers OpenAI's json_schema form with HTTP 500 (a validation error); the
    # schema then goes as {"type": "json_object", "schema": ...}, which it turns into a grammar.
    assert "refused the answer's schema (HTTP 500): asking with the schema as 'json_object'" in event["log"]
    assert "the server keeps it loaded" in event["log"]  # not Ollama: it cannot be told to unload
    # What `autokr doctor` asks of it: the model list, and that it is not Ollama.
    probed = subprocess.run(
        [sys.executable, "-m", "workers.llm_server", "--url", llama_server.url, "--model", llama_server.model],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(probed.stdout) == {
        "url": llama_server.url, "ollama": None, "models": ["tiny-chat"], "problem": None
    }  # fmt: skip


def run_local(
    tmp_path: Path, model: Path, sources: list[str], *options: str, fallback: str = "none"
) -> tuple[dict, str]:
    segments = [{"start": 2.0 * i, "end": 2.0 * i + 1.5, "text": text} for i, text in enumerate(sources)]
    (tmp_path / "t.json").write_text(json.dumps({"segments": segments}), encoding="utf-8")
    finished = subprocess.run(
        [sys.executable, *options, "-m", "workers.translate", str(tmp_path / "t.json"), str(tmp_path / "k.json"),
         "--model", "llm", "--llm-model", str(model), "--llm-window", "4", "--device", "cpu",
         "--converted-dir", str(tmp_path / "converted"), "--llm-fallback", fallback],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    events = [json.loads(line[8:]) for line in finished.stdout.splitlines() if line.startswith("@autokr ")]
    return events[-1], finished.stderr


def test_a_chat_model_trained_here_runs_in_the_worker_on_ctranslate2_converted_once(tmp_path, tiny_chat):
    event, log = run_local(tmp_path, tiny_chat, SOURCES)
    assert (event["event"], event["engine"], event["requests"], event["fallback_lines"]) == (
        "done", "llm ctranslate2 int8", 1, 0
    )  # fmt: skip
    lines = json.loads((tmp_path / "k.json").read_text(encoding="utf-8"))["segments"]
    assert [line["text"] for line in lines] == [target for _, target in SENTENCE_PAIRS[:4]]
    assert "converting" in log
    (folder,) = [p for p in (tmp_path / "converted").iterdir() if not p.name.startswith(".")]
    assert {"model.bin", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    # Converted: the next worker loads it as it is, without torch or transformers.
    event, log = run_local(tmp_path, tiny_chat, SOURCES, "-X", "importtime")
    imported = {line.rsplit("|", 1)[-1].strip() for line in log.splitlines() if "|" in line}
    assert event["event"] == "done" and "ctranslate2" in imported and not imported & {"torch", "transformers"}


def test_lines_a_local_model_cannot_give_go_to_nllb_after_the_model_is_unloaded(tmp_path, tiny_chat, tiny_nllb):
    # Two other lines: the tiny model knows only its four, so its answers fail the checks.
    sources = [source for source, _ in SENTENCE_PAIRS[4:6]]
    event, log = run_local(tmp_path, tiny_chat, sources, fallback=str(tiny_nllb))
    assert event["event"] == "done" and (event["fallback_lines"], event["fallback_model"]) == (2, str(tiny_nllb))
    lines = json.loads((tmp_path / "k.json").read_text(encoding="utf-8"))["segments"]
    assert [line["text"] for line in lines] == [target for _, target in SENTENCE_PAIRS[4:6]]
    assert (
        log.index("loading the fallback translator") > log.index("unloaded the LLM") > log.rindex("could not be used")
    )
