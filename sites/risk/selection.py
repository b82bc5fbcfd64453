"""Choosing what to score and show: the default moment, site categories by code or name, and the rows of a
scored frame in some categories or one area."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import geopandas as gpd
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.events import data_span
from civicgrid.geo.store import Store


def default_as_of(store: Store) -> datetime:
    """One second after the latest event or inspection: the moment that uses all the data."""
    value = data_span(store)[1]
    if pd.isna(value):
        msg = "the database has no events or inspections; give as_of explicitly"
        raise InvalidParameterError(msg)
    return (pd.Timestamp(value) + pd.Timedelta(seconds=1)).floor("s").to_pydatetime()


def resolve_categories(store: Store, words: str | Sequence[str] | None) -> list[str]:
    """Category codes for codes or Chinese/English names (comma-separated or a list); unknown: NotFoundError."""
    if words is None:
        return []
    items = [w.strip() for w in (words.split(",") if isinstance(words, str) else words) if w and w.strip()]
    cats = store.sql("SELECT code, name_zh, name_en FROM site_categories ORDER BY code")
    lookup, names = {}, []
    for r in cats.itertuples():
        for key in (r.code, r.name_zh, r.name_en):
            if key:
                lookup[str(key).strip().lower()] = r.code
                plain = re.sub(r"[（(][^）)]*[）)]", "", str(key)).strip().lower()  # 农贸（集贸）市场 -> 农贸市场
                lookup.setdefault(plain, r.code)
                names.append((str(key).lower(), r.code))
    out = []
    for w in items:
        key = w.lower()
        if key.isdigit() and len(key) == 1:
            key = "0" + key
        if key not in lookup:
            partial = {code for name, code in names if key in name}
            if len(partial) == 1:
                out.append(partial.pop())
                continue
            import difflib

            names = [f"{r.code} {r.name_zh}" for r in cats.itertuples()]
            close = difflib.get_close_matches(w, list(cats["name_zh"]) + list(cats["name_en"]), n=3, cutoff=0.3)
            hint = ", ".join(close) if close else ", ".join(names[:5]) + ", …"
            msg = f"unknown site category {w!r}; closest: {hint}"
            raise NotFoundError(msg)
        out.append(lookup[key])
    return sorted(set(out))


def select_sites(store: Store, frame: gpd.GeoDataFrame, *, category=None, area: str | None = None,
                 limit: int | None = None) -> gpd.GeoDataFrame:
    """Rows of a :func:`site_risk` frame in some categories and/or one micro-grid or area, the first ``limit``.

    ``area`` is a micro-grid code or a district, street or community code (unknown: NotFoundError).
    """
    out = frame
    codes = resolve_categories(store, category)
    if codes:
        out = out[out["category_code"].isin(codes)]
    if area:
        area = str(area).strip()
        loc = store.sql("SELECT site_id FROM sites WHERE ? IN (grid_code, community_code, street_code, district_code)",
                        [area])
        if loc.empty:
            known = store.sql("SELECT (SELECT count(*) FROM grids WHERE code = $a) + "
                              "(SELECT count(*) FROM areas WHERE code = $a) AS n", {"a": area})["n"].iloc[0]
            if not known:
                sample = store.sql("SELECT code FROM grids ORDER BY code LIMIT 3")["code"].tolist()
                msg = f"unknown grid or area code {area!r}; grid codes look like {', '.join(sample)}"
                raise NotFoundError(msg)
        out = out[out["site_id"].isin(loc["site_id"])]
    if limit is not None:
        if limit < 1:
            msg = f"limit must be at least 1, got {limit}"
            raise InvalidParameterError(msg)
        out = out.head(int(limit))
    return out
