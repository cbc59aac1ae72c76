"""AutoKR's one listening socket (``[web] listen``; none unless set): webhooks from Jellyfin,
Plex, Sonarr and Radarr (``daemon/hooks.py``), and a stream of status events (server-sent
events) for the status page.

It runs on a thread of its own, an asyncio loop speaking HTTP/1.1 through h11 (the small,
sans-I/O parser httpx and uvicorn are built on), so that every limit is AutoKR's to set and
hundreds of idle connections cost a few KB each. The daemon's loop never waits on it: a
webhook's result reaches it through a queue (``hooks``) and a wake-up, and ``publish`` hands an
event over without blocking.

Bounded in every way a client can stretch it:

- every request carries the secret (``Authorization: Bearer …``, or HTTP basic auth's
  password), compared in constant time; a wrong one is answered 401 and logged once per
  client address every ``FAILURE_LOG_SECONDS`` (with how many since), never with what it sent;
- a request's head and body must arrive within ``REQUEST_SECONDS`` (a slowloris client is cut
  off), the head within ``MAX_HEAD_BYTES`` and the body within ``MAX_BODY_BYTES`` (413);
- each client address may send ``RATE_PER_SECOND`` webhooks or wrong secrets a second (bursts
  of ``RATE_BURST``; 429 beyond), and at most ``MAX_CONNECTIONS`` connections are open (503);
- a webhook whose file must be looked up on Jellyfin or Plex waits for that call on a small
  pool of threads (``LOOKUP_THREADS``), never on the daemon's loop; a client that reads an
  event stream too slowly is dropped rather than buffered for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hmac
import json
import queue
import resource
import secrets
import threading
import time
from collections.abc import Callable

import h11
from loguru import logger

from contract.protocol import JsonObject, printable
from daemon import hooks
from daemon.api import Api, Reply
from daemon.config import Config, listen_address, read_secret
from daemon.errors import ConfigError
from daemon.hooks import Action, Answer, Hook, Resolver
from daemon.metrics import Metrics

REQUEST_SECONDS = 10.0
"""How long a request's head and body may take to arrive (``WebListener.request_seconds``)."""
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
"""Plex's multipart body carries a poster thumbnail besides its JSON: a few hundred KB."""
MAX_CONNECTIONS = 1000
RATE_PER_SECOND = 20.0
RATE_BURST = 60.0
LOOKUP_THREADS = 2
MAX_PENDING_LOOKUPS = 32
KEEPALIVE_SECONDS = 15.0
SUBSCRIBER_QUEUE = 256
FAILURE_LOG_SECONDS = 600.0
CLIENTS_TRACKED = 4096


class WebError(Exception):
    """The socket could not be opened: said in one sentence."""


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, now: float) -> None:
        self.tokens, self.at = RATE_BURST, now

    def take(self, now: float) -> bool:
        self.tokens = min(RATE_BURST, self.tokens + (now - self.at) * RATE_PER_SECOND)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _TooLarge(Exception):
    pass


class WebListener:
    def __init__(
        self,
        config: Config,
        hooks_queue: queue.SimpleQueue[Hook | Action],
        wake: threading.Event,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Raises ``ConfigError`` when the secret cannot be read."""
        address = listen_address(config.web.listen)
        assert address is not None  # checked when the config was read
        self.host, self.port = address
        self.hooks = hooks_queue
        self.wake = wake
        self.metrics = metrics
        self.monotonic = monotonic
        self.update(config)
        self.csrf = secrets.token_urlsafe(24)
        self.api = Api(config.database_path, config.daemon.state_dir, metrics, hooks_queue, wake, self.csrf)
        self.request_seconds = REQUEST_SECONDS
        self.connections = 0
        self._buckets: dict[str, _Bucket] = {}
        self._failures: dict[str, tuple[float, int]] = {}
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._lookups = concurrent.futures.ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="autokr-hook")
        self._pending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._last: dict[str, bytes] = {}
        self._shape = ""  # the last live event's counts and running set (daemon's thread)

    def update(self, config: Config) -> None:
        """The config now (a reload): its secret and how webhooks are resolved."""
        self.token = read_secret(config.web.token, config.web.token_file, "[web] token_file").encode()
        self.resolver = Resolver(config)

    # --- the daemon's side -------------------------------------------------------------------

    def start(self) -> None:
        """Opens the socket and serves on a thread of its own.

        Raises:
            WebError: the address cannot be listened on (in use, not this machine's).
        """
        _raise_open_files_limit()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self.port, backlog=512, limit=MAX_HEAD_BYTES * 4)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as error:
                failure.append(error)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="autokr-web", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            error = failure[0]
            reason = getattr(error, "strerror", None) or str(error)
            raise WebError(
                f"cannot listen on {self.host}:{self.port} ({reason}); choose another [web] listen address, "
                "or stop what holds it"
            )
        logger.info("listening on {}:{} (webhooks, status events)", self.host, self.port)

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for subscriber in list(self._subscribers):
                _offer(subscriber, None)
            await asyncio.sleep(0)
            loop.stop()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(5)
        self._lookups.shutdown(wait=True, cancel_futures=True)
        self.api.close()

    def publish(self, event: str, data: JsonObject) -> None:
        """Sends ``event`` to every status stream; returns at once (the daemon's loop calls it).
        The last event of each name is kept for streams that open later."""
        text = _event(event, json.dumps(data, ensure_ascii=False).encode())
        changed = event == "live" and _shape(data) != self._shape
        if changed:
            self._shape = _shape(data)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._fanout, event, text, changed)

    def _fanout(self, event: str, text: bytes, changed: bool = False) -> None:
        self._last[event] = text
        for subscriber in list(self._subscribers):
            _offer(subscriber, text)
        if changed and not self._subscribers:
            self._last.pop("status", None)  # out of date: a stream that opens later fetches it
        elif changed or (event == "live" and "status" not in self._last and self._subscribers):
            # The counts or the running set changed: the lists the page shows, pushed once to
            # every stream (built on a thread, at most twice a second) instead of fetched by each.
            asyncio.ensure_future(self._push_status())

    async def _push_status(self) -> None:
        if self._pending >= MAX_PENDING_LOOKUPS:
            return
        self._pending += 1
        try:
            body = await asyncio.get_running_loop().run_in_executor(self._lookups, self.api.status_bytes)
        except Exception as error:  # noqa: BLE001 - a store that cannot be read now: the next change tries again
            logger.debug("status for the stream not built: {}", error)
            return
        finally:
            self._pending -= 1
        self._fanout("status", _event("status", body))

    # --- the listener's side -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        self.connections += 1
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            if self.connections > MAX_CONNECTIONS:
                await self._send(writer, connection, Answer(503, {"error": "too many connections"}))
                return
            await self._handle(reader, writer, connection, client)
        except (ConnectionError, TimeoutError, h11.LocalProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: h11.Connection, client: str
    ) -> None:
        deadline = self.monotonic() + self.request_seconds
        try:
            request = await _next(reader, connection, deadline, self.monotonic)
            if not isinstance(request, h11.Request):
                return  # the client went away
            authorized = self._authorized(request, client)
            target = request.target.decode("latin-1").split("?", 1)[0]
            method = request.method.decode("latin-1")
            # Guesses of the secret and webhooks are rationed per address; reading status is not
            # (a status page opens a stream per browser tab, all from one proxy's address).
            if (not authorized or method == "POST") and not self._within_rate(client):
                self._count("rate_limited")
                await self._send(writer, connection, Answer(429, {"error": "too many requests; slow down"}))
                return
            if not authorized:
                self._count("unauthorized")
                refusal = Answer(401, {"error": "a valid token is needed"})
                await self._send(writer, connection, refusal, unauthorized=True)
                return
            if method == "GET" and target == "/api/v1/events":
                await self._stream(reader, writer, connection)
                return
            if method == "GET" and target == "/api/v1/health":
                await self._send(writer, connection, Answer(200, {"ok": True, "connections": self.connections}))
                return
            if not _same_origin(request):
                await self._send(writer, connection, Answer(403, {"error": "a request from another site"}))
                return
            if connection.client_is_waiting_for_100_continue:
                writer.write(connection.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            body = await _body(reader, connection, request, deadline, self.monotonic) if method == "POST" else b""
        except h11.RemoteProtocolError:
            await self._send(writer, connection, Answer(400, {"error": "not an HTTP request AutoKR understands"}))
            return
        except _TooLarge:
            await self._send(writer, connection, Answer(413, {"error": f"bodies are at most {MAX_BODY_BYTES} bytes"}))
            return
        except TimeoutError:
            self._count("timed_out")
            with contextlib.suppress(h11.LocalProtocolError):
                await self._send(writer, connection, Answer(408, {"error": "the request took too long"}))
            return
        if target.startswith("/hooks/"):
            service = target.removeprefix("/hooks/")
            if service not in hooks.SERVICES:
                answer = Answer(404, {"error": "no such address"})
            elif method != "POST":
                answer = Answer(405, {"error": "webhooks are POSTed"})
            else:
                answer = await self._resolve(service, body, _header(request, b"content-type"))
            await self._send(writer, connection, answer)
            return
        cached = self.api.fresh_status() if (method, target) == ("GET", "/api/v1/status") else None
        if cached is not None:
            await self._reply(writer, connection, Reply(200, cached))
            return
        if self._pending >= MAX_PENDING_LOOKUPS:
            await self._send(writer, connection, Answer(503, {"error": "busy; ask again later"}))
            return
        headers = {name: value.decode("latin-1") for name, value in request.headers}
        bearer = _header(request, b"authorization").strip().lower().startswith("bearer ")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(
                self._lookups, self.api.answer, method, request.target.decode("latin-1"), headers, bearer
            )
        finally:
            self._pending -= 1
        await self._reply(writer, connection, reply)

    async def _resolve(self, service: str, body: bytes, content_type: str) -> Answer:
        if self._pending >= MAX_PENDING_LOOKUPS:
            return Answer(503, {"error": "busy; send it again later"})
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            resolver = self.resolver
            answer, hook = await loop.run_in_executor(self._lookups, resolver.resolve, service, body, content_type)
        finally:
            self._pending -= 1
        if hook is None:
            self._count("refused" if answer.status >= 400 else "ignored")
            return answer
        self._count("accepted")
        logger.info("{} webhook: {} {}", service, hook.kind, printable(hook.path))
        self.hooks.put(hook)
        self.wake.set()
        return answer

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhooks.labels(outcome).inc()

    def _within_rate(self, client: str) -> bool:
        now = self.monotonic()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= CLIENTS_TRACKED:
                self._buckets.clear()
            bucket = self._buckets[client] = _Bucket(now)
        return bucket.take(now)

    def _authorized(self, request: h11.Request, client: str) -> bool:
        given = _credential(_header(request, b"authorization"))
        if given is not None and hmac.compare_digest(given, self.token):
            return True
        now = self.monotonic()
        logged_at, since = self._failures.get(client, (-FAILURE_LOG_SECONDS, 0))
        if now - logged_at >= FAILURE_LOG_SECONDS:
            more = f" ({since} more since the last one logged)" if since else ""
            logger.warning("refused a request from {} without the [web] token{}", client, more)
            self._failures[client] = (now, 0)
        else:
            self._failures[client] = (logged_at, since + 1)
        return False

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: h11.Connection
    ) -> None:
        """Server-sent events until the client goes: the last event of each name first, then
        each as it is published, a comment every ``KEEPALIVE_SECONDS`` so proxies keep it open."""
        subscriber: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]  # fmt: skip
        writer.write(connection.send(h11.Response(status_code=200, headers=headers)) or b"")
        for latest in self._last.values():
            subscriber.put_nowait(latest)
        self._subscribers.add(subscriber)
        gone = asyncio.ensure_future(reader.read(1))  # a client that closes (or sends anything) ends it
        try:
            while True:
                taken = asyncio.ensure_future(subscriber.get())
                done, _ = await asyncio.wait(
                    {taken, gone}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if gone in done:
                    taken.cancel()
                    return
                text: bytes | None = b": keep-alive\n\n"
                if taken in done:
                    text = taken.result()
                else:
                    taken.cancel()
                if text is None:  # too slow to keep up, or the listener stops
                    return
                writer.write(connection.send(h11.Data(data=text)) or b"")
                await asyncio.wait_for(writer.drain(), REQUEST_SECONDS)
        finally:
            self._subscribers.discard(subscriber)
            gone.cancel()

    async def _send(
        self, writer: asyncio.StreamWriter, connection: h11.Connection, answer: Answer, unauthorized: bool = False
    ) -> None:
        body = json.dumps(answer.body, ensure_ascii=False).encode()
        extra = ((b"www-authenticate", b'Basic realm="AutoKR", charset="UTF-8"'),) if unauthorized else ()
        await self._reply(writer, connection, Reply(answer.status, body, headers=extra))

    async def _reply(self, writer: asyncio.StreamWriter, connection: h11.Connection, reply: Reply) -> None:
        headers = [
            (b"content-type", reply.content_type.encode()), (b"content-length", str(len(reply.body)).encode()),
            (b"connection", b"close"), (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
            *reply.headers,
        ]  # fmt: skip
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        if connection.their_state == h11.IDLE:  # answered before a request was read (503)
            writer.write(b"HTTP/1.1 %d %s\r\n" % (reply.status, b"Error"))
            writer.write(b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + reply.body)
        else:
            writer.write(connection.send(h11.Response(status_code=reply.status, headers=headers)) or b"")
            writer.write(connection.send(h11.Data(data=reply.body)) or b"")
            writer.write(connection.send(h11.EndOfMessage()) or b"")
        await asyncio.wait_for(writer.drain(), REQUEST_SECONDS)


def _event(name: str, data: bytes) -> bytes:
    """One server-sent event (``data`` is one line of JSON)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _shape(live: JsonObject) -> str:
    """What in a ``live`` event changes the page's lists: the counts and which videos run where."""
    running = live.get("running")
    ids = (
        [(job.get("id"), job.get("stage")) for job in running if isinstance(job, dict)]
        if isinstance(running, list)
        else []
    )
    return json.dumps([live.get("counts"), ids, live.get("problems")], sort_keys=True)


def _offer(subscriber: asyncio.Queue[bytes | None], text: bytes | None) -> None:
    """Queues ``text`` for a stream; a stream too slow to keep up is ended instead."""
    try:
        subscriber.put_nowait(text)
    except asyncio.QueueFull:
        while not subscriber.empty():
            subscriber.get_nowait()
        subscriber.put_nowait(None)


async def _next(
    reader: asyncio.StreamReader, connection: h11.Connection, deadline: float, monotonic: Callable[[], float]
) -> object:
    """The next h11 event, reading as needed until ``deadline`` (``TimeoutError`` then)."""
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        left = deadline - monotonic()
        if left <= 0:
            raise TimeoutError
        data = await asyncio.wait_for(reader.read(64 * 1024), left)
        connection.receive_data(data)


async def _body(
    reader: asyncio.StreamReader,
    connection: h11.Connection,
    request: h11.Request,
    deadline: float,
    monotonic: Callable[[], float],
) -> bytes:
    declared = _header(request, b"content-length")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next(reader, connection, deadline, monotonic)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY_BYTES:
                raise _TooLarge
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:  # the client closed the connection mid-body
            raise ConnectionError


def _same_origin(request: h11.Request) -> bool:
    """A browser names the page a request comes from (``Origin``): it must be this listener's
    own address (``Host``), or a page elsewhere could make a logged-in browser act."""
    origin = _header(request, b"origin")
    if not origin or origin == "null" and request.method == b"GET":
        return True
    return origin.partition("://")[2].rstrip("/") == _header(request, b"host")


def _header(request: h11.Request, name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in request.headers if key == name), "")


def _credential(authorization: str) -> bytes | None:
    """The secret of ``Bearer TOKEN`` or of HTTP basic auth (its password; any user name)."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


def _raise_open_files_limit() -> None:
    """systemd gives services 1,024 open files; a few hundred idle streams need more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class WebSide:
    """The listener as the supervisor holds it: opened, reloaded, closed, and why it is not
    open when it should be (shown in ``STATUS=`` and ``autokr status``)."""

    def __init__(
        self, hooks_queue: queue.SimpleQueue[Hook | Action], wake: threading.Event, metrics: Metrics | None = None
    ) -> None:
        self.hooks = hooks_queue
        self.wake = wake
        self.metrics = metrics
        self.listener: WebListener | None = None
        self.listening = ""
        self.problem = ""

    def apply(self, config: Config) -> None:
        """Opens, keeps (with the new secret and maps) or closes the socket as ``config`` says."""
        if self.listener is not None and config.web.listen == self.listening:
            try:
                self.listener.update(config)
                self.problem = ""
            except ConfigError as error:
                self.problem = f"webhooks keep the old [web] token: {'; '.join(error.problems)}"
            return
        self.stop()
        if not config.web.listen:
            return
        try:
            listener = WebListener(config, self.hooks, self.wake, self.metrics)
            listener.start()
        except ConfigError as error:
            self.problem = f"not listening for webhooks: {'; '.join(error.problems)}"
        except WebError as error:
            self.problem = f"not listening for webhooks: {error}"
        else:
            self.listener, self.listening = listener, config.web.listen
            return
        logger.error("{}", self.problem)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.listener, self.listening, self.problem = None, "", ""

    def publish(self, event: str, data: JsonObject) -> None:
        if self.listener is not None:
            self.listener.publish(event, data)
