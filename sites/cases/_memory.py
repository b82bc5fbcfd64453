"""DuckDB's memory limit while the bulk case writes (:func:`~civicgrid.sites.cases.bulk.backfill`,
:func:`~civicgrid.sites.cases.link_rebounds`) run."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import duckdb

#: DuckDB memory limit while :func:`backfill` and :func:`link_rebounds` run on a connection that allows more
#: (both run in 1 GB at 10 million cases; without a cap DuckDB keeps a large write's blocks in memory, up to
#: 80 % of RAM by default).
CASES_MEMORY_LIMIT = "2GB"
_SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2.0**10,
               "mib": 2.0**20, "gib": 2.0**30, "tib": 2.0**40}


def size_bytes(text) -> float | None:
    """Bytes of a DuckDB size setting such as ``'2GB'`` or ``'18.8 GiB'`` (None when not understood)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    return None if unit is None else float(m.group(1)) * unit


@contextlib.contextmanager
def memory_cap(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Lower DuckDB's memory limit to :data:`CASES_MEMORY_LIMIT` for the block when it is higher."""
    current = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    have = size_bytes(current)
    lowered = False
    if have is None or have > size_bytes(CASES_MEMORY_LIMIT):
        with contextlib.suppress(duckdb.Error):  # e.g. more than the cap is in use already: keep the limit
            con.execute(f"SET memory_limit = '{CASES_MEMORY_LIMIT}'")
            lowered = True
    try:
        yield
    finally:
        if lowered:
            with contextlib.suppress(duckdb.Error):
                con.execute(f"SET memory_limit = '{_restorable(current)}'")


def _restorable(setting: str) -> str:
    """A DuckDB size setting as read back (truncated to its last shown digit, e.g. ``'18.8 GiB'``) moved to the
    middle of what it can stand for, so that setting it again shows the same value."""
    m = re.fullmatch(r"\s*([0-9]+)(?:\.([0-9]+))?\s*([A-Za-z]*)\s*", str(setting))
    if not m or not m.group(2) or m.group(3).lower() in ("", "b", "bytes"):
        return str(setting)
    digits = len(m.group(2))
    return f"{float(m.group(1) + '.' + m.group(2)) + 0.5 * 10.0**-digits:.{digits + 1}f} {m.group(3)}"
