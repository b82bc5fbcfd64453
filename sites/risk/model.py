"""The weights of the risk score: inspector effects, and the logistic regression learnt from the data before
``as_of`` (or the transparent default weights)."""

from __future__ import annotations

import inspect
from datetime import timedelta

import numpy as np
import pandas as pd
from civicgrid.geo.aggregate import cached
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.sites.risk.components import (
    DEFAULT_WEIGHTS,
    LOOKBACK_DAYS,
    MAX_TRAIN,
    MIN_CLASS,
    MIN_TRAIN,
    TRAIN_DAYS,
    AsOf,
    parse_as_of,
)
from civicgrid.sites.risk.features import (
    Data,
    component_values,
    design,
    inspector_table,
    month_start,
)


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
    d = Data(store, moment, moment)
    return inspector_table(d).sort_values("detection", ascending=False, ignore_index=True)


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
        d = Data(store, moment, start - timedelta(days=LOOKBACK_DAYS))
        insp = inspector_table(d)
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
        comp = component_values(store, d, q_site, q_time, month_start(q_time), detection)
        x = design(comp)
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
