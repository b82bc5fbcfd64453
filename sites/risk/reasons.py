"""Explanations of a score: the short reason of each site (its largest contributions, in zh or en) and the
components of a scored site as JSON-ready records."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from civicgrid.geo.errors import NotFoundError
from civicgrid.geo.texts import labels, text
from civicgrid.sites.risk.components import COMPONENTS, NOT_REASONS, TRANSFORMS

#: Inputs that count something bad: never named when the count is 0 (a backwards reason such as "0 open problems").
COUNTS = ("complaints_near", "hits_near", "open_problems", "overdue_problems", "rebounds", "hotspot", "failures",
          "failures_recent", "criticals_recent", "last_failed", "last_critical")


def _fmt(name: str, raw: pd.DataFrame, i: int, lang: str) -> str | None:
    """One input of a site's reason (``[risk.reason]`` of the text catalogue); None: nothing to say."""
    label = text(f"risk.component.{name}", lang)
    r = raw.iloc[i]
    if name in COUNTS and not (r[name] > 0):
        return None
    if name == "failures":
        return text("risk.reason.failures", lang, n=int(r[name]), visits=int(r["site_visits"]))
    if name == "last_failed":
        return text("risk.reason.last_failed", lang, days=r["days_since_inspection"])
    if name in ("last_score", "mean_score"):
        return None if pd.isna(r[name]) else text(f"risk.reason.{name}", lang, score=r[name])
    if name == "score_trend":
        return None if not (r[name] > 0) else text("risk.reason.score_trend", lang, delta=r[name])
    if name == "days_since_failure":
        return None if pd.isna(r[name]) else text("risk.reason.days_since_failure", lang, days=r[name])
    if name in ("site_visits", "age_days"):
        if not (r["site_visits"] > 0):
            return text("risk.reason.new_site", lang)
        return text(f"risk.reason.{name}", lang, n=int(r["site_visits"]), days=r["age_days"])
    if name == "last_critical":
        return text("risk.reason.last_critical", lang)
    if name == "visits_per_year":
        return None if pd.isna(r[name]) else text("risk.reason.visits_per_year", lang, n=r[name])
    if name in ("area_rate", "brand_rate"):
        return None if pd.isna(r[name]) else text(f"risk.reason.{name}", lang, label=label, rate=r[name])
    if name == "problems_rate":
        return None if not (r[name] > 0) else text("risk.reason.problems_rate", lang, n=r[name])
    if name == "last_followup":
        return text("risk.reason.last_followup", lang) if r[name] == 1 else None
    if name in ("failures_recent", "criticals_recent"):
        v = float(r[name])
        return text("risk.reason.decayed" if v >= 0.5 else "risk.reason.decayed_small", lang, label=label, n=v)
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


def reason_texts(raw: pd.DataFrame, contrib: np.ndarray, lang: str, top: int = 3, floor: float = 0.05,
                 names: Sequence[str] = COMPONENTS) -> list[str]:
    """One short reason per site: its ``top`` largest contributions above ``floor`` (logit units), only of
    inputs that push this site's risk up and are the site's own (not :data:`NOT_REASONS`); one text per input
    (the two season terms, or an input said twice, once)."""
    names = list(names)
    said = contrib.copy()
    for j, c in enumerate(names):
        if c in NOT_REASONS:
            said[:, j] = -np.inf
    order = np.argsort(-said, axis=1, kind="stable")
    sep, none = text("common.reason_sep", lang), text("risk.reason.none", lang)
    out = []
    for i in range(len(raw)):  # one short text per site (not per event)
        parts: list[str] = []
        for j in order[i]:
            if said[i, j] <= floor or len(parts) == top:
                break
            part = _fmt(names[j], raw, i, lang)
            if part and part not in parts:
                parts.append(part)
        out.append(sep.join(parts) if parts else none)
    return out


_VALUE_COL = {"site_record": "site_rate"}


_ROW_KEYS = ("site_id", "name", "category_code", "category_name", "grid_code", "lng", "lat", "risk", "rank", "base",
             "reason", "model", "site_visits")


def risk_records(frame: pd.DataFrame, *, lang: str = "zh") -> list[dict]:
    """Rows of a :func:`site_risk` frame as JSON-ready dicts, each with its ``components``: label, value,
    transform, weight (logistic models; None for trees) and contribution, largest contribution first."""
    info = frame.attrs.get("model", {})
    weights = info.get("weights") or {}
    features = info.get("features") or list(COMPONENTS)
    names = labels("risk.component", lang)
    zeros = np.zeros(len(frame))
    cols = {c: (frame[_VALUE_COL.get(c, c)].to_numpy() if _VALUE_COL.get(c, c) in frame else zeros)
            for c in features}
    contrib = {c: frame[f"{c}_contrib"].to_numpy(float) for c in features}
    rows = frame[list(_ROW_KEYS)].to_dict("records")
    out = []
    for j, row in enumerate(rows):  # one dict per site
        comps = [{"component": c, "label": names[c], "value": _plain(cols[c][j]),
                  "transform": TRANSFORMS.get(c, "raw value (trees)"), "weight": _plain(weights.get(c)),
                  "contribution": _plain(contrib[c][j])} for c in features]
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
