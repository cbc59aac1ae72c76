"""Files a person owns, and the work files beside them: written whole or not at all
(temporary file, fsync, rename), placed without replacing what someone else put there, and OS
errors said in words. Used by the daemon and the workers alike."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contract.protocol import dumps_json

TEMP_MARKER = ".autokr-tmp-"


def describe_os_error(error: OSError, path: Path | None = None) -> str:
    """Words a person understands for the OS errors that matter to a media daemon."""
    where = str(path or error.filename or "")
    if error.errno == errno.ENOSPC:
        return f"no space left on the disk holding {Path(where).parent if where else 'the output'}"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {where}: permission denied"
    if error.errno == errno.EROFS:
        return f"cannot write {where}: read-only file system"
    if error.errno == errno.ENOENT:
        return f"file not found: {where}"
    return f"{error.strerror or error} ({where})" if where else str(error)


NAME_MAX = 255  # bytes, on every Linux file system a media library lives on


def temporary_prefix(path: Path) -> str:
    """``.Video.ko.srt.autokr-tmp-``: hidden (media servers skip it), and recognisably ours so a
    leftover of a killed worker can be removed. Names too long for that get a digest instead."""
    prefix = f".{path.name}{TEMP_MARKER}"
    if len(os.fsencode(prefix)) + 24 > NAME_MAX:  # room for the pid and the random part
        digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:16]
        prefix = f".{digest}{TEMP_MARKER}"
    return prefix


def create_temporary(path: Path) -> tuple[Path, int]:
    """A new, empty temporary file beside ``path`` and its descriptor, open for writing.

    Anyone who can write into a video's folder (a NAS share, a download client) could plant a
    link at a temporary name to make AutoKR write into another file, so the name is
    unpredictable (pid and 48 random bits) and the file is created with ``O_CREAT | O_EXCL |
    O_NOFOLLOW``: it is always a new file of AutoKR's own, never something that was there.
    """
    prefix = temporary_prefix(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(64):
        candidate = path.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            return candidate, os.open(candidate, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def write_descriptor(descriptor: int, data: bytes) -> None:
    """Writes all of ``data`` and fsyncs, then closes ``descriptor``."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def finish_atomically(temporary: Path, path: Path) -> None:
    """fsyncs ``temporary``, renames it over ``path`` and fsyncs the folder."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yields a new temporary file's path beside ``path`` (created empty, see
    ``create_temporary``) for a tool to write; on success it becomes ``path`` durably.

    On any failure the temporary file is removed, so a reader never sees half a file.
    """
    temporary, descriptor = create_temporary(path)
    os.close(descriptor)
    try:
        yield temporary
        finish_atomically(temporary, path)
    except OSError as error:
        if error.filename is None:  # a failed write() names no file; say which one
            error.filename = str(temporary)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def file_signature(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of ``path``: how AutoKR recognises a file it wrote itself. Of the
    name itself (``lstat``): a link planted there never looks like AutoKR's file."""
    try:
        status = path.lstat()
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


_RENAME_NOREPLACE = 1  # linux/fs.h


def _rename_noreplace(source: Path, target: Path) -> bool | None:
    """``renameat2(RENAME_NOREPLACE)``: True when renamed, False when ``target`` exists, None
    when the system or file system does not offer it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return None
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), _RENAME_NOREPLACE)
    if result == 0:
        return True
    number = ctypes.get_errno()
    if number == errno.EEXIST:
        return False
    if number in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return None
    raise OSError(number, os.strerror(number), str(target))


def place_without_clobbering(temporary: Path, path: Path) -> bool:
    """Puts the finished ``temporary`` at ``path`` only if nothing is there; False otherwise.

    A hard link is atomic and fails if ``path`` exists, however late it appeared. File systems
    that refuse hard links (some SMB and FUSE shares) get ``renameat2(RENAME_NOREPLACE)``; where
    that is missing too, a check just before a plain rename, whose window is the one moment
    between two system calls (documented in docs/guarantees.md).
    """
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        renamed = _rename_noreplace(temporary, path)
        if renamed is False or (renamed is None and os.path.lexists(path)):
            return False
        if renamed is None:
            os.rename(temporary, path)
    fsync_directory(path.parent)
    return True


def remove_own_file(path: Path, signature: list[int] | None) -> bool:
    """Removes ``path`` only while it is still the file AutoKR wrote (``signature``)."""
    if not signature or file_signature(path) != list(signature):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        return True
    return False


def write_atomically(path: Path, data: bytes) -> None:
    temporary, descriptor = create_temporary(path)
    try:
        write_descriptor(descriptor, data)
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_json_atomically(path: Path, value: Any) -> None:
    write_atomically(path, dumps_json(value, indent=1).encode("utf-8"))
