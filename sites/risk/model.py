"""The weights of the risk score: inspector effects, and the logistic regression learnt from the data before
``as_of`` (or the transparent default weights)."""

from __future__ import annotations

import inspect
from datetime import datetime, time, timedelta

import numpy as np
import pandas as pd
from civicgrid.geo.aggregate import cached, cached_lasting
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.times import store_timezone
from civicgrid.sites.risk import components as _tunables
from civicgrid.sites.risk.components import (
    COMPONENTS,
    DEFAULT_WEIGHTS,
    FEATURES,
    HOLDOUT_SHARE,
    LINEAR,
    LOOKBACK_DAYS,
    MAX_TRAIN,
    MIN_CLASS,
    MIN_TRAIN,
    MONOTONE,
    TRAIN_DAYS,
    VISIT_INPUTS,
    AsOf,
    parse_as_of,
)
from civicgrid.sites.risk.features import (
    Data,
    component_values,
    design,
    inspector_table,
    month_start,
    visit_inputs,
)
from civicgrid.sites.risk.gbm import fit_gbm


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
    moment = parse_as_of(as_of, tz=store_timezone(store))
    d = Data(store, moment, moment)
    return inspector_table(d).sort_values("detection", ascending=False, ignore_index=True)


#: Models :func:`fit_model` knows: ``gbm`` (gradient-boosted trees), ``learnt`` (the logistic regression of the
#: components; ``logistic`` is the same), ``blend`` (the mean of the two calibrated logits, calibrated again),
#: ``default`` (:data:`DEFAULT_WEIGHTS`) and ``auto``.
MODELS = ("auto", "gbm", "logistic", "learnt", "blend", "default")


def gbm_inputs(comp: pd.DataFrame, log_det: np.ndarray, visit: np.ndarray) -> np.ndarray:
    """The inputs of the gradient-boosted model (:data:`FEATURES` then :data:`VISIT_INPUTS`) as one matrix;
    ``visit`` holds the visits' ``(followup, kind)`` (:func:`~civicgrid.sites.risk.features.visit_inputs`)."""
    x = design(comp)
    cols = []
    for name in FEATURES:
        if name in ("category_rate", "site_record"):
            cols.append(x[name].to_numpy(float))
        else:
            cols.append(comp[name].to_numpy(float))
    visit = np.asarray(visit, float).reshape(len(comp), 2)
    cols += [np.asarray(log_det, float), visit[:, 0], visit[:, 1]]
    return np.column_stack(cols)


def training_moments(times_us: np.ndarray, gap_days: float) -> np.ndarray:
    """The moments (µs) as of which the training rows' inputs are computed: each inspection's time less an offset
    spread uniformly over ``[0, gap_days)`` (a fixed seed, so a refit is the same), as the score made at ``as_of``
    is used for the visits of the following weeks; 0: the inspection's own time. Every input still reads only the
    data strictly before its moment, which is before the inspection."""
    times_us = np.asarray(times_us, dtype="int64")
    if gap_days <= 0 or not len(times_us):
        return times_us
    offset = np.random.default_rng(0).uniform(0.0, gap_days * 86_400_000_000, len(times_us)).astype("int64")
    return times_us - offset


def training_cutoff(moment: datetime) -> datetime:
    """The moment the risk models scored at ``moment`` are fitted before: the start of its day (times are
    wall-clock times of the store's zone), so that every score of a day uses one fit, which the day's writes
    (cases, events, visits dated today) leave valid."""
    return datetime.combine(moment.date(), time())


# What the fit reads before the cut-off (features.Data, the hotspots' complaints and study area), as counts and
# sums of row hashes (exact: as text, as pandas reads a HUGEINT as a float): the fitted models are kept while
# these are equal. An event's deadline, rectification and closure enter only when before the cut-off (the fit
# compares them with moments before it), so closing a case today leaves them equal; the sites and areas enter
# whole (a new site can join a brand).
_FIT_DATA_SQL = """
SELECT
    (SELECT count(*) FROM inspections WHERE time < $cut) AS inspections,
    (SELECT coalesce(sum(hash(site_id, time, inspector, conforming, problems_found, critical, score,
                              kind)::HUGEINT), 0)::VARCHAR FROM inspections WHERE time < $cut) AS inspections_hash,
    (SELECT count(*) FROM events WHERE time < $cut) AS events,
    (SELECT coalesce(sum(hash(source, site_id, time, h3, CASE WHEN deadline < $cut THEN deadline END,
                              CASE WHEN rectified_at < $cut THEN rectified_at END,
                              CASE WHEN closed_at < $cut THEN closed_at END,
                              rebound_of IS NOT NULL)::HUGEINT), 0)::VARCHAR
     FROM events WHERE time < $cut) AS events_hash,
    (SELECT count(*) FROM sites) AS sites,
    (SELECT coalesce(sum(hash(site_id, name, category_code, grid_code, community_code, street_code, district_code,
                              h3, active)::HUGEINT), 0)::VARCHAR FROM sites) AS sites_hash,
    (SELECT coalesce(sum(hash(code, level, ST_AsWKB(geom))::HUGEINT), 0)::VARCHAR FROM areas) AS areas_hash,
    (SELECT coalesce(sum(hash(code, ST_AsWKB(geom))::HUGEINT), 0)::VARCHAR FROM grids) AS grids_hash
"""


def training_data_key(store: Store, *, cutoff: datetime) -> tuple[int, ...]:
    """A fingerprint of the data a fit before ``cutoff`` reads (:data:`_FIT_DATA_SQL`; kept per store version):
    equal fingerprints, equal fits."""
    return cached(store, ("site_risk_fit_data", cutoff), lambda: tuple(
        int(v) for v in store.sql(_FIT_DATA_SQL, {"cut": cutoff}).iloc[0].tolist()))


def fit_model(store: Store, *, as_of: AsOf, model: str = "auto", train_days: int = TRAIN_DAYS) -> dict:
    """Learn (or choose) the risk model from the data before the start of ``as_of``'s day.

    The models are fitted on the data before :func:`training_cutoff` (the start of ``as_of``'s day): the training
    rows are the labelled inspections of the ``train_days`` before it, each with the inputs computed from the data
    before its own time. A fit is kept while the data before the cut-off is unchanged
    (:func:`training_data_key`), so a write of the day does not make the next score refit. The latest
    :data:`HOLDOUT_SHARE` of the training rows (by time) are held out: the models are fitted on the rest,
    compared on them (AUC), and the chosen one is calibrated on them (Platt: ``logit(risk) = a·z + b`` for the
    model's raw logit ``z``), so the risk is a probability the simulator can use.

    Parameters
    ----------
    store
        The database.
    as_of
        Moment; only data strictly before it is used.
    model
        ``"auto"``: whichever of ``gbm``, ``blend`` and ``learnt`` has the higher held-out AUC (the trees or the
        blend only when higher than the logistic model's by more than the standard error of their AUC,
        :func:`auc_se`) when there are enough labelled inspections, else ``default``; ``"gbm"``: the
        gradient-boosted trees; ``"learnt"`` (or ``"logistic"``): the logistic regression of the components;
        ``"blend"``: the mean of the two models' calibrated logits, calibrated again; each raises
        :class:`InvalidParameterError` without enough data; ``"default"``: :data:`DEFAULT_WEIGHTS`.
    train_days
        Inspections of this many days before the start of ``as_of``'s day are the training rows.

    Returns
    -------
    dict
        ``kind`` (gbm/learnt/blend/default), ``choice`` (why: the held-out AUC of each candidate), ``holdout``
        (``{model: {auc, log_loss}}``), ``calibration`` (``a``, ``b``), ``intercept``, ``weights`` and ``means``
        per component (learnt/default), ``features`` (the inputs explained), ``inspector_weight``, ``detection``
        (per inspector), ``n_train``, ``n_positive``, ``train_auc``, ``C``, ``reason`` when default was used, and
        ``estimator`` (the fitted trees, gbm only), ``trained_before`` (the cut-off) and ``as_of``. Both models are
        fitted once per cut-off and kept while the data before it is unchanged.
    """
    if model not in MODELS:
        msg = f"model must be one of {', '.join(MODELS)}, got {model!r}"
        raise InvalidParameterError(msg)
    model = "learnt" if model == "logistic" else model
    moment = parse_as_of(as_of, tz=store_timezone(store))
    if train_days < 1:
        msg = f"train_days must be at least 1, got {train_days}"
        raise InvalidParameterError(msg)
    cutoff = training_cutoff(moment)

    gap = float(_tunables.TRAIN_GAP_DAYS)
    hold_gap = float(_tunables.HOLDOUT_GAP_DAYS)

    def compute() -> dict:
        start = cutoff - timedelta(days=train_days)
        d = Data(store, cutoff, start - timedelta(days=LOOKBACK_DAYS))
        insp = inspector_table(d)
        detection = dict(zip(insp["inspector"], insp["detection"].astype(float), strict=True))
        rows = np.flatnonzero(d.ins_t >= int(np.datetime64(start, "us").astype("int64")))[-MAX_TRAIN:]
        y = d.ins_y[rows]
        n_pos = int(y.sum())
        enough = len(rows) >= MIN_TRAIN and min(n_pos, len(rows) - n_pos) >= MIN_CLASS
        base = {"detection": detection, "n_train": len(rows), "n_positive": n_pos,
                "trained_before": cutoff.isoformat(sep=" "), "train_days": int(train_days), "enough": enough}
        if not enough:
            return base
        q_site, q_time = d.ins_site[rows], training_moments(d.ins_t[rows], gap)
        comp = component_values(store, d, q_site, q_time, month_start(q_time), detection)
        _, hold = _split(y)  # the held-out rows again, as of moments before them (as the model is used)
        comp_hold = comp.iloc[hold].reset_index(drop=True)
        if hold_gap > 0:
            h_time = training_moments(d.ins_t[rows][hold], hold_gap)
            comp_hold = component_values(store, d, q_site[hold], h_time, month_start(h_time), detection)
        log_det = np.log(pd.Series(d.ins_inspector[rows]).map(detection).fillna(1.0).to_numpy(float))
        visit = visit_inputs(d, d.ins_kind[rows], q_time)  # each visit's own kind, known before the day
        return {**base, **_candidates(comp, comp_hold, log_det, visit, y)}

    key = ("site_risk_models", cutoff, int(train_days), gap, hold_gap)
    fitted = cached(store, key, lambda: cached_lasting(
        store, (*key, training_data_key(store, cutoff=cutoff)), compute))
    base = {k: fitted[k] for k in ("detection", "n_train", "n_positive", "trained_before", "train_days")}
    base["as_of"] = moment.isoformat(sep=" ")
    n_rows, n_pos = fitted["n_train"], fitted["n_positive"]
    if model == "default" or (model == "auto" and not fitted["enough"]):
        reason = ("asked for the default weights" if model == "default" else
                  f"{n_rows} labelled inspections ({n_pos} finding a problem) in the {train_days} days "
                  f"before as_of's day; learnt models need {MIN_TRAIN} with {MIN_CLASS} of each outcome")
        return {**base, "kind": "default", "intercept": 0.0, "weights": dict(DEFAULT_WEIGHTS), "means": None,
                "inspector_weight": 0.0, "C": None, "train_auc": None, "reason": reason,
                "features": list(COMPONENTS), "calibration": {"a": 1.0, "b": 0.0}, "holdout": {},
                "choice": f"default ({reason})"}
    if not fitted["enough"]:
        msg = (f"too few labelled inspections to learn a model: {n_rows} ({n_pos} finding a problem) in the "
               f"{train_days} days before {cutoff:%Y-%m-%d %H:%M}; need {MIN_TRAIN} with {MIN_CLASS} of each "
               f"outcome (use model='default' or a longer train_days)")
        raise InvalidParameterError(msg)
    holdout = fitted["holdout"]
    kind = fitted["best"] if model == "auto" else model
    shown = ", ".join(f"{k} {v['auc']:.3f}" for k, v in holdout.items() if v["auc"] is not None)
    se = ", ".join(f"{k} {holdout[k].get('se', 0.0):.3f}" for k in ("gbm", "blend") if k in holdout)
    how = ("the higher held-out AUC; the trees or the blend only when higher than the logistic model's by more than "
           f"its standard error ({se})" if model == "auto" else "asked for")
    choice = f"{kind} ({how}; AUC on the latest {fitted['n_holdout']} training inspections: {shown or 'n/a'})"
    return {**base, **fitted["candidates"][kind], "holdout": holdout, "choice": choice,
            "n_holdout": fitted["n_holdout"]}


def _split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit and held-out rows (the latest :data:`HOLDOUT_SHARE`, with both outcomes in each part if possible)."""
    n = len(y)
    n_hold = max(round(HOLDOUT_SHARE * n), 1)
    fit, hold = np.arange(n - n_hold), np.arange(n - n_hold, n)
    if len(np.unique(y[hold])) < 2 or len(np.unique(y[fit])) < 2:  # too few of one outcome late: interleave
        hold = np.arange(n)[4::5]
        fit = np.setdiff1d(np.arange(n), hold)
    return fit, hold


def _platt(z: np.ndarray, y: np.ndarray) -> dict:
    """Platt scaling of a raw logit ``z``: ``logit(p) = a·z + b`` (a > 0, so the order is kept)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2 or np.std(z) == 0:
        return {"a": 1.0, "b": 0.0}
    lr = LogisticRegression(C=1e4, max_iter=500).fit(z.reshape(-1, 1), y.astype(int))
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a <= 0:  # the model orders the held-out rows no better than chance: keep its order, fit the level
        a = 1e-3
        b = float(np.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6)) - a * np.mean(z))
    return {"a": a, "b": b}


def auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC (Hanley and McNeil, 1982) from ``n_pos`` positives and ``n_neg`` negatives.

    ``auto`` keeps the trees only when their held-out AUC beats the logistic model's by more than this: with few
    positives (Toronto: about 60 crucial infractions in a held-out fifth) the difference is mostly noise, and the
    simpler model is kept (on the windows before the benchmark's, the trees lost to it on all of Toronto's)."""
    if auc < 0 or n_pos < 1 or n_neg < 1:
        return 0.0
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def _metrics(z: np.ndarray, y: np.ndarray, cal: dict) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    if len(np.unique(y)) < 2:
        return {"auc": None, "log_loss": None}
    p = 1.0 / (1.0 + np.exp(-(cal["a"] * z + cal["b"])))
    return {"auc": float(roc_auc_score(y, z)), "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6)))}


def _candidates(comp: pd.DataFrame, comp_hold: pd.DataFrame, log_det: np.ndarray, visit: np.ndarray,
                y: np.ndarray) -> dict:
    """Fit both models on the earlier rows, compare them on the held-out ones (their inputs ``comp_hold`` as of
    moments before them, as the model is used), calibrate each on them."""
    fit, hold = _split(y)
    x = design(comp, LINEAR)
    extra = np.column_stack([log_det, visit])
    lin = _fit(x.iloc[fit], extra[fit], y[fit])
    z = _linear_logit(lin, design(comp_hold, LINEAR), extra[hold])
    lin["calibration"] = _platt(z, y[hold])
    holdout = {"learnt": _metrics(z, y[hold], lin["calibration"])}
    out = {"learnt": {**lin, "features": list(LINEAR)}}
    xg = gbm_inputs(comp, log_det, visit)
    est = fit_gbm(xg[fit], y[fit], [MONOTONE.get(f, 0) for f in (*FEATURES, *VISIT_INPUTS)])
    z = est.decision_function(gbm_inputs(comp_hold, log_det[hold], visit[hold]))
    cal = _platt(z, y[hold])
    holdout["gbm"] = _metrics(z, y[hold], cal)
    out["gbm"] = {"kind": "gbm", "estimator": est, "calibration": cal, "features": [*FEATURES, *VISIT_INPUTS],
                  "intercept": None, "weights": None, "means": None, "inspector_weight": None, "C": None,
                  "train_auc": _metrics(est.decision_function(xg[fit]), y[fit], cal)["auc"], "reason": None}
    # the blend: the mean of the two calibrated logits, calibrated again (a hedge against the trees' bad windows)
    z_lin = _linear_logit(lin, design(comp_hold, LINEAR), extra[hold])
    zb = 0.5 * (lin["calibration"]["a"] * z_lin + lin["calibration"]["b"] + cal["a"] * z + cal["b"])
    cal_b = _platt(zb, y[hold])
    holdout["blend"] = _metrics(zb, y[hold], cal_b)
    features = list(dict.fromkeys([*out["learnt"]["features"], *out["gbm"]["features"]]))
    out["blend"] = {"kind": "blend", "parts": (out["learnt"], out["gbm"]), "calibration": cal_b, "features": features,
                    "intercept": None, "weights": None, "means": None, "inspector_weight": None, "C": None,
                    "train_auc": None, "reason": None}
    aucs = {k: (v["auc"] if v["auc"] is not None else -1.0) for k, v in holdout.items()}
    n_pos = int(y[hold].sum())
    best = "learnt"
    for name in ("gbm", "blend"):  # kept only when higher than the logistic model's by more than its standard error
        holdout[name]["se"] = auc_se(aucs[name], n_pos, len(hold) - n_pos)
        if aucs[name] > aucs["learnt"] + holdout[name]["se"] and aucs[name] >= aucs[best]:
            best = name
    return {"candidates": out, "holdout": holdout, "best": best, "n_holdout": len(hold)}


def _linear_logit(lin: dict, x: pd.DataFrame, extra: np.ndarray) -> np.ndarray:
    w = np.array([lin["weights"][c] for c in x.columns])
    return lin["intercept"] + x.to_numpy(float) @ w + extra @ np.array(lin["extra_weights"])


def _fit(x: pd.DataFrame, extra: np.ndarray, y: np.ndarray) -> dict:
    """L2 logistic regression on standardized inputs, returned in the units of ``x``; a component of known
    direction (:data:`MONOTONE`) whose weight comes out negative is fixed at 0 and the rest refitted, so that
    no reason reads backwards."""
    names = list(x.columns)
    keep = list(names)
    for _ in range(len(names)):
        res = _fit_once(x[keep], extra, y)
        wrong = [c for c in keep if MONOTONE.get(c, 0) > 0 and res["weights"][c] < 0]
        if not wrong:
            break
        keep = [c for c in keep if c not in wrong]
    res["weights"] = {c: res["weights"].get(c, 0.0) for c in names}
    res["means"] = {c: (res["means"][c] if c in res["means"] else float(x[c].mean())) for c in names}
    res["dropped"] = [c for c in names if c not in keep]
    return res


def _fit_once(x: pd.DataFrame, extra: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score

    xa = np.column_stack([x.to_numpy(float), extra])
    mean, sd = xa.mean(axis=0), xa.std(axis=0)
    sd[sd == 0] = 1.0
    z = (xa - mean) / sd
    params = inspect.signature(LogisticRegressionCV).parameters
    extra_kw = {k: v for k, v in (("l1_ratios", (0.0,)), ("use_legacy_attributes", False)) if k in params}
    clf = LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1.0, 10.0], cv=5, scoring="neg_log_loss",
                               solver="newton-cholesky", max_iter=200, **extra_kw)
    clf.fit(z, y.astype(int))
    coef = clf.coef_[0] / sd
    intercept = float(clf.intercept_[0] - np.sum(coef * mean))
    names = list(x.columns)
    k = len(names)
    auc = float(roc_auc_score(y, clf.decision_function(z)))
    c_value = np.atleast_1d(clf.C_)[0]
    return {"kind": "learnt", "intercept": intercept, "weights": dict(zip(names, map(float, coef[:k]), strict=True)),
            "means": dict(zip(names, map(float, mean[:k]), strict=True)), "inspector_weight": float(coef[k]),
            "extra_weights": [float(c) for c in coef[k:]], "C": float(c_value), "train_auc": auc, "reason": None}
