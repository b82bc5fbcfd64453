"""Each active site's probability of being found non-conforming now: its state at ``as_of`` and the documented
rule (:data:`RULE`), or the calibrated risk of :mod:`civicgrid.sites.risk`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from civicgrid.geo.aggregate import cached
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.events import data_span
from civicgrid.geo.store import Store
from civicgrid.geo.times import end_of_day, is_date_only, parse_moment, store_now, store_timezone
from civicgrid.sites.risk import site_risk

#: Days of recent activity that count in a site's state.
WINDOW_DAYS = 90


#: Coefficients of the documented rule of :func:`nonconformity_probability` (log-odds added to the site's
#: inspection-based prior). Assumptions chosen so that one open problem roughly doubles the odds and an overdue
#: one more than triples them; replace them by the calibrated risk of ``sites.risk`` when available.
RULE = {
    "prior_strength": 4.0,   # pseudo-inspections of the category rate mixed into each site's own record
    "open": 0.7,             # per open problem at the site (capped at 3): visible to an assessor now
    "overdue": 0.5,          # extra per overdue open problem (capped at 3)
    "hits": 0.3,             # per log(1 + inspection hits at the site in the window)
    "complaints": 0.15,      # per log(1 + complaints in the site's H3 res-9 cell in the window)
}


def default_as_of(store: Store) -> datetime:
    """The latest event or inspection time in the store (the data's "now"), or the current time if empty."""
    value = data_span(store)[1]
    return value.to_pydatetime() if pd.notna(value) else store_now(store)


def resolve_as_of(store: Store, as_of) -> datetime:
    """The moment of ``as_of``; a day without a time of day (2024-03-31, 2024/3/31, 2024年3月31日, a date) means
    the end of that day."""
    if as_of is None or (isinstance(as_of, str) and not as_of.strip()):
        return default_as_of(store)
    moment = parse_moment(as_of, name="as_of", tz=store_timezone(store))
    if is_date_only(as_of):
        return end_of_day(moment.date()) - timedelta(microseconds=1)
    return moment


_STATE_SQL = """
WITH active AS (
    SELECT site_id, name, category_code, grid_code, community_code, street_code, district_code,
           h3_parent(h3, 9) AS cell
    FROM sites WHERE coalesce(active, TRUE)
),
site_events AS (
    SELECT site_id,
           count(*) FILTER (WHERE closed_at IS NULL OR closed_at > $as_of) AS open,
           count(*) FILTER (WHERE (closed_at IS NULL OR closed_at > $as_of)
                            AND deadline IS NOT NULL AND deadline < $as_of) AS overdue,
           count(*) FILTER (WHERE source = 'inspection' AND time > $since) AS hits
    FROM events
    WHERE site_id IS NOT NULL AND time <= $as_of
    GROUP BY site_id
),
cell_complaints AS (
    SELECT h3_parent(h3, 9) AS cell, count(*) AS complaints
    FROM events
    WHERE source = 'complaint' AND h3 IS NOT NULL AND time > $since AND time <= $as_of
    GROUP BY 1
),
visits AS (
    SELECT site_id, count(*) AS inspections,
           count(*) FILTER (WHERE NOT conforming) AS nonconforming
    FROM inspections
    WHERE site_id IS NOT NULL AND conforming IS NOT NULL AND time > $year AND time <= $as_of
    GROUP BY site_id
)
SELECT a.site_id, a.name, a.category_code, a.grid_code, a.community_code, a.street_code, a.district_code,
       coalesce(e.open, 0)::INTEGER AS open, coalesce(e.overdue, 0)::INTEGER AS overdue,
       coalesce(e.hits, 0)::INTEGER AS hits, coalesce(c.complaints, 0)::INTEGER AS complaints,
       coalesce(v.inspections, 0)::INTEGER AS inspections, coalesce(v.nonconforming, 0)::INTEGER AS nonconforming
FROM active a
LEFT JOIN site_events e USING (site_id)
LEFT JOIN cell_complaints c ON c.cell = a.cell
LEFT JOIN visits v USING (site_id)
ORDER BY a.site_id
"""


def site_state(store: Store, *, as_of=None, window_days: int = WINDOW_DAYS) -> pd.DataFrame:
    """The current state of every active site of the sample frame at ``as_of``.

    Parameters
    ----------
    store
        The database.
    as_of
        The moment to look from (date = end of that day; default: the latest event or inspection).
    window_days
        Days of recent hits and complaints.

    Returns
    -------
    pandas.DataFrame
        One row per active site: ``site_id, name, category_code, grid_code … district_code``, ``open``
        (problems at the site not closed at ``as_of``), ``overdue`` (of those, past their deadline), ``hits``
        (inspection hits at the site in the window), ``complaints`` (complaints in the site's H3 res-9 cell,
        about 0.1 km², in the window), ``inspections`` and ``nonconforming`` (visits in the last 365 days).
    """
    moment = resolve_as_of(store, as_of)
    params = {"as_of": moment, "since": moment - timedelta(days=window_days), "year": moment - timedelta(days=365)}
    return store.sql(_STATE_SQL, params)


def nonconformity_probability(state: pd.DataFrame, *, rule: Mapping[str, float] | None = None) -> np.ndarray:
    """The documented rule: each site's probability of being found non-conforming now.

    ``logit p = logit(prior) + b_open·min(open, 3) + b_overdue·min(overdue, 3) + b_hits·log(1 + hits)
    + b_complaints·log(1 + complaints)``, where ``prior`` is the site's own non-conforming share of the last
    year's inspections shrunk toward its category's share (``prior_strength`` pseudo-visits; the category's
    share is itself shrunk toward the city's), clipped to [0.01, 0.99]. Coefficients: :data:`RULE`.

    Parameters
    ----------
    state
        The frame of :func:`site_state`.
    rule
        Overrides of :data:`RULE`.

    Returns
    -------
    numpy.ndarray
        ``p`` per row of ``state``.
    """
    b = {**RULE, **(rule or {})}
    insp = state["inspections"].to_numpy(float)
    bad = state["nonconforming"].to_numpy(float)
    m = b["prior_strength"]
    city = (bad.sum() + 1.0) / (insp.sum() + 2.0)
    by_cat = pd.DataFrame({"c": state["category_code"], "i": insp, "b": bad}).groupby("c")[["i", "b"]].transform("sum")
    cat_rate = (by_cat["b"].to_numpy() + m * city) / (by_cat["i"].to_numpy() + m)
    prior = np.clip((bad + m * cat_rate) / (insp + m), 0.01, 0.99)
    logit = (np.log(prior / (1 - prior))
             + b["open"] * np.minimum(state["open"].to_numpy(float), 3)
             + b["overdue"] * np.minimum(state["overdue"].to_numpy(float), 3)
             + b["hits"] * np.log1p(state["hits"].to_numpy(float))
             + b["complaints"] * np.log1p(state["complaints"].to_numpy(float)))
    return 1.0 / (1.0 + np.exp(-logit))


def site_probabilities(store: Store, *, as_of=None, method: str = "auto") -> pd.DataFrame:
    """Every active site with its probability ``p`` of being found non-conforming now.

    Parameters
    ----------
    store
        The database.
    as_of
        The moment to look from (default: the latest event or inspection).
    method
        ``"rule"``: :func:`nonconformity_probability`; ``"risk"``: the calibrated ``risk`` column of
        ``sites.risk.site_risk(store, as_of=...)`` (a probability in [0, 1]); ``"auto"`` (default): the risk
        model when it gives probabilities, else the rule.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`site_state` plus ``p`` and ``method``.
    """
    if method not in ("auto", "rule", "risk"):
        msg = f"method must be auto, rule or risk, got {method!r}"
        raise InvalidParameterError(msg)
    moment = resolve_as_of(store, as_of)

    def compute() -> pd.DataFrame:
        state = site_state(store, as_of=moment)
        state["p"] = nonconformity_probability(state)
        state["method"] = "rule"
        if method in ("auto", "risk"):
            risk = _risk_probabilities(store, as_of=moment, required=method == "risk")
            if risk is not None:
                p = state["site_id"].map(risk)
                state["p"] = p.fillna(pd.Series(state["p"], index=state.index)).to_numpy(float)
                state["method"] = "risk"
        return state

    # cached per published version of the file (the risk model takes seconds; the service asks repeatedly)
    return cached(store, ("site_probabilities", moment, method), compute).copy()


def _risk_probabilities(store: Store, *, as_of: datetime, required: bool) -> pd.Series | None:
    frame = site_risk(store, as_of=as_of)
    if "risk" not in frame or "site_id" not in frame:
        if required:
            msg = "civicgrid.sites.risk.site_risk returned no site_id/risk columns; use method='rule'"
            raise InvalidParameterError(msg)
        return None
    risk = pd.to_numeric(frame["risk"], errors="coerce")
    if risk.isna().all() or risk.min() < 0 or risk.max() > 1:
        if required:
            msg = "civicgrid.sites.risk.site_risk's risk is not a probability in [0, 1]; use method='rule'"
            raise InvalidParameterError(msg)
        return None
    return pd.Series(risk.to_numpy(float), index=frame["site_id"].to_numpy())
