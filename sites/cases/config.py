"""The stored case settings (``settings`` table): the rebound radius and window, with their defaults."""

from __future__ import annotations

import difflib
import logging
import math
import os

from civicgrid.geo.errors import InvalidParameterError, NotFoundError, OutOfRangeError
from civicgrid.geo.store import retry_writes, writing
from civicgrid.sites.cases._sql import StoreOrConnection, query_frame

#: Settings (``settings`` table) and their defaults.
DEFAULT_SETTINGS: dict[str, float] = {"rebound_radius_m": 50.0, "rebound_days": 30.0}

#: The range (inclusive) each setting may take: a rebound within 1 m .. 5 km, over 1 day .. 10 years.
SETTING_RANGES: dict[str, tuple[float, float]] = {"rebound_radius_m": (1.0, 5000.0), "rebound_days": (1.0, 3650.0)}

logger = logging.getLogger(__name__)


def get_settings(con: StoreOrConnection) -> dict[str, float]:
    """The case settings (``rebound_radius_m``, ``rebound_days``) of a store or connection, with defaults."""
    out = dict(DEFAULT_SETTINGS)
    for row in query_frame(con, "SELECT key, value FROM settings").itertuples():
        if row.key in out:
            try:
                out[row.key] = check_setting(row.key, row.value)
            except InvalidParameterError as exc:  # stored before the ranges were checked: the default holds
                logger.warning("stored %s; using the default %s", exc, DEFAULT_SETTINGS[row.key])
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
    low, high = SETTING_RANGES[key]
    if not math.isfinite(number) or not low <= number <= high:
        msg = f"setting {key} must be a number {low:g}..{high:g}, got {value!r}"
        raise OutOfRangeError(msg)
    return number


@retry_writes
def set_setting(db: str | os.PathLike, key: str, value) -> dict[str, float]:
    """Store a case setting (atomic write); return all settings."""
    number = check_setting(key, value)
    with writing(db) as con:
        con.execute("DELETE FROM settings WHERE key = ?", [key])
        con.execute("INSERT INTO settings VALUES (?, ?)", [key, repr(number)])
        return get_settings(con)
