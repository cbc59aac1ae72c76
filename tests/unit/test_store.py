"""The job store's contract, on real SQLite files."""

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from daemon.errors import DatabaseCorrupt, DatabaseTooNew, JobNotFound, JobNotRetryable
from daemon.jobs import JobFacts, JobState, StageRecord
from daemon.migrations import SCHEMA_VERSION
from daemon.store import Store
from testkit.database import damaged_database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    clock = Clock()
    opened = Store(tmp_path / "autokr.sqlite3", clock=clock)
    opened.test_clock = clock  # type: ignore[attr-defined]
    yield opened
    opened.close()


def test_a_job_walks_through_every_stage_counting_runs(store):
    job = store.add("/inbox/a.mkv", 10, 1)
    for stage in ("extract", "transcribe", "translate", "subtitle"):
        (claimed,) = store.claim_next_cohort(8)
        assert (claimed.state, claimed.stage) == ("running", stage)
        record = StageRecord(model="m", engine="ctranslate2", batch_size=8) if stage == "transcribe" else None
        assert store.complete_stage(claimed, record)
    done = store.get(job.id)
    assert done.state == JobState.DONE and done.stage == "subtitle"
    assert done.runs == {"extract": 1, "transcribe": 1, "translate": 1, "subtitle": 1}
    assert done.facts == JobFacts(stages={"transcribe": StageRecord(model="m", engine="ctranslate2", batch_size=8)})
    # status --json keeps its documented shape: one "<stage>_<fact>" key per fact.
    models = done.as_public_dict()["models"]
    assert models == {"transcribe_model": "m", "transcribe_engine": "ctranslate2", "transcribe_batch_size": 8}


def test_a_cohort_on_its_way_goes_first_and_batches_respect_the_limit(store):
    first = store.add("/a.mkv", 1, 1)
    (claimed,) = store.claim_next_cohort(8)
    store.complete_stage(claimed, {})
    for name in "bcd":
        store.add(f"/{name}.mkv", 1, 1)
    # /a.mkv is past extract: it finishes its way before the new videos start theirs.
    (again,) = store.claim_next_cohort(2)
    assert (again.id, again.stage) == (first.id, "transcribe")
    batch = store.claim_next_cohort(2)  # three waiting, two a worker: the odd one first
    assert [(job.path, job.stage) for job in batch] == [("/b.mkv", "extract")]


def test_interrupted_jobs_resume_at_the_same_stage(store, tmp_path):
    store.add("/a.mkv", 1, 1)
    (claimed,) = store.claim_next_cohort(1)
    store.complete_stage(claimed, {})
    (running,) = store.claim_next_cohort(1)
    assert running.stage == "transcribe"
    reopened = Store(tmp_path / "autokr.sqlite3")
    (recovered,) = reopened.recover_interrupted()
    assert (recovered.state, recovered.stage) == ("queued", "transcribe")
    (again,) = reopened.claim_next_cohort(1)
    assert again.runs == {"extract": 1, "transcribe": 2}
    reopened.close()


def test_failures_back_off_then_fail_for_good_and_retry_requeues(store):
    store.add("/a.mkv", 1, 1)
    (job,) = store.claim_next_cohort(1)
    queued = store.fail_stage(job, "worker was killed by SIGKILL", "tail", False, max_attempts=2, backoff_seconds=30)
    assert queued.state == "queued" and queued.not_before == 1030.0
    assert store.claim_next_cohort(1) == []  # backing off
    store.test_clock.now = 1031.0
    (job,) = store.claim_next_cohort(1)
    failed = store.fail_stage(job, "again", "last lines", False, max_attempts=2, backoff_seconds=30)
    assert (failed.state, failed.error, failed.stderr_tail) == ("failed", "again", "last lines")
    retried = store.retry(str(job.id))
    assert (retried.state, retried.stage, retried.attempts, retried.error) == ("queued", "extract", 0, None)


def test_permanent_failure_fails_at_once(store):
    store.add("/a.mkv", 1, 1)
    (job,) = store.claim_next_cohort(1)
    failed = store.fail_stage(job, "the file has no audio track", "", True, max_attempts=5, backoff_seconds=1)
    assert failed.state == "failed" and failed.attempts == 1


def test_results_for_a_replaced_file_are_ignored(store):
    store.add("/a.mkv", 1, 1)
    (old_run,) = store.claim_next_cohort(1)
    store.add("/a.mkv", 2, 2)  # a different file now has that name
    assert store.complete_stage(old_run, {}) is False
    fresh = store.find("/a.mkv")
    assert (fresh.state, fresh.stage, fresh.runs, fresh.size) == ("queued", "extract", {}, 2)


def test_retry_of_unknown_or_done_job_says_why(store):
    with pytest.raises(JobNotFound):
        store.retry("/nowhere.mkv")
    job = store.add("/a.mkv", 1, 1, state=JobState.SKIPPED)
    with pytest.raises(JobNotRetryable, match="job 1 is skipped, not failed; use --force"):
        store.retry(str(job.id))
    forced = store.retry(str(job.id), force=True)
    assert forced.state == "queued" and forced.force


def test_database_settings(store):
    connection = store.db.conn
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    versions = connection.execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


def test_a_second_writer_waits_instead_of_failing(tmp_path):
    path = tmp_path / "autokr.sqlite3"
    first, second = Store(path), Store(path)
    first.add("/a.mkv", 1, 1)
    errors = []

    def hammer(store: Store, prefix: str) -> None:
        try:
            for number in range(100):
                store.add(f"/{prefix}{number}.mkv", 1, 1)
                store.jobs()
        except sqlite3.OperationalError as error:
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(s, p)) for s, p in ((first, "x"), (second, "y"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(first.jobs()) == 201


def test_corrupt_or_newer_database_is_refused_and_left_untouched(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseCorrupt, match="left it untouched"):
        Store(corrupt)
    assert corrupt.read_bytes() == b"this is not sqlite" * 100

    newer = tmp_path / "newer.sqlite3"
    Store(newer).close()
    with sqlite3.connect(newer) as connection:
        connection.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    before = newer.read_bytes()
    with pytest.raises(DatabaseTooNew, match="newer AutoKR"):
        Store(newer)
    assert newer.read_bytes() == before


# The schema exactly as release 0.1.0 (schema 1) wrote it, and one of its rows.
SCHEMA_1 = """
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL);
CREATE TABLE "jobs" (
   "id" INTEGER PRIMARY KEY, "path" TEXT NOT NULL, "size" INTEGER, "mtime_ns" INTEGER,
   "state" TEXT NOT NULL, "stage" TEXT NOT NULL, "progress" REAL,
   "attempts" INTEGER NOT NULL DEFAULT 0, "not_before" REAL DEFAULT 0,
   "runs" TEXT NOT NULL DEFAULT '{}', "error" TEXT, "stderr_tail" TEXT, "note" TEXT,
   "generation" INTEGER NOT NULL DEFAULT 0, "force" INTEGER DEFAULT 0,
   "facts" TEXT NOT NULL DEFAULT '{}', "created_at" REAL, "updated_at" REAL
);
CREATE UNIQUE INDEX "idx_jobs_path" ON "jobs" ("path");
CREATE INDEX "idx_jobs_state_stage" ON "jobs" ("state", "stage");
INSERT INTO schema_migrations VALUES (1, 0);
INSERT INTO jobs (path, size, mtime_ns, state, stage, runs, facts, created_at, updated_at)
VALUES ('/inbox/猫 - 01.mkv', 10, 5, 'done', 'subtitle', '{"extract": 1}',
        '{"subtitles": {"/inbox/猫 - 01.ko.srt": [3, 4]}}', 1, 1);
"""


def test_migration_2_keeps_every_job_of_a_schema_1_database_and_takes_bytes_paths(tmp_path):
    path = tmp_path / "autokr.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_1)
    store = Store(path)
    try:
        (job,) = store.jobs()
        assert (job.path, job.state, job.runs) == ("/inbox/猫 - 01.mkv", "done", {"extract": 1})
        assert store.find("/inbox/猫 - 01.mkv") == job
        # The same path again is the same job (unique on the bytes), not a second one.
        assert store.add("/inbox/猫 - 01.mkv", 11, 6).id == job.id and len(store.jobs()) == 1
        shift_jis = os.fsdecode("/inbox/猫の話.mkv".encode("shift_jis"))
        added = store.add(shift_jis, 1, 1)
        assert os.fsencode(store.get(added.id).path) == "/inbox/猫の話.mkv".encode("shift_jis")
        assert store.db.execute("SELECT path FROM jobs WHERE id = ?", (added.id,)).fetchone()[0] == (
            "/inbox/\\x94L\\x82\u0318b.mkv"  # text for the sqlite3 shell (\\xcc\\x98 happens to be UTF-8)
        )
        versions = store.db.execute("SELECT version FROM schema_migrations").fetchall()
    finally:
        store.close()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


# A job as schema 2 (releases up to issue 12) stored it: what ran each stage as suffixed keys.
SCHEMA_2_FACTS = {
    "transcribe_model": "large-v3", "transcribe_engine": "ctranslate2 float16", "transcribe_decoding": "batched",
    "transcribe_batch_size": 16, "translate_model": "nllb-200-1.3B", "translate_batch_size": 32,
    "subtitles": {"/inbox/a.ko.srt": [3, 4]}, "subtitles_for": [10, 5], "memory_levels": {"transcribe": 1},
}  # fmt: skip


def test_migration_3_turns_suffixed_model_keys_into_one_record_per_stage(tmp_path):
    import json

    path = tmp_path / "autokr.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_1)
        connection.execute("ALTER TABLE jobs ADD COLUMN path_key BLOB")
        connection.execute("UPDATE jobs SET path_key = CAST(path AS BLOB), facts = ?", (json.dumps(SCHEMA_2_FACTS),))
        connection.execute("INSERT INTO schema_migrations VALUES (2, 0)")
    with Store(path) as store:
        (job,) = store.jobs()
        stored = json.loads(store.db.execute("SELECT facts FROM jobs").fetchone()[0])
    assert job.facts == JobFacts(
        stages={
            "transcribe": StageRecord("large-v3", "ctranslate2 float16", "batched", 16),
            "translate": StageRecord("nllb-200-1.3B", batch_size=32),
        },
        subtitles={"/inbox/a.ko.srt": (3, 4)},
        subtitles_for=(10, 5),
        memory_levels={"transcribe": 1},
    )
    assert not any(key.endswith(("_model", "_engine", "_decoding", "_batch_size")) for key in stored)
    # What status --json shows is what it showed before the upgrade.
    models = {key: value for key, value in SCHEMA_2_FACTS.items() if key.startswith(("transcribe_", "translate_"))}
    assert job.as_public_dict()["models"] == models


def test_a_replaced_video_keeps_the_signatures_of_autokrs_own_subtitles(store):
    job = store.add("/a.mkv", 1, 1)
    for _ in range(4):
        (claimed,) = store.claim_next_cohort(1)
        store.complete_stage(
            claimed, StageRecord(model="m"), subtitles={"/a.ko.srt": (7, 8)}, subtitles_for=claimed.signature
        )
    again = store.add("/a.mkv", 2, 2)  # new content under the same name
    assert again.id == job.id and again.state == JobState.QUEUED
    assert again.facts == JobFacts(subtitles={"/a.ko.srt": (7, 8)}, subtitles_for=(1, 1))


def test_a_database_with_damaged_pages_is_refused_and_left_byte_identical(tmp_path):
    path = tmp_path / "autokr.sqlite3"
    data = damaged_database(path, "/inbox")
    with pytest.raises(DatabaseCorrupt, match="damaged") as caught:
        Store(path)
    assert str(path) in str(caught.value) and "move the file aside" in str(caught.value)
    assert path.read_bytes() == data


def test_a_subtitle_whose_name_is_not_utf8_is_remembered_with_its_bytes(store):
    video = os.fsdecode("/inbox/猫の話.mkv".encode("shift_jis"))
    subtitle = os.fsdecode("/inbox/猫の話.ko.srt".encode("shift_jis"))
    store.add(video, 1, 1)
    for _ in range(4):
        (claimed,) = store.claim_next_cohort(1)
        assert store.complete_stage(claimed, subtitles={subtitle: (5, 6)}, subtitles_for=claimed.signature)
    (job,) = store.jobs()
    assert job.state == JobState.DONE
    assert [os.fsencode(path) for path in job.facts.subtitles] == ["/inbox/猫の話.ko.srt".encode("shift_jis")]


def database_of_schema(path: Path, schema: int, video: str) -> None:
    """A database as the release with ``schema`` left it, with one done job for ``video``."""
    import sqlite_utils

    from daemon.migrations import MIGRATIONS

    db = sqlite_utils.Database(path)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version in range(1, schema + 1):
        MIGRATIONS[version](db)
        db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
    db.execute(
        "INSERT INTO jobs (path, path_key, size, mtime_ns, state, stage, facts) "
        "VALUES (?, CAST(? AS BLOB), 1, 1, 'done', 'subtitle', '{}')",
        (video, video),
    )
    db.conn.commit()
    db.conn.close()


def test_migration_4_adds_the_outbox_to_a_schema_3_database_and_keeps_its_jobs(tmp_path):

    path = tmp_path / "autokr.sqlite3"
    database_of_schema(path, 3, "/inbox/a.mkv")  # as release 3 (issue 12) left it
    with Store(path) as store:
        assert [(job.path, job.state) for job in store.jobs()] == [("/inbox/a.mkv", JobState.DONE)]
        assert "outbox" in store.db.table_names()
        assert store.db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION


def test_migration_5_adds_the_series_memory_to_a_schema_4_database_and_keeps_its_jobs(tmp_path):

    from daemon.series import SeriesMemory

    path = tmp_path / "autokr.sqlite3"
    database_of_schema(path, 4, "/inbox/Show/a.mkv")  # as release 09e5430 (schema 4) left it
    with Store(path) as store:
        assert [(job.path, job.state) for job in store.jobs()] == [("/inbox/Show/a.mkv", JobState.DONE)]
        assert store.db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION
        memory = SeriesMemory(store)
        assert memory.terms(Path("/inbox/Show")) == ()
        memory.remember(Path("/inbox/Show"), [("田中", "다나카")], 1)
        assert memory.terms(Path("/inbox/Show")) == (("田中", "다나카"),)


def test_migration_6_adds_priority_to_a_schema_5_database_and_a_play_puts_a_waiting_video_first(tmp_path):

    path = tmp_path / "autokr.sqlite3"
    database_of_schema(path, 5, "/inbox/Show/a.mkv")  # as release 2c3ec90 (schema 5) left it
    with Store(path) as store:
        (done,) = store.jobs()
        assert (done.state, done.priority) == (JobState.DONE, 0.0)
        waiting = [store.add(f"/inbox/Show/S01E0{number}.mkv", 1, number) for number in (1, 2, 3)]
        assert [job.id for job in store.next_cohort(8)] == [job.id for job in waiting]
        assert store.prioritize([waiting[2].id, done.id], 42.0) == [store.get(waiting[2].id)]
        assert store.get(done.id).priority == 0.0  # a finished video is not asked for again
        assert [job.id for job in store.next_cohort(8)] == [waiting[2].id]
        assert store.get(waiting[2].id).as_public_dict()["priority"] == 42.0
