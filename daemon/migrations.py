"""The database's schema, one numbered migration per change. ``Store`` applies the ones a
database lacks, each with its record in ``schema_migrations`` in one transaction, and refuses a
database whose schema is newer than ``SCHEMA_VERSION``. Each migration has a test that opens a
database as the release before it wrote one (``tests/unit/test_store.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlite_utils

from contract.pipeline import STAGES
from contract.protocol import JsonObject

SCHEMA_VERSION = 6


def _migration_1(db: sqlite_utils.Database) -> None:
    db["jobs"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "path": str,
            "size": int,
            "mtime_ns": int,
            "state": str,
            "stage": str,
            "progress": float,
            "attempts": int,
            "not_before": float,
            "runs": str,
            "error": str,
            "stderr_tail": str,
            "note": str,
            "generation": int,
            "force": int,
            "facts": str,
            "created_at": float,
            "updated_at": float,
        },  # fmt: skip
        pk="id",
        not_null={"path", "state", "stage", "attempts", "generation", "runs", "facts"},
        defaults={"attempts": 0, "not_before": 0, "runs": "{}", "facts": "{}", "generation": 0, "force": 0},
    )
    db["jobs"].create_index(["path"], unique=True)  # type: ignore[union-attr]
    db["jobs"].create_index(["state", "stage"])  # type: ignore[union-attr]


def _migration_2(db: sqlite_utils.Database) -> None:
    """Paths as bytes (``path_key``), so a file name that is not UTF-8 can be a job."""
    db.execute("ALTER TABLE jobs ADD COLUMN path_key BLOB")
    db.execute("UPDATE jobs SET path_key = CAST(path AS BLOB)")  # UTF-8 text: its bytes are the name's
    db.execute("DROP INDEX IF EXISTS idx_jobs_path")
    db.execute("CREATE UNIQUE INDEX idx_jobs_path_key ON jobs (path_key)")


def _migration_3(db: sqlite_utils.Database) -> None:
    """What ran each stage, as one record per stage (``{"stages": {"transcribe": {"model": …}}}``)
    instead of suffixed keys (``transcribe_model``); ``status --json`` shows the same ``models``."""
    suffixes = ("model", "engine", "decoding", "batch_size")
    for job_id, text in db.execute("SELECT id, facts FROM jobs").fetchall():
        facts = json.loads(text or "{}")
        stages: dict[str, JsonObject] = facts.setdefault("stages", {})
        for key in list(facts):
            for suffix in suffixes:
                stage = key[: -len(suffix) - 1]
                if key.endswith(f"_{suffix}") and stage in STAGES:
                    stages.setdefault(stage, {})[suffix] = facts.pop(key)
                    break
        if not stages:
            del facts["stages"]
        db.execute("UPDATE jobs SET facts = ? WHERE id = ?", (json.dumps(facts), job_id))


def _migration_4(db: sqlite_utils.Database) -> None:
    """The outbox: what media servers and notification services are still to be told
    (``daemon/announcer.py``), kept across restarts."""
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, target TEXT NOT NULL, topic TEXT NOT NULL, "
        "payload TEXT NOT NULL, created_at REAL NOT NULL, due_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "state TEXT NOT NULL, last_error TEXT, finished_at REAL)"
    )
    db.execute("CREATE INDEX idx_outbox_state ON outbox (state, target, topic)")


def _migration_5(db: sqlite_utils.Database) -> None:
    """The series memory (``daemon/series.py``): per series folder (its path as bytes, and a
    readable form), each name's Korean, whether the model or a person gave it, and when."""
    db.execute(
        "CREATE TABLE series_terms (folder BLOB NOT NULL, folder_text TEXT NOT NULL, source TEXT NOT NULL, "
        "target TEXT NOT NULL, origin TEXT NOT NULL, job_id INTEGER, updated_at REAL NOT NULL, "
        "PRIMARY KEY (folder, source))"
    )


def _migration_6(db: sqlite_utils.Database) -> None:
    """``priority``: when someone asked for a video first (a play webhook, ``daemon/web.py``);
    0 for every video a release before recorded."""
    db.execute("ALTER TABLE jobs ADD COLUMN priority REAL NOT NULL DEFAULT 0")


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _migration_1, 2: _migration_2, 3: _migration_3, 4: _migration_4, 5: _migration_5, 6: _migration_6,
}  # fmt: skip
