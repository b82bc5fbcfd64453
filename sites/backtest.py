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

Orderings: ``risk`` (the score, of the model ``auto`` chooses), ``gbm`` and ``logistic`` (each model on its
own, so that every window compares the gradient-boosted trees with the logistic regression), each scoring the
planned visit: the site with the kind of the inspection (routine, re-inspection, compliance..., known before the
day; NYC's re-inspections find fewer problems than its routine visits), never its outcome; ``risk_inspector``
(when the window's inspections name their inspector: the detection probability of the visit with its assigned
inspector known, as the published evaluation scored it), ``historical`` (the site's past share of
problem-finding inspections; sites never inspected get the city's share), ``random`` (averaged over
``n_random`` seeded permutations),
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
from civicgrid.geo.times import store_timezone
from civicgrid.sites.risk import TRAIN_DAYS, AsOf, fit_model, parse_as_of, visit_probabilities

#: Orderings compared, in report order (``gbm`` and ``logistic`` are left out when the risk is the default rule;
#: :data:`INSPECTOR_ORDERING` is added when the window's inspections name their inspectors).
ORDERINGS = ("risk", "gbm", "logistic", "historical", "random", "round_robin", "actual")
INSPECTOR_ORDERING = "risk_inspector"
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
SELECT i.site_id, i.time, s.category_code, coalesce(i.inspector, '') AS inspector, coalesce(i.kind, '') AS kind,
       CASE WHEN i.conforming IS NOT NULL THEN NOT i.conforming ELSE i.problems_found > 0 END AS found
FROM inspections i JOIN sites s USING (site_id)
WHERE i.time >= $start AND i.time < $end AND (i.conforming IS NOT NULL OR i.problems_found IS NOT NULL)
  AND ($kind IS NULL OR strpos(lower(coalesce(i.kind, '')), lower($kind)) > 0)
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
                  train_days: int = TRAIN_DAYS, kind: str | None = None) -> pd.DataFrame:
    """The window's inspections with the score of every ordering (random: the first seed).

    Parameters
    ----------
    store, as_of, horizon_days, model, train_days, kind
        As for :func:`backtest`.
    seed
        Seed of the ``random`` column.

    Returns
    -------
    pandas.DataFrame
        ``site_id, time, category_code, inspector, found`` and a column per ordering, in time order;
        ``attrs["orderings"]`` lists the orderings scored.
    """
    moment = parse_as_of(as_of, tz=store_timezone(store))
    if not horizon_days or horizon_days <= 0:
        msg = f"horizon must be a positive number of days, got {horizon_days}"
        raise InvalidParameterError(msg)
    end = moment + timedelta(days=float(horizon_days))
    win = store.sql(_WINDOW_SQL, {"start": moment, "end": end, "kind": kind})
    if win.empty:
        span = store.sql("SELECT min(time) AS a, max(time) AS b FROM inspections")
        have = ("the database has no inspections" if pd.isna(span["a"].iloc[0]) else
                f"inspections run from {span['a'].iloc[0]:%Y-%m-%d} to {span['b'].iloc[0]:%Y-%m-%d}")
        of_kind = f" of kind {kind!r}" if kind else ""
        msg = f"no labelled inspections{of_kind} in [{moment:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}); {have}"
        raise InvalidParameterError(msg)
    win["found"] = win["found"].astype(bool)
    ids = win["site_id"].to_numpy("int64")
    info = fit_model(store, as_of=moment, model=model, train_days=train_days)
    models = {"risk": model}
    if info["kind"] != "default":
        models.update(gbm="gbm", logistic="learnt")
    kinds = win["kind"].tolist()  # the planned visit's kind (routine, re-inspection...), known before the day
    probs = visit_probabilities(store, as_of=moment, site_ids=ids, kinds=kinds,
                                models=tuple(dict.fromkeys(models.values())), train_days=train_days)
    for name, m in models.items():
        win[name] = probs[m]
    orderings = [o for o in ORDERINGS if o in models or o not in ("gbm", "logistic")]
    named = win["inspector"].astype(str).str.len() > 0
    if info["kind"] != "default" and named.any():
        p = visit_probabilities(store, as_of=moment, site_ids=ids, inspectors=win["inspector"].tolist(),
                                kinds=kinds, models=(model,), train_days=train_days)
        win[INSPECTOR_ORDERING] = p[model]
        orderings.insert(1, INSPECTOR_ORDERING)
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
    win.attrs["model"] = {k: v for k, v in info.items() if k not in ("detection", "estimator", "parts")}
    win.attrs["window"] = (moment, end)
    win.attrs["orderings"] = orderings
    return win


def backtest(store: Store, *, as_of: AsOf, horizon_days: float, k: int | None = None, seed: int = 0,
             n_random: int = N_RANDOM, model: str = "auto", train_days: int = TRAIN_DAYS,
             kind: str | None = None) -> dict:
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
    kind
        Only the window's inspections whose kind (``inspections.kind``) contains this text, case-insensitively
        (e.g. ``"Cycle Inspection / Initial"``: NYC's routine visits); default all. The scores still use every
        inspection before ``as_of``.

    Returns
    -------
    dict
        ``as_of``, ``end``, ``horizon_days``, ``k``, ``n_inspections``, ``n_found`` (problem-finding
        inspections), ``n_sites``, ``base_rate``, ``precision_at_k``, ``first_half_share``,
        ``mean_days_earlier`` and ``auc`` (each ``{ordering: value}`` for the ``orderings`` scored; auc
        without ``actual``), ``orderings``, ``random_sd`` (standard deviation of the random measures over the
        seeds) and ``model`` (the risk model's kind, ``choice`` and held-out AUCs, weights and training size).
    """
    if n_random < 1:
        msg = f"n_random must be at least 1, got {n_random}"
        raise InvalidParameterError(msg)
    win = window_scores(store, as_of=as_of, horizon_days=horizon_days, seed=seed, model=model,
                        train_days=train_days, kind=kind)
    orderings = win.attrs["orderings"]
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
    for name in orderings:
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
        "orderings": list(orderings), "kind": kind,
        "model": {key: info.get(key) for key in ("kind", "choice", "holdout", "n_train", "n_positive", "train_auc",
                                                 "weights", "inspector_weight", "C", "reason", "calibration")},
    }


def monthly_windows(start: AsOf, end: AsOf) -> list[pd.Timestamp]:
    """The first day of every month from the month of ``start`` (``start`` itself when it is not a first) up to,
    not including, ``end``."""
    a, b = pd.Timestamp(parse_as_of(start)), pd.Timestamp(parse_as_of(end))
    if b <= a:
        msg = f"the rolling period must end after it starts, got {a:%Y-%m-%d} .. {b:%Y-%m-%d}"
        raise InvalidParameterError(msg)
    firsts = pd.date_range(a.normalize() + pd.offsets.MonthBegin(0), b, freq="MS", inclusive="left")
    out = [a] + [t for t in firsts if t > a]
    return [t for t in out if t < b]


def rolling_backtest(store: Store, *, windows: Sequence[AsOf], horizon_days: float, k: int | None = None, seed: int = 0,
                     n_random: int = N_RANDOM, model: str = "auto", train_days: int = TRAIN_DAYS,
                     kind: str | None = None) -> pd.DataFrame:
    """:func:`backtest` over several windows, as one table (one row per window and ordering).

    Each window is scored only with the data before its start, and the models are re-learnt per window:
    this is the same :func:`backtest` the service's ``GET /api/backtest`` runs, once per window
    (:func:`monthly_windows` gives every month of a period).

    Parameters
    ----------
    store
        The database.
    windows
        Window starts (dates, date-times or ISO strings; a date means its midnight).
    horizon_days
        Length of every window in days.
    k, seed, n_random, model, train_days, kind
        As for :func:`backtest`.

    Returns
    -------
    pandas.DataFrame
        ``window`` (start, as a Timestamp), ``end``, ``ordering``, ``precision_at_k``, ``first_half_share``,
        ``mean_days_earlier``, ``auc`` (NaN for ``actual``), ``random_sd_precision`` (spread of the random
        baseline over its seeds, on the ``random`` rows), ``k``, ``n_inspections``, ``n_found``, ``base_rate``,
        ``model`` (the kind ``auto`` chose: gbm, learnt, blend or default) and ``choice`` (why), in window then
        ordering order.

    Examples
    --------
    >>> rolling_backtest(store, windows=monthly_windows("2025-01-01", "2025-07-01"), horizon_days=60)  # doctest: +SKIP
    """
    starts = list(windows)
    if not starts:
        msg = "windows must name at least one window start"
        raise InvalidParameterError(msg)
    rows = []
    for w in starts:
        b = backtest(store, as_of=w, horizon_days=horizon_days, k=k, seed=seed, n_random=n_random, model=model,
                     train_days=train_days, kind=kind)
        for name in b["orderings"]:
            rows.append({
                "window": pd.Timestamp(b["as_of"]), "end": pd.Timestamp(b["end"]), "ordering": name,
                "precision_at_k": b["precision_at_k"][name], "first_half_share": b["first_half_share"][name],
                "mean_days_earlier": b["mean_days_earlier"][name], "auc": b["auc"].get(name, np.nan),
                "random_sd_precision": b["random_sd"]["precision_at_k"] if name == "random" else np.nan,
                "k": b["k"], "n_inspections": b["n_inspections"], "n_found": b["n_found"],
                "base_rate": b["base_rate"], "model": b["model"]["kind"], "choice": b["model"]["choice"],
            })
    out = pd.DataFrame(rows)
    out["auc"] = out["auc"].astype(float)
    return out


def summarize(table: pd.DataFrame) -> dict:
    """What a :func:`rolling_backtest` table says: per ordering the mean of each measure over the windows, the
    windows where the risk order found failures earlier than the historical one, the ratio of their mean days
    earlier, and how often ``auto`` chose each model."""
    means = table.groupby("ordering", sort=False)[["mean_days_earlier", "first_half_share", "precision_at_k",
                                                   "auc"]].mean()
    wide = table.pivot(index="window", columns="ordering", values="mean_days_earlier")
    beats = int((wide["risk"] > wide["historical"]).sum()) if {"risk", "historical"} <= set(wide) else 0
    hist = means.loc["historical", "mean_days_earlier"] if "historical" in means.index else np.nan
    ratio = float(means.loc["risk", "mean_days_earlier"] / hist) if hist and hist > 0 else np.nan
    chosen = table.drop_duplicates("window")["model"].value_counts().to_dict()
    return {"windows": len(wide), "risk_beats_historical": beats, "ratio_days_earlier": ratio,
            "chosen": {str(k): int(v) for k, v in chosen.items()},
            "means": {o: {k: float(v) for k, v in r.items()} for o, r in means.iterrows()}}
