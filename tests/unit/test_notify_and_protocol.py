import socket

from daemon.notify import Notifier
from daemon.runner import describe_exit
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
