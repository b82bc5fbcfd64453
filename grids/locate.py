"""Locate points in the micro-grid and area hierarchy (exact point-in-polygon, through a lattice lookup)."""

from __future__ import annotations

import hashlib
import threading

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from civicgrid.geo import h3cells
from civicgrid.geo.caches import cached_read

#: Columns :func:`locate_points` returns, in order.
LOCATION_COLUMNS = ["h3", "grid_code", "community_code", "street_code", "district_code"]

#: Lattice cells of a :class:`PolygonIndex` at most (int32 labels: 16 MB at this size).
MAX_LATTICE_CELLS = 4_000_000
#: Below this many points the index is not worth building: points are tested directly with an STR-tree.
LATTICE_MIN_POINTS = 200_000


class PolygonIndex:
    """Exact point-in-polygon lookup for a set of polygons (e.g. micro-grids) through a regular lon/lat lattice.

    Every lattice cell that no polygon boundary crosses lies wholly inside one
    polygon (or outside all), so its label — the polygon containing its centre —
    holds for every point in it: one array read per point. Cells a boundary
    crosses are found by walking each boundary at half-cell steps and marking
    the cells around every step; points falling there are tested exactly
    (``shapely.intersects_xy``) against the polygons whose boundary passes
    there and the one containing the cell's centre. A point on a shared
    boundary goes to the polygon listed first (callers sort by code).

    Parameters
    ----------
    geoms
        Polygons in WGS84 lon/lat, in priority order.
    max_cells
        Size cap of the lattice.
    """

    def __init__(self, geoms: np.ndarray, *, max_cells: int = MAX_LATTICE_CELLS) -> None:
        self.geoms = np.asarray(geoms, dtype=object)
        shapely.prepare(self.geoms)
        self.tree = shapely.STRtree(self.geoms)
        self._lattice: tuple | None = None
        self._building = threading.Lock()  # batches located on several threads build the lattice once
        self.max_cells = max_cells

    def __len__(self) -> int:
        return len(self.geoms)

    def locate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the index of the first polygon containing each point (-1 if none; NaN coordinates give -1)."""
        x = np.asarray(x, dtype="float64")
        y = np.asarray(y, dtype="float64")
        out = np.full(len(x), -1, dtype=np.int64)
        ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        if not len(ok) or not len(self.geoms):
            return out
        if len(ok) < LATTICE_MIN_POINTS and self._lattice is None:
            out[ok] = self._exact(x[ok], y[ok])
            return out
        lat = self._build()
        x0, y0, dx, dy, nx, ny, labels, pair_cell, pair_poly = lat
        xs, ys = x[ok], y[ok]
        ix = np.floor((xs - x0) / dx).astype(np.int64)
        iy = np.floor((ys - y0) / dy).astype(np.int64)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        cell = np.where(inside, iy * nx + ix, 0)
        lab = np.where(inside, labels[cell], -1)
        out[ok] = lab
        edge = np.flatnonzero(lab == -2)
        if len(edge):
            out[ok[edge]] = self._edge(xs[edge], ys[edge], cell[edge], labels, pair_cell, pair_poly)
        return out

    def _exact(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """First polygon intersecting each point, by STR-tree query (exact)."""
        res = np.full(len(x), -1, dtype=np.int64)
        with self._building:  # GEOS builds a prepared polygon's index on first use: one thread at a time
            pt, poly = self.tree.query(shapely.points(x, y), predicate="intersects")
        if len(pt):
            best = np.full(len(x), np.iinfo(np.int64).max)
            np.minimum.at(best, pt, poly)
            hit = best != np.iinfo(np.int64).max
            res[hit] = best[hit]
        return res

    def _build(self):
        if self._lattice is not None:
            return self._lattice
        with self._building:
            if self._lattice is None:
                self._lattice = self._lattice_of()
        return self._lattice

    def _lattice_of(self) -> tuple:
        g = self.geoms
        bounds = shapely.bounds(g)
        x0, y0 = np.nanmin(bounds[:, 0]), np.nanmin(bounds[:, 1])
        x1, y1 = np.nanmax(bounds[:, 2]), np.nanmax(bounds[:, 3])
        # Square cells on the ground: a degree of longitude is cos(lat) of a degree of latitude.
        k = max(np.cos(np.radians((y0 + y1) / 2)), 0.05)
        w, h = (x1 - x0) * k, (y1 - y0)
        side = max(np.sqrt(max(w * h, 1e-18) / self.max_cells), 1e-7)
        dy, dx = side, side / k
        nx, ny = int(np.ceil((x1 - x0) / dx)) + 1, int(np.ceil((y1 - y0) / dy)) + 1
        labels = np.full(nx * ny, -1, dtype=np.int32)
        # Cell centres, polygon by polygon over its bounding box (last written = first in priority order).
        for j in range(len(g) - 1, -1, -1):
            bx0, by0, bx1, by1 = bounds[j]
            if not np.isfinite(bx0):
                continue
            i0, i1 = int((bx0 - x0) / dx), min(int((bx1 - x0) / dx) + 1, nx)
            j0, j1 = int((by0 - y0) / dy), min(int((by1 - y0) / dy) + 1, ny)
            cx = x0 + (np.arange(i0, i1) + 0.5) * dx
            cy = y0 + (np.arange(j0, j1) + 0.5) * dy
            gx, gy = np.meshgrid(cx, cy)
            inside = shapely.intersects_xy(g[j], gx.ravel(), gy.ravel())
            if inside.any():
                ii, jj = np.meshgrid(np.arange(i0, i1), np.arange(j0, j1))
                labels[(jj.ravel() * nx + ii.ravel())[inside]] = j
        # Cells a boundary crosses: boundary points every half cell, with their 8 neighbours.
        rings = shapely.segmentize(shapely.boundary(g), min(dx, dy) / 2)
        xy, part = shapely.get_coordinates(rings, return_index=True)
        m = np.int64(len(g) + 1)
        # (cell, polygon) pairs of the boundary points, each once (consecutive points share cells).
        pairs = _unique_sorted((np.floor((xy[:, 1] - y0) / dy).astype(np.int64) * nx
                                + np.floor((xy[:, 0] - x0) / dx).astype(np.int64)) * m + part)
        base, part = pairs // m, pairs % m
        bx, by = base % nx, base // nx
        cells, polys = [], []
        for ox in (-1, 0, 1):
            for oy in (-1, 0, 1):
                cx, cy = bx + ox, by + oy
                keep = (cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny)
                cells.append(cy[keep] * nx + cx[keep])
                polys.append(part[keep])
        key = _unique_sorted(np.concatenate(cells) * m + np.concatenate(polys))  # (cell, polygon) pairs
        edge_cells = _unique_sorted(key // m)
        centre = labels[edge_cells].astype(np.int64)
        labels[edge_cells] = -2
        # The polygon containing the centre of an edge cell is a candidate there too.
        key = _unique_sorted(np.concatenate([key, (edge_cells * m + centre)[centre >= 0]]))
        return x0, y0, dx, dy, nx, ny, labels, key // m, key % m

    def _edge(self, x, y, cell, labels, pair_cell, pair_poly) -> np.ndarray:
        """Exact test of points in edge cells against their cells' candidate polygons."""
        lo = np.searchsorted(pair_cell, cell, side="left")
        hi = np.searchsorted(pair_cell, cell, side="right")
        count = hi - lo
        pt = np.repeat(np.arange(len(x)), count)
        start = np.repeat(lo - np.concatenate([[0], np.cumsum(count)[:-1]]), count)
        cand = pair_poly[start + np.arange(len(pt))]
        order = np.argsort(cand, kind="stable")
        pt, cand = pt[order], cand[order]
        hit = np.zeros(len(pt), dtype=bool)
        bounds = np.flatnonzero(np.diff(cand)) + 1
        for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(cand)]]), strict=True):
            if b > a:
                p = pt[a:b]
                hit[a:b] = shapely.intersects_xy(self.geoms[cand[a]], x[p], y[p])
        best = np.full(len(x), np.iinfo(np.int64).max)
        np.minimum.at(best, pt[hit], cand[hit])
        out = np.where(best == np.iinfo(np.int64).max, -1, best)
        return out


def _unique_sorted(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (by sorting: faster than hashing for these sizes)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


#: Polygon indexes of recently seen polygon sets (a lattice takes ~1 s to build; imports reuse it).
_INDEX_CACHE: dict[bytes, PolygonIndex] = {}
_INDEX_CACHE_SIZE = 4


def polygon_index(wkb: list[bytes | None], geoms: np.ndarray) -> PolygonIndex:
    """A :class:`PolygonIndex` of ``geoms`` (whose WKB is ``wkb``), reused while the polygons are the same."""
    digest = hashlib.blake2b(digest_size=16)
    for b in wkb:
        digest.update(len(b).to_bytes(8, "little") if b is not None else b"\xff" * 8)
        digest.update(b or b"")
    key = digest.digest()
    index = _INDEX_CACHE.pop(key, None) or PolygonIndex(geoms)
    _INDEX_CACHE[key] = index  # most recent last
    while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
        _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
    return index


def _polygons(con: duckdb.DuckDBPyConnection, query: str) -> tuple[pd.DataFrame, np.ndarray]:
    frame = con.execute(query).df()
    wkb = frame.pop("wkb")
    geoms = shapely.from_wkb([bytes(b) if b is not None else None for b in wkb])
    return frame, geoms


def locate_points(con: duckdb.DuckDBPyConnection, lng: np.ndarray, lat: np.ndarray) -> pd.DataFrame:
    """Return the H3 cell, grid, community, street and district of each point.

    A point inside a micro-grid takes the grid and the grid's parent areas; a
    point outside every grid takes the smallest area polygon that contains it
    (community, then street, then district); a point outside everything gets
    nulls. The test is exact (see :class:`PolygonIndex`); a point on a shared
    boundary goes to the smaller code.

    Parameters
    ----------
    con
        Connection on a civicgrid database (reads ``grids`` and ``areas``).
    lng, lat
        WGS84 coordinates; NaN for unknown.

    Returns
    -------
    pandas.DataFrame
        One row per input point, columns :data:`LOCATION_COLUMNS` (codes as
        categoricals, missing where unknown).
    """
    return Locator(con).locate(lng, lat)


class Locator:
    """The grids and areas of a store, read and indexed once to locate many batches of points.

    :meth:`locate` does what :func:`locate_points` does, without touching the
    connection again (an import can write through it meanwhile).

    Parameters
    ----------
    con
        Connection on a civicgrid database (reads ``grids`` and ``areas``).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        frame = con.execute("SELECT code, community_code, street_code, district_code, ST_AsWKB(geom) AS wkb "
                            "FROM grids WHERE geom IS NOT NULL ORDER BY code").df()
        wkb = [bytes(b) if b is not None else None for b in frame.pop("wkb")]
        self.index = polygon_index(wkb, shapely.from_wkb(wkb)) if len(frame) else None
        self.cats: dict[str, list] = {}
        self.inv: dict[str, np.ndarray] = {}
        for col in LOCATION_COLUMNS[1:]:
            values = frame["code" if col == "grid_code" else col].to_numpy(dtype=object)
            self.cats[col], self.inv[col] = _factorize(values)
        self.areas, self.area_geoms = _polygons(con, "SELECT code, level, parent_code, ST_AsWKB(geom) AS wkb "
                                                     "FROM areas WHERE geom IS NOT NULL ORDER BY code")
        self._area_index: dict[str, PolygonIndex] = {}
        self._indexing = threading.Lock()

    @classmethod
    def cached(cls, con: duckdb.DuckDBPyConnection) -> Locator:
        """The locator of the store of ``con``, reused while its grids and areas are unchanged (for small writes
        that locate a point or two; a write that changes grids or areas must build its own)."""
        return cached_read(con, "locator", ("areas", "grids"), cls)

    def locate(self, lng: np.ndarray, lat: np.ndarray) -> pd.DataFrame:
        """Return the H3 cell, grid, community, street and district of each point (see :func:`locate_points`)."""
        lng = np.asarray(lng, dtype="float64")
        lat = np.asarray(lat, dtype="float64")
        n = len(lng)
        out = {"h3": h3cells.cells(lng, lat)}
        codes = {c: np.full(n, -1, dtype=np.int64) for c in LOCATION_COLUMNS[1:]}
        cats: dict[str, list] = {c: list(self.cats[c]) for c in LOCATION_COLUMNS[1:]}
        if n:
            rest = np.arange(n)
            if self.index is not None:
                which = self.index.locate(lng, lat)
                found = which >= 0
                for col in LOCATION_COLUMNS[1:]:
                    codes[col][found] = self.inv[col][which[found]]
                rest = np.flatnonzero(~found)
            if len(rest):
                self._locate_in_areas(codes, cats, rest, lng, lat)
        for col in LOCATION_COLUMNS[1:]:
            out[col] = pd.Categorical.from_codes(codes[col], categories=pd.Index(cats[col], dtype=object)) \
                if len(cats[col]) else pd.Categorical(np.full(n, None, dtype=object))
        return pd.DataFrame(out)

    def _locate_in_areas(self, codes: dict, cats: dict, rest: np.ndarray, lng: np.ndarray, lat: np.ndarray) -> None:
        """Fill area codes for points outside every grid from the area polygons (community, street, district)."""
        areas = self.areas
        if not len(areas):
            return
        parent_of = dict(zip(areas["code"], areas["parent_code"], strict=True))
        found: dict[str, np.ndarray] = {}
        for level in ("community", "street", "district"):
            sel = (areas["level"] == level).to_numpy()
            if not sel.any():
                continue
            with self._indexing:
                if level not in self._area_index:
                    self._area_index[level] = PolygonIndex(self.area_geoms[sel])
            which = self._area_index[level].locate(lng[rest], lat[rest])
            names = areas["code"].to_numpy(dtype=object)[sel]
            got = np.full(len(rest), None, dtype=object)
            got[which >= 0] = names[which[which >= 0]]
            found[level] = got
        # Fill missing upper levels from the hierarchy (a community knows its street and district).
        for child, upper in (("community", "street"), ("street", "district")):
            if child not in found:
                continue
            up = found.get(upper, np.full(len(rest), None, dtype=object))
            missing = pd.isna(up) & ~pd.isna(found[child])
            up[missing] = pd.Series(found[child][missing], dtype=object).map(parent_of).to_numpy(dtype=object)
            found[upper] = up
        for level, values in found.items():
            col = f"{level}_code"
            known = {c: i for i, c in enumerate(cats[col])}
            extra = [v for v in pd.unique(values[~pd.isna(values)]) if v not in known]
            for v in extra:
                known[v] = len(cats[col])
                cats[col].append(v)
            have = ~pd.isna(values)
            codes[col][rest[have]] = pd.Index(cats[col], dtype=object).get_indexer(values[have])


def _factorize(values: np.ndarray) -> tuple[list, np.ndarray]:
    """Categories (non-null, unique) and the code of each value (-1 for null)."""
    s = pd.Series(values, dtype=object)
    inv, uniq = pd.factorize(s, use_na_sentinel=True)
    return list(uniq), inv.astype(np.int64)


def location_arrays(located: pd.DataFrame, *, dictionary: bool = False) -> dict[str, pa.Array]:
    """Return the columns of :func:`locate_points` as Arrow arrays for insertion.

    With ``dictionary=True`` the codes stay dictionary-encoded (DuckDB inserts them into VARCHAR columns
    without a string per row).
    """
    out = {"h3": pa.array(located["h3"].to_numpy(dtype="uint64"), pa.uint64())}
    for col in LOCATION_COLUMNS[1:]:
        s = located[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            cats = pa.array(s.cat.categories.to_numpy(dtype=object), pa.string())
            idx = pa.array(s.cat.codes.to_numpy(), pa.int32(), mask=s.cat.codes.to_numpy() < 0)
            if not len(cats):
                out[col] = pa.nulls(len(s), pa.string())
            else:
                arr = pa.DictionaryArray.from_arrays(idx, cats)
                out[col] = arr if dictionary else arr.cast(pa.string())
        else:
            out[col] = pa.array(s.to_numpy(dtype=object), pa.string(), from_pandas=True)
    return out
