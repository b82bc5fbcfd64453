"""The stored case settings (``settings`` table): the rebound radius and window, with their defaults."""

from __future__ import annotations

import difflib
import math
import os

from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.store import retry_writes, writing
from civicgrid.sites.cases._sql import StoreOrConnection, query_frame

#: Settings (``settings`` table) and their defaults.
DEFAULT_SETTINGS: dict[str, float] = {"rebound_radius_m": 50.0, "rebound_days": 30.0}


def get_settings(con: StoreOrConnection) -> dict[str, float]:
    """The case settings (``rebound_radius_m``, ``rebound_days``) of a store or connection, with defaults."""
    out = dict(DEFAULT_SETTINGS)
    for row in query_frame(con, "SELECT key, value FROM settings").itertuples():
        if row.key in out:
            out[row.key] = float(row.value)
    return out


def check_setting(key: str, value) -> float:
    """Validate one setting; return its value as a number."""
    if key not in DEFAULT_SETTINGS:
        close = difflib.get_close_matches(key, list(DEFAULT_SETTINGS), n=1)
        msg = f"unknown setting {key!r}" + (f"; did you mean {close[0]!r}?" if close else "") + \
              f" (known: {', '.join(DEFAULT_SETTINGS)})"
        raise NotFoundError(msg)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        msg = f"setting {key} must be a positive number, got {value!r}"
        raise InvalidParameterError(msg)
    return number


@retry_writes
def set_setting(db: str | os.PathLike, key: str, value) -> dict[str, float]:
    """Store a case setting (atomic write); return all settings."""
    number = check_setting(key, value)
    with writing(db) as con:
        con.execute("DELETE FROM settings WHERE key = ?", [key])
        con.execute("INSERT INTO settings VALUES (?, ?)", [key, repr(number)])
        return get_settings(con)
