"""The rebound search itself (``sites.cases.rebounds._rebound_batch``) against an independent brute force: every
(new case, closed case) pair checked, on real 311 cases and on adversarial synthetic ones (many closures at the
same time and point, the case itself among them, ties, distances at the radius, windows exactly at their end)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from civicgrid.sites.cases import rebounds

R_M = 6371008.8  # the sphere of the rebound rule (geo.distance.EARTH_RADIUS_M), written out: an independent check


def _brute(new: dict, old: dict, *, radius: float, window_us: int) -> dict[int, int]:
    """For each new case, the closed case of its type at its site or within ``radius`` m, closed in
    ``[found - window, found)``, other than itself, latest by (closed, case id): pair by pair."""
    want = {}
    o_lat, o_lng = np.radians(old["lat"]), np.radians(old["lng"])
    for i in range(len(new["case_id"])):
        lat1, lng1 = np.radians(new["lat"][i]), np.radians(new["lng"][i])
        a = np.sin((o_lat - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(o_lat) * np.sin((o_lng - lng1) / 2) ** 2
        dist = 2 * R_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))  # nan without a point: never within
        site = old["has_site"] & new["has_site"][i] & (old["site"] == new["site"][i])
        f = new["found_us"][i]
        ok = ((old["t"] == new["t"][i]) & ((dist <= radius) | site) & (old["closed_us"] < f)
              & (old["closed_us"] >= f - window_us) & (old["case_id"] != new["case_id"][i]))
        k = np.flatnonzero(ok)
        if k.size:
            best = k[np.lexsort((old["case_id"][k], old["closed_us"][k]))[-1]]
            want[int(new["case_id"][i])] = int(old["case_id"][best])
    return want


def _search(new: dict, old: dict, *, radius: float, window_us: int) -> dict[int, int]:
    case_id, old_id = rebounds._rebound_batch(new, old, radius=radius, window_us=window_us)
    assert len(np.unique(case_id)) == len(case_id)
    return dict(zip(case_id.tolist(), old_id.tolist(), strict=True))


def _copies(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """``k`` copies of the cases with their own ids (the same times and points): many closures at one time and
    point, as an import of a city's events written several times."""
    n = int(frame["case_id"].max())
    return pd.concat([frame.assign(case_id=frame["case_id"] + j * n) for j in range(k)], ignore_index=True)


def _arrays(frame: pd.DataFrame, time_col: str) -> dict[str, np.ndarray]:
    return {"case_id": frame["case_id"].to_numpy(np.int64), "t": frame["t"].to_numpy(np.int32),
            "has_site": frame["site"].notna().to_numpy(), "site": frame["site"].fillna(0).to_numpy(np.int64),
            time_col: frame[time_col].to_numpy(np.int64), "lat": frame["lat"].to_numpy(float),
            "lng": frame["lng"].to_numpy(float)}


@pytest.fixture(scope="module")
def sf311(shared) -> pd.DataFrame:
    """San Francisco 311 cases (real points, times and categories): found when opened, closed when closed."""
    raw = pd.read_csv(shared / "us_sf311" / "sf311_cases_sample_geo_4984.csv",
                      usecols=["CaseID", "Opened", "Closed", "Category", "Lat", "Long", "Address"])
    raw = raw.dropna(subset=["Category", "Opened"]).reset_index(drop=True)
    return pd.DataFrame({
        "case_id": np.arange(1, len(raw) + 1),
        "t": pd.factorize(raw["Category"])[0],
        # an address as the site of some cases (the same address is the same site)
        "site": pd.Series(pd.factorize(raw["Address"])[0], dtype="Int64").where(raw.index % 3 == 0),
        "found_us": pd.to_datetime(raw["Opened"]).astype("int64") // 1000,
        "closed_us": pd.to_datetime(raw["Closed"]).astype("int64") // 1000,
        "closed_ok": raw["Closed"].notna(),
        "lat": raw["Lat"].astype(float), "lng": raw["Long"].astype(float),
    })


@pytest.mark.parametrize(("radius", "days", "copies"), [(50.0, 30.0, 1), (400.0, 365.0, 1), (2000.0, 120.0, 1),
                                                        (150.0, 200.0, 3)])
def test_search_equals_brute_force_on_sf311(sf311, radius, days, copies):
    c = _copies(sf311, copies)
    # a few cases closed before they were opened, and some opened exactly when another was closed
    c.loc[c.index % 97 == 0, "closed_us"] = c["found_us"] - 3_600_000_000
    new = _arrays(c, "found_us")
    old = _arrays(c[c["closed_ok"]], "closed_us")
    window_us = round(days * 86400e6)
    want = _brute(new, old, radius=radius, window_us=window_us)
    assert len(want) > 100
    assert _search(new, old, radius=radius, window_us=window_us) == want


def _adversarial(rng, n: int, *, radius: float, window_us: int) -> tuple[dict, dict]:
    """Cases on a few spots, many at the very same time and point (copies with other ids, the case itself among
    the closures), others at the radius ± 1 mm, found exactly a window after a closure or at it."""
    deg = 180 / (np.pi * R_M)
    spots = np.column_stack([40.7 + rng.uniform(0, 6 * radius, 12) * deg, -74.0 + rng.uniform(0, 6 * radius, 12) * deg])
    s = spots[rng.integers(0, len(spots), n)]
    kind = rng.choice(4, n, p=[0.5, 0.2, 0.2, 0.1])
    step = radius + rng.choice([-1e-3, 1e-3], n)  # (exactly at the radius, rounding decides)
    lat = np.where(kind == 1, s[:, 0] + step * deg, s[:, 0])
    lng = np.where(kind == 2, s[:, 1] + step * deg / np.cos(np.radians(s[:, 0])), s[:, 1])
    lat = np.where(kind == 3, np.nan, lat)
    t0 = 1_700_000_000_000_000
    found = t0 + rng.integers(0, 40, n) * 86_400_000_000  # whole days: many ties
    closed = found + rng.integers(0, 3, n) * 86_400_000_000
    src = rng.integers(0, n, n)
    gap = rng.choice([window_us, window_us + 1, 0, 1], n)
    shift = rng.random(n) < 0.3
    found = np.where(shift, closed[src] + gap, found)
    before = rng.random(n) < 0.05
    closed = np.where(before, found - 1, closed)  # closed before it was found: never its own rebound
    t = rng.integers(0, 3, n)
    t = np.where(shift, t[src], t)
    site = np.where(rng.random(n) < 0.2, rng.integers(0, 4, n), -1)
    frame = pd.DataFrame({"case_id": np.arange(1, n + 1), "t": t, "site": pd.Series(site).where(site >= 0),
                          "found_us": found, "closed_us": closed, "lat": lat, "lng": lng})
    frame = _copies(frame, 5)
    frame = frame.sample(frac=1.0, random_state=int(rng.integers(1 << 30)))  # no order to rely on
    closed_ok = rng.random(len(frame)) < 0.8
    return _arrays(frame, "found_us"), _arrays(frame[closed_ok], "closed_us")


@pytest.mark.parametrize("seed", range(6))
def test_search_equals_brute_force_on_adversarial_cases(seed):
    rng = np.random.default_rng(seed)
    radius = float(rng.choice([1.0, 50.0, 333.3]))
    window_us = int(rng.choice([1, 86_400_000_000, 30 * 86_400_000_000]))
    new, old = _adversarial(rng, 700, radius=radius, window_us=window_us)
    want = _brute(new, old, radius=radius, window_us=window_us)
    assert len(want) > 50
    assert _search(new, old, radius=radius, window_us=window_us) == want


def test_kept_drops_only_closures_that_cannot_be_latest():
    """Of five closures at one time and point only the two of largest ids are kept; other points, times or
    keys keep theirs."""
    key = np.array([1, 1, 1, 1, 1, 1, 1, 2, 2, 2])
    closed = np.array([5, 5, 5, 5, 5, 6, 6, 6, 6, 6])
    lat = np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    lng = np.zeros(10)
    assert rebounds._kept(key, closed, lat, lng).tolist() == [1, 3, 4, 5, 6, 8, 9]
    assert rebounds._kept(key, closed, None, None).tolist() == [3, 4, 5, 6, 8, 9]
