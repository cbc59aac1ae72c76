"""The ``autokr`` command: the one place where errors become one-line messages for people."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from loguru import logger

from contract.errors import AutoKRError
from contract.media import probe
from contract.protocol import dumps_json, printable
from daemon import __version__, overview, report
from daemon.announcer import Outbox, describe_pending
from daemon.cluster import last_problem
from daemon.config import Config, config_candidates, default_config_path, is_set, load_config
from daemon.errors import ConfigError, DatabaseLocked, JobNotFound, JobNotRetryable, UsageError, WorkerFailed
from daemon.jobs import JobState
from daemon.lock import StateLock
from daemon.lock import holder as lock_holder
from daemon.logs import setup_logging
from daemon.sd_notify import Notifier
from daemon.series import SeriesMemory
from daemon.status import read_problems
from daemon.store import Store, state_space_problem

EXIT_ERROR = 1
EXIT_BROKEN_PIPE = 141  # what a shell reports for SIGPIPE, as git exits


def _config(arguments: argparse.Namespace, need_inbox: bool = True, need_state_dir: bool = True) -> Config:
    return load_config(arguments.config, need_inbox=need_inbox, need_state_dir=need_state_dir)


def _store(arguments: argparse.Namespace, config: Config | None = None, writable: bool = False) -> Store | None:
    """The daemon's database, or None before the daemon first ran: reading commands must not
    create it (as root, say, in the service's /var/lib/autokr), and no command but ``run``
    upgrades it (the release before would then refuse it)."""
    config = config or _config(arguments, need_inbox=False, need_state_dir=False)
    if not config.database_path.exists():
        return None
    return Store(config.database_path, writable=writable, migrate=False)


def _open_waiting(config: Config, notifier: Notifier) -> Store:
    """The daemon's store; while another process holds its lock, waits (and says so once)."""
    said = False
    while True:
        try:
            return Store(config.database_path)
        except DatabaseLocked as error:
            if not said:
                logger.warning("{}; AutoKR starts once it is released", error)
                notifier.send(STATUS=printable(f"waiting: {error}"))
                said = True
            time.sleep(1)


def command_run(arguments: argparse.Namespace) -> int:
    from contract.media import find_ffmpeg, find_ffprobe
    from daemon.supervisor import Flags, Supervisor

    config = _config(arguments)
    # Fail now, with a clear message, rather than on the first video.
    find_ffmpeg()
    find_ffprobe()
    # Before anything reads or recovers the state: a second daemon must not touch it.
    lock = StateLock(config.daemon.state_dir)
    lock.acquire()
    try:
        notifier = Notifier()
        with _open_waiting(config, notifier) as store:
            flags = Flags()
            flags.install()
            logger.info("AutoKR {} starting (config {}, state {})", __version__, config.path, config.daemon.state_dir)
            stall = os.environ.get("AUTOKR_DEBUG_STALL_AFTER")  # test-only, see Supervisor
            return Supervisor(config, store, notifier, flags, stall_after=float(stall) if stall else None).run()
    finally:
        lock.release()


def command_status(arguments: argparse.Namespace) -> int:
    config = _config(arguments, need_inbox=False, need_state_dir=False)
    store = _store(arguments, config)
    selection = report.Selection(arguments.state, arguments.prefix, arguments.all)
    if arguments.json:
        jobs = report.select(store, selection) if store is not None else []
        print(dumps_json(overview.public_jobs(store, jobs, store.clock()) if store is not None else [], indent=1))
        return 0
    state_dir = config.daemon.state_dir
    daemon_pid = lock_holder(state_dir)
    if daemon_pid is not None:
        print(f"daemon: running (pid {daemon_pid}) on {printable(state_dir)}")
        for notice in read_problems(state_dir):
            print(printable(notice))
    else:
        print(f"daemon: not running (no AutoKR holds {printable(state_dir)}; start it with systemctl start autokr)")
    # The daemon cannot write its state down when the disk is full, so look at the disk here.
    problem = state_space_problem(state_dir) if state_dir.exists() else None
    if problem:
        print(f"{problem}: AutoKR is paused and carries on by itself once space is freed there")
    if store is None:
        print("no videos yet")
    else:
        with store:
            print(report.render(store, selection))
            media = describe_pending(Outbox(store), store.clock())
        if media:
            print(media)
    cluster = last_problem(state_dir)
    if cluster:
        print(cluster)
    return 0


def command_retry(arguments: argparse.Namespace) -> int:
    store = _store(arguments, writable=True)
    if store is None:
        raise JobNotFound(f"no job {arguments.job}: the daemon has not run yet")
    with store:
        job = store.retry(arguments.job, force=arguments.force)
    print(f"job {job.id} queued at {job.stage}: {printable(job.path)}")
    return 0


def command_memory(arguments: argparse.Namespace) -> int:
    """The series memory of the LLM engine (``daemon/series.py``): list, set, forget."""
    changing = bool(arguments.set or arguments.forget or arguments.forget_all)
    store = _store(arguments, writable=changing)
    if store is None:
        print("no series memory yet: the daemon has not run")
        return 0
    with store:
        memory = SeriesMemory(store)
        if arguments.series is None:
            if changing:
                raise UsageError("name the series folder to change its memory: autokr memory FOLDER --set 田中=다나카")
            found = memory.series()
            for name, count in found:
                print(f"{count:5}  {printable(name)}")
            if not found:
                print("no series memory yet (it fills as the LLM engine translates episodes in series folders)")
            return 0
        folder = Path(arguments.series).expanduser().absolute()
        for pair in arguments.set:
            source, separator, target = pair.partition("=")
            if not separator or not source.strip() or not target.strip():
                raise UsageError(f"--set takes 日本語=한국어, not {pair!r}")
            memory.set(folder, source.strip(), target.strip())
        for source in arguments.forget:
            if not memory.forget(folder, source):
                print(f"{printable(source)} was not in the memory of {printable(folder)}")
        if arguments.forget_all:
            print(f"forgot {memory.forget(folder)} name(s) of {printable(folder)}")
        for source, target in memory.terms(folder):
            print(f"{printable(source)} = {printable(target)}")
    return 0


def command_enqueue(arguments: argparse.Namespace) -> int:
    path = Path(arguments.video).absolute()
    status = path.stat()
    probe(path)
    config = _config(arguments, need_inbox=False)
    with Store(config.database_path, migrate=False) as store:
        known = store.find(str(path))
        if known is not None and known.state in (JobState.QUEUED, JobState.RUNNING):
            print(f"job {known.id} is already {known.state.value} at {known.stage}: {printable(known.path)}")
            return 0
        if known is not None and known.state == JobState.DONE and not arguments.force:
            raise JobNotRetryable(
                f"job {known.id} is already done ({printable(known.path)}); use --force to make its subtitles again"
            )
        job = store.add(str(path), status.st_size, status.st_mtime_ns, force=arguments.force)
    print(f"job {job.id} queued: {printable(job.path)}")
    return 0


def command_once(arguments: argparse.Namespace) -> int:
    from daemon.once import ProgressBar, run_once

    if arguments.config is None and not any(path.exists() for path in config_candidates()):
        config = Config()
    else:
        config = _config(arguments, need_inbox=False)
    models = config.models
    overrides = {"whisper": arguments.whisper, "translator": arguments.translator, "device": arguments.device}
    config = dataclasses.replace(
        config, models=dataclasses.replace(models, **{k: v for k, v in overrides.items() if v is not None})
    )
    started = time.monotonic()
    bar = ProgressBar()
    setup_logging(arguments.verbose, sink=bar.log_line)
    output = Path(arguments.output) if arguments.output else None
    written = run_once(config, Path(arguments.video), output, force=arguments.force, bar=bar)
    for path in written:
        print(path)
    print(f"finished in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def command_systemd_unit(arguments: argparse.Namespace) -> int:
    from daemon import unit

    config = load_config(arguments.config, need_inbox=False, need_state_dir=False)
    assert config.path is not None
    if not config.daemon.inbox:
        raise ConfigError(config.path, ["[daemon] inbox must name at least one folder"])
    state_dir_set = is_set(config, "daemon", "state_dir")
    if not state_dir_set:  # the service would use /var/lib/autokr, a shell's status ~/.local/state
        print(
            f'autokr: note: set state_dir = "{unit.SERVICE_STATE_DIR}" in [daemon] of {config.path}, so that '
            "`autokr status` run from a shell reads the service's database",
            file=sys.stderr,
        )
    install = unit.install_for(config, state_dir_set)
    print(unit.render_drop_in(install) if arguments.drop_in else unit.render_unit(install), end="")
    return 0


def command_doctor(arguments: argparse.Namespace) -> int:
    from daemon import doctor

    config = load_config(arguments.config, need_inbox=False, need_state_dir=False)
    checks = doctor.run_checks(config, is_set(config, "daemon", "state_dir"))
    print(doctor.as_json(checks) if arguments.json else doctor.render(checks))
    return doctor.exit_status(checks, arguments.strict)


def build_parser() -> argparse.ArgumentParser:
    # --config and -v work before or after the command (`autokr run --config FILE`, as systemd
    # units and scripts write it, and `autokr --config FILE run`): every parser knows them, and
    # a subcommand's parser sets them only when they are given there.
    def global_options(parser: argparse.ArgumentParser, default: Any) -> None:
        parser.add_argument(
            "--config", type=Path, default=default if default is argparse.SUPPRESS else None,
            help="config file (default: $AUTOKR_CONFIG, else the first of ./config/autokr.toml, "
            "~/.config/autokr/autokr.toml, /etc/autokr/autokr.toml)",
        )  # fmt: skip
        parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")

    common = argparse.ArgumentParser(add_help=False)
    global_options(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="autokr", description="Korean subtitles for Japanese videos.")
    global_options(parser, False)
    parser.add_argument("--version", action="version", version=f"autokr {__version__}")
    commands = parser.add_subparsers(dest="command")

    def command(name: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], **options)

    run = command("run", help="run the daemon in the foreground (what systemd runs)")
    run.set_defaults(handler=command_run)

    status = command("status", help="a summary of the videos: counts, what runs now, what failed lately")
    status.add_argument("prefix", nargs="?", help="only the videos whose path starts with this (a folder)")
    status.add_argument("--all", action="store_true", help="list every video, its stage and any error")
    status.add_argument("--state", choices=[state.value for state in JobState], help="list the videos in this state")
    status.add_argument("--json", action="store_true", help="machine-readable: every video (or the selection)")
    status.set_defaults(handler=command_status)

    retry = command("retry", help="queue a failed job again")
    retry.add_argument("job", help="job id or video path")
    retry.add_argument("--force", action="store_true", help="redo from the start, replacing existing subtitles")
    retry.set_defaults(handler=command_retry)

    enqueue = command("enqueue", help="add one video (also outside the inbox)")
    enqueue.add_argument("video")
    enqueue.add_argument("--force", action="store_true", help="replace an existing subtitle")
    enqueue.set_defaults(handler=command_enqueue)

    once = command("once", help="the whole pipeline for one video, without the daemon")
    once.add_argument("video")
    once.add_argument("-o", "--output", help="subtitle file to write (default: beside the video)")
    once.add_argument("-w", "--whisper", help="Whisper model name or checkpoint path")
    once.add_argument("-t", "--translator", help="NLLB model name or directory")
    once.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    once.add_argument("--force", action="store_true", help="replace a subtitle file that is already there")
    once.set_defaults(handler=command_once)

    memory = command("memory", help="the names the LLM engine keeps for each series: list, set, forget")
    memory.add_argument("series", nargs="?", help="a series folder (the first folder below an inbox)")
    memory.add_argument("--set", action="append", default=[], metavar="JA=KO", help="write this name so from now on")
    memory.add_argument("--forget", action="append", default=[], metavar="JA", help="forget one name")
    memory.add_argument("--forget-all", action="store_true", help="forget every name of the series")
    memory.set_defaults(handler=command_memory)

    doctor = command("doctor", help="check the set-up: ffmpeg, folders, device, models, media servers, the unit")
    doctor.add_argument("--json", action="store_true", help="machine-readable")
    doctor.add_argument("--strict", action="store_true", help="exit 1 on any ✗, not only on those that stop videos")
    doctor.set_defaults(handler=command_doctor)

    systemd_unit = command(
        "systemd-unit", help="print the systemd unit for this install and config (see docs/service.md)"
    )
    systemd_unit.add_argument(
        "--drop-in", action="store_true", help="only the install-specific lines, as a drop-in for the shipped unit"
    )
    systemd_unit.set_defaults(handler=command_systemd_unit)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:  # `autokr` alone: what it can do
        parser.print_help()
        return 0
    setup_logging(arguments.verbose)
    try:
        if arguments.command == "run" and arguments.config is None:
            # Resolve now so the log says which file; for other commands it is resolved lazily.
            arguments.config = default_config_path()
        return int(arguments.handler(arguments))
    except BrokenPipeError:
        # `autokr status | head`: the reader has all it wanted. Quiet, as git is; the
        # interpreter's own flush at exit must not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as error:
        if error.path is None:
            print(f"autokr: {printable(error.problems[0])}", file=sys.stderr)
            return EXIT_ERROR
        print(f"autokr: configuration problems in {printable(error.path)}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {printable(problem)}", file=sys.stderr)
        return EXIT_ERROR
    except DatabaseLocked as error:
        print(f"autokr: {printable(error)}; try again once it is released", file=sys.stderr)
        return EXIT_ERROR
    except WorkerFailed as error:
        print(f"autokr: {printable(error.reason)}", file=sys.stderr)
        if error.stderr_tail:
            print("last worker output:\n  " + error.stderr_tail.replace("\n", "\n  "), file=sys.stderr)
        return EXIT_ERROR
    except AutoKRError as error:  # the workers' errors too: one root
        print(f"autokr: {printable(error)}", file=sys.stderr)
        return EXIT_ERROR
    except FileNotFoundError as error:
        print(f"autokr: file not found: {printable(error.filename)}", file=sys.stderr)
        return EXIT_ERROR
    except sqlite3.DatabaseError as error:
        print(
            f"autokr: the state database cannot be read ({error}); AutoKR left it as it is. Stop AutoKR, "
            "move autokr.sqlite3 in the state folder aside and start it again",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
