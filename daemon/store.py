"""The job store: every video's stage state in one SQLite file (through sqlite-utils).

WAL mode so ``autokr status`` can read while the daemon writes; ``synchronous=FULL`` so a
committed stage survives power loss; a ``busy_timeout`` so a second writer (``autokr retry``)
waits instead of failing; and every read-then-write in ``BEGIN IMMEDIATE`` (sqlite-utils'
``atomic()`` opens a deferred ``BEGIN``, which can fail to upgrade to a write lock).

Job states are ``daemon.jobs.JobState``; what a job keeps beyond them is ``JobFacts`` (one
JSON column).

A video's path is kept losslessly: ``path_key`` holds the bytes of its name as the file system
has them (a Shift-JIS name is not UTF-8), and is the job's identity; ``path`` holds a readable
text form for people looking at the file with the ``sqlite3`` shell.

A write that fails because the state folder's disk is full raises ``StateFull``, one that
finds the write lock held by another process for ``BUSY_SECONDS`` (a ``sqlite3`` shell left in a
transaction, a backup, ``VACUUM``) raises ``DatabaseLocked``: nothing was written (the
transaction is rolled back), and the daemon pauses until it has passed. A locked database is
healthy: it is never called damaged.

Only ``autokr run`` migrates (``Store(path)``); the commands that only read open it with
``writable=False``, which changes nothing in the file, and refuse a database of an older schema
with a sentence that says to start the daemon once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from pathlib import Path

import sqlite_utils

from contract.pipeline import FIRST_STAGE, LAST_STAGE, STAGES
from daemon import scheduler
from daemon.errors import (
    DatabaseCorrupt,
    DatabaseLocked,
    DatabaseTooNew,
    DatabaseTooOld,
    JobNotFound,
    JobNotRetryable,
    StateFull,
    StoreError,
)
from daemon.jobs import AudioFacts, Job, JobFacts, JobId, JobState, Signature, StageRecord
from daemon.lock import kernel_locks
from daemon.migrations import MIGRATIONS, SCHEMA_VERSION

# Below this much free space (or 16 free inodes) the state folder counts as full: the daemon
# claims no new work until there is more, and ``autokr status`` says so.
MIN_STATE_FREE_BYTES = 4 * 1024 * 1024
MIN_STATE_FREE_INODES = 16
# How long a write waits for another process's write lock before the daemon pauses instead. The
# daemon's own transactions and those of `autokr retry` take milliseconds; this bounds how long
# the main loop can be held up by someone else's (the watchdog allows 120 s).
BUSY_SECONDS = 10.0
WAL_WRITE_LOCK_BYTE = 120  # sqlite3.c: WALINDEX_LOCK_OFFSET, the first of the -shm file's lock bytes


def path_key(path: str) -> bytes:
    """The bytes of a path as the file system has them (the inverse of ``os.fsdecode``)."""
    return os.fsencode(path)


def readable_path(path: str) -> str:
    """Valid text for the ``path`` column: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def state_space_problem(folder: Path) -> str | None:
    """``"state folder is full (…)"`` when ``folder``'s disk is (nearly) full, else None."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if stats.f_files and stats.f_favail < MIN_STATE_FREE_INODES:
        return f"state folder is full (no free inodes: {stats.f_favail} files can still be made in {folder})"
    if free < MIN_STATE_FREE_BYTES:
        return f"state folder is full ({free // 1024} KiB free in {folder})"
    return None


def lock_holders(path: Path) -> list[int]:
    """The other process that holds the database's write lock: in WAL mode, SQLite's
    ``WAL_WRITE_LOCK`` is a POSIX lock on byte 120 of the ``-shm`` file, which ``/proc/locks``
    shows with its pid (readers, the daemon among them, hold other bytes)."""
    return sorted(
        {
            pid
            for kind, mode, pid, start, end in kernel_locks(Path(f"{path}-shm"))
            if kind == "POSIX"
            and mode == "WRITE"
            and pid != os.getpid()
            and int(start) <= WAL_WRITE_LOCK_BYTE
            and (end == "EOF" or int(end) >= WAL_WRITE_LOCK_BYTE)
        }
    )


def _locked(path: Path) -> DatabaseLocked:
    holders = lock_holders(path)
    who = f" (pid {', '.join(map(str, holders))})" if holders else ""
    return DatabaseLocked(f"the database {path} is locked by another process{who}")


def _is_busy(error: sqlite3.OperationalError) -> bool:
    name = getattr(error, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(error)


def _database_problem(path: Path, error: Exception) -> DatabaseCorrupt:
    return DatabaseCorrupt(
        f"{path} is damaged or not a usable SQLite database ({error}); AutoKR left it untouched. "
        f"Stop AutoKR, move the file aside (mv {path} {path}.damaged) and start it again: it finds your "
        "videos anew and keeps every subtitle already written."
    )


class Store:
    """The narrow interface the rest of AutoKR uses; SQL stays in this module."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        writable: bool = True,
        migrate: bool = True,
        busy_seconds: float = BUSY_SECONDS,
    ) -> None:
        """``writable=False``: for commands that only read; nothing in the file changes.
        ``migrate=False``: for commands that write a row (``retry``); only the daemon upgrades
        a database. Without either, a database of an older schema is refused
        (``DatabaseTooOld``) and left as it is."""
        self.path = path
        self.clock = clock
        existed = path.exists()
        current = self._refuse_if_unusable()
        if not (writable and (migrate or not existed)) and current < SCHEMA_VERSION:
            raise DatabaseTooOld(
                f"{path} is from an older AutoKR (schema {current}, this one reads {SCHEMA_VERSION}); "
                "start the daemon once (systemctl start autokr, or autokr run) to upgrade it, then try again"
            )
        if not writable:
            connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                         check_same_thread=False, timeout=busy_seconds)  # fmt: skip
            self.db = sqlite_utils.Database(connection)
            return
        try:
            connection = sqlite3.connect(str(path), timeout=busy_seconds, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {int(busy_seconds * 1000)}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.OperationalError as error:
            if _is_busy(error):
                raise _locked(path) from error
            raise _database_problem(path, error) from error
        except sqlite3.DatabaseError as error:
            raise _database_problem(path, error) from error
        if str(mode).lower() != "wal":
            raise StoreError(
                f"{path}: cannot switch to WAL mode (journal_mode={mode}); is it on a network file system?"
            )
        self.db = sqlite_utils.Database(connection)
        self._migrate()

    def _refuse_if_unusable(self) -> int:
        """Checks an existing file read-only before anything writes to it: switching to WAL
        alone rewrites its header, a database from a newer AutoKR must stay as it is, and one
        with damaged pages (``PRAGMA quick_check``) must be refused before it is used."""
        if not self.path.exists():
            return SCHEMA_VERSION
        try:
            connection = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                current = 0
                if "schema_migrations" in tables:
                    current = connection.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
                problems = [row[0] for row in connection.execute("PRAGMA quick_check(3)")]
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            raise _database_problem(self.path, error) from error
        if problems != ["ok"]:
            raise _database_problem(self.path, RuntimeError("; ".join(problems)))
        if current > SCHEMA_VERSION:
            raise DatabaseTooNew(
                f"{self.path} was written by a newer AutoKR (schema {current}, this one knows "
                f"{SCHEMA_VERSION}); AutoKR left it untouched. Upgrade AutoKR."
            )
        return int(current)

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction for a table of its own (``daemon/announcer.py``'s outbox)."""
        return self._write()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``StateFull`` (nothing written) when the disk is full."""
        connection = self.db.conn
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:  # SQLite may have rolled back by itself already
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            if self._disk_full(error):
                raise StateFull(state_space_problem(self.path.parent) or f"state folder is full ({error})") from error
            if _is_busy(error):
                raise _locked(self.path) from error
            raise

    def lock_is_free(self) -> bool:
        """Whether a write could start now, asked without waiting (while the daemon is paused
        for another process's lock)."""
        probe = sqlite3.connect(str(self.path), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()

    def _disk_full(self, error: sqlite3.OperationalError) -> bool:
        name = getattr(error, "sqlite_errorname", "")
        if name == "SQLITE_FULL" or "database or disk is full" in str(error):
            return True
        # Growing the WAL index on a full disk reports an I/O error, not SQLITE_FULL.
        return name.startswith("SQLITE_IOERR") and state_space_problem(self.path.parent) is not None

    def _migrate(self) -> None:
        try:
            with self._write() as connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
                )
                row = connection.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
                current = row[0] or 0
                if current > SCHEMA_VERSION:
                    raise DatabaseTooNew(
                        f"{self.path} was written by a newer AutoKR (schema {current}, this one knows "
                        f"{SCHEMA_VERSION}); AutoKR left it untouched. Upgrade AutoKR."
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    # Applied and recorded in the same transaction: a crash leaves neither.
                    MIGRATIONS[version](self.db)
                    connection.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (version, self.clock()),
                    )
        except sqlite3.DatabaseError as error:
            raise _database_problem(self.path, error) from error

    # --- reading -------------------------------------------------------------------------

    def _rows(self, where: str = "1", params: tuple[object, ...] = (), limit: int | None = None) -> list[Job]:
        tail = f" LIMIT {int(limit)}" if limit else ""
        cursor = self.db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id{tail}", params)
        names = [d[0] for d in cursor.description]
        return [Job.from_row(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def jobs(self) -> list[Job]:
        return self._rows()

    def get(self, job_id: JobId) -> Job:
        found = self._rows("id = ?", (job_id,))
        if not found:
            raise JobNotFound(f"no job with id {job_id}")
        return found[0]

    def find(self, path: str) -> Job | None:
        found = self._rows("path_key = ?", (path_key(path),))
        return found[0] if found else None

    def resolve(self, id_or_path: str) -> Job:
        if id_or_path.isdigit():
            with contextlib.suppress(JobNotFound):
                return self.get(JobId(int(id_or_path)))
        job = self.find(str(Path(id_or_path).absolute()))
        if job is None:
            raise JobNotFound(f"no job for {id_or_path}")
        return job

    def select(self, state: JobState | None, prefix: bytes | None, limit: int | None = None) -> list[Job]:
        """Jobs in ``state`` whose path starts with ``prefix`` (bytes, as ``path_key``)."""
        where: list[str] = ["1"]
        params: list[object] = []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if prefix is not None:  # the path itself, or a folder: what lies under it
            folder = prefix.rstrip(b"/") + b"/"
            where.append("(path_key = ? OR substr(path_key, 1, ?) = ?)")
            params += [prefix, len(folder), folder]
        return self._rows(" AND ".join(where), tuple(params), limit)

    def recent(self, state: JobState, limit: int) -> list[Job]:
        """The ``limit`` jobs that reached ``state`` last, newest first."""
        cursor = self.db.execute(
            "SELECT id FROM jobs WHERE state = ? ORDER BY updated_at DESC LIMIT ?", (state.value, limit)
        )
        return [self.get(JobId(row[0])) for row in cursor.fetchall()]

    def queued_by_stage(self) -> dict[str, int]:
        cursor = self.db.execute(
            "SELECT stage, COUNT(*) FROM jobs WHERE state = ? GROUP BY stage", (JobState.QUEUED.value,)
        )
        return dict(cursor.fetchall())

    def counts(self) -> dict[JobState, int]:
        cursor = self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(state): count for state, count in cursor.fetchall()}

    # --- writing -------------------------------------------------------------------------

    def _update(self, connection: sqlite3.Connection, job_id: JobId, **values: object) -> None:
        values = {name: value.value if isinstance(value, JobState) else value for name, value in values.items()}
        values["updated_at"] = self.clock()
        assignments = ", ".join(f"{name} = ?" for name in values)
        connection.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))

    def add(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        state: JobState = JobState.QUEUED,
        error: str | None = None,
        note: str | None = None,
        force: bool = False,
        audio: AudioFacts | None = None,
        priority: float = 0.0,
        duration: float | None = None,
    ) -> Job:
        """Records a new video, or starts a known path over (new content, or forced).

        The signatures of the subtitles AutoKR wrote for the path (``JobFacts.subtitles``) are
        kept: they tell AutoKR's own old subtitle from one a person saved. ``audio``: the
        spoken language of its track as intake found it; ``priority``: someone asked for it."""
        now = self.clock()
        key = path_key(path)
        with self._write() as connection:
            existing = connection.execute(
                "SELECT id, generation, facts FROM jobs WHERE path_key = ?", (key,)
            ).fetchone()
            previous = JobFacts.from_json(existing[2]) if existing is not None else JobFacts()
            fresh = dict(
                size=size, mtime_ns=mtime_ns, state=JobState(state).value, stage=FIRST_STAGE, progress=None, attempts=0,
                not_before=0, runs="{}", error=error, stderr_tail=None, note=note, force=int(force),
                facts=replace(previous.kept_for_new_content(), audio=audio, duration=duration).to_json(),
                priority=priority,
            )  # fmt: skip
            if existing is None:
                connection.execute(
                    "INSERT INTO jobs (path_key, path, generation, created_at, updated_at, "
                    + ", ".join(fresh)
                    + ") VALUES (?, ?, 0, ?, ?, "
                    + ", ".join("?" for _ in fresh)
                    + ")",
                    (key, readable_path(path), now, now, *fresh.values()),
                )
            else:
                self._update(connection, existing[0], generation=existing[1] + 1, **fresh)
        job = self.find(path)
        assert job is not None
        return job

    def prioritize(self, job_ids: Collection[JobId], when: float) -> list[Job]:
        """Someone asked for these videos first (a play webhook): those still waiting or running
        get ``priority`` ``when`` (the scheduler takes them before the rest); returns them."""
        with self._write() as connection:
            for job_id in job_ids:
                connection.execute(
                    "UPDATE jobs SET priority = ? WHERE id = ? AND state IN (?, ?)",
                    (when, job_id, JobState.QUEUED.value, JobState.RUNNING.value),
                )
        return [job for job_id in job_ids for job in self._rows("id = ?", (job_id,)) if job.priority]

    def record_seconds(self, stage: str, seconds: dict[JobId, float]) -> None:
        """Each video's share of its cohort's wall time at ``stage`` (``StageRecord.seconds``),
        written once the cohort's worker has ended."""
        with self._write() as connection:
            for job_id, taken in seconds.items():
                facts = self._facts(connection, job_id)
                record = replace(facts.stages.get(stage, StageRecord()), seconds=round(taken, 3))
                facts = replace(facts, stages={**facts.stages, stage: record})
                connection.execute("UPDATE jobs SET facts = ? WHERE id = ?", (facts.to_json(), job_id))

    def outbox_counts(self) -> list[tuple[str, str, int]]:
        """(target, state, how many) of the announcements still to make (``pending``) or refused
        (``rejected``): ``daemon/announcer.py``'s outbox, for the metrics."""
        cursor = self.db.execute(
            "SELECT target, state, COUNT(*) FROM outbox WHERE state IN ('pending', 'rejected') GROUP BY target, state"
        )
        return [(str(target), str(state), int(number)) for target, state, number in cursor.fetchall()]

    def skipped_notes(self) -> list[str]:
        """The notes of the skipped videos (why each was skipped), for the summary's counts."""
        cursor = self.db.execute("SELECT note FROM jobs WHERE state = ?", (JobState.SKIPPED.value,))
        return [row[0] or "" for row in cursor.fetchall()]

    def recover_interrupted(self) -> list[Job]:
        """Jobs left ``running`` by a daemon that died go back to waiting at the same stage."""
        with self._write() as connection:
            rows = connection.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()
            for (job_id,) in rows:
                self._update(connection, job_id, state=JobState.QUEUED, progress=None)
        return [self.get(job_id) for (job_id,) in rows]

    def ready(self) -> list[Job]:
        """Queued jobs whose backoff is over, oldest first. A clock that stepped back below the
        moment a backoff began (an RTC corrected by NTP) ends that backoff rather than
        stretching it by the jump."""
        now = self.clock()
        return self._rows("state = ? AND (not_before <= ? OR updated_at > ?)", (JobState.QUEUED.value, now, now))

    def next_cohort(self, limit: int, stages: Collection[str] = STAGES) -> list[Job]:
        """Up to ``limit`` jobs for the next worker, at one of ``stages`` (what its slot runs),
        as ``daemon.scheduler`` decides (read only; ``claim`` takes them)."""
        return scheduler.next_cohort([job for job in self.ready() if job.stage in stages], STAGES, limit)

    def claim(self, jobs: list[Job], languages: tuple[str, str] | None = None) -> list[Job]:
        """Marks ``jobs`` running, counting a run of their stage; returns those still waiting
        as they were (a job changed meanwhile is left out). ``languages``: pinned on the jobs
        whose first stage starts now (``JobFacts.languages``)."""
        claimed = []
        with self._write() as connection:
            for job in jobs:
                row = connection.execute(
                    "SELECT generation, state, stage, runs FROM jobs WHERE id = ?", (job.id,)
                ).fetchone()
                if row is None or tuple(row[:3]) != (job.generation, JobState.QUEUED.value, job.stage):
                    continue
                runs = json.loads(row[3])
                runs[job.stage] = runs.get(job.stage, 0) + 1
                pinned = {}
                if languages is not None and job.stage == FIRST_STAGE:
                    pinned["facts"] = replace(self._facts(connection, job.id), languages=languages).to_json()
                self._update(connection, job.id, state=JobState.RUNNING, progress=0.0, runs=json.dumps(runs), **pinned)
                claimed.append(job.id)
        return [self.get(job_id) for job_id in claimed]

    def claim_next_cohort(self, limit: int) -> list[Job]:
        """``claim(next_cohort(limit))``."""
        return self.claim(self.next_cohort(limit))

    def _current(self, connection: sqlite3.Connection, job: Job) -> bool:
        """True while the job is still the run we started (not reset or dropped meanwhile)."""
        row = connection.execute("SELECT generation, state, stage FROM jobs WHERE id = ?", (job.id,)).fetchone()
        return row is not None and tuple(row) == (job.generation, JobState.RUNNING.value, job.stage)

    def set_progress(self, job: Job, percent: float) -> None:
        with self._write() as connection:
            if self._current(connection, job):
                self._update(connection, job.id, progress=round(percent, 1))

    def complete_stage(
        self,
        job: Job,
        record: StageRecord | None = None,
        subtitles: dict[str, Signature] | None = None,
        subtitles_for: Signature | None = None,
        note: str | None = None,
        skipped: bool = False,
        audio: AudioFacts | None = None,
    ) -> bool:
        """Marks ``job.stage`` complete (its output is durably in place); False if stale.

        ``record``: what ran the stage (its model). ``subtitles``: AutoKR's own subtitles for
        the path now (written by the last stage, or still untouched from before), each with its
        signature; ``subtitles_for``: the video's signature when some were written now.
        ``skipped``: the stage found the video is not AutoKR's to subtitle (a subtitle it must
        not replace, speech in another language); the job ends ``skipped`` with ``note`` saying
        why, whatever stage it was at. ``audio``: the spoken language the stage heard.
        """
        with self._write() as connection:
            if not self._current(connection, job):
                return False
            facts = self._facts(connection, job.id).with_stage(job.stage, record or StageRecord())
            if subtitles is not None:
                facts = replace(facts, subtitles=subtitles)
            if subtitles_for is not None:
                facts = replace(facts, subtitles_for=subtitles_for)
            if audio is not None:
                facts = replace(facts, audio=audio)
            if job.stage == LAST_STAGE or skipped:
                self._update(
                    connection, job.id, state=JobState.SKIPPED if skipped else JobState.DONE, progress=100.0,
                    attempts=0, error=None, stderr_tail=None, facts=facts.to_json(), note=note, force=0,
                )  # fmt: skip
            else:
                following = STAGES[STAGES.index(job.stage) + 1]
                self._update(
                    connection, job.id, state=JobState.QUEUED, stage=following, progress=None, attempts=0,
                    error=None, stderr_tail=None, facts=facts.to_json(),
                )  # fmt: skip
        return True

    @staticmethod
    def _facts(connection: sqlite3.Connection, job_id: JobId) -> JobFacts:
        row = connection.execute("SELECT facts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobFacts.from_json(row[0] if row else None)

    def requeue_smaller(self, job: Job, level: int, reason: str) -> bool:
        """The worker ran out of GPU memory: the job waits at the same stage, to be run again
        with less memory (``level`` steps down: half the batch, then a smaller model). Not a
        failed attempt: it is the daemon's own sizing that changes."""
        with self._write() as connection:
            if not self._current(connection, job):
                return False
            facts = self._facts(connection, job.id)
            facts = replace(facts, memory_levels={**facts.memory_levels, job.stage: level})
            self._update(
                connection, job.id, state=JobState.QUEUED, progress=None, error=reason, facts=facts.to_json()
            )  # fmt: skip
        return True

    def fail_stage(
        self,
        job: Job,
        reason: str,
        stderr_tail: str,
        permanent: bool,
        max_attempts: int,
        backoff_seconds: float,
    ) -> Job | None:
        """Records a failed attempt: back to the queue with backoff, or ``failed`` for good."""
        with self._write() as connection:
            if not self._current(connection, job):
                return None
            attempts = job.attempts + 1
            if permanent or attempts >= max_attempts:
                self._update(
                    connection, job.id, state=JobState.FAILED, attempts=attempts, error=reason,
                    stderr_tail=stderr_tail or None, progress=None,
                )  # fmt: skip
            else:
                delay = backoff_seconds * 2 ** (attempts - 1)
                self._update(
                    connection, job.id, state=JobState.QUEUED, attempts=attempts, error=reason,
                    stderr_tail=stderr_tail or None, progress=None, not_before=self.clock() + delay,
                )  # fmt: skip
        return self.get(job.id)

    def note_waiting(self, stage: str, note: str | None, prefix: str) -> None:
        """The queued jobs at ``stage`` get ``note`` (why they wait); None clears the notes
        that begin with ``prefix`` (the wait is over). Rows already so are not written."""
        with self._write() as connection:
            if note is None:
                connection.execute(
                    "UPDATE jobs SET note = NULL WHERE state = ? AND stage = ? AND substr(note, 1, ?) = ?",
                    (JobState.QUEUED.value, stage, len(prefix), prefix),
                )
            else:
                connection.execute(
                    "UPDATE jobs SET note = ? WHERE state = ? AND stage = ? AND note IS NOT ?",
                    (note, JobState.QUEUED.value, stage, note),
                )

    def release(self, job: Job) -> None:
        """A worker stopped on purpose (shutdown): the job waits at the same stage."""
        with self._write() as connection:
            if self._current(connection, job):
                self._update(connection, job.id, state=JobState.QUEUED, progress=None)

    def forget_subtitles(self, job: Job, paths: list[str]) -> None:
        """AutoKR's own old subtitles at ``paths`` were removed: forget their signatures."""
        with self._write() as connection:
            facts = self._facts(connection, job.id)
            kept = {path: signature for path, signature in facts.subtitles.items() if path not in paths}
            self._update(connection, job.id, facts=replace(facts, subtitles=kept).to_json())

    def drop(self, job_id: JobId, note: str) -> None:
        with self._write() as connection:
            self._update(connection, job_id, state=JobState.DROPPED, note=note, progress=None)

    def retry(self, id_or_path: str, force: bool = False) -> Job:
        """``failed`` → waiting again at the stage that failed; ``force`` redoes everything."""
        job = self.resolve(id_or_path)
        with self._write() as connection:
            if force:
                self._update(
                    connection, job.id, state=JobState.QUEUED, stage=FIRST_STAGE, attempts=0, not_before=0,
                    error=None, stderr_tail=None, note=None, progress=None, force=1,
                    generation=job.generation + 1,
                )  # fmt: skip
            elif job.state in (JobState.FAILED, JobState.DROPPED) or (
                job.state == JobState.QUEUED and job.not_before > self.clock()
            ):  # failed, or waiting out a backoff after a failed attempt
                self._update(
                    connection, job.id, state=JobState.QUEUED, attempts=0, not_before=0, error=None,
                    stderr_tail=None, progress=None, generation=job.generation + 1,
                )  # fmt: skip
            else:
                raise JobNotRetryable(f"job {job.id} is {job.state}, not failed; use --force to redo it from the start")
        return self.get(job.id)
