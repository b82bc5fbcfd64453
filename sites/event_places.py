"""Where an imported event without coordinates is: the area or micro-grid its file names (``--map area=COLUMN``).

A complaint without usable coordinates is a complaint all the same: it loads *unlocated* (no point, no H3
cell, never on a map) and, when its area column names a district, street, community or micro-grid of the
store, it takes that place's codes (and those of the levels above it) so it counts in the KPIs and the area
statistics at the level it is located at. Names and codes are matched exactly first, then normalized (case,
spaces and punctuation ignored; ``66.0`` is ``66``; a street written with its district, ``芙蓉区定王台街道``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

#: The place columns of an event, finest first.
PLACE_COLUMNS = ("grid_code", "community_code", "street_code", "district_code")

_NUMBER = re.compile(r"^(\d+)\.0*$")


def normalize_place(text: object) -> str:
    """A place name or code as compared after the exact match: ``66.0`` -> ``66``; case, spaces and
    punctuation ignored."""
    t = str(text).strip()
    m = _NUMBER.match(t)
    if m:
        t = m.group(1)
    return "".join(ch for ch in t.lower() if ch.isalnum())


@dataclass
class AreaIndex:
    """The store's districts, streets, communities and micro-grids by code and name: each key gives the codes
    of the place and of the levels above it (grid, community, street, district; None where it has none)."""

    exact: dict[str, tuple]
    normal: dict[str, tuple]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> AreaIndex:
        """The index of the store of ``con``."""
        areas = con.execute("SELECT code, name, name_en, level, parent_code FROM areas").df()
        grids = con.execute("SELECT code, name, community_code, street_code, district_code FROM grids").df()
        by_code = {r.code: r for r in areas.itertuples()}

        def chain(code: str | None) -> tuple:
            out = {"community": None, "street": None, "district": None}
            seen = set()
            while code is not None and code in by_code and code not in seen:
                seen.add(code)
                r = by_code[code]
                out[r.level] = code
                code = r.parent_code if isinstance(r.parent_code, str) else None
            return None, out["community"], out["street"], out["district"]

        exact: dict[str, tuple] = {}
        normal: dict[str, tuple] = {}

        def add(keys: list, place: tuple) -> None:
            for k in keys:
                if isinstance(k, str) and k.strip():
                    exact.setdefault(k.strip(), place)
                    normal.setdefault(normalize_place(k), place)

        for g in grids.itertuples():  # finest first: a name shared by levels names the finest
            add([g.code, g.name], (g.code, g.community_code, g.street_code, g.district_code))
        for level in ("community", "street", "district"):
            for r in areas[areas["level"] == level].itertuples():
                place = chain(r.code)
                names = [r.code, r.name, r.name_en]
                parents = [by_code[c] for c in place[1:] if c is not None and c != r.code]
                if parents:  # written with the areas above it: 芙蓉区定王台街道
                    names.append("".join(p.name for p in reversed(parents)) + str(r.name))
                    names.append(str(parents[0].name) + str(r.name))
                add(names, place)
        return cls(exact=exact, normal=normal)

    def find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The place of each value (rows of codes, finest first) and the mask of values found."""
        n = len(values)
        out = np.full((n, len(PLACE_COLUMNS)), None, dtype=object)
        found = np.zeros(n, dtype=bool)
        cache: dict[str, tuple | None] = {}
        for i, v in enumerate(values):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            key = str(v).strip()
            if key not in cache:
                cache[key] = self.exact.get(key) or self.normal.get(normalize_place(key))
            place = cache[key]
            if place is not None:
                out[i] = place
                found[i] = True
        return out, found


def place_unlocated(places: dict[str, pa.Array], located: pd.DataFrame, point_rows: np.ndarray, area: pa.Array,
                    index: AreaIndex | None) -> tuple[dict[str, pa.Array], np.ndarray]:
    """The location columns with the rows without a point (``~point_rows``) given no H3 cell and the codes of
    their area (when ``index`` finds it).

    Returns
    -------
    places, by_area
        The columns (``h3`` and the place codes) and the mask of rows located by their area.
    """
    n = len(point_rows)
    out = dict(places)
    h3 = located["h3"].to_numpy(dtype="uint64")
    out["h3"] = pa.array(h3, pa.uint64(), mask=~point_rows)
    codes = {c: np.array(located[c].astype(object).where(located[c].notna(), None), dtype=object)
             for c in PLACE_COLUMNS}
    by_area = np.zeros(n, dtype=bool)
    rest = np.flatnonzero(~point_rows)
    for c in PLACE_COLUMNS:
        codes[c][rest] = None
    if index is not None and len(rest):
        found_places, found = index.find(area.take(pa.array(rest)).to_numpy(zero_copy_only=False))
        for j, c in enumerate(PLACE_COLUMNS):
            codes[c][rest[found]] = found_places[found, j]
        by_area[rest[found]] = True
    for c in PLACE_COLUMNS:
        out[c] = pa.array(codes[c], pa.string()).dictionary_encode()
    return out, by_area
