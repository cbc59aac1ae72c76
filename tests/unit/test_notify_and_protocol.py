import contextlib
import os
import socket
import subprocess
import sys

from daemon.config import load_config
from daemon.notify import Notifier
from daemon.runner import describe_exit
from daemon.store import Store
from daemon.supervisor import Supervisor
from workers.protocol import decode_event, encode_event


def test_notify_sends_datagrams_to_a_real_socket(tmp_path):
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(2)
    notifier = Notifier(address=str(path))
    assert notifier.send(READY=1, STATUS="idle · 3 done")
    assert receiver.recv(4096).decode() == "READY=1\nSTATUS=idle · 3 done"
    receiver.close()


def test_notify_reaches_an_abstract_socket():
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0autokr-test-notify")
    receiver.settimeout(2)
    assert Notifier(address="@autokr-test-notify").send(WATCHDOG=1)
    assert receiver.recv(100) == b"WATCHDOG=1"
    receiver.close()


def test_notify_is_a_no_op_outside_systemd():
    notifier = Notifier(address="")
    assert not notifier.enabled and notifier.send(READY=1) is False


def test_events_round_trip_and_log_text_is_not_an_event():
    event = decode_event(encode_event("failed", "7", reason="ディスク満杯", permanent=False))
    assert event is not None
    assert (event.kind, event.item, event.facts) == ("failed", "7", {"reason": "ディスク満杯", "permanent": False})
    assert decode_event("loaded whisper model small on cpu") is None
    assert decode_event("@autokr {not json") is None


def test_exit_descriptions_are_for_people():
    assert "SIGKILL" in describe_exit(-9) and "out of memory" in describe_exit(-9)
    assert "out of GPU memory" in describe_exit(3)
    assert describe_exit(1) == "worker exited with status 1"


def test_journal_lines_carry_the_syslog_priority_prefix():
    script = (
        "from daemon.logs import setup_logging; from loguru import logger; setup_logging(); "
        "logger.info('queued <Show> {x}'); logger.warning('retrying'); logger.error('failed')"
    )
    env = {**os.environ, "JOURNAL_STREAM": "8:1234"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert result.stderr.splitlines() == ["<6>queued <Show> {x}", "<4>retrying", "<3>failed"]


def _messages(receiver: socket.socket) -> list[str]:
    found = []
    receiver.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            found.append(receiver.recv(4096).decode())
    return found


def test_the_supervisor_reports_ready_status_and_reload_to_systemd(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    path = tmp_path / "autokr.toml"
    path.write_text(f'[daemon]\ninbox = ["{first}"]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    config = load_config(path)
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify.sock"))
    store = Store(config.database_path)
    supervisor = Supervisor(config, store, Notifier(address=str(tmp_path / "notify.sock")))
    try:
        supervisor.start()
        assert _messages(receiver) == ["READY=1\nSTATUS=idle"]

        path.write_text("[daemon]\ninbox = 5\n", encoding="utf-8")
        supervisor.reload()
        reloading, ready = _messages(receiver)
        assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert ready.startswith("READY=1\nSTATUS=config reload failed, running on the old one: ")
        assert "[daemon] inbox must be a list of path strings" in ready and ready.endswith(" · idle")
        supervisor.last_ping = -10.0
        supervisor.turn()
        assert _messages(receiver) == ["WATCHDOG=1"]  # the problem stays in STATUS= until a good reload
        assert supervisor.config.daemon.inbox == (first,)

        path.write_text(f'[daemon]\ninbox = ["{first}", "{second}"]\nstate_dir = "{tmp_path / "state"}"\n')
        supervisor.reload()
        assert _messages(receiver)[-1] == "READY=1\nSTATUS=idle"
        assert supervisor.config.daemon.inbox == (first, second)
        supervisor.last_ping = -10.0
        supervisor.turn()
        assert _messages(receiver) == ["WATCHDOG=1"]
    finally:
        supervisor.shutdown()
        store.close()
        receiver.close()
