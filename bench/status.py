"""``autokr status`` on a library: its lines, bytes and time for N videos (default 20,000),
the summary and ``--all``, median of three runs each.

usage: python -m bench.status [--videos 20000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daemon.store import Store

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=20_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "inbox").mkdir()
        (root / "state").mkdir()
        config = root / "autokr.toml"
        config.write_text(f'[daemon]\ninbox = ["{root / "inbox"}"]\nstate_dir = "{root / "state"}"\n')
        with Store(root / "state" / "autokr.sqlite3") as store:
            jobs = [
                store.add(f"{root}/inbox/Season {n // 100}/Show - {n:05}.mkv", 1, 1) for n in range(arguments.videos)
            ]
            for job in jobs[: arguments.videos // 100]:
                (claimed,) = store.claim([job])
                store.fail_stage(claimed, "not a readable video (moov atom not found)", "", True, 3, 1)
        for label, extra in (("summary", []), ("--all", ["--all"])):
            times, output = [], ""
            for _ in range(3):
                started = time.monotonic()
                output = subprocess.run(
                    [sys.executable, "-m", "daemon", "--config", str(config), "status", *extra],
                    capture_output=True, text=True, check=True, cwd=REPOSITORY,
                ).stdout  # fmt: skip
                times.append(time.monotonic() - started)
            print(
                f"autokr status {label:<8} {arguments.videos} videos: {len(output.splitlines())} lines, "
                f"{len(output.encode()) / 1e6:.2f} MB, {statistics.median(times):.2f} s (median of 3)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
