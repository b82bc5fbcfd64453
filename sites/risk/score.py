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
from civicgrid.sites.risk.components import (
    COMPONENTS,
    LOOKBACK_DAYS,
    TRAIN_DAYS,
    AsOf,
    parse_as_of,
)
from civicgrid.sites.risk.features import Data, component_values, design, sigmoid
from civicgrid.sites.risk.model import fit_model
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
    d = Data(store, moment, moment - timedelta(days=LOOKBACK_DAYS))
    idx = _site_index(d, sites, include_inactive)
    n = len(idx)
    q_time = np.full(n, d.as_of_us, dtype="int64")
    raw = component_values(store, d, idx, q_time, q_time, fitted["detection"])
    x = design(raw)
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
        "risk": sigmoid(logit),
    })
    for col in ("category_rate", "site_rate", "site_visits", "complaints_near", "hits_near", "open_problems",
                "overdue_problems", "days_since_inspection", "rebounds", "hotspot"):
        out[col] = raw[col].to_numpy(float)
    for k, c in enumerate(COMPONENTS):
        out[f"{c}_contrib"] = contrib[:, k]
    out["base"] = base
    out["reason"] = reason_texts(raw, contrib, lang)
    out["model"] = fitted["kind"]
    out = out.sort_values(["risk", "site_id"], ascending=[False, True], ignore_index=True)
    out.insert(out.columns.get_loc("risk") + 1, "rank", np.arange(1, len(out) + 1))
    gdf = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(out["lng"], out["lat"]), crs="EPSG:4326")
    gdf.attrs["model"] = {k: v for k, v in fitted.items() if k != "detection"}
    gdf.attrs["as_of"] = moment.isoformat(sep=" ")
    gdf.attrs["notes"] = as_of_notes(store, moment, lang=lang)
    return gdf
