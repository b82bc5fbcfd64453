"""Hotspot statistics on H3 cells: Getis-Ord Gi*, FDR correction, hotspot clusters and emerging hotspots.

Study area
----------
Gi* compares each cell's neighbourhood with the whole study area, so cells with
no events must be in it as zeros. :func:`hotspots` uses every cell at the
resolution whose centre lies inside the city (the union of the districts), or
inside the filtered area when an ``area`` filter is given, plus any cell holding
a filtered event outside it. Neighbours are the cells within ``k`` rings
(:func:`h3ronpy.grid_disk`) that are in the study area; weights are binary and
the cell itself is included (the "star" in Gi*).

Significance
------------
p-values are two-sided from the normal approximation; ``p_fdr`` are
Benjamini–Hochberg adjusted over all cells of the study area. A cell is *hot*
when ``z > 0`` and ``p_fdr < alpha``, *cold* when ``z < 0`` and ``p_fdr < alpha``.
``gi_bin`` follows ESRI's Gi_Bin: ±3, ±2, ±1 for adjusted p below 0.01, 0.05, 0.10.
"""

from __future__ import annotations

import geopandas as gpd
import h3ronpy
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import shapely
from civicgrid.geo.aggregate import (
    EventFilter,
    cached,
    cell_polygons,
    check_res,
    city_cells,
    heatmap,
    parent_sql,
    validated_filter,
)
from civicgrid.geo.distance import area_km2
from civicgrid.geo.errors import InvalidParameterError, TooManyCellsError
from civicgrid.geo.h3cells import to_hex
from civicgrid.geo.store import Store
from civicgrid.geo.texts import name_column, pairs
from civicgrid.geo.times import time_window
from scipy import stats
from scipy.sparse.csgraph import connected_components

#: Emerging-hotspot classes (ESRI "How Emerging Hot Spot Analysis works") with Chinese and English labels
#: (``[emerging]`` of the text catalogue, :mod:`civicgrid.geo.texts`).
EMERGING_CLASSES: dict[str, tuple[str, ...]] = pairs("emerging")

#: Gi* hot/cold classes by ``gi_bin``: ``(class, Chinese label, English label)`` (labels: ``[gi]`` of the
#: text catalogue).
GI_CLASSES: dict[int, tuple[str, ...]] = {
    b: (name, *pairs("gi")[name])
    for b, name in ((3, "hot_99"), (2, "hot_95"), (1, "hot_90"), (0, "none"), (-1, "cold_90"), (-2, "cold_95"),
                    (-3, "cold_99"))
}

#: Share of time slices that makes a location persistent/intensifying/diminishing/historical (ESRI: 90 %).
PERSISTENT_SHARE = 0.9
#: Fewest time slices for an emerging-hotspot analysis (ESRI requires ten).
MIN_SLICES = 10
#: Largest cells × slices matrix an emerging-hotspot analysis builds.
MAX_CUBE = 20_000_000


# ---------------------------------------------------------------------------------------------------------
# Weights and the statistic
# ---------------------------------------------------------------------------------------------------------

def neighbours(cells: np.ndarray, *, k: int = 1, self_weight: bool = True) -> sp.csr_matrix:
    """Binary sparse weights: ``W[i, j] = 1`` when cell j is within ``k`` rings of cell i (both in ``cells``).

    Parameters
    ----------
    cells
        Sorted unique uint64 cells, all at one resolution.
    k
        Ring distance.
    self_weight
        Keep the diagonal (Gi*); ``False`` gives the plain neighbour graph.
    """
    cells = np.asarray(cells, dtype="uint64")
    n = len(cells)
    if n == 0:
        return sp.csr_matrix((0, 0))
    disk = pa.array(h3ronpy.grid_disk(cells, int(k)))
    offsets = np.asarray(disk.offsets.to_numpy(zero_copy_only=False), dtype="int64")
    nbr = np.asarray(disk.values.to_numpy(zero_copy_only=False), dtype="uint64")
    rows = np.repeat(np.arange(n), np.diff(offsets))
    pos = np.searchsorted(cells, nbr)
    pos[pos == n] = 0
    ok = cells[pos] == nbr
    if not self_weight:
        ok &= pos != rows
    w = sp.csr_matrix((np.ones(int(ok.sum())), (rows[ok], pos[ok])), shape=(n, n))
    w.sum_duplicates()
    w.data[:] = 1.0
    return w


def _gi_z(w: sp.csr_matrix, x: np.ndarray) -> np.ndarray:
    """Gi* z-scores for binary weights with self, for one vector (n,) or many columns (n, t)."""
    x = np.asarray(x, dtype="float64")
    n = x.shape[0]
    if n == 0:  # no cell (no event matches): no score, and no warning about the mean of nothing
        return np.zeros(x.shape)
    wsum = np.asarray(w.sum(axis=1)).ravel()
    lag = w @ x
    mean = x.mean(axis=0)
    sd = np.sqrt(np.maximum((x * x).mean(axis=0) - mean * mean, 0.0))
    spread = np.sqrt(np.maximum(n * wsum - wsum * wsum, 0.0) / max(n - 1, 1))
    if x.ndim == 1:
        den = sd * spread
        num = lag - mean * wsum
    else:
        den = spread[:, None] * sd[None, :]
        num = lag - wsum[:, None] * mean[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return z


def fdr_bh(p: np.ndarray, axis: int = 0) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (the same as ``scipy.stats.false_discovery_control``)."""
    p = np.asarray(p, dtype="float64")
    if p.size == 0:
        return p.copy()
    p = np.moveaxis(p, axis, -1)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    out = np.empty_like(adj)
    np.put_along_axis(out, order, np.minimum(adj, 1.0), axis=-1)
    return np.moveaxis(out, -1, axis)


def _gi_bin(z: np.ndarray, p_fdr: np.ndarray) -> np.ndarray:
    level = np.select([p_fdr < 0.01, p_fdr < 0.05, p_fdr < 0.10], [3, 2, 1], 0)
    return (np.sign(z) * level).astype("int8")


def gi_star(values: pd.Series, *, k: int = 1, res: int | None = None, study_area: np.ndarray | None = None,
            alpha: float = 0.05) -> pd.DataFrame:
    """Getis-Ord Gi* on H3 cells, vectorized over a sparse k-ring weight matrix.

    Parameters
    ----------
    values
        Values indexed by uint64 H3 cell (one resolution).
    k
        Neighbourhood: cells within ``k`` rings (k=1: the cell and its 6 neighbours).
    res
        Resolution of the cells; checked when given.
    study_area
        Cells of the study area; those missing from ``values`` count as zeros. Default: the cells of
        ``values`` (then the caller supplies the zero cells).
    alpha
        Significance level for ``hot`` and ``cold`` (on Benjamini–Hochberg adjusted p-values).

    Returns
    -------
    pandas.DataFrame
        One row per study-area cell, sorted by cell: ``h3``, ``value``, ``z``, ``p`` (two-sided),
        ``p_fdr``, ``hot``, ``cold``, ``gi_bin`` (-3..3) and ``cls`` (``hot_99`` … ``cold_99``, ``none``).
    """
    if k < 1:
        msg = f"k must be at least 1 ring, got {k}"
        raise InvalidParameterError(msg)
    if not 0 < alpha < 1:
        msg = f"alpha must be between 0 and 1, got {alpha}"
        raise InvalidParameterError(msg)
    idx = np.asarray(values.index, dtype="uint64")
    vals = np.asarray(values.to_numpy(), dtype="float64")
    cells = np.unique(idx if study_area is None else np.concatenate([idx, np.asarray(study_area, dtype="uint64")]))
    if res is not None and len(cells):
        found = np.unique((cells >> np.uint64(52)) & np.uint64(15))
        if len(found) != 1 or int(found[0]) != int(res):
            msg = f"gi_star: cells are at resolution(s) {found.tolist()}, expected {res}"
            raise InvalidParameterError(msg)
    x = np.zeros(len(cells))
    np.add.at(x, np.searchsorted(cells, idx), vals)
    w = neighbours(cells, k=k)
    z = _gi_z(w, x)
    p = 2.0 * stats.norm.sf(np.abs(z))
    p_fdr = fdr_bh(p)
    gbin = _gi_bin(z, p_fdr)
    cls_names = np.array([GI_CLASSES[b][0] for b in range(-3, 4)], dtype=object)
    return pd.DataFrame({
        "h3": cells, "value": x, "z": z, "p": p, "p_fdr": p_fdr,
        "hot": (z > 0) & (p_fdr < alpha), "cold": (z < 0) & (p_fdr < alpha),
        "gi_bin": gbin, "cls": cls_names[gbin.astype(int) + 3],
    })


def _study_area(store: Store, res: int, f: EventFilter) -> np.ndarray:
    return city_cells(store, res=res, area=f.area)


def hotspots(store: Store, *, res: int = 9, filters: EventFilter | None = None, k: int = 1, alpha: float = 0.05,
             metric: str = "count", max_cells: int | None = None) -> pd.DataFrame:
    """Gi* hotspots of the filtered events per H3 cell over the study area (see the module docstring).

    Parameters
    ----------
    store
        The database.
    res
        H3 resolution 5..12.
    filters
        Which events to count (:class:`geo.aggregate.EventFilter`).
    k
        Neighbourhood rings.
    alpha
        Significance level (Benjamini–Hochberg adjusted).
    metric
        Value per cell: ``count`` or ``sites`` (``density`` equals count up to the near-constant cell
        area and is treated as count).
    max_cells
        Raise :class:`TooManyCellsError` when the study area has more cells.

    Returns
    -------
    pandas.DataFrame
        :func:`gi_star` columns plus ``h3_hex`` and ``count`` (events in the cell).
    """
    res = check_res(res)
    f = validated_filter(store, filters)

    def compute() -> pd.DataFrame:
        hm = heatmap(store, res=res, filters=f, metric="count")
        study = _study_area(store, res, f)
        n = len(np.union1d(study, hm["h3"].to_numpy()))
        if max_cells is not None and n > max_cells:
            _too_many(store, res, f, n, max_cells)
        col = "sites" if metric == "sites" else "count"
        out = gi_star(pd.Series(hm[col].to_numpy(), index=hm["h3"].to_numpy()), k=k, res=res,
                      study_area=study, alpha=alpha)
        counts = pd.Series(hm["count"].to_numpy(), index=hm["h3"].to_numpy())
        out["count"] = counts.reindex(out["h3"].to_numpy()).fillna(0).astype("int64").to_numpy()
        out.insert(1, "h3_hex", to_hex(out["h3"].to_numpy()))
        return out

    return cached(store, ("hotspots", res, f, int(k), float(alpha), metric, max_cells), compute).copy()


def _too_many(store: Store, res: int, f: EventFilter, n: int, max_cells: int) -> None:
    finest = None
    for r in range(res - 1, 4, -1):
        if len(_study_area(store, r, f)) <= max_cells:
            finest = r
            break
    advice = f"res={finest} or coarser fits" if finest is not None else "use a smaller area"
    msg = f"res={res} gives a study area of {n:,} cells, more than the limit of {max_cells:,}; {advice}"
    raise TooManyCellsError(msg, fits_res=finest)


# ---------------------------------------------------------------------------------------------------------
# Clusters
# ---------------------------------------------------------------------------------------------------------

_CLUSTER_TYPES_SQL = """
SELECT c.cluster, coalesce(e.problem_type, e.source_type) AS problem_type, count(*) AS n
FROM events e JOIN _cluster_cells c ON {parent} = c.h3
WHERE {where} AND coalesce(e.problem_type, e.source_type) IS NOT NULL
GROUP BY 1, 2
"""


#: Columns of :func:`hotspot_clusters`, before ``geometry``.
_CLUSTER_COLUMNS = ["rank", "n_cells", "events", "z_max", "z_mean", "area_km2", "top_types", "top_type_names",
                    "top_type_counts", "grid_codes", "grid_names", "site_ids", "n_sites", "cells"]


def hotspot_clusters(store: Store, *, res: int = 9, filters: EventFilter | None = None, k: int = 1,
                     alpha: float = 0.05, top_types: int = 3, lang: str = "zh",
                     max_cells: int | None = None) -> gpd.GeoDataFrame:
    """Connected significant hot cells merged into ranked regions.

    Hot cells (see :func:`hotspots`) that share an edge are one cluster. Clusters are ranked by their
    number of events.

    Parameters
    ----------
    store, res, filters, k, alpha, max_cells
        As for :func:`hotspots`.
    top_types
        How many dominant problem types to list per cluster.
    lang
        ``zh`` or ``en`` for problem-type and grid names.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per cluster (EPSG:4326), by rank: ``rank``, ``n_cells``, ``events``, ``z_max``,
        ``z_mean``, ``area_km2``, ``top_types`` (codes; events without a type count under the city's own
        label, ``events.source_type``), ``top_type_names``, ``top_type_counts``,
        ``grid_codes`` and ``grid_names`` (micro-grids overlapping the region by at least 10 % of the
        grid's area, or holding its centre; a grid without a name is named by its code),
        ``site_ids`` and ``n_sites`` (active sample-frame sites
        whose location falls in the region's cells), ``cells`` (hex ids), ``geometry`` (merged polygon).
    """
    res = check_res(res)
    f = validated_filter(store, filters)
    name_col = name_column(lang)

    def compute() -> gpd.GeoDataFrame:
        hs = hotspots(store, res=res, filters=f, k=k, alpha=alpha, max_cells=max_cells)
        hot = hs[hs["hot"]].reset_index(drop=True)
        if hot.empty:
            return gpd.GeoDataFrame({c: [] for c in _CLUSTER_COLUMNS}, geometry=[], crs="EPSG:4326")
        cells = hot["h3"].to_numpy()
        adj = neighbours(cells, k=1, self_weight=False)
        _, label = connected_components(adj, directed=False)
        hot["cluster"] = label
        polys = cell_polygons(cells)
        g = hot.assign(geometry=polys).groupby("cluster")
        agg = g.agg(n_cells=("h3", "size"), events=("count", "sum"), z_max=("z", "max"), z_mean=("z", "mean"))
        geoms = {c: shapely.union_all(shapely.set_precision(part.geometry.to_numpy(), 1e-9))
                 for c, part in g}
        agg["geometry"] = pd.Series(geoms)
        agg["cells"] = g["h3_hex"].agg(list)
        # dominant problem types, in SQL over the events of the cluster cells
        cur = store.cursor()
        try:
            cur.register("_cluster_cells", pd.DataFrame({"h3": cells, "cluster": label}))
            where, params = f.where("e")
            types = cur.execute(_CLUSTER_TYPES_SQL.format(parent=parent_sql("e.h3", res), where=where),
                                params).df()
            names = cur.execute("SELECT code, name_zh, name_en FROM problem_types").df().set_index("code")
            sites = cur.execute(f"SELECT s.site_id, c.cluster FROM sites s JOIN _cluster_cells c "
                                f"ON {parent_sql('s.h3', res)} = c.h3 WHERE s.active ORDER BY s.site_id").df()
            # Shenzhen's grid file has no names: "None、None、None" was shown for its hotspots
            grids = cur.execute("SELECT code, coalesce(nullif(trim(name), ''), code) AS name, ST_AsWKB(geom) AS g "
                                "FROM grids").df()
        finally:
            cur.close()
        types = types.sort_values(["cluster", "n", "problem_type"], ascending=[True, False, True])
        top = types.groupby("cluster").head(top_types)
        agg["top_types"] = top.groupby("cluster")["problem_type"].agg(list)
        agg["top_type_counts"] = top.groupby("cluster")["n"].agg(lambda s: [int(v) for v in s])
        agg["top_type_names"] = agg["top_types"].map(
            lambda codes: [names[name_col].get(c, c) for c in codes] if isinstance(codes, list) else [])
        agg["site_ids"] = sites.groupby("cluster")["site_id"].agg(lambda s: [int(v) for v in s])
        for c in ("top_types", "top_type_counts", "site_ids"):
            agg[c] = agg[c].map(lambda v: v if isinstance(v, list) else [])
        agg["n_sites"] = agg["site_ids"].map(len)
        agg["grid_codes"], agg["grid_names"] = _grids_of_regions(agg["geometry"], grids)
        gdf = gpd.GeoDataFrame(agg.reset_index(drop=True), geometry="geometry", crs="EPSG:4326")
        gdf["area_km2"] = area_km2(gdf.geometry.to_numpy())
        gdf["events"] = gdf["events"].astype("int64")
        gdf = gdf.sort_values(["events", "n_cells"], ascending=False, ignore_index=True)
        gdf["rank"] = np.arange(1, len(gdf) + 1)
        return gdf[[*_CLUSTER_COLUMNS, "geometry"]]

    return cached(store, ("clusters", res, f, int(k), float(alpha), int(top_types), lang, max_cells),
                   compute).copy()


def _grids_of_regions(regions: pd.Series, grids: pd.DataFrame) -> tuple[list[list[str]], list[list[str]]]:
    """Codes and names of the micro-grids (``code, name, g`` WKB) overlapping each region by at least 10 % of
    the grid's area, or holding its centre."""
    grid_geoms = shapely.from_wkb(grids["g"].map(bytes).to_numpy()) if len(grids) else np.array([])
    grid_area = shapely.area(grid_geoms) if len(grids) else np.array([])
    grid_codes: list[list[str]] = []
    grid_names: list[list[str]] = []
    for geom in regions:
        if not len(grids):
            grid_codes.append([])
            grid_names.append([])
            continue
        share = shapely.area(shapely.intersection(grid_geoms, geom)) / np.where(grid_area > 0, grid_area, 1)
        centre_in = shapely.contains(geom, shapely.point_on_surface(grid_geoms))
        pick = np.flatnonzero((share >= 0.10) | centre_in)
        grid_codes.append(grids["code"].to_numpy()[pick].tolist())
        grid_names.append(grids["name"].to_numpy()[pick].tolist())
    return grid_codes, grid_names


# ---------------------------------------------------------------------------------------------------------
# Emerging hotspots
# ---------------------------------------------------------------------------------------------------------

def mann_kendall(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mann-Kendall trend test on each row of ``y`` (cells × time), vectorized.

    Same statistic as ``pymannkendall.original_test``: S, its variance with the tie correction, the
    continuity-corrected z and the two-sided p-value.

    Returns
    -------
    s, z, p
        Arrays of length ``y.shape[0]``.
    """
    y = np.atleast_2d(np.asarray(y, dtype="float64"))
    n_rows, t = y.shape
    s = np.zeros(n_rows)
    for i in range(t - 1):
        s += np.sign(y[:, i + 1:] - y[:, i:i + 1]).sum(axis=1)
    # ties: groups of equal values within each row
    ys = np.sort(y, axis=1)
    new_group = np.ones_like(ys, dtype=bool)
    new_group[:, 1:] = ys[:, 1:] != ys[:, :-1]
    gid = np.cumsum(new_group.ravel())  # groups never span rows because each row starts a new group
    sizes = np.bincount(gid)[1:]
    row_of_group = np.repeat(np.arange(n_rows), new_group.sum(axis=1))
    tie_term = np.bincount(row_of_group, weights=sizes * (sizes - 1.0) * (2.0 * sizes + 5.0), minlength=n_rows)
    var = (t * (t - 1.0) * (2.0 * t + 5.0) - tie_term) / 18.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, (s - 1) / np.sqrt(var), np.where(s < 0, (s + 1) / np.sqrt(var), 0.0))
    z = np.where(var > 0, z, 0.0)
    p = 2.0 * stats.norm.sf(np.abs(z))
    return s, z, p


def classify_emerging(hot: np.ndarray, cold: np.ndarray, trend_z: np.ndarray, trend_p: np.ndarray, *,
                      alpha: float = 0.05) -> np.ndarray:
    """ESRI emerging-hot-spot class of each row of significance masks (cells × slices, oldest first).

    Hot rules (cold ones mirror them with hot and cold swapped; a decreasing trend of z intensifies
    a cold spot):

    * **new**: hot in the last slice only, never hot before;
    * **consecutive**: one run of at least two hot slices at the end, never hot before it, < 90 % hot;
    * **intensifying** / **persistent** / **diminishing**: hot in ≥ 90 % of slices including the last,
      with a significant increasing / no significant / a significant decreasing Mann-Kendall trend of
      the Gi* z-scores;
    * **sporadic**: hot in the last slice, on and off before, < 90 % hot, never cold;
    * **oscillating**: hot in the last slice, < 90 % hot, cold in some earlier slice;
    * **historical**: not hot in the last slice but hot in ≥ 90 % of slices;
    * otherwise **no_pattern**.
    """
    hot = np.asarray(hot, dtype=bool)
    cold = np.asarray(cold, dtype=bool)
    n, t = hot.shape
    out = np.full(n, "no_pattern", dtype=object)
    up = (trend_p < alpha) & (trend_z > 0)
    down = (trend_p < alpha) & (trend_z < 0)
    for kind, mask, other, stronger, weaker in (("cold", cold, hot, down, up), ("hot", hot, cold, up, down)):
        share = mask.sum(axis=1) / t
        last = mask[:, -1]
        before = mask[:, :-1].any(axis=1)
        # length of the final run of significant slices
        not_mask = ~mask
        last_false = np.where(not_mask.any(axis=1), t - 1 - np.argmax(not_mask[:, ::-1], axis=1), -1)
        run = t - 1 - last_false
        cum_any = np.maximum.accumulate(mask, axis=1)
        before_run = np.where(last_false > 0, cum_any[np.arange(n), np.maximum(last_false - 1, 0)], False)
        other_before = other[:, :-1].any(axis=1)
        mostly = share >= PERSISTENT_SHARE
        conds = [
            last & mostly & stronger,
            last & mostly & weaker,
            last & mostly,
            last & ~before,
            last & (run >= 2) & ~before_run,
            last & other_before,
            last,
            ~last & mostly,
        ]
        names = ["intensifying", "diminishing", "persistent", "new", "consecutive", "oscillating", "sporadic",
                 "historical"]
        cls = np.select(conds, [f"{nm}_{kind}" for nm in names], default="")
        out = np.where(cls != "", cls, out)
    return out.astype(object)


def emerging_from_counts(x: np.ndarray, cells: np.ndarray, *, k: int = 1, alpha: float = 0.05) -> pd.DataFrame:
    """Emerging-hotspot classes from a cells × slices count matrix (the core of :func:`emerging_hotspots`).

    Parameters
    ----------
    x
        Counts, one row per cell of ``cells`` (the whole study area), one column per slice, oldest first.
    cells
        Sorted unique uint64 H3 cells at one resolution.
    k, alpha
        Gi* rings and significance level (BH-adjusted within each slice; also the Mann-Kendall level).
    """
    x = np.asarray(x, dtype="float64")
    cells = np.asarray(cells, dtype="uint64")
    w = neighbours(cells, k=k)
    z = _gi_z(w, x)
    p = 2.0 * stats.norm.sf(np.abs(z))
    p_fdr = fdr_bh(p, axis=0)
    hot = (z > 0) & (p_fdr < alpha)
    cold = (z < 0) & (p_fdr < alpha)
    _, tz_, tp = mann_kendall(z)
    cls = classify_emerging(hot, cold, tz_, tp, alpha=alpha)
    return pd.DataFrame({
        "h3": cells, "h3_hex": to_hex(cells), "cls": cls,
        "label_zh": [EMERGING_CLASSES[c][0] for c in cls], "label_en": [EMERGING_CLASSES[c][1] for c in cls],
        "n_slices": x.shape[1], "n_hot": hot.sum(axis=1), "n_cold": cold.sum(axis=1), "last_z": z[:, -1],
        "trend_z": tz_, "trend_p": tp, "count": x.sum(axis=1).astype("int64"),
    })


def emerging_hotspots(store: Store, *, res: int = 8, filters: EventFilter | None = None, freq: str = "M",
                      k: int = 1, alpha: float = 0.05, max_cells: int | None = None) -> pd.DataFrame:
    """Emerging-hotspot classes per cell from Gi* per time slice and a Mann-Kendall trend on the z-scores.

    Parameters
    ----------
    store
        The database.
    res
        H3 resolution.
    filters
        Which events to count; ``start``/``end`` bound the slices (default: the filtered events' span).
    freq
        ``W`` (weeks from Monday) or ``M`` (calendar months).
    k, alpha
        Gi* neighbourhood rings and significance (BH-adjusted per slice; also the trend test's level).
    max_cells
        Raise :class:`TooManyCellsError` when the study area has more cells.

    Returns
    -------
    pandas.DataFrame
        One row per study-area cell: ``h3``, ``h3_hex``, ``cls`` (key of :data:`EMERGING_CLASSES`),
        ``label_zh``, ``label_en``, ``n_slices``, ``n_hot``, ``n_cold``, ``last_z``, ``trend_z``,
        ``trend_p``, ``count`` (events over all slices). ``attrs["slices"]`` holds the slice starts.
    """
    res = check_res(res)
    freq = str(freq).upper()
    if freq not in ("W", "M"):
        msg = f"freq must be W (weekly) or M (monthly), got {freq!r}"
        raise InvalidParameterError(msg)
    f = validated_filter(store, filters)

    def compute() -> pd.DataFrame:
        unit = "week" if freq == "W" else "month"
        where, params = f.where("e")
        counts = store.sql(
            f"SELECT {parent_sql('e.h3', res)} AS h3, date_trunc('{unit}', e.time) AS slice, count(*) AS n "
            f"FROM events e WHERE {where} GROUP BY 1, 2", params)
        # the slices span the filter's window, else the span of the events inside the plausible window (one
        # event stored as year 1 must not make thousands of empty slices; it falls outside every slice)
        low, high = time_window()
        span = store.sql(f"SELECT min(e.time) AS t0, max(e.time) AS t1 FROM events e WHERE {where} "
                         "AND e.time BETWEEN ? AND ?", [*params, low, high])
        t0 = f.start or span["t0"].iloc[0]
        t1 = (f.end - pd.Timedelta(microseconds=1)) if f.end else span["t1"].iloc[0]
        if pd.isna(t0) or pd.isna(t1):
            msg = "no events match the filters; widen the time window or drop a filter"
            raise InvalidParameterError(msg)
        t0, t1 = pd.Timestamp(t0), pd.Timestamp(t1)
        if freq == "W":
            first = (t0 - pd.Timedelta(days=t0.weekday())).normalize()
            slices = pd.date_range(first, t1, freq="7D")
        else:
            slices = pd.date_range(t0.normalize().replace(day=1), t1, freq="MS")
        t = len(slices)
        if t < MIN_SLICES:
            other = "weekly (freq=W)" if freq == "M" else "a longer time window"
            msg = (f"emerging hotspots need at least {MIN_SLICES} time slices; the window gives {t} "
                   f"{unit}s — use {other}")
            raise InvalidParameterError(msg)
        study = np.union1d(_study_area(store, res, f), counts["h3"].to_numpy(dtype="uint64"))
        n = len(study)
        if max_cells is not None and n > max_cells:
            _too_many(store, res, f, n, max_cells)
        if n * t > MAX_CUBE:
            msg = (f"res={res} with {t} slices makes {n * t:,} cell-slices, more than {MAX_CUBE:,}; "
                   f"use a coarser res, monthly slices or a shorter window")
            raise TooManyCellsError(msg)
        x = np.zeros((n, t))
        cell_i = np.searchsorted(study, counts["h3"].to_numpy(dtype="uint64"))
        slice_i = np.searchsorted(slices.to_numpy(), pd.to_datetime(counts["slice"]).to_numpy())
        keep = (slice_i < t) & (slices.to_numpy()[np.minimum(slice_i, t - 1)] == pd.to_datetime(
            counts["slice"]).to_numpy())
        np.add.at(x, (cell_i[keep], slice_i[keep]), counts["n"].to_numpy()[keep])
        out = emerging_from_counts(x, study, k=k, alpha=alpha)
        out.attrs["slices"] = [s.isoformat() for s in slices]
        out.attrs["freq"] = freq
        return out

    result = cached(store, ("emerging", res, f, freq, int(k), float(alpha), max_cells), compute)
    out = result.copy()
    out.attrs = dict(result.attrs)
    return out
