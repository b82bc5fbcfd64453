"""Where an imported event without coordinates is: the area or micro-grid its file names (``--map area=COLUMN``),
or the point its address has in what the store holds (:class:`AddressGazetteer`).

A complaint without usable coordinates is a complaint all the same: it loads *unlocated* (no point, no H3
cell, never on a map) and, when its area column names a district, street, community or micro-grid of the
store, it takes that place's codes (and those of the levels above it) so it counts in the KPIs and the area
statistics at the level it is located at. Names and codes are matched exactly first, then normalized (case,
spaces and punctuation ignored; ``66.0`` is ``66``; a street written with its district, ``芙蓉区定王台街道``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.grids.road_places import STREET_WORDS

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


def coarsen(places: dict[str, pa.Array], rows: dict[int, tuple]) -> dict[str, pa.Array]:
    """The location columns with the rows of ``rows`` (row -> codes grid, community, street, district) given
    those codes and no H3 cell: rows placed on a long road, which only the areas holding the whole road say."""
    out = dict(places)
    at = np.fromiter(rows, dtype=np.int64, count=len(rows))
    h3 = places["h3"]
    valid = h3.is_valid().to_numpy(zero_copy_only=False).copy()
    valid[at] = False
    out["h3"] = pa.array(h3.fill_null(0).to_numpy(zero_copy_only=False), pa.uint64(), mask=~valid)
    for j, c in enumerate(PLACE_COLUMNS):
        codes = places[c].cast(pa.string()).to_numpy(zero_copy_only=False).astype(object)
        codes[at] = [rows[int(i)][j] for i in at]
        out[c] = pa.array(codes, pa.string()).dictionary_encode()
    return out


# --- offline address matching: a gazetteer of what the store holds ------------------------------------------

#: Chinese address prefixes dropped before matching (the city is the store's own).
_CN_PREFIX = re.compile(r"^(?:[\u4e00-\u9fff]{2,7}?省)?(?:[\u4e00-\u9fff]{2,7}?市)?")
#: Below this confidence an address match is not used: the row stays unlocated rather than placed wrongly.
MIN_CONFIDENCE = 0.6
#: Stored points of one address further apart than this (metres) make the address ambiguous.
MAX_SPREAD_M = 60.0


def normalize_address(text: object) -> str:
    """An address as the gazetteer compares it: upper case, the part before the first comma (``420 BERRY ST, SAN
    FRANCISCO, CA``), street abbreviations written out, punctuation and spaces dropped; Chinese: the province and
    city prefix dropped, full-width forms folded."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    t = unicodedata.normalize("NFKC", str(text)).strip().upper()
    if re.search(r"[\u4e00-\u9fff]", t):
        t = _CN_PREFIX.sub("", t)
        return "".join(ch for ch in t if ch.isalnum())
    t = t.split(",")[0]
    words = [STREET_WORDS.get(w, w) for w in re.split(r"[^0-9A-Z]+", t) if w]
    return " ".join(words)


@dataclass
class AddressGazetteer:
    """Normalized addresses with a point, from the store's sites and its events that have coordinates of their own
    (not those placed by their address: a guess would be learnt as a fact).

    Each address keeps the mean of its points (the median of each raw spelling, weighted), how many there are and
    how far apart; a site's
    own address is exact (confidence 1). An event address seen once has confidence 0.7, several times within
    :data:`MAX_SPREAD_M` 0.9, spread wider 0.3 (not used: below :data:`MIN_CONFIDENCE`).
    """

    lng: dict[str, float]
    lat: dict[str, float]
    confidence: dict[str, float]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> AddressGazetteer:
        """The gazetteer of the store of ``con``."""
        rows = con.execute("""
            SELECT address, median(lng) AS lng, median(lat) AS lat, count(*) AS n,
                   (max(lng) - min(lng)) * 111320 * cos(radians(avg(lat))) AS dx, (max(lat) - min(lat)) * 110540 AS dy
            FROM events WHERE address IS NOT NULL AND isfinite(lng) AND isfinite(lat)
              AND coalesce(located_by, 'point') = 'point'  -- their own coordinates, not a point an address gave
            GROUP BY address
        """).df()
        sites = con.execute("SELECT address, lng, lat FROM sites WHERE address IS NOT NULL AND isfinite(lng) AND "
                            "isfinite(lat)").df()
        lng: dict[str, float] = {}
        lat: dict[str, float] = {}
        conf: dict[str, float] = {}
        if len(rows):  # vectorized per normalized address: one Python call per distinct raw address only
            rows["key"] = [normalize_address(a) for a in rows["address"]]
            rows = rows[rows["key"] != ""].copy()
            rows["spread"] = np.hypot(rows["dx"].fillna(0), rows["dy"].fillna(0))
            rows["wx"], rows["wy"] = rows["lng"] * rows["n"], rows["lat"] * rows["n"]
            agg = rows.groupby("key", sort=False).agg(n=("n", "sum"), wx=("wx", "sum"), wy=("wy", "sum"),
                                                      spread=("spread", "max"))
            agg["x"], agg["y"] = agg["wx"] / agg["n"], agg["wy"] / agg["n"]
            at = rows.join(agg[["x", "y"]], on="key")
            rows["far"] = np.hypot((at["lng"] - at["x"]) * 111320 * np.cos(np.radians(at["y"])),
                                   (at["lat"] - at["y"]) * 110540)
            spread = np.maximum(agg["spread"], rows.groupby("key", sort=False)["far"].max())
            agg["conf"] = np.where(spread > MAX_SPREAD_M, 0.3, np.where(agg["n"] >= 2, 0.9, 0.7))
            lng, lat, conf = agg["x"].to_dict(), agg["y"].to_dict(), agg["conf"].to_dict()
        for r in sites.itertuples():
            key = normalize_address(r.address)
            if key:
                lng[key], lat[key], conf[key] = float(r.lng), float(r.lat), 1.0
        return cls(lng=lng, lat=lat, confidence=conf)

    def find(self, addresses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The point and confidence of each address, and the mask of those found with at least
        :data:`MIN_CONFIDENCE`."""
        n = len(addresses)
        lng, lat, conf = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
        for i, a in enumerate(addresses):
            key = normalize_address(a)
            c = self.confidence.get(key, 0.0)
            if c:
                lng[i], lat[i], conf[i] = self.lng[key], self.lat[key], c
        return lng, lat, conf, conf >= MIN_CONFIDENCE
