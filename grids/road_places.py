"""Placing an address at its road: ``深南大道1001号`` at its number (or on its road), ``深南大道与香梅路交叉口`` where
the two roads meet, ``Fabianinkatu 12`` at that house, from the roads and house numbers the store holds
(``civicgrid import roads``).

Each match has a precision and a confidence, and nothing is guessed: an address is placed only when the roads it
names pick one place. Two roads of one name (pieces more than :data:`JOIN_M` apart, e.g. in two districts) are
told apart by the district or street the address writes (``福田区深南大道``) or by the row's area column; when
neither does, the address is *ambiguous* and the row stays unlocated. Two roads that meet in places further
apart than :data:`SPREAD_M`, or do not meet, place nothing either.

- ``number``: the house number's own point (OSM ``addr:housenumber``), else the point of a piece whose
  number range holds it, interpolated along it; confidence :data:`CONFIDENCE` ``["number"]``.
- ``intersection``: the centre of the points where the two roads cross (or come within :data:`MEET_M`).
- ``road``: the road's middle (the point of the road nearest the centre of its length). A road longer than
  :data:`ROAD_POINT_MAX_M` gives no H3 cell and no micro-grid: only the areas that hold the whole of it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import shapely
import shapely.ops

#: English street-type abbreviations, written out (``420 BERRY ST`` = ``420 Berry Street``).
STREET_WORDS = {
    "ST": "STREET", "AVE": "AVENUE", "AV": "AVENUE", "BLVD": "BOULEVARD", "RD": "ROAD", "DR": "DRIVE",
    "PL": "PLACE", "LN": "LANE", "CT": "COURT", "TER": "TERRACE", "HWY": "HIGHWAY", "PKWY": "PARKWAY",
    "SQ": "SQUARE", "N": "NORTH", "S": "SOUTH", "E": "EAST", "W": "WEST", "CIR": "CIRCLE", "EXPY": "EXPRESSWAY",
}
#: Pieces of one road name closer than this (metres) are one road; further apart, two roads of one name.
JOIN_M = 200.0
#: Two roads meet where they cross or come within this many metres.
MEET_M = 30.0
#: The points where two roads meet (or of one house number) further apart than this make the address ambiguous.
SPREAD_M = 200.0
#: A road placed at its middle gets an H3 cell and a micro-grid only when it is at most this long (metres).
ROAD_POINT_MAX_M = 300.0
#: The confidence of each precision (the events' ``location_confidence``).
CONFIDENCE = {"number": 0.9, "intersection": 0.85, "road": 0.6}
_CJK = re.compile(r"[\u4e00-\u9fff]")
_CN_PREFIX = re.compile(r"^(?:[\u4e00-\u9fff]{2,7}?省)?(?:[\u4e00-\u9fff]{2,7}?市)?")
_MARKER = re.compile(r"与|和|及|交叉|交汇|交界|路口|交口|&|/|、|\bAND\b|\bCORNER\b|@")
_NUMERAL = re.compile(r"[0-9一二三四五六七八九十百千零〇两]")
_CN_NUMBER = re.compile(r"^\s*(\d+)(?:[-－之]\d+)?\s*号")
_M_PER_DEG = 110_540.0, 111_320.0


def road_key(name: object) -> str:
    """A road name as addresses are matched to it: full-width forms folded, upper case, punctuation and spaces
    dropped (Chinese) or single spaces between words with street abbreviations written out (``Berry St`` =
    ``BERRY STREET``)."""
    t = unicodedata.normalize("NFKC", str(name)).strip().upper()
    if _CJK.search(t):
        return "".join(ch for ch in t if ch.isalnum())
    return " ".join(STREET_WORDS.get(w, w) for w in re.split(r"[\W_]+", t) if w)


def _address_text(text: str) -> str:
    """An address prepared for finding road names in it, like :func:`road_key` but keeping the words that join
    two roads (与, &, /)."""
    t = unicodedata.normalize("NFKC", text).strip().upper()
    if _CJK.search(t):
        t = _CN_PREFIX.sub("", re.sub(r"\s+", "", t))
        return t
    t = re.sub(r"(\d)\s*[-–]\s*(\d)", r"\1TO\2", re.sub(r"[&/@]", " AND ", t.split(",")[0]))  # 1-5: 1TO5
    t = re.sub(r"(\d)\s+([A-Z])\s*$", r"\1\2", t.strip())  # a staircase letter last: Mannerheiminaukio 1 B
    return " ".join(STREET_WORDS.get(w, w) for w in re.split(r"[\W_]+", t) if w)


@dataclass
class Road:
    """One road: the pieces of one name lying together (within :data:`JOIN_M`)."""

    geom: shapely.Geometry
    length_m: float
    districts: frozenset
    streets: frozenset
    #: The codes of the areas that hold every piece (community, street, district; None where they differ).
    codes: tuple
    mid: tuple[float, float]
    #: Pieces with a house-number range: (from, to, line).
    ranges: list = field(default_factory=list)

    def within(self, district: str | None, street: str | None) -> bool:
        """Whether the road lies (in part) in the district and street given (None: any)."""
        return (district is None or district in self.districts) and (street is None or street in self.streets)


@dataclass
class Placed:
    """Where an address was placed (``precision`` None: not placed; ``ambiguous``: names several places)."""

    lng: float = np.nan
    lat: float = np.nan
    precision: str | None = None
    #: Only the areas that hold the whole road (a long road's middle says nothing finer): (grid, community,
    #: street, district), or None when the point is used as it is.
    codes: tuple | None = None
    ambiguous: bool = False


def _metres(lng0: float, lat0: float, lng: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Distances in metres from (lng0, lat0) on the local equirectangular scale."""
    return np.hypot((np.asarray(lng) - lng0) * _M_PER_DEG[1] * np.cos(np.radians(lat0)),
                    (np.asarray(lat) - lat0) * _M_PER_DEG[0])


def _spread(pts: np.ndarray) -> tuple[float, float, float]:
    """The centre of points (n×2, lng/lat) and the largest distance of one from it, in metres."""
    c = pts.mean(axis=0)
    return float(c[0]), float(c[1]), float(_metres(c[0], c[1], pts[:, 0], pts[:, 1]).max())


class RoadGazetteer:
    """The store's roads and house numbers, by name; roads of one name are grouped as they are first asked for.

    Parameters
    ----------
    roads
        ``name_key``, ``geom`` (shapely, WGS84), ``length_m``, ``district_code``, ``street_code``,
        ``community_code``, ``number_from``, ``number_to``.
    numbers
        ``name_key``, ``number``, ``lng``, ``lat``, ``district_code``, ``street_code``.
    areas
        ``code``, ``name``, ``level`` (district, street) of the store, to read the area an address writes.
    """

    def __init__(self, roads: pd.DataFrame, numbers: pd.DataFrame, areas: pd.DataFrame) -> None:
        self.pieces = {k: g for k, g in roads.groupby("name_key", sort=False)}
        self.numbers = {k: g for k, g in numbers.groupby("name_key", sort=False)}
        keys = sorted(set(self.pieces) | set(self.numbers), key=len, reverse=True)
        self._roads: dict[str, list[Road]] = {}
        cjk = [k for k in keys if _CJK.search(k) and len(k) >= 2]
        latin = [k for k in keys if not _CJK.search(k) and len(k) >= 3]
        self._cn = re.compile("|".join(map(re.escape, cjk))) if cjk else None
        self._en = re.compile(r"\b(?:" + "|".join(map(re.escape, latin)) + r")\b") if latin else None
        self._areas = _area_names(areas)

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> RoadGazetteer | None:
        """The gazetteer of the store of ``con`` (None when it holds no roads)."""
        roads = con.execute("SELECT name_key, ST_AsWKB(geom) AS wkb, length_m, district_code, street_code, "
                            "community_code, number_from, number_to FROM roads").df()
        numbers = con.execute("SELECT name_key, number, lng, lat, district_code, street_code FROM road_numbers").df()
        if not len(roads) and not len(numbers):
            return None
        roads["geom"] = shapely.from_wkb([bytes(b) for b in roads.pop("wkb")]) if len(roads) else []
        areas = con.execute("SELECT code, name, level FROM areas WHERE level IN ('district', 'street')").df()
        return cls(roads, numbers, areas)

    # --- roads of one name -----------------------------------------------------------------------------------

    def roads(self, key: str) -> list[Road]:
        """The roads named ``key`` (:func:`road_key`): its pieces grouped where they lie within :data:`JOIN_M`."""
        if key not in self._roads:
            self._roads[key] = _group(self.pieces[key]) if key in self.pieces else []
        return self._roads[key]

    # --- addresses -------------------------------------------------------------------------------------------

    def find(self, addresses: np.ndarray, places: np.ndarray | None = None) -> list[Placed]:
        """Place each address; ``places``: each row's area as found from its area column (rows of codes grid,
        community, street, district; None where it has none), which picks between roads of one name."""
        out = []
        cache: dict[tuple, Placed] = {}
        for i, a in enumerate(addresses):
            if a is None or (isinstance(a, float) and np.isnan(a)) or not str(a).strip():
                out.append(Placed())
                continue
            area = tuple(places[i]) if places is not None else (None, None, None, None)
            k = (str(a), area)
            if k not in cache:
                cache[k] = self.place(str(a), district=area[3], street=area[2])
            out.append(cache[k])
        return out

    def place(self, address: str, *, district: str | None = None, street: str | None = None) -> Placed:
        """Place one address (:class:`Placed`); ``district``, ``street``: the area it is known to lie in."""
        text = _address_text(address)
        cn = bool(_CJK.search(text))
        rx = self._cn if cn else self._en
        if rx is None:
            return Placed()
        # a name inside a number is none (四号 in 十四号楼, 1 MAIN in 21 MAIN)
        found = [m for m in rx.finditer(text) if not (m.start() and _NUMERAL.match(text[m.start() - 1]))
                 or not _NUMERAL.match(text[m.start()])]
        if not found:
            return Placed()
        spans = [(m.start(), m.end()) for m in found]
        d, s = self._written_area(text, spans)
        district, street = district or d, street or s
        names = list(dict.fromkeys(m.group(0) for m in found))
        if len(names) >= 2:
            if _MARKER.search(text):
                return self._crossing(names[0], names[1], district, street)
            numbered = [m for m in found if self._number_after(text, m, cn) is not None]
            if len({m.group(0) for m in numbered}) != 1:
                return Placed(ambiguous=True)
            found = numbered[:1]
        m = found[0]
        return self._on_road(m.group(0), self._number_after(text, m, cn), district, street)

    def _number_after(self, text: str, m: re.Match, cn: bool) -> str | None:
        if cn:
            n = _CN_NUMBER.match(text[m.end():])
            return n.group(1) if n else None
        after = re.match(r"^\s+(\d+[A-Z]?(?:TO\d+[A-Z]?)?)\b", text[m.end():])
        before = re.search(r"\b(\d+[A-Z]?(?:TO\d+[A-Z]?)?)\s+$", text[:m.start()])
        hit = after or before
        return hit.group(1) if hit else None

    def _written_area(self, text: str, spans: list[tuple[int, int]]) -> tuple[str | None, str | None]:
        """The district and street an address writes outside its road names (``福田区``, ``华富街道``)."""
        rest = text
        for a, b in reversed(spans):
            rest = rest[:a] + "|" + rest[b:]
        district = street = None
        for name, code, level in self._areas:
            if name in rest:
                if level == "district" and district is None:
                    district = code
                elif level == "street" and street is None:
                    street = code
        return district, street

    def _candidates(self, key: str, district: str | None, street: str | None) -> list[Road]:
        roads = self.roads(key)
        if len(roads) <= 1:
            return [r for r in roads if r.within(district, street)] if (district or street) else roads
        return [r for r in roads if r.within(district, street)]

    def _on_road(self, key: str, number: str | None, district: str | None, street: str | None) -> Placed:
        roads = self._candidates(key, district, street)
        if number is not None:
            hit = self._numbered(key, number, roads, district, street)
            if hit is not None:
                return hit
        if len(roads) != 1:
            return Placed(ambiguous=len(roads) > 1)
        r = roads[0]
        if r.length_m <= ROAD_POINT_MAX_M:
            return Placed(lng=r.mid[0], lat=r.mid[1], precision="road")
        return Placed(lng=r.mid[0], lat=r.mid[1], precision="road", codes=(None, *r.codes))

    def _numbered(self, key: str, number: str, roads: list[Road], district: str | None,
                  street: str | None) -> Placed | None:
        """The point of a house number: its own (OSM), else interpolated on a piece whose range holds it; None
        when the data has neither; ambiguous when they lie apart."""
        pts = self.numbers.get(key)
        if pts is not None:
            written = pts["number"].astype(str).map(number_key)
            same = written == number_key(number)
            if not same.any() and "TO" in number:  # 1-5 not in the data as such: its first number
                same = written == number_key(number.split("TO")[0])
            pts = pts[same]
            if district:
                pts = pts[pts["district_code"] == district]
            if street:
                pts = pts[pts["street_code"] == street]
            if len(pts):
                x, y, far = _spread(pts[["lng", "lat"]].to_numpy(float))
                return Placed(lng=x, lat=y, precision="number") if far <= SPREAD_M else Placed(ambiguous=True)
        lead = re.match(r"\d+", number)
        if lead is None:
            return None
        n = int(lead.group(0))
        on = []
        for r in roads:
            for lo, hi, line in r.ranges:
                a, b = min(lo, hi), max(lo, hi)
                if a <= n <= b:
                    f = 0.5 if hi == lo else (n - lo) / (hi - lo)
                    p = shapely.line_interpolate_point(line, f, normalized=True)
                    on.append((p.x, p.y))
        if not on:
            return None
        x, y, far = _spread(np.array(on))
        return Placed(lng=x, lat=y, precision="number") if far <= SPREAD_M else Placed(ambiguous=True)

    def _crossing(self, a: str, b: str, district: str | None, street: str | None) -> Placed:
        pts = []
        for ra in self._candidates(a, district, street):
            for rb in self._candidates(b, district, street):
                pts.extend(meeting_points(ra.geom, rb.geom))
        if not pts:
            return Placed(ambiguous=bool(self.roads(a) and self.roads(b)))
        x, y, far = _spread(np.array(pts))
        return Placed(lng=x, lat=y, precision="intersection") if far <= SPREAD_M else Placed(ambiguous=True)


def number_key(number: str) -> str:
    """A house number as compared: upper case, no spaces, a range written ``1TO5`` (``1-5``, ``1 – 5``)."""
    t = unicodedata.normalize("NFKC", str(number)).upper().replace(" ", "")
    return re.sub(r"(\d)[-–](\d)", r"\1TO\2", t)


def meeting_points(ga: shapely.Geometry, gb: shapely.Geometry) -> list[tuple[float, float]]:
    """Where two roads meet: the points where they cross (a shared stretch: its centre); else, when they come
    within :data:`MEET_M`, the middle of the shortest line between them; else none."""
    inter = shapely.intersection(ga, gb)
    if not inter.is_empty:
        return [(p.x, p.y) for p in (g.centroid for g in shapely.get_parts(inter))]
    line = shapely.shortest_line(ga, gb)
    (x0, y0), (x1, y1) = shapely.get_coordinates(line)
    if _metres(x0, y0, np.array([x1]), np.array([y1]))[0] <= MEET_M:
        return [((x0 + x1) / 2, (y0 + y1) / 2)]
    return []


def road_middle(geom: shapely.Geometry) -> tuple[float, float]:
    """The middle of a road: its point nearest the centre of its length (the length-weighted centroid)."""
    p = shapely.ops.nearest_points(geom, geom.centroid)[0]
    return float(p.x), float(p.y)


def _group(pieces: pd.DataFrame) -> list[Road]:
    """The roads of one name: its pieces joined where they lie within :data:`JOIN_M` of each other."""
    geoms = pieces["geom"].to_numpy()
    lng0, lat0 = (float(v) for v in np.nanmean(shapely.get_coordinates(geoms), axis=0))
    k = np.cos(np.radians(lat0))
    metric = shapely.transform(geoms, lambda xy: np.column_stack([(xy[:, 0] - lng0) * _M_PER_DEG[1] * k,
                                                                  (xy[:, 1] - lat0) * _M_PER_DEG[0]]))
    blobs = shapely.get_parts(shapely.union_all(shapely.buffer(metric, JOIN_M / 2)))
    tree = shapely.STRtree(metric)
    label = np.full(len(geoms), -1)
    for j, blob in enumerate(blobs):
        for i in tree.query(blob, predicate="intersects"):
            if label[i] < 0:
                label[i] = j
    out = []
    for j in np.unique(label):
        part = pieces[label == j]
        geom = shapely.line_merge(shapely.union_all(part["geom"].to_numpy()))
        codes = tuple(part[c].iloc[0] if part[c].notna().all() and part[c].nunique() == 1 else None
                      for c in ("community_code", "street_code", "district_code"))
        ranges = [(int(r.number_from), int(r.number_to), r.geom) for r in part.itertuples()
                  if pd.notna(r.number_from) and pd.notna(r.number_to)]
        out.append(Road(geom=geom, length_m=float(part["length_m"].sum()),
                        districts=frozenset(part["district_code"].dropna()),
                        streets=frozenset(part["street_code"].dropna()), codes=codes, mid=road_middle(geom),
                        ranges=ranges))
    return out


def _area_names(areas: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(written name, code, level) of districts and streets, longest names first: each name as stored, and with
    or without its suffix (``福田`` / ``福田区``, ``华富街道`` / ``华富``)."""
    out: list[tuple[str, str, str]] = []
    for r in areas.itertuples():
        name = unicodedata.normalize("NFKC", str(r.name)).strip().upper()
        if not name:
            continue
        variants = {name}
        if r.level == "district":
            variants |= {name[:-1]} if name.endswith(("区", "县")) and len(name) > 2 else {name + "区"}
        elif name.endswith("街道") and len(name) > 3:
            variants.add(name[:-2])
        out.extend((v, r.code, r.level) for v in variants if len(v) >= 2)
    return sorted(out, key=lambda t: len(t[0]), reverse=True)
