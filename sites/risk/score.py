"""Scoring: every site's risk as of a moment, with its components, contributions and reason."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
from civicgrid.geo.errors import NotFoundError
from civicgrid.geo.events import as_of_notes
from civicgrid.geo.store import Store
from civicgrid.geo.texts import check_lang, name_column
from civicgrid.geo.times import store_timezone
from civicgrid.sites.risk.components import (
    LOOKBACK_DAYS,
    TRAIN_DAYS,
    AsOf,
    parse_as_of,
)
from civicgrid.sites.risk.features import Data, component_values, design, sigmoid, visit_inputs
from civicgrid.sites.risk.gbm import contributions
from civicgrid.sites.risk.model import fit_model, gbm_inputs
from civicgrid.sites.risk.reasons import reason_texts


def _site_index(d: Data, sites: Sequence[int] | None, include_inactive: bool) -> np.ndarray:
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
              include_inactive: bool = False, train_days: int = TRAIN_DAYS,
              inspector: str | None = None) -> gpd.GeoDataFrame:
    """Score sites: the calibrated probability that the next inspection finds a problem, with its components.

    Parameters
    ----------
    store
        The database.
    as_of
        Moment of the score: a datetime, or a date (its midnight). Only data strictly before it is used.
    sites
        Site ids to score (default: every active site).
    model
        ``"auto"``, ``"gbm"``, ``"learnt"`` (``"logistic"``), ``"blend"`` or ``"default"`` (see :func:`fit_model`).
    lang
        ``zh`` (default) or ``en``: the category name and the reason.
    include_inactive
        Also score inactive sites (when ``sites`` is not given).
    train_days
        Days of inspections used to learn the model.
    inspector
        Score a routine visit by this inspector (their detection ratio, from the visits before ``as_of``'s day):
        the probability that *their* visit finds a problem. Default: an average inspector (what the site needs).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per site, highest risk first (EPSG:4326 points; sites without coordinates have empty points):
        ``site_id, name, category_code, category_name, grid_code, lng, lat, risk, rank``, the raw inputs
        (``category_rate``, ``site_rate``, ``site_visits``, ``complaints_near``, ``hits_near``, ``open_problems``,
        ``overdue_problems``, ``days_since_inspection`` (NaN: never), ``rebounds``, ``hotspot``, and the site's
        record: ``failures``, ``failures_recent``, ``criticals_recent``, ``last_failed``, ``last_score``,
        ``mean_score``, ``score_trend``, ``days_since_failure``, ``age_days``, ``visits_per_year``, ``last_critical``,
        ``last_followup``; ``area_rate``, the recent problem share of the other sites of its area; ``problems_rate``,
        problems found per visit, NaN when the city records no counts; ``brand_rate``, the recent problem share of
        the other sites of the same name, a chain's other branches, NaN when no other site has its name), each explained
        input's contribution ``<input>_contrib`` (calibrated logit units: ``logit(risk) = base + Σ``), ``base``,
        ``reason`` (only inputs raising this site's risk) and ``model`` (gbm/learnt/blend/default).
        ``attrs["model"]`` describes the model (see :func:`fit_model`; ``features`` lists the explained inputs).
    """
    check_lang(lang)
    moment = parse_as_of(as_of, tz=store_timezone(store))
    fitted = fit_model(store, as_of=moment, model=model, train_days=train_days)
    d = Data(store, moment, moment - timedelta(days=LOOKBACK_DAYS))
    idx = _site_index(d, sites, include_inactive)
    n = len(idx)
    q_time = np.full(n, d.as_of_us, dtype="int64")
    raw = component_values(store, d, idx, q_time, q_time, fitted["detection"])
    log_det = np.zeros(n)
    if inspector is not None:
        if inspector not in fitted["detection"]:
            known = sorted(k for k in fitted["detection"] if k)
            msg = (f"unknown inspector {inspector!r} (no labelled visit before as_of's day); inspectors: "
                   f"{', '.join(known[:10]) or 'none'}")
            raise NotFoundError(msg)
        log_det[:] = np.log(fitted["detection"][inspector])
    base, contrib = _contributions(fitted, raw, log_det, visit_inputs(d, None, q_time))
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
        "risk": sigmoid(logit),
    })
    for col in RAW_COLUMNS:
        out[col] = raw[col].to_numpy(float)
    features = fitted["features"]
    for k, c in enumerate(features):
        out[f"{c}_contrib"] = contrib[:, k]
    out["base"] = base
    out["reason"] = reason_texts(raw, contrib, lang, names=features)
    out["model"] = fitted["kind"]
    out = out.sort_values(["risk", "site_id"], ascending=[False, True], ignore_index=True)
    out.insert(out.columns.get_loc("risk") + 1, "rank", np.arange(1, len(out) + 1))
    gdf = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(out["lng"], out["lat"]), crs="EPSG:4326")
    gdf.attrs["model"] = {k: v for k, v in fitted.items() if k not in ("detection", "estimator", "parts")}
    gdf.attrs["inspector"] = inspector
    gdf.attrs["as_of"] = moment.isoformat(sep=" ")
    gdf.attrs["notes"] = as_of_notes(store, moment, lang=lang)
    return gdf


#: The raw inputs a scored frame carries.
RAW_COLUMNS = ("category_rate", "site_rate", "site_visits", "complaints_near", "hits_near", "open_problems",
               "overdue_problems", "days_since_inspection", "rebounds", "hotspot", "failures", "failures_recent",
               "criticals_recent", "last_failed", "last_score", "mean_score", "score_trend", "days_since_failure",
               "age_days", "visits_per_year", "last_critical", "last_followup", "area_rate", "season_sin",
               "season_cos", "problems_rate", "brand_rate")


def _contributions(fitted: dict, raw: pd.DataFrame, log_det: np.ndarray, visit: np.ndarray
                   ) -> tuple[float | np.ndarray, np.ndarray]:
    """``(base, contrib)`` in calibrated logit units for the model's explained inputs (``fitted["features"]``):
    ``logit(risk) = base + contrib.sum(axis=1)``; ``visit``: the visits' ``(followup, kind)`` inputs
    (:func:`~civicgrid.sites.risk.features.visit_inputs`), which the logistic model adds to the base."""
    cal = fitted["calibration"]
    n = len(raw)
    if fitted["kind"] == "blend":  # half of each part's calibrated terms, on the union of their inputs
        names = fitted["features"]
        base, contrib = 0.0, np.zeros((n, len(names)))
        for part in fitted["parts"]:
            b, c = _contributions(part, raw, log_det, visit)
            base = base + 0.5 * b
            for k, name in enumerate(part["features"]):
                contrib[:, names.index(name)] += 0.5 * c[:, k]
        return cal["a"] * base + cal["b"], cal["a"] * contrib
    if fitted["kind"] == "gbm":
        x = gbm_inputs(raw, log_det, visit)
        bias, contrib = contributions(fitted["estimator"], x)
        return cal["a"] * bias + cal["b"], cal["a"] * contrib
    names = fitted["features"]
    x = design(raw, names)
    w = np.array([fitted["weights"][c] for c in names])
    if fitted["means"] is not None:
        m = np.array([fitted["means"][c] for c in names])
    else:
        m = x.mean(axis=0).to_numpy(float) if n else np.zeros(len(names))
    contrib = (x.to_numpy(float) - m) * w
    base = fitted["intercept"] + float(np.sum(w * m)) + (fitted.get("inspector_weight") or 0.0) * log_det
    visit_w = (fitted.get("extra_weights") or [])[1:]
    if len(visit_w):
        base = base + np.asarray(visit, float).reshape(n, -1)[:, : len(visit_w)] @ np.asarray(visit_w, float)
    return cal["a"] * base + cal["b"], cal["a"] * contrib


def visit_probabilities(store: Store, *, as_of: AsOf, site_ids: Sequence[int], inspectors: Sequence | None = None,
                        kinds: Sequence | None = None, models: Sequence[str] = ("auto",),
                        train_days: int = TRAIN_DAYS) -> dict[str, np.ndarray]:
    """The calibrated probability that a routine visit finds a problem, per visit ``(site, inspector)``.

    The backtest's fast path: no reasons, the site inputs computed once for every model.

    Parameters
    ----------
    store, as_of, train_days
        As for :func:`site_risk`.
    site_ids
        The visited site of each visit (repeats allowed).
    inspectors
        The inspector of each visit (None, empty or unknown: an average inspector). Default: all average.
    kinds
        The kind of each planned visit (``inspections.kind``: routine, re-inspection, compliance...), known before
        the day; its outcome is never read. Default: all routine (the most frequent kind before ``as_of``).
    models
        Models to score with (see :func:`fit_model`).

    Returns
    -------
    dict
        ``{model: probabilities}`` in the order of ``site_ids`` (:func:`fit_model` describes each model).
    """
    moment = parse_as_of(as_of, tz=store_timezone(store))
    d = Data(store, moment, moment - timedelta(days=LOOKBACK_DAYS))
    want = np.asarray(list(site_ids), dtype="int64")
    uniq, inverse = np.unique(want, return_inverse=True)
    idx = _site_index(d, uniq.tolist(), True)
    first = fit_model(store, as_of=moment, model=models[0], train_days=train_days)
    q_time = np.full(len(idx), d.as_of_us, dtype="int64")
    raw = component_values(store, d, idx, q_time, q_time, first["detection"]).iloc[inverse].reset_index(drop=True)
    log_det = np.zeros(len(want))
    if inspectors is not None:
        det = first["detection"]
        log_det = np.log(pd.Series(list(inspectors), dtype=object).map(det).fillna(1.0).to_numpy(float))
    visit = visit_inputs(d, kinds, np.full(len(want), d.as_of_us, dtype="int64"))
    out = {}
    for m in models:
        fitted = fit_model(store, as_of=moment, model=m, train_days=train_days)
        if fitted["kind"] == "gbm":
            x = gbm_inputs(raw, log_det, visit)
            z = fitted["calibration"]["a"] * fitted["estimator"].decision_function(x) + fitted["calibration"]["b"]
        else:
            base, contrib = _contributions(fitted, raw, log_det, visit)
            z = base + contrib.sum(axis=1)
        out[m] = sigmoid(z)
    return out
