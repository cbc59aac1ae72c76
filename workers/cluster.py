"""The Ray backend's bridge: one cohort of a model stage run as a Ray task, seen by the daemon as
an ordinary worker.

    python -m workers.cluster --address ray://head:10001 --stage transcribe --jobs MANIFEST -- OPTIONS
    python -m workers.cluster --address ray://head:10001 --count

The daemon starts it where it would start ``python -m workers.<stage>``, with the same manifest
and the stage worker's own options after ``--``. It connects to the cluster as a Ray driver,
puts each video's input (the WAV, the transcript JSON) in Ray's object store, submits one
``workers.remote.run_batch`` task for the batch, and speaks ``contract.protocol`` on stdout from
what the task reports: progress and failures as they come, and each finished output written
here, atomically, before its ``done`` event (so no shared file system is needed, and the
daemon's SQLite stays the one record). ``--count`` prints the cluster's GPUs and nodes as JSON.

Exit statuses: the remote worker's own (0, or ``EXIT_OUT_OF_MEMORY`` …); ``EXIT_CLUSTER_UNREACHABLE``
when the cluster cannot be reached (the daemon then keeps the cohort waiting and pauses Ray work).
A node that dies mid-task, or a task that raises, is a ``failed`` event (to be retried) for each
video it had not finished. SIGTERM (the daemon stopping it, or dying: ``die_with_parent``)
cancels the task, which ends the worker on the node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from contract.files import describe_os_error, write_atomically
from contract.manifest import ManifestItem
from contract.protocol import EXIT_CLUSTER_UNREACHABLE, JsonObject, MalformedEvent, decode_event, encode_event
from workers.common import die_with_parent, emit, items_from_arguments, log

if TYPE_CHECKING:  # Ray is imported when a task runs: ``autokr`` without Ray installed still starts
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from workers.remote import Message

CONNECT_SECONDS = 75.0  # ray.init retries for minutes against a dead address: bounded here
# Ray Client's server on the head sometimes loses the process it starts for a new client (a gRPC
# poller race in its fork, ray-project/ray#63202: "Initialization failure from server" after
# 30 s); a second try then usually gets through.
CLIENT_FLAKE = "Initialization failure from server"
PROBE_SECONDS = 5.0
POLL_SECONDS = 0.5
WAITING_BEAT_SECONDS = 5.0  # while the task waits for a GPU: a sign of life for the hang guard


class ClusterUnreachable(Exception):
    pass


def probe(address: str) -> None:
    """A TCP connection to ``host:port`` (or ``ray://host:port``), so that a cluster that is down
    is told in seconds; ``auto`` (a node on this machine) is left to Ray.

    Raises:
        ClusterUnreachable: nothing answers there.
    """
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS):
            pass
    except TimeoutError:
        raise ClusterUnreachable(f"no answer within {PROBE_SECONDS:.0f} s") from None
    except OSError as error:  # "connection refused", "no route to host", a name that does not resolve
        raise ClusterUnreachable((error.strerror or str(error)).lower()) from None
    except ValueError:
        raise ClusterUnreachable(f"{address} is not host:port") from None


def connect(address: str) -> None:
    """Connects this process to the cluster as a Ray driver.

    Raises:
        ClusterUnreachable: no cluster answers at ``address``.
    """
    probe(address)
    import ray

    def give_up() -> None:
        log(f"no answer from the Ray cluster at {address} within {CONNECT_SECONDS:.0f} s")
        os._exit(EXIT_CLUSTER_UNREACHABLE)

    watchdog = threading.Timer(CONNECT_SECONDS, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            ray.init(address=address, namespace="autokr", logging_level=logging.ERROR, log_to_driver=False)
        except ConnectionError as error:
            if CLIENT_FLAKE not in str(error):
                raise
            log(f"Ray Client at {address} failed to start a session ({CLIENT_FLAKE}): trying once more")
            ray.init(address=address, namespace="autokr", logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterUnreachable(" ".join(str(error).split())[:300] or type(error).__name__) from None
    finally:
        watchdog.cancel()
    signal.signal(signal.SIGTERM, _stop)  # Ray's own handler dumps a stack; ours cancels the task


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def count() -> dict[str, int | str]:
    import ray

    from workers.remote import version

    alive = [node for node in ray.nodes() if node.get("Alive")]
    return {"gpus": cluster_gpus(), "nodes": len(alive), "version": version()}


class RayTask:
    """One cohort as a Ray task: its inputs sent, its messages turned into protocol events."""

    def __init__(self, address: str, stage: str, options: list[str], items: list[ManifestItem]) -> None:
        self.address = address
        self.stage = stage
        self.options = options
        self.items = {item.id: item for item in items}
        self.reported: set[str] = set()
        self.where = "a Ray node"
        self.node = "a Ray node"
        self.started = False  # the task has said hello: it has a GPU and runs
        self.waiting_said = False

    def run(self) -> int:
        import ray
        from ray.exceptions import GetTimeoutError, RayError, RayTaskError

        from workers.remote import EventBox, run_batch

        entries, inputs = self._send_inputs()
        if not entries:
            return 0
        box = EventBox.options(scheduling_strategy=_beside_the_driver()).remote()  # type: ignore[attr-defined]
        task = run_batch.remote(self.stage, self.options, entries, inputs, box)
        finished: list[ray.ObjectRef[dict[str, int | str]]] = []
        beat = time.monotonic()
        try:
            while not finished:
                finished, _ = ray.wait([task], timeout=POLL_SECONDS)
                for message in ray.get(box.take.remote(), timeout=60):
                    self._handle(message)
                if not self.started and not finished and time.monotonic() - beat >= WAITING_BEAT_SECONDS:
                    beat = time.monotonic()
                    self._still_waiting()
            result = ray.get(task)
        except RayTaskError as error:
            self._fail_the_rest(f"the {self.stage} task failed on {self.where}: {_first_line(error)}")
            return 0
        except (RayError, GetTimeoutError) as error:
            self._fail_the_rest(
                f"{self.where} that ran the {self.stage} worker died or lost contact "
                f"({type(error).__name__}); it is tried again"
            )
            return 0
        except VersionMismatch as error:
            self._fail_the_rest(str(error))
            return 0
        except NoGpu as error:
            log(f"cannot use the Ray cluster at {self.address}: {error}")
            return EXIT_CLUSTER_UNREACHABLE
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    ray.cancel(task, force=True)
            with contextlib.suppress(Exception):
                ray.kill(box)
        returncode = int(result["returncode"])
        return 128 - returncode if returncode < 0 else returncode  # killed by a signal: as a shell says it

    def _send_inputs(self) -> tuple[list[JsonObject], list[ray.ObjectRef[bytes]]]:
        import ray

        entries, inputs = [], []
        for item in self.items.values():
            try:
                data = item.input.read_bytes()
            except OSError as error:
                self._report("failed", item.id, reason=describe_os_error(error, item.input), permanent=False)
                continue
            inputs.append(ray.put(data))
            del data
            entries.append(item.to_json())
        return entries, inputs

    def _still_waiting(self) -> None:
        """The task waits for a free GPU (other tasks, another user of the cluster, a node
        that died): a progress event of 0 for each video tells the daemon's hang guard that
        this is waiting, not hanging. A cluster left with no GPU at all pauses Ray work instead.

        Raises:
            NoGpu: no node with a GPU is left.
        """
        gpus = cluster_gpus()
        if gpus < 1:
            raise NoGpu("it has no GPU any more (ray start --num-gpus=N on a node)")
        if not self.waiting_said:
            self.waiting_said = True
            log(f"waiting for a free GPU in the Ray cluster ({gpus} in all, none free)")
        for item in self.items:
            if item not in self.reported:
                emit("progress", item, percent=0)

    def _handle(self, message: Message) -> None:
        if message[0] == "hello":
            self.started = True
            facts = message[1]
            self.node = f"{facts['ip']} ({str(facts['node'])[:8]})"
            self.where = f"the Ray node at {self.node}"
            log(f"running on {self.where}, CUDA_VISIBLE_DEVICES={facts['gpus']!r}")
            from workers.remote import version

            if facts["version"] != version():
                raise VersionMismatch(
                    f"{self.where} runs AutoKR {facts['version']} and this daemon {version()}: "
                    "install the same version on every node"
                )
        elif message[0] == "log":
            log(message[1])
        elif message[0] == "event":
            self._pass_on(message[1], None)
        else:
            self._pass_on(message[1], message[2])

    def _pass_on(self, line: str, output: bytes | None) -> None:
        try:
            event = decode_event(line)
        except MalformedEvent as error:
            log(f"(skipped a malformed event from {self.where}: {error})")
            return
        if event is None or event.item not in self.items:
            return
        if event.kind == "done":  # where it ran, for ``autokr status``
            line = encode_event("done", event.item, **{**event.facts, "node": self.node})
        if output is not None:
            target = self.items[event.item].output
            try:
                write_atomically(target, output)
            except OSError as error:
                self._report("failed", event.item, reason=describe_os_error(error, target), permanent=False)
                return
        if event.kind != "progress":
            self.reported.add(event.item)
        print(line, flush=True)

    def _report(self, kind: str, item: str, **facts: object) -> None:
        self.reported.add(item)
        emit(kind, item, **facts)

    def _fail_the_rest(self, reason: str) -> None:
        log(reason)
        for item in self.items:
            if item not in self.reported:
                self._report("failed", item, reason=reason, permanent=False)


def _beside_the_driver() -> NodeAffinitySchedulingStrategy | str:
    """The event box lives on the driver's node (the head, through Ray Client), so that a GPU
    node dying takes only its task with it; "DEFAULT" when that node cannot be named. Not a
    soft affinity: Ray placed a soft one on a GPU node all the same (seen with Ray 2.60)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    except Exception:  # Ray Client may not name the node: any node will do
        return "DEFAULT"


class VersionMismatch(Exception):
    pass


class NoGpu(Exception):
    pass


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[-1]


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address", required=True, help='the cluster: "auto" (a node on this machine) or ray://host:port'
    )
    parser.add_argument("--count", action="store_true", help="print the cluster's GPUs and nodes as JSON")
    parser.add_argument("--stage", choices=("transcribe", "translate"))
    parser.add_argument("--jobs", type=Path, help="the cohort's manifest")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="-- then the stage worker's own options")
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    die_with_parent()
    if not arguments.count and (arguments.stage is None or arguments.jobs is None):
        parser.error("--stage and --jobs are required (or --count)")
    try:
        connect(arguments.address)
    except ClusterUnreachable as error:
        log(f"cannot reach the Ray cluster at {arguments.address}: {error}")
        return EXIT_CLUSTER_UNREACHABLE
    if arguments.count:
        print(json.dumps(count()), flush=True)
        return 0
    if cluster_gpus() < 1:  # a task asking for one would wait forever
        log(f"cannot use the Ray cluster at {arguments.address}: it has no GPU (ray start --num-gpus=N on a node)")
        return EXIT_CLUSTER_UNREACHABLE
    items = items_from_arguments(parser, argparse.Namespace(jobs=arguments.jobs, input=None, output=None))
    options = arguments.options[1:] if arguments.options[:1] == ["--"] else arguments.options
    return RayTask(arguments.address, arguments.stage, options, items).run()


if __name__ == "__main__":
    sys.exit(main())
