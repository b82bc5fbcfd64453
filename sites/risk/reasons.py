"""Explanations of a score: the short reason of each site (its largest contributions, in zh or en) and the
components of a scored site as JSON-ready records."""

from __future__ import annotations

import numpy as np
import pandas as pd
from civicgrid.geo.errors import NotFoundError
from civicgrid.geo.texts import labels, text
from civicgrid.sites.risk.components import COMPONENTS, TRANSFORMS


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


def reason_texts(raw: pd.DataFrame, contrib: np.ndarray, lang: str, top: int = 3,
                 floor: float = 0.05) -> list[str]:
    """One short reason per site: its ``top`` largest contributions above ``floor`` (logit units)."""
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
    sep, none = text("common.reason_sep", lang), text("risk.reason.none", lang)
    out = []
    for i in range(len(raw)):  # one short text per site (not per event)
        parts = [_fmt(COMPONENTS[j], raw, i, lang) for j in order[i] if contrib[i, j] > floor]
        out.append(sep.join(parts) if parts else none)
    return out


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
