"""The status page, the JSON API (``/api/v1/…``) and ``/metrics``, as the listener serves them
(``daemon/web.py`` speaks HTTP and checks the token; this module answers). Everything is read
from the store through a read-only connection of its own, on the listener's lookup threads,
never on the daemon's loop; the two actions (retry, to the front) are handed to the loop as
``Action``s, which it carries out as ``autokr retry`` would.

The routes, their fields and the schema (``daemon/static/api-v1.schema.json``) are in
docs/web.md. A browser authenticates with HTTP basic auth (the ``[web]`` token as password),
which it then sends by itself; so an action from a page also needs the page's CSRF token in
``X-CSRF-Token`` (a client with ``Authorization: Bearer`` sends nothing by itself and needs none),
and a request whose ``Origin`` is another site is refused.
"""

from __future__ import annotations

import hmac
import json
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from contract.protocol import dumps_json, printable
from daemon import overview
from daemon.announcer import Outbox, describe_pending
from daemon.cluster import last_problem
from daemon.errors import JobNotFound, StoreError
from daemon.hooks import Action, Hook
from daemon.jobs import JobId, JobState
from daemon.metrics import Metrics
from daemon.status import read_problems
from daemon.store import Store

STATUS_CACHE_SECONDS = 0.5
"""A page per browser tab may ask at once: the document is built at most twice a second."""
_JOB = re.compile(r"^/api/v1/jobs/(\d{1,12})(?:/(retry|front))?$")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())


def _json(status: int, value: object) -> Reply:
    return Reply(status, dumps_json(value).encode("utf-8"))


class Api:
    def __init__(
        self,
        database: Path,
        state_dir: Path,
        metrics: Metrics | None,
        actions: queue.SimpleQueue[Hook | Action],
        wake: threading.Event,
        csrf: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.state_dir = state_dir
        self.metrics = metrics
        self.actions = actions
        self.wake = wake
        self.csrf = csrf
        self.clock = clock
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] = (0.0, b"")
        page = resources.files("daemon").joinpath("static/status.html").read_text(encoding="utf-8")
        self.page = page.replace("{{csrf}}", csrf).encode()
        if metrics is not None:
            metrics.watch_store(lambda: Store(database, writable=False))

    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.database, writable=False)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def answer(self, method: str, target: str, headers: dict[bytes, str], bearer: bool) -> Reply:
        """The reply to one authenticated request (called on a lookup thread)."""
        path, _, query = target.partition("?")
        try:
            with self._lock:
                return self._route(method, path, query, headers, bearer)
        except StoreError as error:
            return _json(503, {"error": printable(error)})

    def _route(self, method: str, path: str, query: str, headers: dict[bytes, str], bearer: bool) -> Reply:
        if method == "GET" and path in ("/", "/index.html"):
            headers_out = ((b"content-security-policy", CSP), (b"x-frame-options", b"DENY"))
            return Reply(200, self.page, "text/html; charset=utf-8", headers_out)
        if method == "GET" and path == "/metrics":
            if self.metrics is None:
                return _json(404, {"error": "no metrics here"})
            return Reply(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if method == "GET" and path == "/api/v1/schema":
            schema = resources.files("daemon").joinpath("static/api-v1.schema.json").read_bytes()
            return Reply(200, schema, "application/schema+json")
        if method == "GET" and path == "/api/v1/status":
            return Reply(200, self._status())
        if method == "GET" and path == "/api/v1/jobs":
            wanted = dict(part.partition("=")[::2] for part in query.split("&") if part).get("state")
            if wanted is not None and wanted not in {state.value for state in JobState}:
                return _json(400, {"error": f"state must be one of {', '.join(state.value for state in JobState)}"})
            store = self.store()
            jobs = store.select(JobState(wanted) if wanted else None, None)
            return _json(200, overview.public_jobs(store, jobs, self.clock()))
        found = _JOB.match(path)
        if found is None:
            return _json(404, {"error": "no such address"})
        store = self.store()
        try:
            job = store.get(JobId(int(found.group(1))))
        except JobNotFound:
            return _json(404, {"error": f"no job {found.group(1)}"})
        action = found.group(2)
        if action is None:
            if method != "GET":
                return _json(405, {"error": "GET a job; POST its /retry or /front"})
            return _json(200, overview.public_jobs(store, [job], self.clock())[0])
        if method != "POST":
            return _json(405, {"error": "actions are POSTed"})
        if not bearer and not hmac.compare_digest(headers.get(b"x-csrf-token", ""), self.csrf):
            return _json(403, {"error": "the page's CSRF token is missing or wrong: reload the page"})
        if action == "retry" and job.state not in (JobState.FAILED, JobState.DROPPED):
            return _json(409, {"error": f"job {job.id} is {job.state.value}, not failed"})
        if action == "front" and job.state != JobState.QUEUED:
            return _json(409, {"error": f"job {job.id} is {job.state.value}, not waiting"})
        self.actions.put(Action(action, job.id))
        self.wake.set()
        return _json(202, {"accepted": action, "id": job.id})

    def status_bytes(self) -> bytes:
        """The status document (on a lookup thread), for the stream."""
        with self._lock:
            return self._status()

    def fresh_status(self) -> bytes | None:
        """The status document when one built less than ``STATUS_CACHE_SECONDS`` ago is at hand:
        served on the listener's loop itself, without a thread (200 tabs asking at once)."""
        at, cached = self._cached
        return cached if cached and self.clock() - at < STATUS_CACHE_SECONDS else None

    def _status(self) -> bytes:
        now = self.clock()
        at, cached = self._cached
        if cached and now - at < STATUS_CACHE_SECONDS:
            return cached
        store = self.store()
        media = describe_pending(Outbox(store), now)
        problems = read_problems(self.state_dir)
        cluster = last_problem(self.state_dir)  # as autokr status says it
        document = overview.status_document(store, now, [*problems, *([cluster] if cluster else [])], media)
        body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        self._cached = (now, body)
        return body


CSP = (
    b"default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
