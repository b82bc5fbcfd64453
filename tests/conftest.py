"""Shared fixtures: paths to the real public data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The real fixtures: ../shared/data beside the project, or $CIVICGRID_SHARED_DATA.
SHARED = Path(os.environ.get("CIVICGRID_SHARED_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only real fixtures folder (../shared/data beside the project)."""
    if not SHARED.exists():
        pytest.fail(f"real fixtures not found at {SHARED}; they sit beside the project as ../shared/data "
                    "(or set CIVICGRID_SHARED_DATA)")
    return SHARED


#: Size and seed of the demo city shared by the test session.
DEMO_EVENTS = 30_000
DEMO_SEED = 7


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    """A small demo city database (30,000 events, seed 7) built once per test session. Do not write to it;
    copy it (``shutil.copy``) when a test needs to change data."""
    from data.demo import build_demo

    path = tmp_path_factory.mktemp("demo_city") / "demo.duckdb"
    build_demo(path, events=DEMO_EVENTS, seed=DEMO_SEED, progress=False)
    return path
