"""Time to the first subtitle and to the last, for videos dropped into the daemon at once:
this tree's scheduling against an earlier release's, measured in the same run.

usage: python -m bench.schedule VIDEO [--copies 12] [--whisper MODEL] [--translator MODEL]
                         [--baseline REV] [--videos-per-worker 8]

Each run starts a fresh daemon (real voice activity detection and filter) on an empty inbox,
copies VIDEO in ``--copies`` times and polls ``autokr status`` until every copy is done. The
baseline runs the code of git revision ``--baseline`` (a temporary worktree) with the same
Python, models and config. Defaults: the real Whisper ``base`` as a CTranslate2 folder
(``.cache/whisper-base-ct2``: ``tests`` build it) and the tests' tiny NLLB, converted to
CTranslate2 once before either run (as it is for every drop after a person's first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit.daemon import Daemon, status, write_config

REPOSITORY = Path(__file__).resolve().parents[1]


def one_run(
    code: Path, root: Path, video: Path, copies: int, whisper: str, translator: str, per_worker: int, models: Path
) -> dict:
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    config = write_config(
        root / "autokr.toml", inbox, root / "state", Path(whisper), Path(translator), vad=True,
        filter_hallucinations=True, videos_per_worker=per_worker, stable_seconds=0.5, model_dir=str(models),
    )  # fmt: skip
    here = Path.cwd()
    os.chdir(code)  # `python -m daemon` (and its workers) import the code of the folder they start in
    try:
        daemon = Daemon(config, root / "daemon.log").start()
        try:
            started = time.monotonic()
            for number in range(copies):
                shutil.copyfile(video, inbox / f"Episode {number + 1:02}{video.suffix}")
            first = None
            while True:
                done = [job for job in status(config) if job["state"] == "done"]
                if done and first is None:
                    first = time.monotonic() - started
                if len(done) == copies:
                    break
                if time.monotonic() - started > 3600:
                    raise SystemExit("not every copy was done within an hour")
                time.sleep(0.25)
            total = time.monotonic() - started
        finally:
            daemon.stop()
    finally:
        os.chdir(here)
    log = daemon.log()
    return {"first": first, "total": total, "loads": log.count("loaded whisper model")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--whisper", default=str(REPOSITORY / ".cache" / "whisper-base-ct2"))
    parser.add_argument("--translator", help="NLLB name or folder (default: the tests' tiny NLLB, built here)")
    parser.add_argument("--baseline", default="0d0d8e3", help="git revision to compare with")
    parser.add_argument("--videos-per-worker", type=int, default=8)
    parser.add_argument("--logs", type=Path, help="copy each run's daemon log into this folder")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autokr-schedule-") as scratch:
        work = Path(scratch)
        translator = arguments.translator
        if translator is None:
            build = "import sys, pathlib, testkit.tiny_models as m; m.build_tiny_nllb(pathlib.Path(sys.argv[1]))"
            subprocess.run([sys.executable, "-c", build, str(work / "nllb")], check=True, cwd=REPOSITORY,
                           capture_output=True)  # fmt: skip
            translator = str(work / "nllb")
        # Both runs share one model folder, converted before either starts: a person's first
        # run converts the translator once; every drop after that finds it converted.
        models = work / "models"
        transcript = work / "warm.json"
        transcript.write_text('{"segments": [{"start": 0, "end": 1, "text": "猫"}]}', encoding="utf-8")
        subprocess.run([sys.executable, "-m", "workers.translate", str(transcript), str(work / "warm-ko.json"),
                        "--model", translator, "--device", "cpu", "--converted-dir", str(models / "ctranslate2")],
                       check=True, capture_output=True, cwd=REPOSITORY)  # fmt: skip
        baseline = work / "baseline"
        subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", "-q", str(baseline),
                        arguments.baseline], check=True)  # fmt: skip
        try:
            results = {}
            for name, code in (("baseline " + arguments.baseline, baseline), ("this tree", REPOSITORY)):
                results[name] = one_run(code, work / name.split()[0], arguments.video.absolute(), arguments.copies,
                                        arguments.whisper, translator, arguments.videos_per_worker, models)  # fmt: skip
                if arguments.logs:
                    arguments.logs.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(work / name.split()[0] / "daemon.log", arguments.logs / f"{name.split()[0]}.log")
        finally:
            subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "remove", "--force", str(baseline)], check=False)
    per_worker, whisper = arguments.videos_per_worker, Path(arguments.whisper).name
    print(f"{arguments.copies} × {arguments.video.name} dropped at once, {per_worker} a worker, whisper {whisper}")
    for name, result in results.items():
        share = result["first"] / result["total"]
        print(f"  {name:<18} first subtitle {result['first']:6.1f} s ({share:.0%} of the total)   "
              f"last {result['total']:6.1f} s   whisper loaded {result['loads']}×")  # fmt: skip
    old, new = results.values()
    print(f"  total, this tree / baseline: {new['total'] / old['total']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
