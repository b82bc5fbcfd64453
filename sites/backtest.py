"""Backtest of the site risk: replay history, rank with data before a date, compare with the inspections made after.

Method
------
Sites are scored with :func:`sites.risk.site_risk` from the data strictly before ``as_of``. The
inspections actually made in ``[as_of, as_of + horizon)`` are then re-ordered by each ordering's score
and assigned, in that order, to the same sequence of inspection times (the method of the Chicago
food-inspection evaluation, City of Chicago, 2014, which found critical violations 7.5 days earlier).
Ties keep the inspections' actual order. For every ordering:

``precision_at_k``
    share of the first ``k`` re-ordered inspections that found a problem (default ``k``: a tenth of
    the window's inspections, at least 1).
``first_half_share``
    share of the problem-finding inspections whose assigned time falls in the first half of the window.
``mean_days_earlier``
    mean over problem-finding inspections of (actual time - assigned time) in days; positive: found earlier.

Orderings: ``risk`` (the score), ``historical`` (the site's past share of problem-finding inspections;
sites never inspected get the city's share), ``random`` (averaged over ``n_random`` seeded permutations),
``round_robin`` (one inspection of each category in turn, categories by code, each category's
inspections in their actual order) and ``actual`` (the order they were made: 0 days earlier by definition,
and the reference for the shares).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.sites.risk import TRAIN_DAYS, AsOf, parse_as_of, site_risk

#: Orderings compared, in report order.
ORDERINGS = ("risk", "historical", "random", "round_robin", "actual")
#: Random orderings averaged for the ``random`` baseline.
N_RANDOM = 20

_US_PER_DAY = 86_400_000_000


def order_measures(times, found, score, *, start, horizon_days: float, k: int) -> dict:
    """The three measures for one ordering of a window's inspections.

    Parameters
    ----------
    times
        Actual times of the inspections (anything ``numpy.datetime64`` accepts).
    found
        Whether each inspection found a problem.
    score
        Higher is inspected earlier; ties keep the actual order.
    start, horizon_days
        The window ``[start, start + horizon_days)``: its first half ends at ``start + horizon_days / 2``.
    k
        Inspections counted by ``precision_at_k``.

    Returns
    -------
    dict
        ``precision_at_k``, ``first_half_share``, ``mean_days_earlier`` (NaN when nothing was found) and the
        ``assigned`` times (datetime64[us]) of the inspections in the input order.
    """
    t = np.asarray(times, dtype="datetime64[us]").astype("int64")
    found = np.asarray(found, dtype=bool)
    score = np.asarray(score, dtype="float64")
    n = len(t)
    if not (len(found) == len(score) == n):
        msg = f"times, found and score must have the same length, got {n}, {len(found)}, {len(score)}"
        raise InvalidParameterError(msg)
    if k < 1:
        msg = f"k must be at least 1, got {k}"
        raise InvalidParameterError(msg)
    slots = np.sort(t)
    order = np.lexsort((np.arange(n), t, -score))
    assigned = np.empty(n, dtype="int64")
    assigned[order] = slots
    half = np.datetime64(start, "us").astype("int64") + int(horizon_days * _US_PER_DAY / 2)
    n_found = int(found.sum())
    return {
        "precision_at_k": float(found[order[:k]].mean()) if n else math.nan,
        "first_half_share": float((found & (assigned < half)).sum() / n_found) if n_found else math.nan,
        "mean_days_earlier": float(((t - assigned)[found]).mean() / _US_PER_DAY) if n_found else math.nan,
        "assigned": assigned.astype("datetime64[us]"),
    }


def _auc(found: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), by ranks."""
    pos, neg = int(found.sum()), int((~found).sum())
    if not pos or not neg:
        return math.nan
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[found].sum() - pos * (pos + 1) / 2) / (pos * neg))


_WINDOW_SQL = """
SELECT i.site_id, i.time, s.category_code,
       CASE WHEN i.conforming IS NOT NULL THEN NOT i.conforming ELSE i.problems_found > 0 END AS found
FROM inspections i JOIN sites s USING (site_id)
WHERE i.time >= $start AND i.time < $end AND (i.conforming IS NOT NULL OR i.problems_found IS NOT NULL)
ORDER BY i.time, i.inspection_id
"""

_HISTORY_SQL = """
SELECT site_id, count(*) AS visits,
       count(*) FILTER (WHERE CASE WHEN conforming IS NOT NULL THEN NOT conforming ELSE problems_found > 0 END)
           AS found
FROM inspections
WHERE time < $as_of AND site_id IS NOT NULL AND (conforming IS NOT NULL OR problems_found IS NOT NULL)
GROUP BY site_id
"""


def window_scores(store: Store, *, as_of: AsOf, horizon_days: float, seed: int = 0, model: str = "auto",
                  train_days: int = TRAIN_DAYS) -> pd.DataFrame:
    """The window's inspections with the score of every ordering (random: the first seed).

    Parameters
    ----------
    store, as_of, horizon_days, model, train_days
        As for :func:`backtest`.
    seed
        Seed of the ``random`` column.

    Returns
    -------
    pandas.DataFrame
        ``site_id, time, category_code, found, risk, historical, round_robin, actual, random`` in time order.
    """
    moment = parse_as_of(as_of)
    if not horizon_days or horizon_days <= 0:
        msg = f"horizon must be a positive number of days, got {horizon_days}"
        raise InvalidParameterError(msg)
    end = moment + timedelta(days=float(horizon_days))
    win = store.sql(_WINDOW_SQL, {"start": moment, "end": end})
    if win.empty:
        span = store.sql("SELECT min(time) AS a, max(time) AS b FROM inspections")
        have = ("the database has no inspections" if pd.isna(span["a"].iloc[0]) else
                f"inspections run from {span['a'].iloc[0]:%Y-%m-%d} to {span['b'].iloc[0]:%Y-%m-%d}")
        msg = f"no labelled inspections in [{moment:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}); {have}"
        raise InvalidParameterError(msg)
    win["found"] = win["found"].astype(bool)
    ids = win["site_id"].to_numpy("int64")
    risk = site_risk(store, as_of=moment, sites=np.unique(ids).tolist(), model=model, train_days=train_days)
    win["risk"] = win["site_id"].map(pd.Series(risk["risk"].to_numpy(float), index=risk["site_id"])).to_numpy(float)
    hist = store.sql(_HISTORY_SQL, {"as_of": moment})
    city = hist["found"].sum() / hist["visits"].sum() if hist["visits"].sum() else 0.0
    rate = pd.Series((hist["found"] / hist["visits"]).to_numpy(float), index=hist["site_id"].to_numpy("int64"))
    win["historical"] = win["site_id"].map(rate).fillna(city).to_numpy(float)
    cats = win["category_code"].astype(str)
    position = win.groupby(cats, sort=False).cumcount().to_numpy()
    cat_index = np.searchsorted(np.unique(cats), cats)
    win["round_robin"] = -(position * (cat_index.max() + 1) + cat_index).astype(float)
    win["actual"] = -np.arange(len(win), dtype=float)
    win["random"] = np.random.default_rng(seed).random(len(win))
    win.attrs["model"] = risk.attrs.get("model", {})
    win.attrs["window"] = (moment, end)
    return win


def backtest(store: Store, *, as_of: AsOf, horizon_days: float, k: int | None = None, seed: int = 0,
             n_random: int = N_RANDOM, model: str = "auto", train_days: int = TRAIN_DAYS) -> dict:
    """Replay history: rank sites with the data before ``as_of`` and evaluate on the inspections after it.

    Parameters
    ----------
    store
        The database.
    as_of
        Start of the window (a date means its midnight); the score uses only data strictly before it.
    horizon_days
        Length of the window in days.
    k
        Inspections counted by precision at k (default: a tenth of the window's inspections, at least 1).
    seed
        First seed of the random orderings.
    n_random
        Random orderings averaged.
    model, train_days
        Passed to :func:`sites.risk.site_risk`.

    Returns
    -------
    dict
        ``as_of``, ``end``, ``horizon_days``, ``k``, ``n_inspections``, ``n_found`` (problem-finding
        inspections), ``n_sites``, ``base_rate``, ``precision_at_k``, ``first_half_share``,
        ``mean_days_earlier`` and ``auc`` (each ``{ordering: value}`` for :data:`ORDERINGS`; auc without
        ``actual``), ``random_sd`` (standard deviation of the random measures over the seeds) and ``model``
        (the risk model's kind, weights and training size).
    """
    if n_random < 1:
        msg = f"n_random must be at least 1, got {n_random}"
        raise InvalidParameterError(msg)
    win = window_scores(store, as_of=as_of, horizon_days=horizon_days, seed=seed, model=model,
                        train_days=train_days)
    start, end = win.attrs["window"]
    n = len(win)
    if k is None:
        k = max(1, math.ceil(n / 10))
    k = int(min(k, n))
    found = win["found"].to_numpy(bool)
    t = win["time"].to_numpy("datetime64[us]")
    keys = ("precision_at_k", "first_half_share", "mean_days_earlier")
    out = {key: {} for key in keys}
    auc = {}
    for name in ORDERINGS:
        if name == "random":
            runs = []
            for s in range(seed, seed + n_random):
                score = np.random.default_rng(s).random(n)
                runs.append(order_measures(t, found, score, start=start, horizon_days=horizon_days, k=k))
            for key in keys:
                out[key][name] = float(np.mean([r[key] for r in runs]))
            random_sd = {key: float(np.std([r[key] for r in runs])) for key in keys}
            auc[name] = 0.5
            continue
        score = win[name].to_numpy(float)
        m = order_measures(t, found, score, start=start, horizon_days=horizon_days, k=k)
        for key in keys:
            out[key][name] = m[key]
        if name != "actual":
            auc[name] = _auc(found, score)
    info = win.attrs.get("model", {})
    return {
        "as_of": start.isoformat(sep=" "), "end": end.isoformat(sep=" "), "horizon_days": float(horizon_days),
        "k": k, "n_inspections": n, "n_found": int(found.sum()), "n_sites": int(win["site_id"].nunique()),
        "base_rate": float(found.mean()), **out, "auc": auc, "random_sd": random_sd, "n_random": int(n_random),
        "model": {key: info.get(key) for key in ("kind", "n_train", "n_positive", "train_auc", "weights",
                                                 "inspector_weight", "C", "reason")},
    }


def rolling_backtest(store: Store, *, windows: Sequence[AsOf], horizon_days: float, k: int | None = None, seed: int = 0,
                     n_random: int = N_RANDOM, model: str = "auto", train_days: int = TRAIN_DAYS) -> pd.DataFrame:
    """:func:`backtest` over several windows, as one table (one row per window and ordering).

    Each window is scored only with the data before its start, and the model is re-learnt per window:
    this is the same :func:`backtest` the service's ``GET /api/backtest`` runs, once per window.

    Parameters
    ----------
    store
        The database.
    windows
        Window starts (dates, date-times or ISO strings; a date means its midnight).
    horizon_days
        Length of every window in days.
    k, seed, n_random, model, train_days
        As for :func:`backtest`.

    Returns
    -------
    pandas.DataFrame
        ``window`` (start, as a Timestamp), ``end``, ``ordering`` (:data:`ORDERINGS`), ``precision_at_k``,
        ``first_half_share``, ``mean_days_earlier``, ``auc`` (NaN for ``actual``), ``random_sd_precision``
        (spread of the random baseline over its seeds, on the ``random`` rows), ``k``, ``n_inspections``,
        ``n_found``, ``base_rate`` and ``model`` (learnt or default), in window then ordering order.

    Examples
    --------
    >>> rolling_backtest(store, windows=["2025-03-01", "2025-06-01"], horizon_days=30)  # doctest: +SKIP
    """
    starts = list(windows)
    if not starts:
        msg = "windows must name at least one window start"
        raise InvalidParameterError(msg)
    rows = []
    for w in starts:
        b = backtest(store, as_of=w, horizon_days=horizon_days, k=k, seed=seed, n_random=n_random, model=model,
                     train_days=train_days)
        for name in ORDERINGS:
            rows.append({
                "window": pd.Timestamp(b["as_of"]), "end": pd.Timestamp(b["end"]), "ordering": name,
                "precision_at_k": b["precision_at_k"][name], "first_half_share": b["first_half_share"][name],
                "mean_days_earlier": b["mean_days_earlier"][name], "auc": b["auc"].get(name, np.nan),
                "random_sd_precision": b["random_sd"]["precision_at_k"] if name == "random" else np.nan,
                "k": b["k"], "n_inspections": b["n_inspections"], "n_found": b["n_found"],
                "base_rate": b["base_rate"], "model": b["model"]["kind"],
            })
    out = pd.DataFrame(rows)
    out["auc"] = out["auc"].astype(float)
    return out
