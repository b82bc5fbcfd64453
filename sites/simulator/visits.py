"""Simulated assessments: ``runs`` random visits drawn per category without replacement, and the expected rates
with simulation intervals and below-threshold chances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.sites.simulator.exact import category_draws, check_threshold, exact_assessment


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
    fr = category_draws(frame, k, aggregate)
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
    check_threshold(threshold)
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
