"""Where the tests find the repository and ../shared, and the one way a test says it cannot run
here: a skip on a developer's machine, a failure in CI (``AUTOKR_REQUIRE_ALL=1``, set by
``.ci/run``), where every test must run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED = REPOSITORY.parent / "shared"
REQUIRE_ALL = os.environ.get("AUTOKR_REQUIRE_ALL") == "1"


def skip_or_fail(reason: str) -> None:
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (AUTOKR_REQUIRE_ALL=1: this test must run here)")
    pytest.skip(reason)


def shared_sample(name: str) -> Path:
    path = SHARED / "samples" / name
    if not path.exists():
        skip_or_fail(f"{path} not available")
    return path
