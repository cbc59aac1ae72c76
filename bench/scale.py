"""Wall time for a few videos with one worker slot against two, on this machine.

usage: python -m bench.scale VIDEO [--copies 4] [--whisper MODEL] [--translator MODEL] [--ray]

Each run starts a fresh daemon on an empty inbox with ``[cluster] devices`` of one ``"cpu"`` and
then two, copies VIDEO in ``--copies`` times (two videos a worker, so two cohorts) and polls
``autokr status`` until every copy is done. Defaults: the real Whisper ``base`` as a CTranslate2
folder (``.cache/whisper-base-ct2``, which the tests build) and the tests' tiny NLLB. On a CPU
each CTranslate2 worker already uses every core it may, so two CPU slots share the cores rather
than add any: the figure says what overlapping a video's extraction with another's decoding
gains there. On GPUs each slot is its own card.

``--ray`` adds the Ray backend: a real Ray cluster on this machine (``testkit/ray_cluster.py``,
all on 127.0.0.1) with one, then two worker nodes declaring one GPU each; transcription and
translation run there as Ray tasks, extraction and subtitles in the daemon's own CPU slot. Each
run also prints the daemon's resident memory once idle, and the largest bridge process seen.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from testkit.daemon import Daemon, children, command_line, rss_kb, status, write_config
from testkit.ray_cluster import ENVIRONMENT

REPOSITORY = Path(__file__).resolve().parents[1]


def one_run(root: Path, video: Path, copies: int, whisper: str, translator: str, cluster: dict) -> float:
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    config = write_config(
        root / "autokr.toml", inbox, root / "state", Path(whisper), Path(translator), vad=True,
        filter_hallucinations=True, videos_per_worker=2, model_dir=str(root.parent / "models"),
        sections={"cluster": cluster},
    )  # fmt: skip
    daemon = Daemon(config, root / "daemon.log", env=ENVIRONMENT).start()
    bridge_kb = 0
    try:
        started = time.monotonic()
        for number in range(copies):
            shutil.copyfile(video, inbox / f"Episode {number + 1:02}{video.suffix}")
        while len([job for job in status(config) if job["state"] in ("done", "failed")]) < copies:
            if time.monotonic() - started > 3600:
                raise SystemExit("not every copy was done within an hour")
            for pid in children(daemon.pid):
                if "workers.cluster" in command_line(pid):
                    with contextlib.suppress(OSError, AssertionError):  # it has just exited
                        bridge_kb = max(bridge_kb, rss_kb(pid))
            time.sleep(0.25)
        took = time.monotonic() - started
        time.sleep(2)
        bridge = f", largest bridge {bridge_kb / 1024:.0f} MB" if bridge_kb else ""
        print(f"  daemon at idle: {rss_kb(daemon.pid) / 1024:.1f} MB{bridge}", flush=True)
        return took
    finally:
        daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--whisper", default=str(REPOSITORY / ".cache" / "whisper-base-ct2"))
    parser.add_argument("--translator", help="NLLB name or folder (default: the tests' tiny NLLB, built here)")
    parser.add_argument("--ray", action="store_true", help="also 1 and 2 Ray nodes (needs the ray extra)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autokr-scale-") as scratch:
        work = Path(scratch)
        translator = arguments.translator
        if translator is None:
            from testkit.tiny_models import build_tiny_nllb

            translator = str(build_tiny_nllb(work / "tiny-nllb"))
        # A first run converts the models to CTranslate2 once; it is not counted.
        one_run(work / "warm-up", arguments.video, 1, arguments.whisper, translator, {"devices": ["cpu"]})
        results = {}
        for name, devices in (("1 CPU slot", ["cpu"]), ("2 CPU slots", ["cpu", "cpu"])):
            results[name] = one_run(work / name.replace(" ", "-"), arguments.video, arguments.copies,
                                    arguments.whisper, translator, {"devices": devices})  # fmt: skip
            print(f"{name}: {arguments.copies} videos in {results[name]:.1f} s", flush=True)
        if arguments.ray:
            from testkit.ray_cluster import local_cluster

            for nodes in (1, 2):
                name = f"{nodes} Ray node{'s' if nodes > 1 else ''}"
                with local_cluster(gpu_nodes=nodes) as cluster:
                    ray = {"backend": "ray", "address": cluster.address}
                    results[name] = one_run(work / name.replace(" ", "-"), arguments.video, arguments.copies,
                                            arguments.whisper, translator, ray)  # fmt: skip
                print(f"{name}: {arguments.copies} videos in {results[name]:.1f} s", flush=True)
    print(f"2 slots / 1 slot wall time: {results['2 CPU slots'] / results['1 CPU slot']:.2f}")
    if arguments.ray:
        print(f"2 Ray nodes / 1 Ray node wall time: {results['2 Ray nodes'] / results['1 Ray node']:.2f}")
        print(f"1 Ray node / 1 CPU slot wall time: {results['1 Ray node'] / results['1 CPU slot']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
