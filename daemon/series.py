"""Names that stay the same from episode to episode, for the LLM translation engine.

- **The glossary** a person writes: ``autokr-glossary.txt`` in an inbox or any folder below it,
  one ``Japanese = Korean`` pair a line (``#`` starts a comment). A video gets the pairs of every
  such file from its inbox (the nearest one, when inboxes nest, as intake says) down to its own
  folder; the nearer file wins a name both list. The translation is checked to use them.
- **The series memory**: the names and recurring terms the model gave for a series' first
  episodes, kept in the database (schema migration 5) and given to every later episode of the
  same series, so 田中 is 다나카 in episode 12 as in episode 1. A series is the first folder below
  the inbox on a video's path (``Inbox/Show/Season 1/01.mkv`` → ``Inbox/Show``); a video right
  in an inbox has none. The first answer for a name is kept; the glossary wins over it, and
  ``autokr memory`` shows it and lets a person set or forget a name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from contract.manifest import Term, TranslateOrder
from daemon.discovery import nearest_inbox
from daemon.store import Store, path_key, readable_path

GLOSSARY_NAME = "autokr-glossary.txt"
MAX_GLOSSARY_BYTES = 256 * 1024
SEPARATORS = ("=", "\t", "→")


def series_folder(video: Path, inboxes: Sequence[Path]) -> Path | None:
    """The series ``video`` belongs to (see the module's docstring), or None."""
    inbox = nearest_inbox(video, inboxes)
    if inbox is None:
        return None
    inside = video.relative_to(inbox).parts
    return inbox / inside[0] if len(inside) > 1 else None


def read_glossary(video: Path, inboxes: Sequence[Path], warn: Callable[[str], None]) -> tuple[Term, ...]:
    """The glossary pairs for ``video``, the nearest file's winning; an odd line is skipped
    with a warning that names the file and line, and never stops anything."""
    inbox = nearest_inbox(video, inboxes)
    if inbox is None:
        return ()
    folders = [video.parent, *video.parent.parents[: len(video.parent.parts) - len(inbox.parts)]]
    pairs: dict[str, str] = {}
    for folder in reversed(folders):  # from the inbox down: the nearer file is read last and wins
        pairs.update(_read_file(folder / GLOSSARY_NAME, warn))
    return tuple(pairs.items())


def _read_file(path: Path, warn: Callable[[str], None]) -> dict[str, str]:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return {}
    except OSError as error:
        warn(f"{readable_path(str(path))}: cannot read the glossary ({error.strerror}); it is left out")
        return {}
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            warn(f"{readable_path(str(path))}: not a regular file; it is left out")
            return {}
        data = handle.read(MAX_GLOSSARY_BYTES + 1)
    if len(data) > MAX_GLOSSARY_BYTES:
        warn(f"{readable_path(str(path))}: larger than {MAX_GLOSSARY_BYTES // 1024} KB; it is left out")
        return {}
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        warn(f"{readable_path(str(path))}: not UTF-8 text; save it as UTF-8 (it is left out until then)")
        return {}
    pairs: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        separator = next((mark for mark in SEPARATORS if mark in line), None)
        source, target = (part.strip() for part in line.split(separator, 1)) if separator else ("", "")
        if not source or not target:
            warn(f"{readable_path(str(path))} line {number}: write it as 日本語 = 한국어; the line is left out")
            continue
        pairs[source] = target
    return pairs


class SeriesMemory:
    """The ``series_terms`` table (schema migration 5) over a ``Store``'s connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def terms(self, folder: Path) -> tuple[Term, ...]:
        rows = self.store.db.execute(
            "SELECT source, target FROM series_terms WHERE folder = ? ORDER BY source", (path_key(str(folder)),)
        ).fetchall()
        return tuple((str(source), str(target)) for source, target in rows)

    def remember(self, folder: Path, terms: Sequence[Term], job_id: int) -> int:
        """Keeps the names the model gave that the series has not got yet; how many were new."""
        now = self.store.clock()
        with self.store.transaction() as connection:
            before = connection.total_changes
            connection.executemany(
                "INSERT OR IGNORE INTO series_terms (folder, folder_text, source, target, origin, job_id, updated_at) "
                "VALUES (?, ?, ?, ?, 'model', ?, ?)",
                [(path_key(str(folder)), readable_path(str(folder)), s, t, job_id, now) for s, t in terms],
            )
            return connection.total_changes - before

    def set(self, folder: Path, source: str, target: str) -> None:
        """A person's correction: it replaces what the model gave."""
        with self.store.transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO series_terms (folder, folder_text, source, target, origin, job_id, updated_at) "
                "VALUES (?, ?, ?, ?, 'person', NULL, ?)",
                (path_key(str(folder)), readable_path(str(folder)), source, target, self.store.clock()),
            )

    def forget(self, folder: Path, source: str | None = None) -> int:
        """Forgets one name of the series, or all of them; how many were forgotten."""
        with self.store.transaction() as connection:
            if source is None:
                cursor = connection.execute("DELETE FROM series_terms WHERE folder = ?", (path_key(str(folder)),))
            else:
                cursor = connection.execute(
                    "DELETE FROM series_terms WHERE folder = ? AND source = ?", (path_key(str(folder)), source)
                )
            return cursor.rowcount

    def series(self) -> list[tuple[str, int]]:
        """Every series with a memory (its folder, readable) and how many names it holds."""
        rows = self.store.db.execute(
            "SELECT folder_text, COUNT(*) FROM series_terms GROUP BY folder ORDER BY folder_text"
        ).fetchall()
        return [(str(folder), int(count)) for folder, count in rows]


def translate_order(store: Store, video: Path, inboxes: Sequence[Path], warn: Callable[[str], None]) -> TranslateOrder:
    """What the translate stage is given for ``video``: its glossary and its series' memory
    (without the names the glossary sets: the person's word wins)."""
    glossary = read_glossary(video, inboxes, warn)
    folder = series_folder(video, inboxes)
    person = {source for source, _ in glossary}
    memory = SeriesMemory(store).terms(folder) if folder is not None else ()
    return TranslateOrder(glossary, tuple(term for term in memory if term[0] not in person))
