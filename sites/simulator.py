"""The assessment simulator: the conformity rate (符合率) if the assessors came tomorrow, and which sites to fix first.

The national field assessment (实地考察) draws ``k_c`` sites at random, without
replacement, from the active sites of each category ``c`` of the sample frame
(样本框) and scores each drawn site conforming (符合) or not. Each active site
``i`` has a probability ``p_i`` of being found non-conforming now (from its
current state, see :func:`site_probabilities`); outcomes are independent.

Definitions used throughout
---------------------------
* **Category rate**: conforming drawn sites / ``k_c`` (a category with fewer
  than ``k_c`` active sites is drawn in full, ``k_c = n_c``).
* **Overall rate** (``aggregate``):

  - ``"pooled"`` (default): conforming drawn sites / all drawn sites,
    ``sum_c C_c / sum_c k_c`` — the glossary's 符合率 (conforming checks / all
    checks) over the whole visit; larger draws weigh more.
  - ``"mean"``: the plain mean of the category rates (every category equal).

* **Below threshold**: a rate strictly less than ``threshold``.
* **Expected rates are exact**: the expected number of non-conforming sites in a
  uniform random ``k``-subset is ``k * mean(p)``, so ``E[rate_c] = 1 - mean_c(p)``.
  The full distribution is exact too: the number ``F`` of non-conforming sites
  of the whole category is Poisson-binomial, and the number drawn given ``F`` is
  hypergeometric(``n_c, F, k_c``); categories are independent, so the overall
  distribution is their convolution (:func:`exact_assessment`). The Monte-Carlo
  simulation (:func:`simulate_assessment`) gives the intervals and checks the
  exact figures.
* **What if** (:func:`fix_first`): fixing site ``i`` sets ``p_i = 0``. Its exact gain
  is ``p_i / n_c`` in its category's expected rate and ``a_c * k_c * p_i / (n_c * D)``
  in the overall rate (pooled: ``a_c = 1, D = sum k``; mean: ``a_c = 1 / k_c,
  D = number of categories``). Gains add up, so the best ``N`` sites are the ``N``
  largest gains.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from civicgrid.geo.aggregate import cached
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.events import as_of_notes, data_span
from civicgrid.geo.store import Store
from civicgrid.geo.texts import name_column
from civicgrid.geo.times import end_of_day, is_date_only, now_local, parse_moment
from civicgrid.sites.risk import site_risk
from scipy.special import gammaln

#: Editable table of the number of sites drawn per category (``category_code, name_zh, k``; ``#`` comments).
#: Source: an assumption documented in the file's header (the operating manual of each edition fixes it).
ASSESSMENT_CSV = Path(__file__).resolve().parent.parent / "data" / "assessment.csv"

#: Draws per category for categories missing from the table.
DEFAULT_K = 3

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

AGGREGATES = ("pooled", "mean")


# --- the number of draws per category ------------------------------------------------------------------------


def _categories(store: Store | None) -> pd.DataFrame:
    if store is not None:
        return store.sql("SELECT code, name_zh, name_en FROM site_categories ORDER BY code")
    path = ASSESSMENT_CSV.parent / "site_categories.csv"
    return pd.read_csv(path, dtype=str, usecols=["code", "name_zh", "name_en"])


def resolve_category(word: str, cats: pd.DataFrame) -> str:
    """Return the category code named by ``word`` (code, Chinese or English name); unknown: :class:`NotFoundError`."""
    text = str(word).strip()
    for col in ("code", "name_zh", "name_en"):
        hit = cats.loc[cats[col].astype(str).str.lower() == text.lower(), "code"]
        if len(hit):
            return str(hit.iloc[0])
    if text.isdigit() and len(text) == 1:
        padded = text.zfill(2)
        if padded in set(cats["code"]):
            return padded
    names = {**dict(zip(cats["name_zh"], cats["code"], strict=True)),
             **dict(zip(cats["code"], cats["code"], strict=True))}
    close = difflib.get_close_matches(text, list(names), n=3, cutoff=0.3)
    hint = ", ".join(f"{c} ({names[c]})" for c in close) or ", ".join(cats["code"].head(5))
    msg = f"unknown site category {word!r}; closest: {hint}"
    raise NotFoundError(msg)


def assessment_sizes(store: Store | None = None, *, overrides: Mapping[str, int] | None = None,
                     path: str | Path | None = None) -> pd.Series:
    """Number of sites drawn per category, ``k``, indexed by category code.

    Parameters
    ----------
    store
        Database whose ``site_categories`` lists the categories (default: ``data/site_categories.csv``).
    overrides
        ``{category: k}``; a category is a code, Chinese or English name.
    path
        The table to read (default :data:`ASSESSMENT_CSV`); categories missing from it draw :data:`DEFAULT_K`.

    Returns
    -------
    pandas.Series
        Integer ``k`` per category code (name ``k``).
    """
    cats = _categories(store)
    k = pd.Series(DEFAULT_K, index=pd.Index(cats["code"].astype(str), name="category_code"), name="k", dtype=int)
    table = pd.read_csv(path or ASSESSMENT_CSV, dtype=str, comment="#", skip_blank_lines=True)
    for row, rec in enumerate(table.itertuples(index=False), start=2):
        value = _parse_k(rec.k, f"{path or ASSESSMENT_CSV.name} row {row} (k)")
        if rec.category_code in k.index:
            k[rec.category_code] = value
    for word, value in (overrides or {}).items():
        k[resolve_category(word, cats)] = _parse_k(value, f"k of {word}")
    return k


def _parse_k(value, where: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number < 0 or number != int(number):
        msg = f"{where}: k must be a whole number >= 0, got {value!r}"
        raise InvalidParameterError(msg)
    return int(number)


def parse_k_options(items: list[str] | tuple[str, ...] | None) -> dict[str, int]:
    """Parse ``["03=5", "公园=2"]`` (the CLI's and API's ``k`` values) into ``{category: k}``."""
    out: dict[str, int] = {}
    for item in items or ():
        for part in str(item).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                msg = f"k takes CATEGORY=K (e.g. 03=5 or 公园=2), got {part!r}"
                raise InvalidParameterError(msg)
            key, value = part.split("=", 1)
            out[key.strip()] = _parse_k(value.strip(), f"k of {key.strip()}")
    return out


# --- each site's probability of being found non-conforming -------------------------------------------------


def default_as_of(store: Store) -> datetime:
    """The latest event or inspection time in the store (the data's "now"), or the current time if empty."""
    value = data_span(store)[1]
    return value.to_pydatetime() if pd.notna(value) else now_local()


def _as_of(store: Store, as_of) -> datetime:
    """The moment of ``as_of``; a day without a time of day (2024-03-31, 2024/3/31, 2024年3月31日, a date) means
    the end of that day."""
    if as_of is None or (isinstance(as_of, str) and not as_of.strip()):
        return default_as_of(store)
    moment = parse_moment(as_of, name="as_of")
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
    moment = _as_of(store, as_of)
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
    moment = _as_of(store, as_of)

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


# --- exact distribution and simulation ----------------------------------------------------------------------


@dataclass
class _Frame:
    """Sites grouped by category with their effective draws and the overall weights."""

    codes: list[str]
    probs: list[np.ndarray]
    k: np.ndarray          # effective draws per category (min(k, n))
    n: np.ndarray
    weights: np.ndarray    # a_c: overall score = sum a_c * C_c / denom
    denom: float
    aggregate: str
    site_index: list[np.ndarray] = field(default_factory=list)


def _prepare(frame: pd.DataFrame, k, aggregate: str) -> _Frame:
    if aggregate not in AGGREGATES:
        msg = f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}"
        raise InvalidParameterError(msg)
    for col in ("category_code", "p"):
        if col not in frame:
            msg = f"the site frame needs a {col!r} column (has {', '.join(map(str, frame.columns))})"
            raise InvalidParameterError(msg)
    p_all = pd.to_numeric(frame["p"], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~((p_all >= 0) & (p_all <= 1)))
    if len(bad):
        row = bad[0]
        msg = f"p must be a probability in [0, 1]; row {row} has {frame['p'].iloc[row]!r}"
        raise InvalidParameterError(msg)
    cats = frame["category_code"].astype(str).to_numpy()
    codes, probs, ks, ns, index = [], [], [], [], []
    for code in sorted(set(cats)):
        want = _k_of(k, code)
        rows = np.flatnonzero(cats == code)
        if want <= 0 or not len(rows):
            continue
        codes.append(code)
        probs.append(p_all[rows])
        index.append(rows)
        ns.append(len(rows))
        ks.append(min(want, len(rows)))
    if not codes:
        msg = "no category has both active sites and k > 0; nothing to assess"
        raise InvalidParameterError(msg)
    k_eff, n = np.array(ks, dtype=np.int64), np.array(ns, dtype=np.int64)
    if aggregate == "pooled":
        weights, denom = np.ones(len(codes)), float(k_eff.sum())
    else:
        weights, denom = 1.0 / k_eff, float(len(codes))
    return _Frame(codes, probs, k_eff, n, weights, denom, aggregate, index)


def _k_of(k, code: str) -> int:
    if isinstance(k, (int, np.integer)):
        return int(k)
    if isinstance(k, pd.Series):
        return int(k.get(code, 0))
    return int(dict(k).get(code, 0))


def _poisson_binomial(p: np.ndarray) -> np.ndarray:
    """P(F = f), f = 0..n, for the number of successes of independent Bernoulli(p_i) (exact recursion)."""
    pmf = np.zeros(len(p) + 1)
    pmf[0] = 1.0
    for i, pi in enumerate(p, start=1):  # O(n^2) over a category's sites, vectorized over f
        pmf[1:i + 1] = pmf[1:i + 1] * (1 - pi) + pmf[:i] * pi
        pmf[0] *= 1 - pi
    return pmf


def _log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log C(a, b), -inf where b < 0 or b > a."""
    ok = (b >= 0) & (b <= a)
    a_, b_ = np.where(ok, a, 0), np.where(ok, b, 0)
    out = gammaln(a_ + 1) - gammaln(b_ + 1) - gammaln(a_ - b_ + 1)
    return np.where(ok, out, -np.inf)


def _hypergeom_table(n: int, k: int) -> np.ndarray:
    """P(j of the F marked items in a k-subset of n), rows F = 0..n, columns j = 0..k."""
    f = np.arange(n + 1, dtype=float)[:, None]
    j = np.arange(k + 1, dtype=float)[None, :]
    return np.exp(_log_comb(f, j) + _log_comb(n - f, k - j) - _log_comb(np.array(n, float), np.array(k, float)))


def _drawn_failures_pmf(p: np.ndarray, k: int) -> np.ndarray:
    """P(j non-conforming among k sites drawn uniformly without replacement), j = 0..k, exactly."""
    n = len(p)
    pf = _poisson_binomial(p)
    table = _hypergeom_table(n, k)  # rows: F failures in the category, columns: j of them drawn
    pmf = pf @ table
    return pmf / pmf.sum()


def exact_assessment(frame: pd.DataFrame, k, *, threshold: float = 0.9, aggregate: str = "pooled",
                     max_support: int = 2_000_000) -> dict:
    """The exact expected conformity rates and below-threshold probabilities.

    Parameters
    ----------
    frame
        One row per active site with ``category_code`` and ``p`` (probability of non-conformity).
    k
        Draws per category: a Series or mapping ``{code: k}``, or one integer for all.
    threshold
        A rate strictly below it "falls below".
    aggregate
        ``"pooled"`` or ``"mean"`` (see the module docstring).
    max_support
        Skip the exact overall distribution (``p_below`` None) when ``aggregate="mean"`` needs more points.

    Returns
    -------
    dict
        ``categories``: DataFrame ``category_code, n_sites, k, expected, p_below``; ``overall``:
        ``{"expected", "p_below"}``.
    """
    fr = _prepare(frame, k, aggregate)
    _check_threshold(threshold)
    rows = []
    overall_pmf = np.array([1.0])
    ints = _integer_weights(fr, max_support)
    for i, code in enumerate(fr.codes):
        kk = int(fr.k[i])
        pmf = _drawn_failures_pmf(fr.probs[i], kk)          # index j = failures
        conf = kk - np.arange(kk + 1)                        # conforming count per j
        below = float(pmf[conf < threshold * kk - 1e-9].sum())
        rows.append((code, int(fr.n[i]), kk, 1.0 - float(fr.probs[i].mean()), below))
        if ints is not None:
            step = int(ints[0][i])
            cpmf = np.zeros(kk * step + 1)
            cpmf[conf * step] = pmf                          # distribution of a_c' * C_c on an integer grid
            overall_pmf = np.convolve(overall_pmf, cpmf)
    cats = pd.DataFrame(rows, columns=["category_code", "n_sites", "k", "expected", "p_below"])
    expected = float((fr.weights * fr.k * cats["expected"].to_numpy()).sum() / fr.denom)
    p_below = None
    if ints is not None:
        scale = ints[1]
        support = np.arange(len(overall_pmf)) / scale
        p_below = float(overall_pmf[support < threshold - 1e-9].sum())
    return {"categories": cats, "overall": {"expected": expected, "p_below": p_below}}


def _integer_weights(fr: _Frame, max_support: int) -> tuple[np.ndarray, float] | None:
    """Integer multipliers m_c and scale S so that the overall rate is sum m_c C_c / S (None if too large)."""
    if fr.aggregate == "pooled":
        return np.ones(len(fr.codes), dtype=np.int64), float(fr.k.sum())
    lcm = 1
    for kk in fr.k:
        lcm = math.lcm(lcm, int(kk))
        if lcm * len(fr.codes) > max_support:
            return None
    return (lcm // fr.k).astype(np.int64), float(lcm * len(fr.codes))


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        msg = f"threshold must be a rate between 0 and 1 (e.g. 0.9), got {threshold!r}"
        raise InvalidParameterError(msg)


@dataclass
class Simulation:
    """Simulated visits: conforming counts per run and category, with the frame they came from."""

    codes: list[str]
    k: np.ndarray
    n: np.ndarray
    conforming: np.ndarray   # runs x categories
    weights: np.ndarray
    denom: float
    aggregate: str

    @property
    def category_rates(self) -> np.ndarray:
        """Conformity rate per run (rows) and category (columns)."""
        return self.conforming / self.k

    @property
    def overall_rates(self) -> np.ndarray:
        """Overall conformity rate per run."""
        return (self.conforming * self.weights).sum(axis=1) / self.denom


def simulate_visits(frame: pd.DataFrame, k, *, runs: int = 10_000, seed: int | None = 0,
                    aggregate: str = "pooled", chunk_cells: int = 4_000_000) -> Simulation:
    """Simulate ``runs`` assessors' visits: draw ``k`` sites per category without replacement, score each.

    Vectorized per category over runs: the ``k`` drawn sites are a uniform random subset per run — Floyd's
    algorithm when ``k² <= n`` (O(k²) per run), else the ``k`` smallest of ``n`` uniform keys (chunks of at most
    ``chunk_cells`` keys) — and each drawn site is non-conforming with its ``p``.
    """
    if not isinstance(runs, (int, np.integer)) or runs < 1 or runs > 1_000_000:
        msg = f"runs must be 1..1000000, got {runs!r}"
        raise InvalidParameterError(msg)
    fr = _prepare(frame, k, aggregate)
    rng = np.random.default_rng(seed)
    out = np.empty((runs, len(fr.codes)), dtype=np.int32)
    for c, p in enumerate(fr.probs):
        n, kk = len(p), int(fr.k[c])
        step = max(1, chunk_cells // n)
        for start in range(0, runs, step):
            r = min(step, runs - start)
            if kk == n:
                drawn = np.broadcast_to(p, (r, n))
            elif kk * kk <= n:
                drawn = p[_floyd_sample(rng, n, kk, r)]
            else:
                keys = rng.random((r, n))
                idx = np.argpartition(keys, kk - 1, axis=1)[:, :kk]
                drawn = p[idx]
            fails = rng.random(drawn.shape) < drawn
            out[start:start + r, c] = kk - fails.sum(axis=1)
    return Simulation(fr.codes, fr.k, fr.n, out, fr.weights, fr.denom, aggregate)


def _floyd_sample(rng: np.random.Generator, n: int, k: int, runs: int) -> np.ndarray:
    """``runs`` uniform random ``k``-subsets of ``range(n)`` (Floyd's algorithm, vectorized over runs; O(runs k²))."""
    chosen = np.empty((runs, k), dtype=np.int64)
    for i, j in enumerate(range(n - k, n)):
        t = rng.integers(0, j + 1, size=runs)
        dup = (chosen[:, :i] == t[:, None]).any(axis=1) if i else np.zeros(runs, dtype=bool)
        chosen[:, i] = np.where(dup, j, t)
    return chosen


def simulate_assessment(frame: pd.DataFrame, k, *, runs: int = 10_000, threshold: float = 0.9,
                        level: float = 0.9, seed: int | None = 0, aggregate: str = "pooled",
                        names: Mapping[str, str] | None = None) -> dict:
    """Expected conformity per category and overall, with a simulation interval and below-threshold chances.

    Parameters
    ----------
    frame
        One row per active site with ``category_code`` and ``p``.
    k
        Draws per category (Series, mapping or one integer).
    runs
        Simulated visits.
    threshold
        Rate below which a category (or the city) "falls below".
    level
        Central interval of the simulated rates (0.9: the 5th to 95th percentiles).
    seed
        Random seed (None: fresh randomness).
    aggregate
        How the overall rate pools categories: ``"pooled"`` or ``"mean"``.
    names
        Category names to show ``{code: name}``.

    Returns
    -------
    dict
        ``categories``: DataFrame with ``category_code, name, n_sites, k, expected`` (exact),
        ``simulated, low, high, p_below`` (simulated), ``p_below_exact``, ``expected_nonconforming``;
        ``overall``: the same keys for the whole visit; and ``runs, threshold, level, aggregate``.
    """
    _check_threshold(threshold)
    if not 0 < level < 1:
        msg = f"level must be between 0 and 1 (e.g. 0.9), got {level!r}"
        raise InvalidParameterError(msg)
    sim = simulate_visits(frame, k, runs=runs, seed=seed, aggregate=aggregate)
    exact = exact_assessment(frame, k, threshold=threshold, aggregate=aggregate)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    rates = sim.category_rates
    cats = exact["categories"].rename(columns={"p_below": "p_below_exact"})
    cats.insert(1, "name", [str((names or {}).get(c, c)) for c in cats["category_code"]])
    cats["simulated"] = rates.mean(axis=0)
    cats["low"] = np.quantile(rates, lo_q, axis=0, method="lower")    # attainable rates, interval >= level
    cats["high"] = np.quantile(rates, hi_q, axis=0, method="higher")
    cats["p_below"] = (sim.conforming < threshold * sim.k - 1e-9).mean(axis=0)
    cats["expected_nonconforming"] = cats["k"] * (1 - cats["expected"])
    cats = cats[["category_code", "name", "n_sites", "k", "expected", "simulated", "low", "high", "p_below",
                 "p_below_exact", "expected_nonconforming"]]
    overall_rates = sim.overall_rates
    overall = {
        "n_sites": int(sim.n.sum()), "k": int(sim.k.sum()), "expected": exact["overall"]["expected"],
        "simulated": float(overall_rates.mean()), "low": float(np.quantile(overall_rates, lo_q, method="lower")),
        "high": float(np.quantile(overall_rates, hi_q, method="higher")),
        "p_below": float((overall_rates < threshold - 1e-9).mean()), "p_below_exact": exact["overall"]["p_below"],
        "expected_nonconforming": float((cats["expected_nonconforming"]).sum()),
    }
    return {"categories": cats, "overall": overall, "runs": int(runs), "threshold": float(threshold),
            "level": float(level), "aggregate": aggregate}


# --- what if: which sites to fix first ------------------------------------------------------------------------


def fix_gains(frame: pd.DataFrame, k, *, aggregate: str = "pooled") -> pd.DataFrame:
    """The exact expected gain of fixing each site (setting its ``p`` to 0).

    Returns ``frame`` with ``gain_category`` (``p_i / n_c``, in the category's expected rate) and ``gain``
    (``a_c k_c p_i / (n_c D)``, in the overall expected rate); sites of categories not drawn gain 0.
    """
    fr = _prepare(frame, k, aggregate)
    out = frame.copy()
    gain_cat = np.zeros(len(frame))
    gain = np.zeros(len(frame))
    for c, rows in enumerate(fr.site_index):
        gain_cat[rows] = fr.probs[c] / fr.n[c]
        gain[rows] = fr.weights[c] * fr.k[c] * fr.probs[c] / (fr.n[c] * fr.denom)
    out["gain_category"] = gain_cat
    out["gain"] = gain
    return out


def fix_first(frame: pd.DataFrame, k, *, n: int = 10, aggregate: str = "pooled") -> pd.DataFrame:
    """The ``n`` sites whose fixing raises the expected overall conformity rate most, best first.

    Gains are additive (the expected rate is linear in each ``p``), so the best set of ``n`` sites is the ``n``
    largest single gains (ties: lower row first).

    Returns
    -------
    pandas.DataFrame
        The chosen rows of ``frame`` with ``rank``, ``gain_category``, ``gain`` and ``cumulative_gain``.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        msg = f"the number of sites to fix must be a whole number >= 0, got {n!r}"
        raise InvalidParameterError(msg)
    gains = fix_gains(frame, k, aggregate=aggregate)
    order = np.lexsort((np.arange(len(gains)), -gains["gain"].to_numpy()))
    top = gains.iloc[order[:n]].copy()
    top = top[top["gain"] > 0]
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    top["cumulative_gain"] = top["gain"].cumsum()
    return top.reset_index(drop=True)


# --- the whole question, as the CLI and the API ask it ------------------------------------------------------


def assess(store: Store, *, as_of=None, runs: int = 10_000, k: Mapping[str, int] | None = None,
           threshold: float = 0.9, fix: int = 10, level: float = 0.9, seed: int | None = 0,
           aggregate: str = "pooled", method: str = "auto", lang: str = "zh") -> dict:
    """Simulate the assessment on the store's sample frame now and pick the sites to fix first.

    Parameters
    ----------
    store
        The database.
    as_of
        The moment to look from (default: the latest event or inspection).
    runs, threshold, level, seed, aggregate
        See :func:`simulate_assessment`.
    k
        Overrides of the draws per category ``{category: k}`` (default: :data:`ASSESSMENT_CSV`).
    fix
        How many sites to propose fixing.
    method
        Where the probabilities come from (see :func:`site_probabilities`).
    lang
        ``zh`` or ``en`` category names.

    Returns
    -------
    dict
        JSON-ready: ``as_of, method, runs, threshold, level, aggregate, overall, categories`` (records),
        ``fix`` (records: ``rank, site_id, name, category_code, category, grid_code, street_code, p, open,
        overdue, gain_category, gain, cumulative_gain``) and ``overall_after_fix``.
    """
    moment = _as_of(store, as_of)
    sizes = assessment_sizes(store, overrides=k)
    frame = site_probabilities(store, as_of=moment, method=method)
    cats = store.sql("SELECT code, name_zh, name_en FROM site_categories")
    names = dict(zip(cats["code"], cats[name_column(lang)], strict=True))
    result = simulate_assessment(frame, sizes, runs=runs, threshold=threshold, level=level, seed=seed,
                                 aggregate=aggregate, names=names)
    top = fix_first(frame, sizes, n=fix, aggregate=aggregate)
    top["category"] = top["category_code"].map(names)
    gain = float(top["gain"].sum()) if len(top) else 0.0
    keep = ["rank", "site_id", "name", "category_code", "category", "grid_code", "street_code", "p", "open",
            "overdue", "hits", "gain_category", "gain", "cumulative_gain"]
    return {
        "as_of": moment.isoformat(sep=" ", timespec="seconds"),
        "method": str(frame["method"].iloc[0]) if len(frame) else "rule",
        "runs": result["runs"], "threshold": result["threshold"], "level": result["level"],
        "aggregate": aggregate,
        "overall": result["overall"],
        "categories": _records(result["categories"]),
        "fix": _records(top[keep]),
        "overall_after_fix": {"expected": result["overall"]["expected"] + gain, "gain": gain},
        "notes": as_of_notes(store, moment, lang=lang),
    }


def _records(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.to_dict(orient="records"):
        row = {}
        for key, value in rec.items():
            if isinstance(value, np.generic):
                value = value.item()
            if (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA or value is pd.NaT:
                value = None
            row[key] = value
        out.append(row)
    return out
