"""Is the daemon slowed by its listener under load? 8 videos through ``autokr run`` (the tiny test
models), once quiet and once with 200 status pages open and 1,000 requests with a wrong token
arriving meanwhile; rounds alternate (quiet, loaded, quiet, loaded, ...) because this machine's
speed drifts by ±20% over minutes.

    python -m bench.web_load [--rounds 2] [--videos 8] [--pages 200] [--bad 1000] [--no-nice]

A page here does what ``daemon/static/status.html`` does: it fetches ``/api/v1/status`` once,
then holds ``/api/v1/events`` open, which pushes progress and, when the counts or the running
set change, the lists. The clients run in a
process of their own, at the lowest CPU priority (``nice 19``) unless ``--no-nice``: in life
they are phones and other machines, not this CPU. Each round prints the daemon's own CPU
seconds, where the listener's cost shows, its peak RSS, and the time from the videos' arrival
to the last subtitle; then the loaded rounds' median against the quiet ones'.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit.daemon import Daemon, drop, rss_kb, status, wait_for, write_config
from testkit.media import make_video
from testkit.tiny_models import build_tiny_nllb, build_tiny_whisper

TOKEN = "bench-web-load-secret-0123456789"
BASIC = "Basic " + base64.b64encode(f"page:{TOKEN}".encode()).decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def request(port: int, head: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def page(port: int, stop: asyncio.Event, fetched: list[int]) -> None:
    """One open status page: the status once, then its stream (each event parsed, as a page does)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {BASIC}\r\n\r\n".encode())
    await writer.drain()
    status_head = f"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {BASIC}\r\n\r\n"
    await request(port, status_head)
    try:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), 0.5)
            except TimeoutError:
                continue
            if not line:
                return
            if line.startswith(b"event: status"):
                fetched[0] += 1
            elif line.startswith(b"data: "):
                json.loads(line[6:])  # a page parses what it is sent
    finally:
        writer.close()


async def bad_requests(port: int, count: int, seconds: float, answers: list[bytes]) -> None:
    head = (
        "POST /hooks/sonarr HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\nContent-Length: 2\r\n\r\n{}"
    )
    for _ in range(count):
        answers.append((await request(port, head))[:12])
        await asyncio.sleep(seconds / count)


def clients(port: int, pages: int, bad: int) -> None:
    """The load (``--client``): runs until SIGTERM, then prints a JSON report."""

    async def main() -> None:
        halt = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, halt.set)
        fetched = [0]
        answers: list[bytes] = []
        tasks = [asyncio.create_task(page(port, halt, fetched)) for _ in range(pages)]
        tasks.append(asyncio.create_task(bad_requests(port, bad, 10.0, answers)))
        await halt.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        codes = sorted({answer[9:12].decode() for answer in answers})
        print(json.dumps({"fetched": fetched[0], "bad": len(answers), "codes": codes}), flush=True)

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(
    folder: Path, clip: Path, models: tuple[Path, Path], arguments: argparse.Namespace, loaded: bool
) -> tuple[float, int, dict[str, object]]:
    shutil.rmtree(folder, ignore_errors=True)
    inbox = folder / "inbox"
    inbox.mkdir(parents=True)
    port = free_port()
    config = write_config(folder / "autokr.toml", inbox, folder / "state", *models,
                          sections={"web": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})  # fmt: skip
    daemon = Daemon(config, folder / "daemon.log").start()
    load: subprocess.Popen[str] | None = None
    report: dict[str, object] = {}
    try:
        if loaded:
            command = [sys.executable, "-m", "bench.web_load", "--client", str(port),
                       "--pages", str(arguments.pages), "--bad", str(arguments.bad)]  # fmt: skip
            niced = [] if arguments.no_nice else ["nice", "-n", "19"]
            load = subprocess.Popen([*niced, *command], stdout=subprocess.PIPE, text=True)
            time.sleep(3)  # the pages are open before the videos arrive
        cpu_before = cpu_seconds(daemon.pid)
        started = time.monotonic()
        for number in range(arguments.videos):
            drop(clip, inbox, f"Show - {number + 1:02}.mkv")
        peak = 0

        def finished() -> bool:
            nonlocal peak
            peak = max(peak, rss_kb(daemon.pid))
            jobs = status(config)
            return len(jobs) == arguments.videos and all(job["state"] == "done" for job in jobs)

        wait_for(finished, 600, "the videos", interval=0.25)
        took = time.monotonic() - started
        report["daemon_cpu"] = cpu_seconds(daemon.pid) - cpu_before
    finally:
        if load is not None:
            report["clients_cpu"] = cpu_seconds(load.pid)
            load.send_signal(signal.SIGTERM)
            output, _ = load.communicate(timeout=60)
            report.update(json.loads(output.strip().splitlines()[-1]))
        daemon.stop()
    return took, peak, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--bad", type=int, default=1000)
    parser.add_argument("--no-nice", action="store_true", help="the clients at the daemon's own CPU priority")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)  # the clients' own process
    arguments = parser.parse_args()
    if arguments.client:
        clients(arguments.client, arguments.pages, arguments.bad)
        return
    with tempfile.TemporaryDirectory(prefix="autokr-web-load-") as temporary:
        root = Path(temporary)
        models = (build_tiny_whisper(root / "tiny-whisper.pt"), build_tiny_nllb(root / "tiny-nllb"))
        clip = make_video(root / "clip.mkv", seconds=3)
        times: dict[bool, list[float]] = {False: [], True: []}
        niced = "same priority" if arguments.no_nice else "nice 19"
        print(f"{arguments.videos} videos, tiny models, CPU; loaded: {arguments.pages} pages + {arguments.bad} "
              f"bad requests, clients at {niced}")  # fmt: skip
        for number in range(arguments.rounds):
            for loaded in (False, True):
                took, peak, report = one_round(root / "run", clip, models, arguments, loaded)
                times[loaded].append(took)
                extra = ""
                if loaded:
                    extra = (
                        f"; clients' CPU {report['clients_cpu']:.1f} s; status pushed {report['fetched']}×, "
                        f"{report['bad']} bad requests → {report['codes']}"
                    )
                kind = "loaded" if loaded else "quiet"
                print(f"round {number + 1} {kind:<6}: {took:6.1f} s, daemon CPU {report['daemon_cpu']:.2f} s, "
                      f"peak RSS {peak / 1024:.1f} MB{extra}")  # fmt: skip
        quiet, busy = statistics.median(times[False]), statistics.median(times[True])
        print(f"median: quiet {quiet:.1f} s, loaded {busy:.1f} s: {busy / quiet - 1:+.1%}")


if __name__ == "__main__":
    main()
