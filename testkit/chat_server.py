"""A loopback server speaking the documented parts of the OpenAI chat-completions API that
AutoKR's LLM engine uses (``POST /v1/chat/completions``, ``GET /v1/models``, a Bearer key),
with Ollama's ``/api/version`` and ``/api/generate`` (``keep_alive: 0`` unloads) when asked.
No registry here ships a model server with weights, so this stands in for Ollama, llama.cpp's
``llama-server`` or a cloud endpoint. It records every request and listens on 127.0.0.1 only.

It "translates" from a phrase book (the tiny models' sentence pairs; any other line becomes
a fixed Korean line), answers the names it finds, honours the glossary it is sent, and can be
told to misbehave, per request (``script``, then ``mode``):

``good``, ``drop`` (the last line left out), ``merge`` (the first two lines in one, the second
missing), ``invalid_json``, ``echo`` (the Japanese given back), ``think`` (a ``<think>`` block
before the answer), ``open_think`` (reasoning that never closes), ``blank`` (an empty line),
``extra`` (a line not asked for), ``429`` (with ``Retry-After: 1``), ``500``, ``hang`` (no answer
for ``hang_seconds``), ``trickle`` (a byte a second), ``huge`` (a 50 MB answer), ``no_schema``
(400 for a request with ``response_format``, as a server without JSON-schema support says).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from testkit.servers import Loopback
from testkit.tiny_models import SENTENCE_PAIRS

PHRASES = dict(SENTENCE_PAIRS) | {"こんにちは": "안녕하세요"}
UNKNOWN = "번역된 대사입니다"
NAMES = {"田中": "다나카", "こんにちは": "안녕"}
"""Names and terms the fake model reports (こんにちは: what the tiny Whisper hears in every clip)."""


@dataclass
class ChatFake(Loopback):
    model: str = "tiny-chat"
    key: str = ""
    mode: str = "good"
    script: list[str] = field(default_factory=list)
    """Modes for the next requests, one each; then ``mode``."""
    ollama: bool = False
    hang_seconds: float = 30.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    """The JSON body of every chat request."""
    unloaded: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ChatFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                fake.headers.append(dict(self.headers))
                if self.path == "/api/version" and fake.ollama:
                    self._json(200, {"version": "0.12.6"})
                elif self.path == "/v1/models" and self._authorised():
                    self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                elif self.path == "/v1/models":
                    self._json(401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                fake.headers.append(dict(self.headers))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == "/api/generate" and fake.ollama:
                    fake.unloaded.append(body)
                    self._json(200, {"model": body.get("model"), "done": True, "done_reason": "unload"})
                    return
                if self.path != "/v1/chat/completions":
                    self._json(404, {"error": "not found"})
                    return
                if not self._authorised():
                    self._json(401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
                    return
                with fake._lock:
                    mode = fake.script.pop(0) if fake.script else fake.mode
                    fake.requests.append(body)
                fake._answer(self, mode, body)

            def _authorised(self) -> bool:
                return not fake.key or self.headers.get("Authorization") == f"Bearer {fake.key}"

            def _json(self, status: int, value: object, extra: dict[str, str] | None = None) -> None:
                data = json.dumps(value, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, content in (extra or {}).items():
                    self.send_header(name, content)
                self.end_headers()
                self.wfile.write(data)

        self._serve(Handler)
        return self

    # --- what the fake model says -----------------------------------------------------------

    def asked(self, index: int = -1) -> dict[str, Any]:
        """The JSON document of a request's user message (the window, context, glossary)."""
        content = self.requests[index]["messages"][-1]["content"]
        return dict(json.loads(content.split("\n\nYour last answer", 1)[0]))

    def _answer(self, handler: Any, mode: str, body: dict[str, Any]) -> None:
        if mode == "429":
            handler._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "1"})
            return
        if mode == "500":
            handler._json(500, {"error": {"message": "internal error"}})
            return
        if mode == "no_schema" and "response_format" in body:
            handler._json(400, {"error": {"message": "response_format json_schema is not supported"}})
            return
        if mode == "hang":
            time.sleep(self.hang_seconds)
            return
        content = self._content(mode, body)
        data = json.dumps(
            {"id": "chatcmpl-1", "object": "chat.completion", "model": self.model,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": len(json.dumps(body)) // 3, "completion_tokens": len(content) // 2}},
            ensure_ascii=False,
        ).encode("utf-8")  # fmt: skip
        if mode == "huge":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(50 * 1024 * 1024))
            handler.end_headers()
            try:
                for _ in range(50):
                    handler.wfile.write(b" " * (1024 * 1024))
            except OSError:
                pass
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if mode == "trickle":
            try:
                for byte in data:
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                    time.sleep(1.0)
            except OSError:
                pass
            return
        handler.wfile.write(data)

    def _content(self, mode: str, body: dict[str, Any]) -> str:
        content = body["messages"][-1]["content"]
        document = json.loads(content.split("\n\nYour last answer", 1)[0])
        glossary = document.get("glossary", {})
        lines, names = [], {}
        for line in document["translate"]:
            source = line["ja"]
            korean = PHRASES.get(source) or next((ko for ja, ko in PHRASES.items() if ja in source), UNKNOWN)
            for name, reading in NAMES.items():
                if name in source:
                    names[name] = glossary.get(name, reading)
                    if name in glossary:
                        korean = f"{glossary[name]} {korean}"
            lines.append({"id": line["id"], "ko": source if mode == "echo" else korean})
        if mode == "drop":
            lines = lines[:-1]
        elif mode == "merge" and len(lines) > 1:
            lines = [{"id": lines[0]["id"], "ko": lines[0]["ko"] + " " + lines[1]["ko"]}, *lines[2:]]
        elif mode == "blank":
            lines[0]["ko"] = ""
        elif mode == "extra":
            lines.append({"id": 99999, "ko": "덤"})
        answer = json.dumps({"lines": lines, "names": names}, ensure_ascii=False)
        if mode == "invalid_json":
            return answer[: len(answer) // 2]
        if mode == "think":
            return f"<think>The user wants Korean. 田中 is a name.</think>\n{answer}"
        if mode == "open_think":
            return f"<think>Let me think about {document['translate'][0]['ja']}..."
        return answer
