"""The LLM engine on a server that speaks the OpenAI chat-completions API (Ollama, llama.cpp's
``llama-server``, vLLM, LM Studio, a cloud endpoint), from the translate worker's own process.

Every call is bounded: one deadline for all of it (a server that trickles is cut off), at most
``MAX_ANSWER_BYTES`` read, redirects never followed (the key would go with them). A 429 or 503
is waited out as its ``Retry-After`` says (at most ``LONGEST_WAIT``); a server that cannot be
reached, times out or keeps failing ends the video's attempt with one sentence
(``ServerFailed``, retried later by the daemon), while an answer that is merely unusable goes
back to the protocol (``workers/llm.py``), which asks again. The key is sent only as the
``Authorization`` header and is never logged or put in an error.

Ollama, found by its ``/api/version``, is told to unload the model when the stage ends
(``keep_alive: 0`` on ``/api/generate``: its ``/v1`` has no such field), so Whisper gets the card
back. Another server keeps its model loaded: ``autokr doctor`` and docs/llm.md say so.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from contract.errors import TransientError
from workers.llm import AnswerProblem, Reply, Request, answer_schema, messages

MAX_ANSWER_BYTES = 1024 * 1024
LONGEST_WAIT = 60.0
TRIES = 4
PAUSE = 2.0
FORMATS = ("json_schema", "json_object")
"""How the answer's JSON schema is sent, in the order tried: OpenAI's ``json_schema`` (vLLM,
Ollama, llama.cpp's ``llama-server``, cloud APIs), then ``json_object`` with a ``schema``
(llama-cpp-python's server, which answers the first with HTTP 500; ``llama-server`` takes both),
then none: the JSON is asked for in words only, and checked as always."""


class ServerFailed(TransientError):
    """The server cannot translate now: the video's attempt fails with this sentence."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class ChatServer:
    def __init__(
        self,
        url: str,
        model: str,
        key: str = "",
        timeout: float = 120.0,
        max_tokens: int = 2048,
        log: Callable[[str], None] = lambda _: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.scheme, self.netloc, self.prefix = parts.scheme, parts.netloc, parts.path
        self.model, self.key, self.timeout, self.max_tokens = model, key, timeout, max_tokens
        self.log, self.sleep = log, sleep
        self.format: str | None = FORMATS[0]
        """How the answer's schema is sent now: stepped down when the server refuses a form."""
        self.ollama: str | None = None

    # --- the one HTTP call -------------------------------------------------------------------

    def _call(self, method: str, path: str, body: object = None) -> Answer:
        """One request with one deadline; raises OSError/HTTPException on any failure to talk."""
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        connection = kind(self.netloc, timeout=self.timeout)
        headers = {"Accept": "application/json", "User-Agent": "AutoKR"}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        expired = threading.Event()
        timer = threading.Timer(self.timeout, _shut, (connection, expired))
        timer.start()
        late = TimeoutError(f"no whole answer within {self.timeout:g} s")
        try:
            connection.request(method, path, data, headers)
            response = connection.getresponse()
            content = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise (late if expired.is_set() else OSError(_reason(error))) from None
        finally:
            timer.cancel()
            connection.close()
        if expired.is_set():  # the socket was shut mid-answer: what was read is cut short
            raise late
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, content)

    def get(self, path: str) -> Answer:
        """``GET`` of ``path`` below the server's URL (``/models``), bounded like every call."""
        return self._call("GET", f"{self.prefix}{path}")

    def _failed(self, what: str) -> ServerFailed:
        return ServerFailed(f"the LLM server at {self.url} {what}; AutoKR tries the video again later")

    # --- asking ------------------------------------------------------------------------------

    def ask(self, request: Request) -> Reply:
        """The model's answer to one window.

        Raises:
            AnswerProblem: the answer is unusable (too large, not a chat completion).
            ServerFailed: the server could not be reached or kept failing.
        """
        budget = sum(3 * line.budget + 24 for line in request.window) + 64
        body: dict[str, object] = {
            "model": self.model, "messages": messages(request), "temperature": 0,
            "max_tokens": min(self.max_tokens, budget), "stream": False,
        }  # fmt: skip
        attempt = 0
        while attempt < TRIES:
            attempt += 1
            if self.format is None:
                body.pop("response_format", None)
            else:
                body["response_format"] = _response_format(self.format, request)
            try:
                answer = self._call("POST", f"{self.prefix}/chat/completions", body)
            except OSError as error:
                if attempt == TRIES:
                    raise self._failed(f"did not answer ({error})") from None
                self.log(f"the LLM server did not answer ({error}); trying again in {PAUSE:g} s")
                self.sleep(PAUSE)
                continue
            if answer.status == 200:
                return _reply(answer.body)
            if self.format is not None and answer.status in (400, 422, 500) and _names_the_format(answer.body):
                following = FORMATS[FORMATS.index(self.format) + 1 :]
                self.format = following[0] if following else None
                how = f"the schema as {self.format!r}" if self.format else "the JSON in words only"
                self.log(f"the LLM server refused the answer's schema (HTTP {answer.status}): asking with {how}")
                attempt -= 1  # a refused form is not a failed try
                continue
            if answer.status in (401, 403):
                raise self._failed(f"refused the key (HTTP {answer.status}); check [llm] api_key or api_key_file")
            if answer.status == 404:
                raise self._failed(f"has no model {self.model!r} or no chat API (HTTP 404); check [llm] url and model")
            if 300 <= answer.status < 400:
                raise self._failed(f"redirected (HTTP {answer.status}); set [llm] url to the final address")
            if attempt == TRIES:
                raise self._failed(f"kept failing (HTTP {answer.status})")
            wait = _retry_after(answer.headers.get("retry-after")) if answer.status in (429, 503) else None
            wait = PAUSE if wait is None else min(wait, LONGEST_WAIT)
            self.log(f"the LLM server answered HTTP {answer.status}; trying again in {wait:g} s")
            self.sleep(wait)
        raise self._failed("kept refusing the request")

    # --- Ollama ------------------------------------------------------------------------------

    def find_ollama(self) -> str | None:
        """Ollama's version when the server is Ollama (it then can be told to unload), else None."""
        root = self.prefix.removesuffix("/v1")
        try:
            answer = self._call("GET", f"{root}/api/version")
            version = json.loads(answer.body).get("version") if answer.status == 200 else None
        except (OSError, ValueError, AttributeError):
            version = None
        self.ollama = str(version) if isinstance(version, str) else None
        return self.ollama

    def unload(self) -> bool:
        """Asks Ollama to free the model's memory now; whether it said yes."""
        if self.ollama is None:
            return False
        root = self.prefix.removesuffix("/v1")
        try:
            answer = self._call("POST", f"{root}/api/generate", {"model": self.model, "keep_alive": 0})
        except OSError as error:
            self.log(f"Ollama was not told to unload {self.model} ({error})")
            return False
        return answer.status == 200


def _response_format(form: str, request: Request) -> dict[str, object]:
    schema = answer_schema(request)
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "subtitle_lines", "schema": schema, "strict": True}}
    return {"type": "json_object", "schema": schema}


def _names_the_format(body: bytes) -> bool:
    """Whether a refusal is about ``response_format`` (the servers say so in their error text)."""
    return b"response_format" in body or b"json_schema" in body


def _shut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """The deadline passed: whatever the call is waiting for, it ends now."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "its name does not resolve"
    return " ".join(str(error).split())[:200] or type(error).__name__


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _reply(body: bytes) -> Reply:
    if len(body) > MAX_ANSWER_BYTES:
        raise AnswerProblem(f"it was larger than {MAX_ANSWER_BYTES // 1024 // 1024} MB.")
    try:
        document = json.loads(body)
        choice = document["choices"][0]
        content = choice["message"]["content"]
        usage = document.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError):
        raise AnswerProblem("it was not a chat completion.") from None
    if not isinstance(content, str):
        raise AnswerProblem("it had no text.")
    if choice.get("finish_reason") == "length":
        raise AnswerProblem("it ran out of tokens before the end; answer more briefly.")
    prompt, answer = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return Reply(content, prompt if isinstance(prompt, int) else 0, answer if isinstance(answer, int) else 0)


def probe(server: ChatServer) -> dict[str, object]:
    """What ``autokr doctor`` says of the server: Ollama or not, its models, or why not."""
    found: dict[str, object] = {"url": server.url, "ollama": server.find_ollama(), "models": None, "problem": None}
    try:
        answer = server.get("/models")
    except OSError as error:
        found["problem"] = f"it does not answer ({error})"
        return found
    if answer.status in (401, 403):
        found["problem"] = f"it refused the key (HTTP {answer.status})"
    elif answer.status != 200:
        found["problem"] = f"its model list answered HTTP {answer.status}"
    else:
        try:
            listed = json.loads(answer.body)["data"]
            found["models"] = [str(entry["id"]) for entry in listed if isinstance(entry, dict) and "id" in entry]
        except (ValueError, KeyError, TypeError):
            found["problem"] = "its model list is not the OpenAI API's"
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os
    import sys

    from contract.protocol import LLM_KEY_ENV

    parser = argparse.ArgumentParser(description="What an LLM server says of itself, as one JSON object.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--timeout", type=float, default=10.0)
    arguments = parser.parse_args(argv)
    server = ChatServer(arguments.url, arguments.model, os.environ.get(LLM_KEY_ENV, ""), arguments.timeout)
    print(json.dumps(probe(server), ensure_ascii=False))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
