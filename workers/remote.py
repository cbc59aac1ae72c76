"""What runs on a Ray node for the Ray backend (``workers/cluster.py`` submits it).

``run_batch`` is one Ray task per batch, on a node with a free GPU (``num_gpus=1``, so Ray
gives it one card in ``CUDA_VISIBLE_DEVICES``; ``max_calls=1``, so the Ray worker process exits
after it and the card is free again). It writes the batch's inputs, fetched from Ray's object
store, to a temporary folder on the node and runs the very stage worker a local batch runs,
``python -m workers.<stage> --jobs …``, in a fresh process of its own. What that worker
prints travels back through an ``EventBox`` actor: its log lines, its progress and failed
events as they come, and each done event with the bytes of its output file, which the bridge
on the daemon's host puts in place before it passes the event on. Nothing of the node's
temporary folder outlives the task.

Ray must be importable where this module is imported (the ``ray`` extra); the local backend
never imports it.
"""

from __future__ import annotations

import collections
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Literal, TypedDict

import ray

from contract.files import write_atomically
from contract.manifest import ManifestItem, worker_command, write_manifest
from contract.protocol import PARENT_PID_ENV, JsonObject, MalformedEvent, decode_event

TAIL_LINES = 25


class Hello(TypedDict):
    """Where a task runs: the first thing it says."""

    node: str
    ip: str
    version: str
    gpus: str


Message = (
    tuple[Literal["hello"], Hello]
    | tuple[Literal["log"], str]
    | tuple[Literal["event"], str]
    | tuple[Literal["done"], str, bytes]
)
"""What a task says: where it runs, a log line, a protocol event line, or a ``done`` event's
line with the item's output file."""
Tell = Callable[[Message], None]


@ray.remote(num_cpus=0, max_restarts=0)
class EventBox:
    """Holds what a running task has to say until the bridge takes it (every half second)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def put(self, message: Message) -> None:
        self.messages.append(message)

    def take(self) -> list[Message]:
        taken, self.messages = self.messages, []
        return taken


def version() -> str:
    try:
        return metadata.version("autokr")
    except metadata.PackageNotFoundError:
        return "unknown"


@ray.remote(num_gpus=1, max_calls=1, max_retries=0)
def run_batch(
    stage: str,
    options: list[str],
    entries: list[JsonObject],
    inputs: list[ray.ObjectRef[bytes]],
    box: ray.actor.ActorHandle[EventBox],
) -> dict[str, int | str]:
    """Runs ``stage``'s worker on ``entries`` (manifest items whose ``input`` is in ``inputs``,
    object references in the same order); returns its exit status and the end of its log."""
    sent: list[ray.ObjectRef[None]] = []  # every put, so the task ends only once the box has them all

    def tell(message: Message) -> None:
        sent.append(box.put.remote(message))

    context = ray.get_runtime_context()
    node: Hello = {
        "node": context.get_node_id(), "ip": ray.util.get_node_ip_address(), "version": version(),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }  # fmt: skip
    tell(("hello", node))
    with tempfile.TemporaryDirectory(prefix="autokr-ray-") as folder:
        manifest = []
        for number, (entry, reference) in enumerate(zip(entries, inputs, strict=True)):
            item = ManifestItem.from_json(entry)
            local_input = Path(folder) / f"{number}-input{item.input.suffix}"
            write_atomically(local_input, ray.get(reference))
            manifest.append(item.moved(local_input, Path(folder) / f"{number}-output{item.output.suffix}"))
        manifest_path = Path(folder) / "manifest.json"
        write_manifest(manifest_path, manifest)
        command = worker_command(stage, manifest_path, options)
        environment = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
        )
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        reader = threading.Thread(target=_forward_log, args=(process.stderr, tail, tell), daemon=True)
        reader.start()
        outputs = {item.id: item.output for item in manifest}
        assert process.stdout is not None
        for raw in process.stdout:
            _forward_event(raw.decode("utf-8", "replace").rstrip("\n"), outputs, tell)
        returncode = process.wait()
        reader.join(timeout=5)
    ray.get(sent)
    return {"returncode": returncode, "tail": "\n".join(tail)}


def _forward_event(line: str, outputs: dict[str, Path], tell: Tell) -> None:
    try:
        event = decode_event(line)
    except MalformedEvent:
        event = None
    if event is None:
        if line.strip():
            tell(("log", line))
    elif event.kind == "done" and event.item in outputs:
        tell(("done", line, outputs[event.item].read_bytes()))
    else:
        tell(("event", line))


def _forward_log(stream: Iterable[bytes], tail: collections.deque[str], tell: Tell) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").split("\r")[-1].rstrip()
        if line:
            tail.append(line)
            tell(("log", line))
