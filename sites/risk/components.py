"""The components of the site risk score: their names, labels, transforms and default weights, and the tunables
of the score (neighbourhood, time constants, priors, training window)."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
from civicgrid.geo.texts import pairs
from civicgrid.geo.times import DEFAULT_TIMEZONE, parse_moment

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
#: Time constant (days) of the decay of a site's past failures and critical findings (``failures_recent``...).
FAIL_TAU_DAYS = 365.0
#: Share of the training rows (the latest, by time) held out to choose the model and calibrate it.
HOLDOUT_SHARE = 0.2
#: The training rows' inputs may be computed as of a moment up to this many days before each inspection (uniformly
#: spread, fixed seed), as a score made at ``as_of`` is used for the visits of the following weeks (the backtest
#: replays 60 days). 0 (kept): as of each inspection's own time; 60 was tried on the windows before the benchmark's
#: (NYC 2013-07 and 2013-10, Toronto 2010-07 and 2010-10) and found failures later on NYC (bench/RESULTS.md).
TRAIN_GAP_DAYS = 0.0
#: The held-out rows (which choose the model and calibrate it) may be scored as the model is used: their inputs as
#: of a moment up to this many days before each inspection (uniformly spread, fixed seed). 0 (kept): as of their own
#: time; 60 still preferred the logistic model on NYC 2014-01, where the trees found failures 1.3 days earlier.
HOLDOUT_GAP_DAYS = 0.0
#: H3 resolution of the area of ``area_rate`` (res 8: cells of about 0.7 km²); sites without coordinates use
#: their finest area code (grid, community, street, district).
AREA_RES = 8
#: Time constant (days) of the decay of the area's inspections in ``area_rate``, and its prior (pseudo-visits at
#: the city's rate).
AREA_TAU_DAYS = 180.0
AREA_PRIOR = 10.0
#: Pseudo-visits at the city's rate of the shrinkage of a kind of visit's problem rate (``visit_kind``).
KIND_PRIOR = 20.0
#: ``brand_rate``, the recent problem share of the *other* sites of the same name (a chain): the time constant (days)
#: of the decay of their inspections, and the prior (pseudo-visits at the city's rate). Chosen on NYC's 2013 windows
#: (routine visits: 365 d and 10 against no decay or 30 pseudo-visits; bench/RESULTS.md).
BRAND_TAU_DAYS = 365.0
BRAND_PRIOR = 10.0

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
    "failures_recent": "log(1 + decayed count)",
    "criticals_recent": "log(1 + decayed count)",
    "last_failed": "1 if the last inspection failed (none: 0)",
    "last_critical": "1 if the last inspection found a critical problem (none: 0)",
    "visits_per_year": "log(1 + inspections a year) (none: 0)",
    "area_rate": "logit(area rate) - logit(category rate) (no area: 0)",
    "problems_rate": "log(1 + problems found per visit, shrunk) (no counts recorded: 0)",
    "brand_rate": "logit(same-name sites' rate) - logit(category rate) (no other site of its name: 0)",
}

#: The site's own record in the logistic model too (issue 16: the components alone left it behind the plain
#: historical hit rate on real cities); :data:`LINEAR` is what the logistic model weighs.
LOGISTIC_EXTRA = ("failures_recent", "criticals_recent", "last_failed", "last_critical", "visits_per_year",
                  "area_rate", "problems_rate", "brand_rate")
LINEAR = (*COMPONENTS, *LOGISTIC_EXTRA)

#: The transparent default weights (logit units per unit of ``x``), used with too few labelled inspections:
#: the category rate and the site's record enter at face value (weight 1: the shrunk site rate itself),
#: signals of current trouble add moderate amounts.
DEFAULT_WEIGHTS = {
    "category_rate": 1.0, "site_record": 1.0, "complaints_near": 0.25, "hits_near": 0.25,
    "open_problems": 0.3, "overdue_problems": 0.4, "days_since_inspection": 0.3, "rebounds": 0.4, "hotspot": 0.5,
}


#: Inputs of the gradient-boosted model (:mod:`~civicgrid.sites.risk.gbm`), with the components above: the site's
#: own record (raw values; trees need no transform), time, and the neighbourhood.
FEATURES = ("category_rate", "site_record", "failures", "failures_recent", "criticals_recent", "last_failed",
            "last_score", "mean_score", "score_trend", "days_since_failure", "days_since_inspection", "site_visits",
            "age_days", "visits_per_year", "last_critical", "last_followup", "area_rate", "complaints_near",
            "hits_near", "open_problems", "overdue_problems", "rebounds", "hotspot", "season_sin", "season_cos",
            "problems_rate", "brand_rate")

#: Conditions of a visit rather than properties of the site, known before the day: the inspector's log detection
#: ratio, whether the visit follows up an earlier one, and its kind (``logit`` of the problem share of earlier visits
#: of the same kind against the city's: NYC's re-inspections find fewer problems than its routine visits). A site is
#: scored for an average inspector (0) on a routine visit (the most frequent kind);
#: :func:`~civicgrid.sites.risk.site_risk` takes an inspector, :func:`~civicgrid.sites.risk.visit_probabilities`
#: the inspector and kind of each planned visit (the backtest passes those of the window's inspections, never
#: their outcome).
VISIT_INPUTS = ("inspector", "visit_followup", "visit_kind")

#: Known directions: the model's risk never decreases as these grow (monotone constraints of the gradient-boosted
#: model; a learnt logistic weight against the direction is dropped and the model refitted).
MONOTONE = {"category_rate": 1, "site_record": 1, "failures": 1, "failures_recent": 1, "criticals_recent": 1,
            "last_failed": 1, "last_critical": 1, "last_score": 1, "mean_score": 1, "area_rate": 1,
            "complaints_near": 1, "hits_near": 1, "open_problems": 1, "overdue_problems": 1, "rebounds": 1,
            "hotspot": 1, "inspector": 1, "problems_rate": 1, "visit_kind": 1,
            "brand_rate": 1}

#: Inputs never named in a reason: they are not the site's (season, the visit's conditions).
NOT_REASONS = ("season_sin", "season_cos", *VISIT_INPUTS)


def parse_as_of(as_of: AsOf | pd.Timestamp, *, tz: str = DEFAULT_TIMEZONE) -> datetime:
    """Read ``as_of`` (:func:`~civicgrid.geo.times.parse_moment`): a datetime, a date or ``YYYY-MM-DD``
    (midnight: data of that day is not used) or a date-time text, the year first; everything strictly before
    it is used. A moment with a time zone is read as the wall-clock time of ``tz`` (the store's)."""
    return parse_moment(as_of, name="as_of", tz=tz)
