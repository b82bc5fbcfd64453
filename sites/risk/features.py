"""The risk components of any sites at any moments, computed from the data strictly before each moment.

:class:`Data` loads the sites, labelled inspections and events before ``as_of`` as arrays;
:func:`component_values` computes the raw components for queries ``(site, time)`` with vectorized prefix sums
(:func:`prefix_sum`, :func:`last_before`), so scoring and the training rows of the model share one code path
(no leakage); :func:`design` turns them into the model inputs (:data:`~civicgrid.sites.risk.TRANSFORMS`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import h3ronpy
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo.aggregate import EventFilter
from civicgrid.geo.h3cells import parent
from civicgrid.geo.hotspots import hotspots
from civicgrid.geo.store import Store
from civicgrid.sites.risk.components import (
    AREA_PRIOR,
    AREA_RES,
    AREA_TAU_DAYS,
    BRAND_PRIOR,
    BRAND_TAU_DAYS,
    CATEGORY_PRIOR,
    COMPONENTS,
    FAIL_TAU_DAYS,
    HOTSPOT_DAYS,
    HOTSPOT_RES,
    INSPECTOR_PRIOR,
    KIND_PRIOR,
    MAX_DAYS,
    NEAR_K,
    NEAR_RES,
    REBOUND_TAU_DAYS,
    SITE_PRIOR,
    TAU_DAYS,
)

_US_PER_DAY = 86_400_000_000


def _us(values) -> np.ndarray:
    """Times as int64 microseconds (NaT: the minimum int64)."""
    return pd.to_datetime(pd.Series(values)).to_numpy("datetime64[us]").astype("int64")


NAT = np.iinfo("int64").min


def prefix_sum(group: np.ndarray, time: np.ndarray, q_group: np.ndarray, q_time: np.ndarray,
                values: np.ndarray | None = None) -> np.ndarray:
    """For each query ``(g, t)``: the sum of ``values`` (default 1) over items of group ``g`` with time < t.

    Vectorized: items and queries are ranked on one time axis, items sorted by (group, time rank), and
    each query found with two binary searches into the cumulative sum.
    """
    group = np.asarray(group, dtype="int64")
    q_group = np.asarray(q_group, dtype="int64")
    if len(group) == 0 or len(q_group) == 0:
        return np.zeros(len(q_group))
    axis = np.unique(np.concatenate([time, q_time]))
    n = len(axis) + 1
    key = group * n + np.searchsorted(axis, time)
    order = np.argsort(key, kind="stable")
    key = key[order]
    vals = np.ones(len(group)) if values is None else np.asarray(values, dtype="float64")[order]
    cum = np.concatenate([[0.0], np.cumsum(vals)])
    hi = np.searchsorted(key, q_group * n + np.searchsorted(axis, q_time), side="left")
    lo = np.searchsorted(key, q_group * n, side="left")
    return cum[hi] - cum[lo]


def last_before(group: np.ndarray, time: np.ndarray, q_group: np.ndarray, q_time: np.ndarray) -> np.ndarray:
    """For each query ``(g, t)``: the latest item time of group ``g`` before t (``NAT`` when none)."""
    group = np.asarray(group, dtype="int64")
    if len(group) == 0:
        return np.full(len(q_group), NAT)
    axis = np.unique(np.concatenate([time, q_time]))
    n = len(axis) + 1
    key = group * n + np.searchsorted(axis, time)
    order = np.argsort(key, kind="stable")
    key, t_sorted = key[order], np.asarray(time)[order]
    q_group = np.asarray(q_group, dtype="int64")
    hi = np.searchsorted(key, q_group * n + np.searchsorted(axis, q_time), side="left")
    lo = np.searchsorted(key, q_group * n, side="left")
    return np.where(hi > lo, t_sorted[np.maximum(hi - 1, 0)], NAT)


def first_last(group: np.ndarray, time: np.ndarray, q_group: np.ndarray, q_time: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """For each query ``(g, t)``: the indices (into the items) of the first and the latest item of group ``g``
    before t (-1 when none); ties in time keep the items' order."""
    group = np.asarray(group, dtype="int64")
    nq = len(q_group)
    if len(group) == 0 or nq == 0:
        return np.full(nq, -1), np.full(nq, -1)
    axis = np.unique(np.concatenate([time, q_time]))
    n = len(axis) + 1
    key = group * n + np.searchsorted(axis, time)
    order = np.argsort(key, kind="stable")
    key = key[order]
    q_group = np.asarray(q_group, dtype="int64")
    hi = np.searchsorted(key, q_group * n + np.searchsorted(axis, q_time), side="left")
    lo = np.searchsorted(key, q_group * n, side="left")
    some = hi > lo
    first = np.where(some, order[np.minimum(lo, len(order) - 1)], -1)
    last = np.where(some, order[np.maximum(hi - 1, 0)], -1)
    return first, last


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.01, 0.99)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function (logit units to a probability)."""
    return 1.0 / (1.0 + np.exp(-z))


# --- data before as_of ------------------------------------------------------------------------------------

_SITES_SQL = """
SELECT s.site_id, s.name, s.category_code, c.name_zh AS category_zh, c.name_en AS category_en,
       s.grid_code, s.community_code, s.street_code, s.district_code, s.lng, s.lat, s.h3,
       coalesce(s.active, TRUE) AS active
FROM sites s LEFT JOIN site_categories c ON c.code = s.category_code
ORDER BY s.site_id
"""


_INSPECTIONS_SQL = """
SELECT site_id, time, coalesce(inspector, '') AS inspector,
       CASE WHEN conforming IS NOT NULL THEN NOT conforming ELSE problems_found > 0 END AS found,
       coalesce(critical, FALSE) AS critical, score, coalesce(kind, '') AS kind, problems_found
FROM inspections
WHERE time < $as_of AND site_id IS NOT NULL AND (conforming IS NOT NULL OR problems_found IS NOT NULL)
ORDER BY time
"""


# Every event at a site (open and overdue need the whole history), and the rest of the recent ones.
_EVENTS_SQL = """
SELECT source, site_id, time, h3, deadline, rectified_at, closed_at, rebound_of IS NOT NULL AS rebound
FROM events
WHERE time < $as_of AND (site_id IS NOT NULL OR time >= $since)
"""


class Data:
    """Sites, labelled inspections and events strictly before ``as_of``, as arrays."""

    def __init__(self, store: Store, as_of: datetime, since: datetime) -> None:
        self.as_of = as_of
        self.as_of_us = int(np.datetime64(as_of, "us").astype("int64"))
        self.sites = store.sql(_SITES_SQL)
        sid = self.sites["site_id"].to_numpy("int64")
        self.site_ids = sid
        cats = self.sites["category_code"].astype(str).to_numpy()
        self.cat_codes, self.site_cat = np.unique(cats, return_inverse=True)
        ins = store.sql(_INSPECTIONS_SQL, {"as_of": as_of})
        pos = np.searchsorted(sid, ins["site_id"].to_numpy("int64"))
        pos[pos == len(sid)] = 0
        known = sid[pos] == ins["site_id"].to_numpy("int64") if len(sid) else np.zeros(len(ins), bool)
        ins = ins[known].reset_index(drop=True)
        self.ins_site = pos[known]
        self.ins_t = _us(ins["time"])
        self.ins_y = ins["found"].to_numpy(bool)
        self.ins_inspector = ins["inspector"].astype(str).to_numpy()
        self.ins_critical = ins["critical"].to_numpy(bool)
        self.ins_score = pd.to_numeric(ins["score"], errors="coerce").to_numpy(float)
        self.ins_kind = ins["kind"].astype(str).to_numpy()
        self.ins_followup = is_followup(self.ins_kind)
        self.ins_problems = pd.to_numeric(ins["problems_found"], errors="coerce").to_numpy(float)
        kinds, counts = np.unique(self.ins_kind, return_counts=True)
        #: The kind of a routine visit: the most frequent kind before as_of ('' when the city records none).
        self.routine_kind = str(kinds[np.argmax(counts)]) if len(kinds) else ""
        ev = store.sql(_EVENTS_SQL, {"as_of": as_of, "since": since})
        self.ev_source = ev["source"].astype(str).to_numpy()
        self.ev_t = _us(ev["time"])
        self.ev_cell = parent(ev["h3"].fillna(0).to_numpy("uint64"), NEAR_RES)
        s = ev["site_id"].to_numpy("float64")
        epos = np.searchsorted(sid, np.nan_to_num(s, nan=-1).astype("int64"))
        epos[epos >= len(sid)] = 0
        at_site = ~np.isnan(s)
        if len(sid):
            at_site &= sid[epos] == np.nan_to_num(s, nan=-1).astype("int64")
        self.ev_site = np.where(at_site, epos, -1)
        self.ev_deadline = _us(ev["deadline"])
        rect, closed = _us(ev["rectified_at"]), _us(ev["closed_at"])
        both = np.where(rect == NAT, closed, np.where(closed == NAT, rect, np.minimum(rect, closed)))
        self.ev_resolved = both
        self.ev_closed = closed
        self.ev_rebound = ev["rebound"].to_numpy(bool)
        cells = self.sites["h3"].fillna(0).to_numpy("uint64")
        self.site_cell = parent(cells, NEAR_RES)
        self.site_hot_cell = parent(cells, HOTSPOT_RES)
        self.disk = _disks(self.site_cell)
        self.site_area = _area_groups(self.sites, cells)
        self.site_brand = brand_groups(self.sites["name"])


def brand_groups(names: pd.Series) -> np.ndarray:
    """Each site's brand as an index: sites whose names are equal once case, spaces and punctuation are dropped
    (``DUNKIN' DONUTS`` and ``Dunkin Donuts``; a chain's branches), -1 for a name no other site has (or none)."""
    key = names.astype(object).where(names.notna(), "").astype(str).str.casefold()
    key = key.str.replace(r"[\W_]+", "", regex=True).to_numpy(str)
    uniq, idx, counts = np.unique(key, return_inverse=True, return_counts=True)
    idx = idx.astype("int64").reshape(-1)
    return np.where((counts[idx] > 1) & (uniq[idx] != ""), idx, -1)


def _area_groups(sites: pd.DataFrame, cells: np.ndarray) -> np.ndarray:
    """Each site's area as an index (-1: none): its micro-grid when it has one, else its H3 cell at
    :data:`AREA_RES` when it has coordinates, else its finest area code (community, street, district), so that a
    site known only by its area (no coordinates) is compared with the other sites of that area."""
    def codes(col: str) -> pd.Series:
        c = sites[col].astype(object) if col in sites else pd.Series([None] * len(sites), dtype=object)
        c = c.where(c.notna(), "").astype(str).reset_index(drop=True)
        return c.where(c.str.len() == 0, col + ":" + c)

    h3 = pd.Series(["h3:" + str(c) if c else "" for c in parent(cells, AREA_RES)], dtype=object)
    key = codes("grid_code")
    for part in (h3, codes("community_code"), codes("street_code"), codes("district_code")):
        key = key.where(key.str.len() > 0, part)
    uniq, idx = np.unique(key.to_numpy(str), return_inverse=True)
    idx = idx.astype("int64")
    if len(uniq) and uniq[0] == "":
        idx[idx == 0] = -1
    return idx


#: Kinds of visit that follow up an earlier one (re-inspection, compliance, 复查...), matched case-insensitively.
FOLLOWUP_PATTERN = r"re-?inspect|reopen|follow|compliance|复查|复检|回头看|整改验收"


def is_followup(kinds: np.ndarray) -> np.ndarray:
    """Whether each visit kind (``inspections.kind``) is a follow-up of an earlier visit."""
    s = pd.Series(kinds, dtype=object).fillna("").astype(str)
    return s.str.contains(FOLLOWUP_PATTERN, case=False, regex=True).to_numpy(bool)


def _disks(cells: np.ndarray) -> np.ndarray:
    """(n, 7) array of the cells within :data:`NEAR_K` rings of each cell (0 padding; 0 for missing cells)."""
    width = 3 * NEAR_K * (NEAR_K + 1) + 1
    out = np.zeros((len(cells), width), dtype="uint64")
    ok = cells != 0
    if not ok.any():
        return out
    disk = pa.array(h3ronpy.grid_disk(cells[ok], NEAR_K))
    offsets = np.asarray(disk.offsets.to_numpy(zero_copy_only=False), dtype="int64")
    vals = np.asarray(disk.values.to_numpy(zero_copy_only=False), dtype="uint64")
    counts = np.diff(offsets)
    rows = np.repeat(np.flatnonzero(ok), counts)
    cols = np.arange(len(vals)) - np.repeat(offsets[:-1], counts)
    out[rows, cols] = vals
    return out


# --- inspector effects ------------------------------------------------------------------------------------

def _category_rates(d: Data) -> tuple[np.ndarray, float]:
    """Shrunk problem rate per category index from all labelled inspections before as_of, and the city's."""
    n_cat = len(d.cat_codes)
    cat = d.site_cat[d.ins_site]
    n = np.bincount(cat, minlength=n_cat).astype(float)
    y = np.bincount(cat, weights=d.ins_y.astype(float), minlength=n_cat)
    city = (d.ins_y.sum() + 1.0) / (len(d.ins_y) + 2.0)
    return (y + CATEGORY_PRIOR * city) / (n + CATEGORY_PRIOR), float(city)


def inspector_table(d: Data) -> pd.DataFrame:
    rates, _ = _category_rates(d)
    expected = rates[d.site_cat[d.ins_site]]
    df = pd.DataFrame({"inspector": d.ins_inspector, "found": d.ins_y.astype(float), "expected": expected})
    out = df.groupby("inspector", sort=True).agg(visits=("found", "size"), found=("found", "sum"),
                                                 expected=("expected", "sum")).reset_index()
    prior = INSPECTOR_PRIOR * (out["expected"] / out["visits"]).clip(lower=1e-6)
    out["detection"] = (out["found"] + prior) / (out["expected"] + prior)
    out.loc[out["inspector"] == "", "detection"] = 1.0
    return out


# --- components at any moments ----------------------------------------------------------------------------

def _hotspot_levels(store: Store, d: Data, q_site: np.ndarray, q_snap: np.ndarray) -> np.ndarray:
    """Gi* level (0..3, hot only) of each query site's res-9 cell at its snapshot moment (µs)."""
    out = np.zeros(len(q_site))
    if not (d.ev_source == "complaint").any():  # no complaints before as_of (a city without a hotline feed)
        return out
    for snap in np.unique(q_snap):
        end = pd.Timestamp(int(snap), unit="us").to_pydatetime()
        f = EventFilter(start=end - timedelta(days=HOTSPOT_DAYS), end=end, source="complaint")
        hs = hotspots(store, res=HOTSPOT_RES, filters=f)
        level = pd.Series(np.maximum(hs["gi_bin"].to_numpy(int), 0), index=hs["h3"].to_numpy("uint64"))
        m = q_snap == snap
        out[m] = level.reindex(d.site_hot_cell[q_site[m]]).fillna(0).to_numpy(float)
    return out


def component_values(store: Store, d: Data, q_site: np.ndarray, q_time: np.ndarray, q_snap: np.ndarray,
                detection: dict[str, float]) -> pd.DataFrame:
    """The raw components for queries (site index, time µs) from the items of ``d`` before each time."""
    nq = len(q_site)
    q_site = np.asarray(q_site, dtype="int64")
    q_time = np.asarray(q_time, dtype="int64")
    q_cat = d.site_cat[q_site]
    tau_us = TAU_DAYS * _US_PER_DAY
    out = {}
    # category and city rates as of each query time
    ins_cat = d.site_cat[d.ins_site]
    zeros = np.zeros(len(d.ins_t), dtype="int64")
    y = d.ins_y.astype(float)
    n_city = prefix_sum(zeros, d.ins_t, np.zeros(nq, "int64"), q_time)
    y_city = prefix_sum(zeros, d.ins_t, np.zeros(nq, "int64"), q_time, y)
    city = (y_city + 1.0) / (n_city + 2.0)
    n_cat = prefix_sum(ins_cat, d.ins_t, q_cat, q_time)
    y_cat = prefix_sum(ins_cat, d.ins_t, q_cat, q_time, y)
    cat_rate = (y_cat + CATEGORY_PRIOR * city) / (n_cat + CATEGORY_PRIOR)
    out["category_rate"] = cat_rate
    # the site's record, each visit weighted by its inspector's detection ratio
    det = pd.Series(d.ins_inspector).map(detection).fillna(1.0).to_numpy(float)
    n_site = prefix_sum(d.ins_site, d.ins_t, q_site, q_time, det)
    y_site = prefix_sum(d.ins_site, d.ins_t, q_site, q_time, y)
    out["site_rate"] = (y_site + SITE_PRIOR * cat_rate) / (n_site + SITE_PRIOR)
    out["site_visits"] = prefix_sum(d.ins_site, d.ins_t, q_site, q_time)
    # time-decayed complaints and hits in the disk around the site
    for name, source in (("complaints_near", "complaint"), ("hits_near", "inspection")):
        m = (d.ev_source == source) & (d.ev_cell != 0)
        cells = d.ev_cell[m]
        ucells, cell_idx = np.unique(cells, return_inverse=True)
        w = np.exp((d.ev_t[m] - d.as_of_us) / tau_us)
        total = np.zeros(nq)
        if len(ucells):
            for j in range(d.disk.shape[1]):
                qc = d.disk[q_site, j]
                pos = np.searchsorted(ucells, qc)
                pos[pos >= len(ucells)] = 0
                hit = (ucells[pos] == qc) & (qc != 0) if len(ucells) else np.zeros(nq, bool)
                if hit.any():
                    s = prefix_sum(cell_idx, d.ev_t[m], pos[hit], q_time[hit], w)
                    total[hit] += np.maximum(s, 0.0) * np.exp((d.as_of_us - q_time[hit]) / tau_us)
        out[name] = total
    # open and overdue problems at the site
    at = d.ev_site >= 0
    es, et = d.ev_site[at], d.ev_t[at]
    closed = d.ev_closed[at]
    c_ok = closed != NAT
    opened = prefix_sum(es, et, q_site, q_time)
    closed_before = prefix_sum(es[c_ok], closed[c_ok], q_site, q_time)
    out["open_problems"] = np.maximum(opened - closed_before, 0.0)
    dl, res = d.ev_deadline[at], d.ev_resolved[at]
    d_ok = dl != NAT
    late = prefix_sum(es[d_ok], dl[d_ok], q_site, q_time)
    r_ok = d_ok & (res != NAT)
    done = prefix_sum(es[r_ok], np.maximum(dl[r_ok], res[r_ok]), q_site, q_time)
    out["overdue_problems"] = np.maximum(late - done, 0.0)
    # days since the last inspection
    last = last_before(d.ins_site, d.ins_t, q_site, q_time)
    days = np.where(last == NAT, np.nan, (q_time - last) / _US_PER_DAY)
    out["days_since_inspection"] = days
    # rebounds at the site
    rb = at & d.ev_rebound
    w = np.exp((d.ev_t[rb] - d.as_of_us) / (REBOUND_TAU_DAYS * _US_PER_DAY))
    s = prefix_sum(d.ev_site[rb], d.ev_t[rb], q_site, q_time, w)
    out["rebounds"] = np.maximum(s, 0.0) * np.exp((d.as_of_us - q_time) / (REBOUND_TAU_DAYS * _US_PER_DAY))
    out["hotspot"] = _hotspot_levels(store, d, q_site, q_snap)
    out.update(_history(d, q_site, q_time))
    return pd.DataFrame(out)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` as floats, NaN where ``index`` is -1 (none)."""
    out = np.full(len(index), np.nan)
    ok = index >= 0
    out[ok] = values[index[ok]]
    return out


def _history(d: Data, q_site: np.ndarray, q_time: np.ndarray) -> dict[str, np.ndarray]:
    """The site's own record before each query time: failures and critical findings (counts and time-decayed),
    the last result and score, the score trend, days since the last failure, age in the frame, whether the last
    visit was a follow-up, and the season."""
    out: dict[str, np.ndarray] = {}
    y = d.ins_y.astype(float)
    tau_us = FAIL_TAU_DAYS * _US_PER_DAY
    w = np.exp((d.ins_t - d.as_of_us) / tau_us)
    back = np.exp((d.as_of_us - q_time) / tau_us)
    out["failures"] = prefix_sum(d.ins_site, d.ins_t, q_site, q_time, y)
    out["failures_recent"] = np.maximum(prefix_sum(d.ins_site, d.ins_t, q_site, q_time, y * w), 0.0) * back
    crit = d.ins_critical.astype(float)
    out["criticals_recent"] = np.maximum(prefix_sum(d.ins_site, d.ins_t, q_site, q_time, crit * w), 0.0) * back
    first, last = first_last(d.ins_site, d.ins_t, q_site, q_time)
    out["last_failed"] = _take(y, last)
    out["last_critical"] = _take(crit, last)
    out["last_followup"] = _take(d.ins_followup.astype(float), last)
    out["age_days"] = (q_time - _take(d.ins_t.astype(float), first)) / _US_PER_DAY
    visits = prefix_sum(d.ins_site, d.ins_t, q_site, q_time)
    with np.errstate(invalid="ignore", divide="ignore"):  # inspections a year since the first (its own cycle)
        out["visits_per_year"] = np.where(visits > 0, 365.0 * visits / np.maximum(out["age_days"], 30.0), np.nan)
    out["area_rate"] = _area_rate(d, q_site, q_time)
    out["problems_rate"] = _problems_rate(d, q_site, q_time)
    out["brand_rate"] = _brand_rate(d, q_site, q_time)
    scored = np.isfinite(d.ins_score)
    if scored.any():
        sc = d.ins_score[scored]
        n_sc = prefix_sum(d.ins_site[scored], d.ins_t[scored], q_site, q_time)
        sum_sc = prefix_sum(d.ins_site[scored], d.ins_t[scored], q_site, q_time, sc)
        _, last_sc = first_last(d.ins_site[scored], d.ins_t[scored], q_site, q_time)
        out["last_score"] = _take(sc, last_sc)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["mean_score"] = np.where(n_sc > 0, sum_sc / np.maximum(n_sc, 1), np.nan)
            before = np.where(n_sc > 1, (sum_sc - out["last_score"]) / np.maximum(n_sc - 1, 1), np.nan)
        out["score_trend"] = out["last_score"] - before
    else:
        out["last_score"] = out["mean_score"] = out["score_trend"] = np.full(len(q_site), np.nan)
    failed = d.ins_y
    last_fail = last_before(d.ins_site[failed], d.ins_t[failed], q_site, q_time)
    out["days_since_failure"] = np.where(last_fail == NAT, np.nan, (q_time - last_fail) / _US_PER_DAY)
    month = (q_time.astype("datetime64[us]").astype("datetime64[M]").astype("int64") % 12).astype(float)
    out["season_sin"] = np.sin(2 * np.pi * month / 12)
    out["season_cos"] = np.cos(2 * np.pi * month / 12)
    return out


def _problems_rate(d: Data, q_site: np.ndarray, q_time: np.ndarray) -> np.ndarray:
    """Problems found per visit at the site before each query time, of any severity (the count a city records
    besides its pass/fail rule: Toronto's infractions, minor and significant ones too), shrunk toward the city's
    mean per visit with :data:`SITE_PRIOR` pseudo-visits (NaN: the city records no counts)."""
    counted = np.isfinite(d.ins_problems)
    if not counted.any():
        return np.full(len(q_site), np.nan)
    t, v = d.ins_t[counted], d.ins_problems[counted]
    zeros, q_zeros = np.zeros(len(t), "int64"), np.zeros(len(q_site), "int64")
    city = (prefix_sum(zeros, t, q_zeros, q_time, v) + 1.0) / (prefix_sum(zeros, t, q_zeros, q_time) + 1.0)
    n = prefix_sum(d.ins_site[counted], t, q_site, q_time)
    total = prefix_sum(d.ins_site[counted], t, q_site, q_time, v)
    return (total + SITE_PRIOR * city) / (n + SITE_PRIOR)


def visit_inputs(d: Data, kinds, q_time: np.ndarray) -> np.ndarray:
    """The conditions of planned visits known before the day, as model inputs ``(followup, kind)`` per visit:
    whether its kind is a follow-up (:func:`is_followup`), and ``logit(kind rate) - logit(city rate)``, the problem
    share of the earlier visits of the same kind (shrunk toward the city's with :data:`KIND_PRIOR` pseudo-visits)
    against the city's, both from the inspections before each ``q_time`` (0 for a visit of no recorded kind or of a
    kind not seen before). ``kinds`` None: routine visits (:attr:`Data.routine_kind`), as a site is scored."""
    q_time = np.asarray(q_time, dtype="int64")
    nq = len(q_time)
    kinds = np.full(nq, d.routine_kind, dtype=object) if kinds is None else np.asarray(
        pd.Series(list(kinds), dtype=object).fillna("").astype(str).to_numpy(), dtype=object)
    if len(kinds) != nq:
        msg = f"kinds and times must have the same length, got {len(kinds)} and {nq}"
        raise ValueError(msg)
    out = np.zeros((nq, 2))
    out[:, 0] = is_followup(kinds)
    named = kinds != ""
    if not named.any() or not len(d.ins_t):
        return out
    idx = np.unique(np.concatenate([d.ins_kind.astype(object), kinds]).astype(str), return_inverse=True)[1]
    ins_k, q_k = idx[: len(d.ins_kind)], idx[len(d.ins_kind):]
    y = d.ins_y.astype(float)
    zeros, q_zeros = np.zeros(len(y), "int64"), np.zeros(nq, "int64")
    city = (prefix_sum(zeros, d.ins_t, q_zeros, q_time, y) + 1.0) / (prefix_sum(zeros, d.ins_t, q_zeros, q_time) + 2.0)
    n_k = prefix_sum(ins_k, d.ins_t, q_k, q_time)
    y_k = prefix_sum(ins_k, d.ins_t, q_k, q_time, y)
    rate = (y_k + KIND_PRIOR * city) / (n_k + KIND_PRIOR)
    out[:, 1] = np.where(named & (n_k > 0), _logit(rate) - _logit(city), 0.0)
    return out


def _brand_rate(d: Data, q_site: np.ndarray, q_time: np.ndarray) -> np.ndarray:
    """The problem share of the inspections of the *other* sites of the same name (:func:`brand_groups`: a chain's
    other branches) before each query time, each weighted ``exp(-age / BRAND_TAU_DAYS)``, shrunk toward the city's
    share with :data:`BRAND_PRIOR` pseudo-visits (NaN: no other site has the name). A chain's practices (training,
    suppliers, audits) are shared by its branches, and known before the day."""
    out = np.full(len(q_site), np.nan)
    group, q_group = d.site_brand[d.ins_site], d.site_brand[q_site]
    ok, q_ok = group >= 0, q_group >= 0
    if not q_ok.any():
        return out
    tau_us = BRAND_TAU_DAYS * _US_PER_DAY
    w = np.exp((d.ins_t - d.as_of_us) / tau_us)
    back = np.exp((d.as_of_us - q_time[q_ok]) / tau_us)
    y = d.ins_y.astype(float)

    def decayed(g, qg, vals):
        return prefix_sum(g[ok], d.ins_t[ok], qg[q_ok], q_time[q_ok], vals[ok]) * back

    n = np.maximum(decayed(group, q_group, w) - decayed(d.ins_site, q_site, w), 0.0)
    found = np.maximum(decayed(group, q_group, w * y) - decayed(d.ins_site, q_site, w * y), 0.0)
    zeros, q_zeros = np.zeros(len(y), "int64"), np.zeros(int(q_ok.sum()), "int64")
    city = (prefix_sum(zeros, d.ins_t, q_zeros, q_time[q_ok], y) + 1.0) / (
        prefix_sum(zeros, d.ins_t, q_zeros, q_time[q_ok]) + 2.0)
    out[q_ok] = (found + BRAND_PRIOR * city) / (n + BRAND_PRIOR)
    return out


def _area_rate(d: Data, q_site: np.ndarray, q_time: np.ndarray) -> np.ndarray:
    """The problem share of the inspections of the *other* sites of the site's area (:func:`_area_groups`) before
    each query time, each weighted ``exp(-age / AREA_TAU_DAYS)``, shrunk toward the city's share with
    :data:`AREA_PRIOR` pseudo-visits (NaN: a site without coordinates or area): "hits nearby" from the
    inspection records themselves, for cities whose inspections are not also events."""
    out = np.full(len(q_site), np.nan)
    group = d.site_area[d.ins_site]
    q_group = d.site_area[q_site]
    ok, q_ok = group >= 0, q_group >= 0
    if not ok.any() or not q_ok.any():
        return out
    tau_us = AREA_TAU_DAYS * _US_PER_DAY
    w = np.exp((d.ins_t - d.as_of_us) / tau_us)
    back = np.exp((d.as_of_us - q_time) / tau_us)
    y = d.ins_y.astype(float)

    def decayed(g, qg, vals, m, qm):
        return np.maximum(prefix_sum(g[m], d.ins_t[m], qg[qm], q_time[qm], vals[m]), 0.0) * back[qm]

    n_area = decayed(group, q_group, w, ok, q_ok) - decayed(d.ins_site, q_site, w, ok, q_ok)
    y_area = decayed(group, q_group, w * y, ok, q_ok) - decayed(d.ins_site, q_site, w * y, ok, q_ok)
    zeros, q_zeros = np.zeros(len(y), "int64"), np.zeros(int(q_ok.sum()), "int64")
    city = (prefix_sum(zeros, d.ins_t, q_zeros, q_time[q_ok], y) + 1.0) / (
        prefix_sum(zeros, d.ins_t, q_zeros, q_time[q_ok]) + 2.0)
    out[q_ok] = (np.maximum(y_area, 0.0) + AREA_PRIOR * city) / (np.maximum(n_area, 0.0) + AREA_PRIOR)
    return out


def design(comp: pd.DataFrame, names=COMPONENTS) -> pd.DataFrame:
    """The model inputs ``x`` of the components (:data:`TRANSFORMS`): ``names`` of them (the components, or the
    logistic model's :data:`LINEAR`)."""
    cat = _logit(comp["category_rate"].to_numpy(float))

    def col(name: str) -> np.ndarray:
        return comp[name].to_numpy(float) if name in comp else np.full(len(comp), np.nan)

    area = col("area_rate")
    brand = col("brand_rate")
    extra = {
        "failures_recent": np.log1p(np.nan_to_num(col("failures_recent"))),
        "criticals_recent": np.log1p(np.nan_to_num(col("criticals_recent"))),
        "last_failed": np.nan_to_num(col("last_failed")),
        "last_critical": np.nan_to_num(col("last_critical")),
        "visits_per_year": np.log1p(np.nan_to_num(col("visits_per_year"))),
        "area_rate": np.where(np.isnan(area), 0.0, _logit(np.nan_to_num(area, nan=0.5)) - cat),
        "problems_rate": np.log1p(np.nan_to_num(col("problems_rate"))),
        "brand_rate": np.where(np.isnan(brand), 0.0, _logit(np.nan_to_num(brand, nan=0.5)) - cat),
    }
    return pd.DataFrame({**{k: v for k, v in extra.items() if k in names}, **{
        "category_rate": cat,
        "site_record": _logit(comp["site_rate"].to_numpy(float)) - cat,
        "complaints_near": np.log1p(comp["complaints_near"].to_numpy(float)),
        "hits_near": np.log1p(comp["hits_near"].to_numpy(float)),
        "open_problems": np.log1p(comp["open_problems"].to_numpy(float)),
        "overdue_problems": np.log1p(comp["overdue_problems"].to_numpy(float)),
        "days_since_inspection": np.minimum(comp["days_since_inspection"].fillna(MAX_DAYS).to_numpy(float),
                                            MAX_DAYS) / MAX_DAYS,
        "rebounds": np.log1p(comp["rebounds"].to_numpy(float)),
        "hotspot": comp["hotspot"].to_numpy(float) / 3.0,
    }})[list(names)]


def month_start(t_us: np.ndarray) -> np.ndarray:
    months = t_us.astype("datetime64[us]").astype("datetime64[M]")
    return months.astype("datetime64[us]").astype("int64")
