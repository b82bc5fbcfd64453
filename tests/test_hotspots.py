"""Gi* against esda, Benjamini-Hochberg against scipy, Mann-Kendall against pymannkendall, emerging classes,
clusters and hotspots on the demo city."""

from __future__ import annotations

import warnings

import esda
import h3
import libpysal
import numpy as np
import pandas as pd
import pymannkendall
import pytest
import shapely
from civicgrid.geo.aggregate import EventFilter, city_cells, heatmap
from civicgrid.geo.hotspots import (
    classify_emerging,
    emerging_from_counts,
    emerging_hotspots,
    fdr_bh,
    gi_star,
    hotspot_clusters,
    hotspots,
    mann_kendall,
    neighbours,
)
from civicgrid.geo.store import Store
from scipy import stats


def _disk(lat: float, lng: float, res: int, k: int) -> np.ndarray:
    centre = h3.latlng_to_cell(lat, lng, res)
    return np.sort(np.array([h3.str_to_int(c) for c in h3.grid_disk(centre, k)], dtype="uint64"))


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return Store(demo_db)


@pytest.mark.parametrize("k", [1, 2])
def test_gi_star_matches_esda(k):
    cells = _disk(28.2, 112.9, 9, 9)
    rng = np.random.default_rng(k)
    x = rng.poisson(2.0, len(cells)).astype(float)
    x[:15] += 20  # a cluster of high values
    got = gi_star(pd.Series(x, index=cells), k=k, res=9)
    # independent weights: libpysal W from the h3 library's own k-ring lists (self excluded)
    pos = {c: i for i, c in enumerate(cells.tolist())}
    nb = {i: sorted(pos[h3.str_to_int(n)] for n in h3.grid_disk(h3.int_to_str(c), k)
                    if h3.str_to_int(n) in pos and h3.str_to_int(n) != c)
          for c, i in pos.items()}
    w = libpysal.weights.W(nb, silence_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = esda.G_Local(x, w, transform="B", star=True, permutations=0)
    assert np.allclose(got["z"].to_numpy(), ref.Zs, atol=1e-10)
    # esda's p_norm is one-sided; ours is two-sided
    assert np.allclose(got["p"].to_numpy(), 2 * ref.p_norm, atol=1e-12)
    assert got["hot"].sum() > 0
    assert (got.loc[got["hot"], "z"] > 0).all()


def test_gi_star_brute_force_and_study_area():
    cells = _disk(28.2, 112.9, 8, 4)
    x = np.zeros(len(cells))
    x[[3, 4, 5]] = [10, 7, 9]
    vals = pd.Series(x[x > 0], index=cells[x > 0])
    got = gi_star(vals, k=1, res=8, study_area=cells)  # zeros from the study area
    assert len(got) == len(cells)
    assert (got["h3"].to_numpy() == cells).all()
    n, xbar, s = len(x), x.mean(), x.std()
    for i, c in enumerate(cells):
        ring = [cells.tolist().index(h3.str_to_int(nc)) for nc in h3.grid_disk(h3.int_to_str(int(c)), 1)
                if h3.str_to_int(nc) in set(cells.tolist())]
        wsum = len(ring)
        z = (x[ring].sum() - xbar * wsum) / (s * np.sqrt((n * wsum - wsum ** 2) / (n - 1)))
        assert got["z"].iloc[i] == pytest.approx(z, abs=1e-10)
    with pytest.raises(Exception, match="resolution"):
        gi_star(vals, k=1, res=9)


def test_fdr_bh_matches_scipy_and_hand():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 0.001, 20)])
    assert np.allclose(fdr_bh(p), stats.false_discovery_control(p, method="bh"))
    # hand computation: p sorted = .01 .02 .03 .04 .2, m = 5 -> .05 .05 .05 .05 .2
    assert np.allclose(fdr_bh(np.array([0.04, 0.01, 0.2, 0.03, 0.02])), [0.05, 0.05, 0.2, 0.05, 0.05])
    m = rng.uniform(0, 0.2, (30, 4))
    cols = np.column_stack([stats.false_discovery_control(m[:, j]) for j in range(4)])
    assert np.allclose(fdr_bh(m, axis=0), cols)


def test_mann_kendall_matches_pymannkendall():
    rng = np.random.default_rng(5)
    rows = [rng.normal(0, 1, 24), np.arange(24) + rng.normal(0, 3, 24), -np.arange(30.0),
            rng.integers(0, 3, 24).astype(float), np.r_[np.zeros(12), np.ones(12)], np.full(24, 2.0)]
    for y in rows:
        s, z, p = mann_kendall(y[None, :])
        ref = pymannkendall.original_test(y)
        assert s[0] == ref.s
        assert z[0] == pytest.approx(ref.z, abs=1e-10)
        assert p[0] == pytest.approx(ref.p, abs=1e-10)
    y = rng.integers(0, 4, (50, 20)).astype(float)
    s, z, p = mann_kendall(y)
    for i in (0, 17, 49):
        ref = pymannkendall.original_test(y[i])
        assert (s[i], z[i]) == pytest.approx((ref.s, ref.z), abs=1e-10)


def _masks(spec: str) -> np.ndarray:
    return np.array([c == "H" for c in spec]), np.array([c == "C" for c in spec])


@pytest.mark.parametrize(("spec", "trend", "want"), [
    ("..........H", 0, "new_hot"),
    ("........HHH", 0, "consecutive_hot"),
    ("HHHHHHHHHHH", 1, "intensifying_hot"),
    ("HHHHHHHHHHH", 0, "persistent_hot"),
    (".HHHHHHHHHHHHHHHHHHH", -1, "diminishing_hot"),
    ("..H...H.HH.H", 0, "sporadic_hot"),
    ("..H...HHH", 0, "sporadic_hot"),  # hot before the final run: not consecutive
    ("CC....H..H", 0, "oscillating_hot"),
    ("HHHHHHHHHHHHHHHHHHH.", 0, "historical_hot"),
    ("..........C", 0, "new_cold"),
    ("......CCCC", 0, "consecutive_cold"),
    ("CCCCCCCCCCC", -1, "intensifying_cold"),
    ("CCCCCCCCCCC", 0, "persistent_cold"),
    ("CCCCCCCCCCC", 1, "diminishing_cold"),
    ("C..C.C...C", 0, "sporadic_cold"),
    ("H.....C..C", 0, "oscillating_cold"),
    ("CCCCCCCCCCCCCCCCCCC.", 0, "historical_cold"),
    ("..H..H..H.", 0, "no_pattern"),
    ("..........", 1, "no_pattern"),
])
def test_emerging_classes_on_constructed_series(spec, trend, want):
    hot, cold = _masks(spec)
    tz = np.array([2.5 * trend])
    tp = np.array([0.01 if trend else 0.5])
    assert classify_emerging(hot[None, :], cold[None, :], tz, tp)[0] == want


def test_emerging_from_counts_finds_new_and_intensifying():
    cells = _disk(28.2, 112.9, 9, 8)
    rng = np.random.default_rng(11)
    t = 24
    x = rng.poisson(1.0, (len(cells), t)).astype(float)
    centre = np.searchsorted(cells, h3.str_to_int(h3.latlng_to_cell(28.2, 112.9, 9)))
    ring = np.searchsorted(cells, [h3.str_to_int(c) for c in h3.grid_disk(h3.int_to_str(int(cells[centre])), 1)])
    # a cluster that appears only in the last slice
    other = h3.latlng_to_cell(28.2, 112.9, 9)
    far = h3.grid_ring(other, 6)[0]
    new_ring = np.searchsorted(cells, [h3.str_to_int(c) for c in h3.grid_disk(far, 1)])
    x[new_ring, -1] += 25
    # a cluster hot all along and growing
    x[ring, :] += np.linspace(8, 40, t)
    out = emerging_from_counts(x, cells, k=1).set_index("h3")
    assert out.loc[cells[centre], "cls"] == "intensifying_hot"
    assert out.loc[h3.str_to_int(far), "cls"] == "new_hot"
    assert out.loc[cells[centre], "trend_z"] > 2
    # the rest of the field: mostly no pattern
    assert (out["cls"] == "no_pattern").mean() > 0.8


def test_hotspots_on_demo_city(store):
    hs = hotspots(store, res=9)
    study = city_cells(store, res=9)
    hm = heatmap(store, res=9)
    assert set(study) <= set(hs["h3"])
    assert set(hs["h3"]) == set(study) | set(hm["h3"])
    assert hs["count"].sum() == hm["count"].sum()
    assert hs["hot"].sum() >= 10
    # the cells with the busiest neighbourhoods (counted with the h3 library) are hot
    counts = dict(zip(hs["h3"].tolist(), hs["count"].tolist(), strict=True))
    ring_sum = {c: sum(counts.get(h3.str_to_int(n), 0) for n in h3.grid_disk(h3.int_to_str(c), 1)) for c in counts}
    busiest = sorted(ring_sum, key=ring_sum.get, reverse=True)[:5]
    assert hs.set_index("h3").loc[busiest, "hot"].all()
    assert not hs.loc[hs["count"] >= hm["count"].median(), "cold"].any()
    # same numbers as gi_star called directly
    direct = gi_star(pd.Series(hm["count"].to_numpy(), index=hm["h3"].to_numpy()), res=9, study_area=study)
    assert np.allclose(direct["z"].to_numpy(), hs["z"].to_numpy())


def test_clusters_are_connected_hot_regions(store, demo_db):
    hs = hotspots(store, res=9).set_index("h3")
    cl = hotspot_clusters(store, res=9)
    assert len(cl) >= 2
    assert cl["rank"].tolist() == list(range(1, len(cl) + 1))
    assert (cl["events"].diff().dropna() <= 0).all()
    all_cells = [h3.str_to_int(c) for cells in cl["cells"] for c in cells]
    assert len(all_cells) == len(set(all_cells)) == int(hs["hot"].sum())
    owner = {h3.str_to_int(c): i for i, cells in enumerate(cl["cells"]) for c in cells}
    ev = store.sql("SELECT problem_type, h3 FROM events")
    ev["cell"] = ev["h3"].astype("uint64").map(
        lambda c, m={}: m.setdefault(c, h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), 9))))
    ev["cluster"] = ev["cell"].map(owner)
    for i, row in cl.iterrows():
        cells = [h3.str_to_int(c) for c in row["cells"]]
        assert row["n_cells"] == len(cells)
        assert row["events"] == int(hs.loc[cells, "count"].sum())
        # connected: every cell touches another cell of its cluster (unless the cluster is one cell)
        if len(cells) > 1:
            for c in cells:
                nbrs = {h3.str_to_int(n) for n in h3.grid_disk(h3.int_to_str(c), 1)} - {c}
                assert nbrs & set(cells)
        # no hot cell of another cluster touches this one
        for c in cells:
            for n in h3.grid_disk(h3.int_to_str(c), 1):
                assert owner.get(h3.str_to_int(n), i) == i
        # merged polygon = union of the hexagons
        union = shapely.union_all([shapely.Polygon([(x, y) for y, x in h3.cell_to_boundary(h3.int_to_str(c))])
                                   for c in cells])
        assert abs(row.geometry.area - union.area) / union.area < 1e-6
        # dominant types from pandas
        want = ev[ev.cluster == i].groupby("problem_type").size().sort_values(ascending=False)
        assert row["top_types"][0] == want.index[0]
        assert row["top_type_counts"][0] == want.iloc[0]
        # sites: active sites whose cell is in the cluster
        sites = store.sql("SELECT site_id, h3 FROM sites WHERE active")
        inside = [int(s) for s, c in zip(sites.site_id, sites.h3, strict=True)
                  if h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), 9)) in set(cells)]
        assert sorted(row["site_ids"]) == sorted(inside)
        assert row["n_sites"] == len(inside)
        assert len(row["grid_codes"]) >= 1


def test_emerging_on_demo_finds_the_new_problem(store):
    """The demo city plants a parking problem (大类 03) growing around one residential compound from 2025-03:
    the cell where such events grew most (found with pandas and the h3 library) must be hot in the last month
    with a significant rising trend, in one of the emerging classes."""
    ev = store.sql("SELECT h3, time FROM events WHERE problem_type LIKE '03%'")
    ev["cell"] = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), 9)) for c in ev["h3"]]
    late = ev[ev.time >= "2025-03-01"].groupby("cell").size() / 10
    early = ev[ev.time < "2025-03-01"].groupby("cell").size() / 14
    growth = late.sub(early, fill_value=0).sort_values(ascending=False)
    cell = growth.index[0]
    out = emerging_hotspots(store, res=9, freq="M", filters=EventFilter(types="03")).set_index("h3")
    assert out.attrs["freq"] == "M"
    assert len(out.attrs["slices"]) == 24
    row = out.loc[cell]
    assert row["cls"] in {"new_hot", "consecutive_hot", "intensifying_hot", "sporadic_hot"}
    assert row["last_z"] > 3
    assert row["trend_z"] > 0
    assert row["trend_p"] < 0.05
    assert row["count"] == len(ev[ev.cell == cell])
    # cells without any of these events are never hot spots of any kind
    quiet = out[(out["count"] == 0) & (out["n_hot"] == 0)]
    assert not quiet["cls"].str.endswith("_hot").any()
    with pytest.raises(Exception, match="at least 10"):
        emerging_hotspots(store, res=9, freq="M", filters=EventFilter(start="2025-01-01", end="2025-04-01"))
    weekly = emerging_hotspots(store, res=8, freq="W", filters=EventFilter(start="2025-01-01", end="2025-04-01"))
    assert weekly["n_slices"].iloc[0] == 14  # weeks from Monday 2024-12-30 to 2025-03-31


def test_neighbours_matrix():
    cells = _disk(28.2, 112.9, 9, 3)
    w = neighbours(cells, k=1, self_weight=False)
    for i, c in enumerate(cells):
        want = {h3.str_to_int(n) for n in h3.grid_disk(h3.int_to_str(int(c)), 1)} - {int(c)}
        want &= set(cells.tolist())
        assert set(cells[w[i].indices].tolist()) == want
    assert (w != w.T).nnz == 0
