"""Fault injection for the fault suite (tests/faults); inert unless ``$AUTOKR_FAULT`` is set.

``AUTOKR_FAULT`` is a comma-separated list of points:

- ``daemon-crash:before-worker:STAGE``: the daemon SIGKILLs itself just before it starts a
  STAGE worker (the job is already marked running).
- ``daemon-crash:before-commit:STAGE``: the daemon SIGKILLs itself after a STAGE worker
  reported its output (already renamed into place) and before the database records it.
- ``worker-hang:STAGE``: a STAGE worker hangs before its first video, emitting nothing.
- ``worker-exit:STAGE:CODE``: a STAGE worker exits with CODE before its first video (137 is
  what a shell reports for a process the out-of-memory killer ended).
- ``worker-oom:STAGE:N``: the STAGE worker runs out of GPU memory on batches larger than N.
- ``worker-spew:STAGE:MEGABYTES``: a STAGE worker first writes MEGABYTES of text with no newline
  on stdout, then a malformed event (``@autokr [1, 2]``), and on stderr one line of as many
  megabytes and 40 lines of 4 KiB; then it works as usual.
- ``worker-pause:MOMENT:STAGE:SECONDS``: a STAGE worker prints ``AUTOKR_FAULT: pausing MOMENT
  FILE`` on stderr and sleeps SECONDS at MOMENT (``start``: before it loads anything or takes
  its first video; ``before-place``: its subtitle is written to the temporary file and about to
  be put in place), so a test can act in that instant.

Real faults are injected from outside by the tests (``kill -9``, full disks, read-only folders,
files deleted or replaced mid-stage); these points reach the moments a test cannot time.
"""

from __future__ import annotations

import os
import signal
import sys
import time

FAULT_ENV = "AUTOKR_FAULT"


def points() -> list[str]:
    return [point.strip() for point in os.environ.get(FAULT_ENV, "").split(",") if point.strip()]


def crash_daemon_if_armed(moment: str, stage: str) -> None:
    if f"daemon-crash:{moment}:{stage}" in points():
        print(f"{FAULT_ENV}: the daemon kills itself {moment} {stage}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which run_worker recognises by name."""


def raise_out_of_memory_if_armed(stage: str, batch_size: int) -> None:
    """``worker-oom:STAGE:N``: a GPU that fits batches of at most N (there is no GPU here)."""
    for point in points():
        kind, _, rest = point.partition(":")
        limit = rest.partition(":")[2]
        if kind == "worker-oom" and rest.partition(":")[0] == stage and batch_size > int(limit or 0):
            raise OutOfMemoryError(f"CUDA out of memory ({FAULT_ENV}: batches above {limit} do not fit)")


def pause_if_armed(moment: str, stage: str, what: str = "") -> None:
    prefix = f"worker-pause:{moment}:{stage}:"
    for point in points():
        if point.startswith(prefix):
            print(f"{FAULT_ENV}: pausing {moment} {what}", file=sys.stderr, flush=True)
            time.sleep(float(point[len(prefix) :] or 1))


def _spew(megabytes: int) -> None:
    block = b"x" * (1 << 20)
    for _ in range(megabytes):
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.write(b"\n@autokr [1, 2]\n")
    sys.stdout.buffer.flush()
    for _ in range(megabytes):
        sys.stderr.buffer.write(block)
    sys.stderr.buffer.write(b"\n" + b"".join(b"%04d " % n + b"e" * 4096 + b"\n" for n in range(40)))
    sys.stderr.buffer.flush()


def fail_worker_if_armed(stage: str) -> None:
    for point in points():
        kind, _, rest = point.partition(":")
        if kind == "worker-spew" and rest.partition(":")[0] == stage:
            _spew(int(rest.partition(":")[2] or 1))
        if kind == "worker-hang" and rest == stage:
            print(f"{FAULT_ENV}: the {stage} worker hangs", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)
        if kind == "worker-exit" and rest.partition(":")[0] == stage:
            code = int(rest.partition(":")[2] or 1)
            print(f"{FAULT_ENV}: the {stage} worker exits with status {code}", file=sys.stderr, flush=True)
            os._exit(code)
