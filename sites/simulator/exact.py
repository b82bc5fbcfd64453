"""The exact distribution of an assessment: the sites grouped by category with their draws, the number of
non-conforming sites drawn (Poisson-binomial, then hypergeometric), and the overall rate's distribution."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from scipy.special import gammaln

AGGREGATES = ("pooled", "mean")


@dataclass
class CategoryDraws:
    """Sites grouped by category with their effective draws and the overall weights."""

    codes: list[str]
    probs: list[np.ndarray]
    k: np.ndarray          # effective draws per category (min(k, n))
    n: np.ndarray
    weights: np.ndarray    # a_c: overall score = sum a_c * C_c / denom
    denom: float
    aggregate: str
    site_index: list[np.ndarray] = field(default_factory=list)


def category_draws(frame: pd.DataFrame, k, aggregate: str) -> CategoryDraws:
    """Group the sites of ``frame`` (``category_code``, ``p``) by category with their effective draws ``min(k, n)``."""
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
    return CategoryDraws(codes, probs, k_eff, n, weights, denom, aggregate, index)


def _k_of(k, code: str) -> int:
    if isinstance(k, (int, np.integer)):
        return int(k)
    if isinstance(k, pd.Series):
        return int(k.get(code, 0))
    return int(dict(k).get(code, 0))


def check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        msg = f"threshold must be a rate between 0 and 1 (e.g. 0.9), got {threshold!r}"
        raise InvalidParameterError(msg)


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
        ``"pooled"`` or ``"mean"`` (see :mod:`civicgrid.sites.simulator`).
    max_support
        Skip the exact overall distribution (``p_below`` None) when ``aggregate="mean"`` needs more points.

    Returns
    -------
    dict
        ``categories``: DataFrame ``category_code, n_sites, k, expected, p_below``; ``overall``:
        ``{"expected", "p_below"}``.
    """
    fr = category_draws(frame, k, aggregate)
    check_threshold(threshold)
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


def _integer_weights(fr: CategoryDraws, max_support: int) -> tuple[np.ndarray, float] | None:
    """Integer multipliers m_c and scale S so that the overall rate is sum m_c C_c / S (None if too large)."""
    if fr.aggregate == "pooled":
        return np.ones(len(fr.codes), dtype=np.int64), float(fr.k.sum())
    lcm = 1
    for kk in fr.k:
        lcm = math.lcm(lcm, int(kk))
        if lcm * len(fr.codes) > max_support:
            return None
    return (lcm // fr.k).astype(np.int64), float(lcm * len(fr.codes))
