import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest

from contract.protocol import MalformedEvent, decode_event, dumps_json, encode_event, printable
from daemon.config import load_config
from daemon.runner import describe_exit
from daemon.sd_notify import Notifier
from daemon.store import Store
from daemon.supervisor import Supervisor


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


@pytest.mark.parametrize(
    "line",
    [
        "@autokr {not json",
        "@autokr [1, 2]",
        '@autokr "done"',
        '@autokr {"event": "done"}',
        '@autokr {"event": "explode", "item": "1"}',
        '@autokr {"event": "progress", "item": "1", "percent": "lots"}',
        '@autokr {"event": "progress", "item": "1", "percent": NaN}',
        '@autokr {"event": "failed", "item": "1", "reason": ["a"]}',
        '@autokr {"event": "done", "item": "1", "written": "/not/a/list.srt"}',
    ],
)
def test_a_malformed_event_is_refused_with_a_reason(line):
    with pytest.raises(MalformedEvent):
        decode_event(line)


def test_a_file_name_that_is_not_utf8_travels_losslessly():
    name = os.fsdecode(b"/inbox/\x94\x4c\x82\xcc\x98\x62.mkv")  # 猫の話 in Shift-JIS
    text = dumps_json({"path": name})
    text.encode("utf-8")  # encodable: no lone surrogate left
    assert os.fsencode(json.loads(text)["path"]) == b"/inbox/\x94\x4c\x82\xcc\x98\x62.mkv"
    event = decode_event(encode_event("done", "1", written=[name]))
    assert event is not None and event.facts["written"] == [name]
    assert dumps_json({"name": "猫.mkv"}) == '{"name": "猫.mkv"}'  # Japanese stays readable


def test_printable_escapes_every_control_character_and_undecodable_byte():
    assert printable("x\nWATCHDOG=trigger\nMAINPID=1\ny.mkv") == "x\\nWATCHDOG=trigger\\nMAINPID=1\\ny.mkv"
    assert printable("a\x1b[31mred\tb\r\x7f\x85\u2028") == "a\\x1b[31mred\\tb\\r\\x7f\\x85\\u2028"
    assert printable(os.fsdecode(b"\x94L.mkv")) == "\\x94L.mkv"
    assert printable("猫の話 - 01.mkv") == "猫の話 - 01.mkv"


def test_a_newline_in_a_status_is_one_sd_notify_assignment(tmp_path):
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(2)
    Notifier(address=str(path)).send(STATUS='transcribing "x\nWATCHDOG=trigger\nMAINPID=1\ny.mkv" 5%')
    message = receiver.recv(4096).decode()
    receiver.close()
    assert message.splitlines() == ['STATUS=transcribing "x\\nWATCHDOG=trigger\\nMAINPID=1\\ny.mkv" 5%']


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


def test_a_log_message_is_one_journal_line_whatever_a_file_is_called():
    script = (
        "import os; from daemon.logs import setup_logging; from loguru import logger; setup_logging(); "
        "logger.info('queued {}', 'x\\nWATCHDOG=trigger\\x1b[2J' + os.fsdecode(b'\\x94.mkv'))"
    )
    env = {**os.environ, "JOURNAL_STREAM": "8:1234"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert result.stderr.splitlines() == ["<6>queued x\\nWATCHDOG=trigger\\x1b[2J\\x94.mkv"]


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
    for model in ("whisper", "translator"):  # model folders as a worker takes them (no download here)
        (tmp_path / model).mkdir()
        (tmp_path / model / "config.json").write_text("{}")
    models = '[models]\nwhisper = "./whisper"\ntranslator = "./translator"\n'
    path.write_text(f'[daemon]\ninbox = ["{first}"]\nstate_dir = "{tmp_path / "state"}"\n{models}', encoding="utf-8")
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
        supervisor.status.last_ping = -10.0
        supervisor.turn()
        assert _messages(receiver) == ["WATCHDOG=1"]  # the problem stays in STATUS= until a good reload
        assert supervisor.config.daemon.inbox == (first,)

        path.write_text(f'[daemon]\ninbox = ["{first}", "{second}"]\nstate_dir = "{tmp_path / "state"}"\n{models}')
        supervisor.reload()
        assert _messages(receiver)[-1] == "READY=1\nSTATUS=idle"
        assert supervisor.config.daemon.inbox == (first, second)
        supervisor.status.last_ping = -10.0
        supervisor.turn()
        assert _messages(receiver) == ["WATCHDOG=1"]
    finally:
        supervisor.shutdown()
        store.close()
        receiver.close()
