"""The number of sites the assessors draw per category, ``k``: the editable table :data:`ASSESSMENT_CSV`,
overridden per category by code or name."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store

#: Editable table of the number of sites drawn per category (``category_code, name_zh, k``; ``#`` comments).
#: Source: an assumption documented in the file's header (the operating manual of each edition fixes it).
ASSESSMENT_CSV = Path(__file__).resolve().parents[2] / "data" / "assessment.csv"


#: Draws per category for categories missing from the table.
DEFAULT_K = 3


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
        value = parse_k(rec.k, f"{path or ASSESSMENT_CSV.name} row {row} (k)")
        if rec.category_code in k.index:
            k[rec.category_code] = value
    for word, value in (overrides or {}).items():
        k[resolve_category(word, cats)] = parse_k(value, f"k of {word}")
    return k


def parse_k(value, where: str) -> int:
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
            out[key.strip()] = parse_k(value.strip(), f"k of {key.strip()}")
    return out
