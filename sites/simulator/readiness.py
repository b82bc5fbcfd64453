"""What to fix first, and the whole question as the CLI and the API ask it (:func:`assess`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.events import as_of_notes
from civicgrid.geo.store import Store
from civicgrid.geo.texts import name_column
from civicgrid.sites.simulator.exact import category_draws
from civicgrid.sites.simulator.probabilities import resolve_as_of, site_probabilities
from civicgrid.sites.simulator.sizes import assessment_sizes
from civicgrid.sites.simulator.visits import simulate_assessment


def fix_gains(frame: pd.DataFrame, k, *, aggregate: str = "pooled") -> pd.DataFrame:
    """The exact expected gain of fixing each site (setting its ``p`` to 0).

    Returns ``frame`` with ``gain_category`` (``p_i / n_c``, in the category's expected rate) and ``gain``
    (``a_c k_c p_i / (n_c D)``, in the overall expected rate); sites of categories not drawn gain 0.
    """
    fr = category_draws(frame, k, aggregate)
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
    moment = resolve_as_of(store, as_of)
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
