"""Site risk: the probability that the next inspection of each sample-frame site finds a problem, with its components.

The score
---------
For every site and a moment ``as_of`` civicgrid computes, from data strictly before ``as_of``:

===========================  =================================================================================
component                    value
===========================  =================================================================================
``category_rate``            share of the category's past inspections that found a problem, shrunk toward the
                             city's share (:data:`CATEGORY_PRIOR` pseudo-visits); the model uses its logit
``site_record``              the site's own share of problem-finding inspections, shrunk toward its category's
                             (:data:`SITE_PRIOR` pseudo-visits); each past visit counts with its inspector's
                             detection ratio (a visit by a weak inspector that found nothing says less);
                             the model uses ``logit(site) - logit(category)``
``complaints_near``          complaints in the H3 disk (:data:`NEAR_K` rings at resolution :data:`NEAR_RES`,
                             about 200 m) around the site, each weighted ``exp(-age / TAU_DAYS)``
``hits_near``                inspection hits in the same disk, time-decayed the same way
``open_problems``            problems at the site not closed before ``as_of``
``overdue_problems``         of those, past their deadline and not rectified
``days_since_inspection``    days since the site's last inspection (capped at 365; never inspected: 365)
``rebounds``                 rebound cases at the site (``events.rebound_of`` set), weighted
                             ``exp(-age / REBOUND_TAU_DAYS)``
``hotspot``                  Getis-Ord Gi* level (0..3 for not significant, 90 %, 95 %, 99 % hot) of the site's
                             H3 res-9 cell for the complaints of the :data:`HOTSPOT_DAYS` days before (from
                             :func:`geo.hotspots.hotspots`, Benjamini-Hochberg adjusted)
===========================  =================================================================================

``logit(risk) = b0 + Σ w_k x_k`` where ``x_k`` is the transformed component (:data:`TRANSFORMS`).
Each component's *contribution* is ``w_k (x_k - m_k)`` in logit units, relative to the mean ``m_k``
(of the training rows for a learnt model, of the scored sites for the default), so
``logit(risk) = base + Σ contributions`` and the reason names the largest positive ones.

Learnt weights
--------------
With at least :data:`MIN_TRAIN` labelled inspections (and :data:`MIN_CLASS` of each outcome) in the
:data:`TRAIN_DAYS` days before ``as_of``, the weights come from an L2-regularised logistic regression
(scikit-learn ``LogisticRegressionCV``, the penalty chosen by 5-fold log-loss) of "this inspection
found a problem" on the components computed *as of each inspection's time* from the data before it
(the same vectorized code as for scoring, so no leakage). Otherwise :data:`DEFAULT_WEIGHTS`, a
transparent hand-set rule, is used. ``model=`` forces either.

Inspector effects
-----------------
Inspectors differ in how readily they record problems. Each inspector's detection ratio is
observed / expected problem-finding visits (expected from each visit's category rate), shrunk with
:data:`INSPECTOR_PRIOR` pseudo-visits (:func:`inspector_effects`). It is used twice: as a covariate
``log(detection)`` in the learnt model (a fixed effect, so the component weights are not confounded by
who made the visits), and as the weight of each past visit in ``site_record``. Scores are for an
average inspector (``log detection = 0``).

Not used: ``events.status`` and ``events.reopened`` describe the record *now*, with no time stamp for
when they changed, so they would leak the future into a backtest; open and overdue use ``closed_at``,
``rectified_at`` and ``deadline``, and rebounds use ``rebound_of`` with the rebound's own time.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import geopandas as gpd
import h3ronpy
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo.aggregate import EventFilter, cached
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.events import as_of_notes, data_span
from civicgrid.geo.h3cells import parent
from civicgrid.geo.hotspots import hotspots
from civicgrid.geo.store import Store
from civicgrid.geo.texts import check_lang, labels, name_column, pairs, text
from civicgrid.geo.times import parse_moment

#: What ``as_of`` may be: a datetime, a date (its midnight) or an ISO string.
AsOf = datetime | date | str

#: H3 resolution and rings of the neighbourhood of a site (res 10, 1 ring: 7 cells, about 200 m across).
NEAR_RES = 10
NEAR_K = 1
#: Time constant (days) of the decay of complaints and hits near a site.
TAU_DAYS = 30.0
#: Time constant (days) of the decay of rebounds at a site.
REBOUND_TAU_DAYS = 180.0
#: History (days) of events loaded before the earliest moment scored (decayed weights below e^-6 are dropped).
LOOKBACK_DAYS = 180
#: Days of inspections before ``as_of`` used to learn the weights, and the cap on training rows (newest kept).
TRAIN_DAYS = 365
MAX_TRAIN = 60_000
#: Fewest labelled inspections, and fewest of each outcome, for learnt weights.
MIN_TRAIN = 300
MIN_CLASS = 50
#: Pseudo-visits of the shrinkage of category rates (toward the city) and site rates (toward the category).
CATEGORY_PRIOR = 20.0
SITE_PRIOR = 5.0
#: Pseudo-visits of the shrinkage of inspector detection ratios toward 1.
INSPECTOR_PRIOR = 30.0
#: Days of complaints of the Gi* hotspot component, and its H3 resolution.
HOTSPOT_DAYS = 90
HOTSPOT_RES = 9
#: Cap of ``days_since_inspection``.
MAX_DAYS = 365.0

#: Components in display order.
COMPONENTS = ("category_rate", "site_record", "complaints_near", "hits_near", "open_problems",
              "overdue_problems", "days_since_inspection", "rebounds", "hotspot")

#: Labels (zh, en) of the components (``[risk.component]`` of the text catalogue, :mod:`civicgrid.geo.texts`).
LABELS: dict[str, tuple[str, ...]] = pairs("risk.component")

#: How each component's value becomes the model input ``x``.
TRANSFORMS = {
    "category_rate": "logit(rate)",
    "site_record": "logit(site rate) - logit(category rate)",
    "complaints_near": "log(1 + decayed count)",
    "hits_near": "log(1 + decayed count)",
    "open_problems": "log(1 + count)",
    "overdue_problems": "log(1 + count)",
    "days_since_inspection": "min(days, 365) / 365",
    "rebounds": "log(1 + decayed count)",
    "hotspot": "Gi* level / 3 (0, 1/3, 2/3, 1)",
}

#: The transparent default weights (logit units per unit of ``x``), used with too few labelled inspections:
#: the category rate and the site's record enter at face value (weight 1: the shrunk site rate itself),
#: signals of current trouble add moderate amounts.
DEFAULT_WEIGHTS = {
    "category_rate": 1.0, "site_record": 1.0, "complaints_near": 0.25, "hits_near": 0.25,
    "open_problems": 0.3, "overdue_problems": 0.4, "days_since_inspection": 0.3, "rebounds": 0.4, "hotspot": 0.5,
}

_US_PER_DAY = 86_400_000_000


# ---------------------------------------------------------------------------------------------------------
# Time and prefix sums
# ---------------------------------------------------------------------------------------------------------

def parse_as_of(as_of: AsOf | pd.Timestamp) -> datetime:
    """Read ``as_of`` (:func:`~civicgrid.geo.times.parse_moment`): a datetime, a date or ``YYYY-MM-DD``
    (midnight: data of that day is not used) or a date-time text, the year first; everything strictly before
    it is used."""
    return parse_moment(as_of, name="as_of")


def _us(values) -> np.ndarray:
    """Times as int64 microseconds (NaT: the minimum int64)."""
    return pd.to_datetime(pd.Series(values)).to_numpy("datetime64[us]").astype("int64")


_NAT = np.iinfo("int64").min


def _prefix_sum(group: np.ndarray, time: np.ndarray, q_group: np.ndarray, q_time: np.ndarray,
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


def _last_before(group: np.ndarray, time: np.ndarray, q_group: np.ndarray, q_time: np.ndarray) -> np.ndarray:
    """For each query ``(g, t)``: the latest item time of group ``g`` before t (``_NAT`` when none)."""
    group = np.asarray(group, dtype="int64")
    if len(group) == 0:
        return np.full(len(q_group), _NAT)
    axis = np.unique(np.concatenate([time, q_time]))
    n = len(axis) + 1
    key = group * n + np.searchsorted(axis, time)
    order = np.argsort(key, kind="stable")
    key, t_sorted = key[order], np.asarray(time)[order]
    q_group = np.asarray(q_group, dtype="int64")
    hi = np.searchsorted(key, q_group * n + np.searchsorted(axis, q_time), side="left")
    lo = np.searchsorted(key, q_group * n, side="left")
    return np.where(hi > lo, t_sorted[np.maximum(hi - 1, 0)], _NAT)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.01, 0.99)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------------------------------------
# Data before as_of
# ---------------------------------------------------------------------------------------------------------

_SITES_SQL = """
SELECT s.site_id, s.name, s.category_code, c.name_zh AS category_zh, c.name_en AS category_en,
       s.grid_code, s.community_code, s.street_code, s.district_code, s.lng, s.lat, s.h3,
       coalesce(s.active, TRUE) AS active
FROM sites s LEFT JOIN site_categories c ON c.code = s.category_code
ORDER BY s.site_id
"""

_INSPECTIONS_SQL = """
SELECT site_id, time, coalesce(inspector, '') AS inspector,
       CASE WHEN conforming IS NOT NULL THEN NOT conforming ELSE problems_found > 0 END AS found
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


class _Data:
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
        both = np.where(rect == _NAT, closed, np.where(closed == _NAT, rect, np.minimum(rect, closed)))
        self.ev_resolved = both
        self.ev_closed = closed
        self.ev_rebound = ev["rebound"].to_numpy(bool)
        cells = self.sites["h3"].fillna(0).to_numpy("uint64")
        self.site_cell = parent(cells, NEAR_RES)
        self.site_hot_cell = parent(cells, HOTSPOT_RES)
        self.disk = _disks(self.site_cell)


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


# ---------------------------------------------------------------------------------------------------------
# Inspector effects
# ---------------------------------------------------------------------------------------------------------

def _category_rates(d: _Data) -> tuple[np.ndarray, float]:
    """Shrunk problem rate per category index from all labelled inspections before as_of, and the city's."""
    n_cat = len(d.cat_codes)
    cat = d.site_cat[d.ins_site]
    n = np.bincount(cat, minlength=n_cat).astype(float)
    y = np.bincount(cat, weights=d.ins_y.astype(float), minlength=n_cat)
    city = (d.ins_y.sum() + 1.0) / (len(d.ins_y) + 2.0)
    return (y + CATEGORY_PRIOR * city) / (n + CATEGORY_PRIOR), float(city)


def _inspector_table(d: _Data) -> pd.DataFrame:
    rates, _ = _category_rates(d)
    expected = rates[d.site_cat[d.ins_site]]
    df = pd.DataFrame({"inspector": d.ins_inspector, "found": d.ins_y.astype(float), "expected": expected})
    out = df.groupby("inspector", sort=True).agg(visits=("found", "size"), found=("found", "sum"),
                                                 expected=("expected", "sum")).reset_index()
    prior = INSPECTOR_PRIOR * (out["expected"] / out["visits"]).clip(lower=1e-6)
    out["detection"] = (out["found"] + prior) / (out["expected"] + prior)
    out.loc[out["inspector"] == "", "detection"] = 1.0
    return out


def inspector_effects(store: Store, *, as_of: AsOf) -> pd.DataFrame:
    """Each inspector's detection ratio from the labelled inspections before ``as_of``.

    ``detection = (found + a·r) / (expected + a·r)`` where ``found`` counts the inspector's problem-finding
    visits, ``expected`` sums each visit's category problem rate, ``r = expected / visits`` and ``a`` is
    :data:`INSPECTOR_PRIOR` (shrinkage toward 1 for inspectors with few visits). 1.5 means the inspector
    finds problems on 1.5 times as many visits as an average inspector would at the same sites' categories.

    Parameters
    ----------
    store
        The database.
    as_of
        Moment; only the inspections strictly before it are used.

    Returns
    -------
    pandas.DataFrame
        ``inspector, visits, found, expected, detection``, sorted by ``detection`` descending.
    """
    moment = parse_as_of(as_of)
    d = _Data(store, moment, moment)
    return _inspector_table(d).sort_values("detection", ascending=False, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Components at any moments
# ---------------------------------------------------------------------------------------------------------

def _hotspot_levels(store: Store, d: _Data, q_site: np.ndarray, q_snap: np.ndarray) -> np.ndarray:
    """Gi* level (0..3, hot only) of each query site's res-9 cell at its snapshot moment (µs)."""
    out = np.zeros(len(q_site))
    for snap in np.unique(q_snap):
        end = pd.Timestamp(int(snap), unit="us").to_pydatetime()
        f = EventFilter(start=end - timedelta(days=HOTSPOT_DAYS), end=end, source="complaint")
        hs = hotspots(store, res=HOTSPOT_RES, filters=f)
        level = pd.Series(np.maximum(hs["gi_bin"].to_numpy(int), 0), index=hs["h3"].to_numpy("uint64"))
        m = q_snap == snap
        out[m] = level.reindex(d.site_hot_cell[q_site[m]]).fillna(0).to_numpy(float)
    return out


def _components(store: Store, d: _Data, q_site: np.ndarray, q_time: np.ndarray, q_snap: np.ndarray,
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
    n_city = _prefix_sum(zeros, d.ins_t, np.zeros(nq, "int64"), q_time)
    y_city = _prefix_sum(zeros, d.ins_t, np.zeros(nq, "int64"), q_time, y)
    city = (y_city + 1.0) / (n_city + 2.0)
    n_cat = _prefix_sum(ins_cat, d.ins_t, q_cat, q_time)
    y_cat = _prefix_sum(ins_cat, d.ins_t, q_cat, q_time, y)
    cat_rate = (y_cat + CATEGORY_PRIOR * city) / (n_cat + CATEGORY_PRIOR)
    out["category_rate"] = cat_rate
    # the site's record, each visit weighted by its inspector's detection ratio
    det = pd.Series(d.ins_inspector).map(detection).fillna(1.0).to_numpy(float)
    n_site = _prefix_sum(d.ins_site, d.ins_t, q_site, q_time, det)
    y_site = _prefix_sum(d.ins_site, d.ins_t, q_site, q_time, y)
    out["site_rate"] = (y_site + SITE_PRIOR * cat_rate) / (n_site + SITE_PRIOR)
    out["site_visits"] = _prefix_sum(d.ins_site, d.ins_t, q_site, q_time)
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
                    s = _prefix_sum(cell_idx, d.ev_t[m], pos[hit], q_time[hit], w)
                    total[hit] += np.maximum(s, 0.0) * np.exp((d.as_of_us - q_time[hit]) / tau_us)
        out[name] = total
    # open and overdue problems at the site
    at = d.ev_site >= 0
    es, et = d.ev_site[at], d.ev_t[at]
    closed = d.ev_closed[at]
    c_ok = closed != _NAT
    opened = _prefix_sum(es, et, q_site, q_time)
    closed_before = _prefix_sum(es[c_ok], closed[c_ok], q_site, q_time)
    out["open_problems"] = np.maximum(opened - closed_before, 0.0)
    dl, res = d.ev_deadline[at], d.ev_resolved[at]
    d_ok = dl != _NAT
    late = _prefix_sum(es[d_ok], dl[d_ok], q_site, q_time)
    r_ok = d_ok & (res != _NAT)
    done = _prefix_sum(es[r_ok], np.maximum(dl[r_ok], res[r_ok]), q_site, q_time)
    out["overdue_problems"] = np.maximum(late - done, 0.0)
    # days since the last inspection
    last = _last_before(d.ins_site, d.ins_t, q_site, q_time)
    days = np.where(last == _NAT, np.nan, (q_time - last) / _US_PER_DAY)
    out["days_since_inspection"] = days
    # rebounds at the site
    rb = at & d.ev_rebound
    w = np.exp((d.ev_t[rb] - d.as_of_us) / (REBOUND_TAU_DAYS * _US_PER_DAY))
    s = _prefix_sum(d.ev_site[rb], d.ev_t[rb], q_site, q_time, w)
    out["rebounds"] = np.maximum(s, 0.0) * np.exp((d.as_of_us - q_time) / (REBOUND_TAU_DAYS * _US_PER_DAY))
    out["hotspot"] = _hotspot_levels(store, d, q_site, q_snap)
    return pd.DataFrame(out)


def _design(comp: pd.DataFrame) -> pd.DataFrame:
    """The model inputs ``x`` of the components (:data:`TRANSFORMS`)."""
    cat = _logit(comp["category_rate"].to_numpy(float))
    return pd.DataFrame({
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
    })[list(COMPONENTS)]


def _month_start(t_us: np.ndarray) -> np.ndarray:
    months = t_us.astype("datetime64[us]").astype("datetime64[M]")
    return months.astype("datetime64[us]").astype("int64")


# ---------------------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------------------

def fit_model(store: Store, *, as_of: AsOf, model: str = "auto", train_days: int = TRAIN_DAYS) -> dict:
    """Learn (or choose) the weights of the risk score from the data before ``as_of``.

    Parameters
    ----------
    store
        The database.
    as_of
        Moment; only data strictly before it is used.
    model
        ``"auto"``: learnt when there are enough labelled inspections, else default; ``"learnt"``:
        learnt or :class:`InvalidParameterError`; ``"default"``: :data:`DEFAULT_WEIGHTS`.
    train_days
        Inspections of this many days before ``as_of`` are the training rows.

    Returns
    -------
    dict
        ``kind`` (learnt/default), ``intercept``, ``weights`` and ``means`` per component, ``inspector_weight``
        (coefficient of log detection), ``detection`` (per inspector), ``n_train``, ``n_positive``,
        ``train_auc`` (in-sample), ``C`` (the chosen inverse penalty), ``reason`` when default was used.
    """
    if model not in ("auto", "learnt", "default"):
        msg = f"model must be auto, learnt or default, got {model!r}"
        raise InvalidParameterError(msg)
    moment = parse_as_of(as_of)
    if train_days < 1:
        msg = f"train_days must be at least 1, got {train_days}"
        raise InvalidParameterError(msg)

    def compute() -> dict:
        start = moment - timedelta(days=train_days)
        d = _Data(store, moment, start - timedelta(days=LOOKBACK_DAYS))
        insp = _inspector_table(d)
        detection = dict(zip(insp["inspector"], insp["detection"].astype(float), strict=True))
        rows = np.flatnonzero(d.ins_t >= int(np.datetime64(start, "us").astype("int64")))[-MAX_TRAIN:]
        y = d.ins_y[rows]
        n_pos = int(y.sum())
        enough = len(rows) >= MIN_TRAIN and min(n_pos, len(rows) - n_pos) >= MIN_CLASS
        base = {"detection": detection, "n_train": len(rows), "n_positive": n_pos,
                "as_of": moment.isoformat(sep=" "), "train_days": int(train_days)}
        if model == "default" or (model == "auto" and not enough):
            reason = ("asked for the default weights" if model == "default" else
                      f"{len(rows)} labelled inspections ({n_pos} finding a problem) in the {train_days} days "
                      f"before as_of; learnt weights need {MIN_TRAIN} with {MIN_CLASS} of each outcome")
            return {**base, "kind": "default", "intercept": 0.0, "weights": dict(DEFAULT_WEIGHTS), "means": None,
                    "inspector_weight": 0.0, "C": None, "train_auc": None, "reason": reason}
        if not enough:
            msg = (f"too few labelled inspections to learn weights: {len(rows)} ({n_pos} finding a problem) in the "
                   f"{train_days} days before {moment:%Y-%m-%d %H:%M}; need {MIN_TRAIN} with {MIN_CLASS} of each "
                   f"outcome (use model='default' or a longer train_days)")
            raise InvalidParameterError(msg)
        q_site, q_time = d.ins_site[rows], d.ins_t[rows]
        comp = _components(store, d, q_site, q_time, _month_start(q_time), detection)
        x = _design(comp)
        log_det = np.log(pd.Series(d.ins_inspector[rows]).map(detection).fillna(1.0).to_numpy(float))
        return {**base, **_fit(x, log_det, y)}

    return cached(store, ("site_risk_model", moment, model, int(train_days)), compute)


def _fit(x: pd.DataFrame, log_det: np.ndarray, y: np.ndarray) -> dict:
    """L2 logistic regression on standardized inputs, returned in the units of ``x``."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score

    xa = np.column_stack([x.to_numpy(float), log_det])
    mean, sd = xa.mean(axis=0), xa.std(axis=0)
    sd[sd == 0] = 1.0
    z = (xa - mean) / sd
    params = inspect.signature(LogisticRegressionCV).parameters
    extra = {k: v for k, v in (("l1_ratios", (0.0,)), ("use_legacy_attributes", False)) if k in params}
    clf = LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1.0, 10.0], cv=5, scoring="neg_log_loss",
                               solver="newton-cholesky", max_iter=200, **extra)
    clf.fit(z, y.astype(int))
    coef = clf.coef_[0] / sd
    intercept = float(clf.intercept_[0] - np.sum(coef * mean))
    names = list(x.columns)
    auc = float(roc_auc_score(y, clf.decision_function(z)))
    c_value = np.atleast_1d(clf.C_)[0]
    return {"kind": "learnt", "intercept": intercept, "weights": dict(zip(names, map(float, coef[:-1]), strict=True)),
            "means": dict(zip(names, map(float, mean[:-1]), strict=True)), "inspector_weight": float(coef[-1]),
            "C": float(c_value), "train_auc": auc, "reason": None}


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------

def _fmt(name: str, raw: pd.DataFrame, i: int, lang: str) -> str:
    """One component of a site's reason (``[risk.reason]`` of the text catalogue)."""
    label = text(f"risk.component.{name}", lang)
    r = raw.iloc[i]
    if name == "category_rate":
        return text("risk.reason.category_rate", lang, label=label, rate=r["category_rate"])
    if name == "site_record":
        return text("risk.reason.site_record", lang, label=label, rate=r["site_rate"], visits=int(r["site_visits"]))
    if name in ("open_problems", "overdue_problems"):
        return text("risk.reason.count", lang, label=label, n=int(r[name]))
    if name == "days_since_inspection":
        days = r[name]
        if pd.isna(days):
            return text("risk.reason.never_inspected", lang)
        return text("risk.reason.days_since_inspection", lang, days=days)
    if name == "hotspot":
        conf = {1: "90%", 2: "95%", 3: "99%"}.get(int(r[name]), "")
        return text("risk.reason.hotspot", lang, label=label, confidence=conf)
    # complaints / hits nearby and rebounds are time-decayed counts: say so, in whole events ("81.9" read as odd)
    v = float(r[name])
    return text("risk.reason.decayed" if v >= 0.5 else "risk.reason.decayed_small", lang, label=label, n=v)


def _reasons(raw: pd.DataFrame, contrib: np.ndarray, lang: str, top: int = 3, floor: float = 0.05) -> list[str]:
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
    sep, none = text("common.reason_sep", lang), text("risk.reason.none", lang)
    out = []
    for i in range(len(raw)):  # one short text per site (not per event)
        parts = [_fmt(COMPONENTS[j], raw, i, lang) for j in order[i] if contrib[i, j] > floor]
        out.append(sep.join(parts) if parts else none)
    return out


def _site_index(d: _Data, sites: Sequence[int] | None, include_inactive: bool) -> np.ndarray:
    if sites is None:
        idx = np.arange(len(d.site_ids)) if include_inactive else np.flatnonzero(d.sites["active"].to_numpy(bool))
        return idx
    want = np.unique(np.asarray(list(sites), dtype="int64"))
    pos = np.searchsorted(d.site_ids, want)
    pos[pos >= len(d.site_ids)] = 0
    missing = want[d.site_ids[pos] != want] if len(d.site_ids) else want
    if len(missing):
        msg = f"unknown site_id(s) {missing[:5].tolist()}; site ids run {d.site_ids.min()}..{d.site_ids.max()}" \
            if len(d.site_ids) else "the database has no sites"
        raise NotFoundError(msg)
    return pos


def site_risk(store: Store, *, as_of: AsOf, sites: Sequence[int] | None = None, model: str = "auto", lang: str = "zh",
              include_inactive: bool = False, train_days: int = TRAIN_DAYS) -> gpd.GeoDataFrame:
    """Score sites: the probability-like risk that the next inspection finds a problem, with its components.

    Parameters
    ----------
    store
        The database.
    as_of
        Moment of the score: a datetime, or a date (its midnight). Only data strictly before it is used.
    sites
        Site ids to score (default: every active site).
    model
        ``"auto"``, ``"learnt"`` or ``"default"`` (see :func:`fit_model`).
    lang
        ``zh`` (default) or ``en``: the category name and the reason.
    include_inactive
        Also score inactive sites (when ``sites`` is not given).
    train_days
        Days of inspections used to learn the weights.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per site, highest risk first (EPSG:4326 points): ``site_id, name, category_code,
        category_name, grid_code, lng, lat, risk, rank``, the raw components (``category_rate``, ``site_rate``,
        ``site_visits``, ``complaints_near``, ``hits_near``, ``open_problems``, ``overdue_problems``,
        ``days_since_inspection`` (NaN: never), ``rebounds``, ``hotspot``), each component's contribution
        ``<component>_contrib`` (logit units, relative to the mean), ``base`` (the logit of the mean site),
        ``reason`` and ``model`` (learnt/default). ``attrs["model"]`` holds the weights (see
        :func:`fit_model`).
    """
    check_lang(lang)
    moment = parse_as_of(as_of)
    fitted = fit_model(store, as_of=moment, model=model, train_days=train_days)
    d = _Data(store, moment, moment - timedelta(days=LOOKBACK_DAYS))
    idx = _site_index(d, sites, include_inactive)
    n = len(idx)
    q_time = np.full(n, d.as_of_us, dtype="int64")
    raw = _components(store, d, idx, q_time, q_time, fitted["detection"])
    x = _design(raw)
    w = np.array([fitted["weights"][c] for c in COMPONENTS])
    if fitted["means"] is not None:
        m = np.array([fitted["means"][c] for c in COMPONENTS])
    else:
        m = x.mean(axis=0).to_numpy(float) if n else np.zeros(len(COMPONENTS))
    contrib = (x.to_numpy(float) - m) * w
    base = fitted["intercept"] + float(np.sum(w * m))
    logit = base + contrib.sum(axis=1)
    sites_df = d.sites.iloc[idx].reset_index(drop=True)
    out = pd.DataFrame({
        "site_id": sites_df["site_id"].to_numpy("int64"),
        "name": sites_df["name"].to_numpy(object),
        "category_code": sites_df["category_code"].to_numpy(object),
        "category_name": sites_df[name_column(lang, "category")].to_numpy(object),
        "grid_code": sites_df["grid_code"].to_numpy(object),
        "lng": sites_df["lng"].to_numpy(float),
        "lat": sites_df["lat"].to_numpy(float),
        "risk": _sigmoid(logit),
    })
    for col in ("category_rate", "site_rate", "site_visits", "complaints_near", "hits_near", "open_problems",
                "overdue_problems", "days_since_inspection", "rebounds", "hotspot"):
        out[col] = raw[col].to_numpy(float)
    for k, c in enumerate(COMPONENTS):
        out[f"{c}_contrib"] = contrib[:, k]
    out["base"] = base
    out["reason"] = _reasons(raw, contrib, lang)
    out["model"] = fitted["kind"]
    out = out.sort_values(["risk", "site_id"], ascending=[False, True], ignore_index=True)
    out.insert(out.columns.get_loc("risk") + 1, "rank", np.arange(1, len(out) + 1))
    gdf = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(out["lng"], out["lat"]), crs="EPSG:4326")
    gdf.attrs["model"] = {k: v for k, v in fitted.items() if k != "detection"}
    gdf.attrs["as_of"] = moment.isoformat(sep=" ")
    gdf.attrs["notes"] = as_of_notes(store, moment, lang=lang)
    return gdf


_VALUE_COL = {"site_record": "site_rate"}
_ROW_KEYS = ("site_id", "name", "category_code", "category_name", "grid_code", "lng", "lat", "risk", "rank", "base",
             "reason", "model", "site_visits")


def risk_records(frame: pd.DataFrame, *, lang: str = "zh") -> list[dict]:
    """Rows of a :func:`site_risk` frame as JSON-ready dicts, each with its ``components``: label, value,
    transform, weight and contribution, largest contribution first."""
    weights = frame.attrs.get("model", {}).get("weights", {})
    names = labels("risk.component", lang)
    cols = {c: frame[_VALUE_COL.get(c, c)].to_numpy() for c in COMPONENTS}
    contrib = {c: frame[f"{c}_contrib"].to_numpy(float) for c in COMPONENTS}
    rows = frame[list(_ROW_KEYS)].to_dict("records")
    out = []
    for j, row in enumerate(rows):  # one dict per site
        comps = [{"component": c, "label": names[c], "value": _plain(cols[c][j]), "transform": TRANSFORMS[c],
                  "weight": _plain(weights.get(c)), "contribution": _plain(contrib[c][j])} for c in COMPONENTS]
        comps.sort(key=lambda x: -(x["contribution"] or 0.0))
        out.append({**{k: _plain(v) for k, v in row.items()}, "components": comps})
    return out


def explain(frame: pd.DataFrame, site_id: int, *, lang: str = "zh") -> dict:
    """One site's row of a :func:`site_risk` frame as a dict with its components (see :func:`risk_records`).

    Parameters
    ----------
    frame
        A :func:`site_risk` result.
    site_id
        The site.
    lang
        ``zh`` (default) or ``en``: the components' labels.

    Returns
    -------
    dict
        The site's columns (``site_id``, ``name``, ``risk``, ``rank``, ``base``, ``reason``...) and
        ``components``: per component its ``label``, ``value``, ``transform``, ``weight`` and
        ``contribution`` (logit units), largest contribution first.

    Raises
    ------
    NotFoundError
        The site is not in ``frame``.
    """
    row = frame[frame["site_id"] == int(site_id)]
    if row.empty:
        msg = (f"site {site_id} is not among the scored sites (ids {frame['site_id'].min()}.."
               f"{frame['site_id'].max()})") if len(frame) else f"site {site_id}: no sites scored"
        raise NotFoundError(msg)
    return risk_records(row, lang=lang)[0]


def default_as_of(store: Store) -> datetime:
    """One second after the latest event or inspection: the moment that uses all the data."""
    value = data_span(store)[1]
    if pd.isna(value):
        msg = "the database has no events or inspections; give as_of explicitly"
        raise InvalidParameterError(msg)
    return (pd.Timestamp(value) + pd.Timedelta(seconds=1)).floor("s").to_pydatetime()


def resolve_categories(store: Store, words: str | Sequence[str] | None) -> list[str]:
    """Category codes for codes or Chinese/English names (comma-separated or a list); unknown: NotFoundError."""
    if words is None:
        return []
    items = [w.strip() for w in (words.split(",") if isinstance(words, str) else words) if w and w.strip()]
    cats = store.sql("SELECT code, name_zh, name_en FROM site_categories ORDER BY code")
    lookup, names = {}, []
    for r in cats.itertuples():
        for key in (r.code, r.name_zh, r.name_en):
            if key:
                lookup[str(key).strip().lower()] = r.code
                plain = re.sub(r"[（(][^）)]*[）)]", "", str(key)).strip().lower()  # 农贸（集贸）市场 -> 农贸市场
                lookup.setdefault(plain, r.code)
                names.append((str(key).lower(), r.code))
    out = []
    for w in items:
        key = w.lower()
        if key.isdigit() and len(key) == 1:
            key = "0" + key
        if key not in lookup:
            partial = {code for name, code in names if key in name}
            if len(partial) == 1:
                out.append(partial.pop())
                continue
            import difflib

            names = [f"{r.code} {r.name_zh}" for r in cats.itertuples()]
            close = difflib.get_close_matches(w, list(cats["name_zh"]) + list(cats["name_en"]), n=3, cutoff=0.3)
            hint = ", ".join(close) if close else ", ".join(names[:5]) + ", …"
            msg = f"unknown site category {w!r}; closest: {hint}"
            raise NotFoundError(msg)
        out.append(lookup[key])
    return sorted(set(out))


def select_sites(store: Store, frame: gpd.GeoDataFrame, *, category=None, area: str | None = None,
                 limit: int | None = None) -> gpd.GeoDataFrame:
    """Rows of a :func:`site_risk` frame in some categories and/or one micro-grid or area, the first ``limit``.

    ``area`` is a micro-grid code or a district, street or community code (unknown: NotFoundError).
    """
    out = frame
    codes = resolve_categories(store, category)
    if codes:
        out = out[out["category_code"].isin(codes)]
    if area:
        area = str(area).strip()
        loc = store.sql("SELECT site_id FROM sites WHERE ? IN (grid_code, community_code, street_code, district_code)",
                        [area])
        if loc.empty:
            known = store.sql("SELECT (SELECT count(*) FROM grids WHERE code = $a) + "
                              "(SELECT count(*) FROM areas WHERE code = $a) AS n", {"a": area})["n"].iloc[0]
            if not known:
                sample = store.sql("SELECT code FROM grids ORDER BY code LIMIT 3")["code"].tolist()
                msg = f"unknown grid or area code {area!r}; grid codes look like {', '.join(sample)}"
                raise NotFoundError(msg)
        out = out[out["site_id"].isin(loc["site_id"])]
    if limit is not None:
        if limit < 1:
            msg = f"limit must be at least 1, got {limit}"
            raise InvalidParameterError(msg)
        out = out.head(int(limit))
    return out


def _plain(v):
    if v is None:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v
