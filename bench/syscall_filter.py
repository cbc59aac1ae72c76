"""Runs a command under the system-call filter of the shipped unit, without systemd.

The unit (``systemd/autokr.service``) allows ``@system-service`` less a few groups, with
``SystemCallErrorNumber=EPERM``. Whether the CUDA driver, PyTorch and the workers stay inside
that list can only be seen on a GPU machine, and those (the device tool's) run no systemd. So:

    python3 bench/syscall_filter.py export OUT.bpf [--kill]   # where systemd-analyze and
                                                              # libseccomp are (this machine)
    python3 bench/syscall_filter.py run OUT.bpf -- COMMAND    # on the GPU machine

``export`` expands the unit's ``SystemCallFilter=`` lines with ``systemd-analyze syscall-filter``
(the groups as this systemd defines them) and compiles them with libseccomp into a classic BPF
program: calls outside the list fail with EPERM, as under the unit, or with ``--kill`` end the
process with SIGSYS (so a run that passes under ``--kill`` made no call outside the list at
all). ``run`` installs the program with ``prctl`` (no library needed; children inherit it) and
execs COMMAND. bench/gpu_filter.sh runs the GPU workers under both.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "autokr.service"
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _expand(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a ``@group`` (nested groups expanded), or ``{name}`` for a call."""
    if not group.startswith("@"):
        return {group}
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    listing = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True)
    calls: set[str] = set()
    for line in listing.stdout.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            calls |= _expand(entry, seen)
    return calls


def allowed_calls(unit: Path = UNIT) -> set[str]:
    """``SystemCallFilter=`` lines in order: an allow list, then ``~`` lines taking calls away."""
    allowed: set[str] = set()
    for line in unit.read_text(encoding="utf-8").splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.partition("=")[2].strip()
        deny = value.startswith("~")
        names = set().union(*(_expand(name) for name in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def export(path: Path, kill: bool) -> int:
    library = ctypes.CDLL("libseccomp.so.2")
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_init.argtypes = [ctypes.c_uint32]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    library.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    default = SCMP_ACT_KILL_PROCESS if kill else 0x00050000 | errno.EPERM  # SCMP_ACT_ERRNO(EPERM)
    context = library.seccomp_init(default)
    calls = sorted(allowed_calls())
    known = 0
    for name in calls:
        number = library.seccomp_syscall_resolve_name(name.encode())
        if number < 0:  # not a call of this architecture
            continue
        if library.seccomp_rule_add(context, SCMP_ACT_ALLOW, number, 0) == 0:
            known += 1
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if library.seccomp_export_bpf(context, descriptor) != 0:
            raise SystemExit("libseccomp could not export the filter")
    finally:
        os.close(descriptor)
    action = "SIGSYS" if kill else "EPERM"
    print(f"{path}: {known} system calls allowed ({len(calls)} listed), anything else {action}")
    return 0


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def run(path: Path, command: list[str]) -> int:
    program = path.read_bytes()
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise SystemExit(f"prctl(SECCOMP): {os.strerror(ctypes.get_errno())}")
    os.execvp(command[0], command)
    return 127


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="verb", required=True)
    exporting = commands.add_parser("export", help="compile the unit's filter to a BPF file")
    exporting.add_argument("output", type=Path)
    exporting.add_argument("--kill", action="store_true", help="SIGSYS instead of EPERM for other calls")
    running = commands.add_parser("run", help="exec COMMAND under a BPF file")
    running.add_argument("program", type=Path)
    running.add_argument("command", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    if arguments.verb == "export":
        return export(arguments.output, arguments.kill)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    return run(arguments.program, command)


if __name__ == "__main__":
    sys.exit(main())
